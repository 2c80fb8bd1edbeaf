# nixpkgs' nixos-test-driver.succeed-stdout-warning: a test that fails on purpose at the end,
# so that crates/cli/tests/e2e/upstream.rs can look through its log as upstream's wrapper
# (testBuildFailure) does.
start_all()
machine.wait_for_unit("multi-user.target")

with subtest("a quick command gives no warning"):
    machine.succeed("echo 'MARKER: before fast command' >&2")
    out = machine.succeed("echo HELLO")
    assert out == "HELLO\n", repr(out)
    machine.succeed("echo 'MARKER: after fast command' >&2")

with subtest("a background job holding stdout open gives the warning"):
    machine.succeed("echo 'MARKER: before slow command' >&2")
    out = machine.succeed("(echo ONE; sleep 15; echo TWO) &")
    assert out == "ONE\nTWO\n", repr(out)
    machine.succeed("echo 'MARKER: after slow command' >&2")

with subtest("a non-zero exit status is kept"):
    try:
        machine.succeed("exit 42")
    except Exception as e:
        assert "exit code 42" in str(e), str(e)
    else:
        raise AssertionError("`exit 42` succeeded")

with subtest("a command's stderr reaches the console"):
    machine.succeed("echo 'STDERR_TEST_MARKER: user command stderr output' >&2")

raise Exception(
    "Test script done and successful so far. Intentionally failing so that testBuildFailure can perform remaining log checks"
)
