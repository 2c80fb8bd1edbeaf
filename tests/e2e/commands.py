# The machine methods of the foundation, on the busybox smoke tier: the backdoor protocol's
# byte-exactness, quoting and isolation, timeouts, waits, the monitor, QMP events, the serial
# console, crash/start/shutdown. Run by crates/cli/tests/e2e/commands.rs.
import datetime
import hashlib
import os
import warnings

from ntd.errors import RequestedAssertionFailed

start_all()
machine.wait_until_succeeds("true")
assert machine.is_up()
assert repr(machine) == "<QemuMachine 'machine'>"

with subtest("output comes back byte for byte"):
    assert machine.succeed("echo hello") == "hello\n"
    assert machine.succeed("printf 'no newline'") == "no newline"
    assert machine.succeed("printf ''") == ""
    # NUL passes; an invalid byte is replaced at the Python boundary, as upstream decodes.
    out = machine.succeed("printf 'a\\000b\\377c'")
    assert out == "a\x00b\ufffdc", repr(out)
    assert machine.execute("echo partial; exit 7") == (7, "partial\n")
    big = machine.succeed("head -c 786432 /dev/urandom | base64 -w 0 > /tmp/b64; cat /tmp/b64")
    guest_md5 = machine.succeed("md5sum < /tmp/b64").split()[0]
    assert len(big) == 1048576, len(big)
    assert hashlib.md5(big.encode()).hexdigest() == guest_md5

with subtest("commands reach the shell exactly as written"):
    cmd = "printf '%s\\n' \"it's\" 'say \"hi\"' '$HOME' '`id`' 'ünïcödé'"
    assert machine.succeed(cmd) == "it's\nsay \"hi\"\n$HOME\n`id`\nünïcödé\n"
    assert machine.succeed("echo one\necho two # a comment") == "one\ntwo\n"
    assert machine.succeed("echo 'a', 'b'", "echo c") == "a, b\nc\n"
    # A command the shell cannot parse fails on its own and leaves the channel in sync.
    status, _ = machine.execute("echo 'unbalanced")
    assert status == 2, status
    assert machine.succeed("echo still in sync") == "still in sync\n"

with subtest("commands are isolated from each other and from the protocol"):
    machine.succeed("cd /; X=1; set +e")
    assert machine.succeed("pwd; echo ${X:-unset}") == "/tmp\nunset\n"
    # set -euo pipefail, as upstream
    assert machine.execute("false; echo not reached")[0] == 1
    assert machine.execute("false | true")[0] == 1
    assert machine.execute("echo $UNSET_VARIABLE")[0] != 0
    # stdin is /dev/null: a command reading it cannot eat the next command
    assert machine.succeed("cat") == ""
    # A command's output ends at the end of its stdout, as upstream's: a background job that
    # inherits stdout is waited for and its output is part of the result; one with its own
    # stdout does not hold the caller.
    assert machine.succeed("(echo ONE; sleep 2; echo TWO) &") == "ONE\nTWO\n"
    machine.succeed("sleep 30 >/dev/null & echo $! > /tmp/bg")
    machine.succeed("kill -0 $(cat /tmp/bg)")
    machine.succeed("kill $(cat /tmp/bg)")

with subtest("timeouts"):
    # The driver kills a command that runs out of time (through the control port) and reports
    # 124, as coreutils' `timeout` in upstream's guest does; the output so far is kept.
    status, out = machine.execute("echo before; sleep 30", timeout=2)
    assert (status, out) == (124, "before\n"), (status, out)
    try:
        machine.succeed("sleep 30", timeout=1)
        raise Exception("succeed did not time out")
    except RequestedAssertionFailed as e:
        assert str(e) == "command `sleep 30` failed (exit code 124)", str(e)
    try:
        machine.wait_until_succeeds("false", timeout=2)
        raise Exception("wait_until_succeeds did not time out")
    except RequestedAssertionFailed as e:
        assert str(e).startswith("action timed out after "), str(e)
        assert str(e).endswith(" seconds (timeout=2.0)"), str(e)
    # Each attempt is bounded by attempt_timeout, the whole wait by timeout.
    try:
        machine.wait_until_succeeds("sleep 5", timeout=3, attempt_timeout=1)
        raise Exception("attempt_timeout did not bound the attempts")
    except RequestedAssertionFailed as e:
        assert str(e).endswith(" seconds (timeout=3.0)"), str(e)
    machine.sleep(1)
    machine.sleep(datetime.timedelta(milliseconds=200))

with subtest("waits for files and console text"):
    machine.succeed("(sleep 1; touch /tmp/wf) >/dev/null 2>&1 &")
    machine.wait_for_file("/tmp/wf", timeout=60)
    try:
        machine.wait_for_file("/tmp/never", timeout=datetime.timedelta(seconds=1))
        raise Exception("wait_for_file did not time out")
    except RequestedAssertionFailed as e:
        assert str(e).endswith(" seconds (timeout=1.0)"), str(e)
    machine.succeed("echo alpha-line >&2; echo beta-line >&2")
    machine.wait_for_console_text("alpha-line")
    # Lines before the last match are consumed; later lines are glued together, as upstream.
    machine.succeed("echo gamma-line >&2")
    machine.wait_for_console_text("beta-linegamma", timeout=30)
    try:
        machine.wait_for_console_text("alpha-line", timeout=1)
        raise Exception("a consumed line matched again")
    except RequestedAssertionFailed as e:
        assert str(e).startswith("action timed out after "), str(e)

with subtest("files between host and guest"):
    source = machine.out_dir.parent / "host-file.sh"
    source.write_text("#!/bin/sh\necho from-host\n")
    source.chmod(0o750)
    machine.copy_from_host(str(source), "/root/deep/dir/copied.sh")
    assert machine.succeed("/root/deep/dir/copied.sh") == "from-host\n"
    assert machine.succeed("stat -c %a /root/deep/dir/copied.sh").strip() == "750"
    tree = machine.out_dir.parent / "host-tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "leaf").write_text("leaf\n")
    machine.copy_from_host(str(tree), "/root/tree")
    assert machine.succeed("cat /root/tree/sub/leaf") == "leaf\n"
    machine.copy_from_host_via_shell(str(source), "/root/via-shell/copied.sh")
    assert machine.succeed("cat /root/via-shell/copied.sh") == "#!/bin/sh\necho from-host\n"
    machine.succeed("mkdir -p /root/out/inner && echo from-guest > /root/out/inner/file")
    machine.copy_from_machine("/root/out", "collected")
    assert (machine.out_dir / "collected" / "out" / "inner" / "file").read_text() == "from-guest\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        machine.copy_from_vm("/root/out/inner/file")
    assert (machine.out_dir / "file").read_text() == "from-guest\n"
    assert any(issubclass(w.category, DeprecationWarning) for w in caught), caught
    # The copies' temporary directories are gone.
    assert os.listdir(machine.shared_dir) == [], os.listdir(machine.shared_dir)

with subtest("shell_interact"):
    commands = machine.out_dir.parent / "socat-input"
    commands.write_text("echo via-socat > /tmp/socat-out\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        machine.shell_interact(f"EXEC:cat {commands}")
    machine.wait_until_succeeds("test -e /tmp/socat-out", timeout=30)
    assert machine.succeed("cat /tmp/socat-out") == "via-socat\n"

with subtest("waits"):
    machine.succeed("(sleep 2; touch /tmp/flag) >/dev/null 2>&1 &")
    machine.wait_until_succeeds("test -e /tmp/flag", timeout=60)
    assert machine.wait_until_succeeds("cat /tmp/flag; echo found") == "found\n"
    machine.succeed("(sleep 2; rm /tmp/flag) >/dev/null 2>&1 &")
    machine.wait_until_fails("test -e /tmp/flag", timeout=60)
    machine.fail("test -e /tmp/flag", "false")

with subtest("monitor, QMP and console"):
    assert "VM status: running" in machine.send_monitor_command("info status")
    machine.send_key("a")
    machine.send_key("ret", delay=None, log=False)
    machine.send_monitor_command("stop")
    event = machine.wait_for_qmp_event(lambda e: e["event"] == "STOP", timeout=10)
    assert event["event"] == "STOP"
    machine.send_monitor_command("cont")
    machine.succeed("echo console-marker-42 >&2")
    retry(lambda _: "console-marker-42" in machine.get_console_log(), 30)

with subtest("crash, start again, reboot, shutdown"):
    machine.crash()
    assert not machine.is_up() and not machine.booted
    machine.start(allow_reboot=True)
    assert machine.succeed("echo back") == "back\n"
    assert "console-marker-42" not in machine.get_console_log()
    machine.succeed("touch /tmp/before-reboot")
    machine.reboot()
    assert not machine.is_up()
    # The VM survives the reboot (allow_reboot) and the backdoor comes back.
    machine.fail("test -e /tmp/before-reboot")
    assert machine.booted
    machine.shutdown()
    assert not machine.booted
    machine.wait_for_shutdown()  # a no-op once down
