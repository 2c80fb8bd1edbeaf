# Run four times by crates/cli/tests/e2e/start_script.rs: the state directory (and the
# guest's /tmp/xchg in it) survives a run only with --keep-machine-state.
import os

expect = os.environ["E2E_EXPECT"]
start_all()
status, out = machine.execute("cat /tmp/xchg/kept")
if expect == "kept":
    assert (status, out) == (0, "from an earlier run\n"), (status, out)
else:
    assert status != 0, out
machine.succeed("echo from an earlier run > /tmp/xchg/kept")
