# The machine methods of the foundation, on the busybox smoke tier: the backdoor protocol's
# byte-exactness, quoting and isolation, timeouts, waits, the monitor, QMP events, the serial
# console, crash/start/shutdown. Run by crates/cli/tests/e2e/commands.rs.
import hashlib

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
    # a background job keeping stdout open does not hold the caller
    machine.succeed("sleep 30 & echo $! > /tmp/bg")
    machine.succeed("kill -0 $(cat /tmp/bg)")
    machine.succeed("kill $(cat /tmp/bg)")

with subtest("timeouts"):
    # busybox's timeout reports the signal (143) where coreutils' says 124; debian.py checks 124.
    status, out = machine.execute("sleep 30", timeout=2)
    assert (status, out) == (143, ""), (status, out)
    try:
        machine.succeed("sleep 30", timeout=1)
        raise Exception("succeed did not time out")
    except RequestedAssertionFailed as e:
        assert str(e) == "command `sleep 30` failed (exit code 143)", str(e)
    try:
        machine.wait_until_succeeds("false", timeout=2)
        raise Exception("wait_until_succeeds did not time out")
    except RequestedAssertionFailed as e:
        assert str(e).startswith("action timed out after "), str(e)
        assert str(e).endswith(" seconds (timeout=2)"), str(e)

with subtest("waits"):
    machine.succeed("(sleep 2; touch /tmp/flag) >/dev/null 2>&1 &")
    machine.wait_until_succeeds("test -e /tmp/flag", timeout=60)
    assert machine.wait_until_succeeds("cat /tmp/flag; echo found") == "found\n"
    machine.succeed("(sleep 2; rm /tmp/flag) >/dev/null 2>&1 &")
    machine.wait_until_fails("test -e /tmp/flag", timeout=60)
    machine.fail("test -e /tmp/flag", "false")

with subtest("monitor, QMP and console"):
    assert "VM status: running" in machine.send_monitor_command("info status")
    machine.send_monitor_command("stop")
    event = machine.wait_for_qmp_event(lambda e: e["event"] == "STOP", timeout=10)
    assert event["event"] == "STOP"
    machine.send_monitor_command("cont")
    machine.succeed("echo console-marker-42 >&2")
    retry(lambda _: "console-marker-42" in machine.get_console_log(), 30)

with subtest("crash, start again, shutdown"):
    machine.crash()
    assert not machine.is_up() and not machine.booted
    machine.start()
    assert machine.succeed("echo back") == "back\n"
    assert "console-marker-42" not in machine.get_console_log()
    machine.shutdown()
    assert not machine.booted
    machine.wait_for_shutdown()  # a no-op once down
