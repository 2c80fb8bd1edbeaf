# The command channel (crates/cli/tests/e2e/channel.rs): no byte lost while the driver is
# stopped, output that ends at the end of stdout, and interrupted commands stopped in the guest.
# The Rust side checks the log lines; this script checks results and the guest's process table.
import _thread
import hashlib
import os
import subprocess
import threading
import time

from ntd.errors import RequestedAssertionFailed

start_all()
machine.wait_until_succeeds("true")


def processes():
    """Every command line in the guest's process table, one per line."""
    return machine.succeed(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <$f 2>/dev/null; echo; done"
    )


def answer_time(text="after"):
    """How long the next command takes to answer, in seconds (asserting its output)."""
    started = time.monotonic()
    assert machine.succeed(f"echo {text}") == f"{text}\n"
    return time.monotonic() - started


def interrupted(call):
    """Run `call` until a KeyboardInterrupt stops it after 2 s, as Ctrl-C would; check that
    the shell then answers within a second and return how long it took."""
    timer = threading.Timer(2, _thread.interrupt_main)
    timer.start()
    try:
        call()
        raise Exception("the call was not interrupted")
    except KeyboardInterrupt:
        pass
    timer.join()
    took = answer_time()
    assert took < 1, f"the shell answered after {took:.2f} s"
    return took


with subtest("a stopped driver loses no byte"):
    # 32 MiB of text (base64 of 24 MiB), sent in 1 MiB pieces over a few seconds, so that the driver is
    # stopped while the output flows: the guest's writer must wait, not lose bytes.
    machine.succeed("head -c 25165824 /dev/urandom | base64 > /tmp/big")
    size, digest = machine.succeed("wc -c < /tmp/big; md5sum < /tmp/big").split()[:2]
    assert int(size) >= 32 * 1024 * 1024, size
    stopper = subprocess.Popen(
        ["sh", "-c", f"sleep 0.5; kill -STOP {os.getpid()}; sleep 3; kill -CONT {os.getpid()}"]
    )
    started = time.monotonic()
    out = machine.succeed(
        "i=0; while [ $i -lt 33 ]; do dd if=/tmp/big bs=1048576 skip=$i count=1 2>/dev/null; "
        "sleep 0.05; i=$((i+1)); done"
    )
    took = time.monotonic() - started
    assert stopper.wait() == 0
    assert took >= 3, f"the driver was not stopped during the command ({took:.1f} s)"
    assert len(out) == int(size), (len(out), size)
    assert hashlib.md5(out.encode()).hexdigest() == digest, "the output differs from the file"
    print(f"channel: 32 MiB with the driver stopped for 3 s: exact, in {took:.1f} s")

with subtest("output ends at the end of stdout"):
    # upstream's nixos/tests/nixos-test-driver/succeed-stdout-warning.nix: a background job
    # that keeps stdout is waited for, with a warning, and its output is part of the result.
    assert machine.succeed("(echo ONE; sleep 15; echo TWO) &") == "ONE\nTWO\n"
    # A job with its own stdout does not hold the command.
    started = time.monotonic()
    pid = machine.succeed("sleep 600 >/dev/null 2>&1 & echo $!").strip()
    assert time.monotonic() - started < 5
    machine.succeed(f"kill {pid}")

with subtest("KeyboardInterrupt stops the command in the guest"):
    took = interrupted(lambda: machine.succeed("sleep 601"))
    assert "sleep 601" not in processes(), processes()
    print(f"channel: answer after KeyboardInterrupt: {took * 1000:.0f} ms")

with subtest("KeyboardInterrupt stops the command tree and what holds its output"):
    # A pipeline, a background job of the command and a daemon that left its session.
    interrupted(lambda: machine.succeed("sleep 602 | sleep 603 & setsid sleep 604 & sleep 605"))
    left = [p for p in processes().splitlines() if any(f"sleep 60{i}" in p for i in range(2, 6))]
    assert left == [], left

with subtest("an interrupted wait stops its loop in the guest"):
    interrupted(lambda: machine.wait_for_file("/tmp/never-there-1"))
    assert "never-there-1" not in processes(), processes()

with subtest("a timeout stops the command in the guest"):
    try:
        machine.succeed("echo started; sleep 606", timeout=2)
        raise Exception("the command did not time out")
    except RequestedAssertionFailed as e:
        assert str(e) == "command `echo started; sleep 606` failed (exit code 124)", str(e)
    took = answer_time()
    assert took < 1, f"the shell answered after {took:.2f} s"
    assert "sleep 606" not in processes(), processes()
    # A wait's timeout stops its loop too.
    try:
        machine.wait_for_file("/tmp/never-there-2", timeout=2)
        raise Exception("the wait did not time out")
    except RequestedAssertionFailed as e:
        assert str(e).endswith(" seconds (timeout=2.0)"), str(e)
    assert "never-there-2" not in processes(), processes()

with subtest("console output is kept while the script is busy"):
    # The guest floods the serial console (the backdoor's stderr) while the script does
    # not call the driver; every line arrives, in order.
    machine.succeed(
        "(sleep 1; i=0; while [ $i -lt 3000 ]; do echo flood-line-$i; i=$((i+1)); done >&2) >/dev/null &"
    )
    time.sleep(6)
    machine.wait_for_console_text("flood-line-2999", timeout=60)
    log = machine.get_console_log()
    numbers = [int(line.split("flood-line-")[1].split()[0]) for line in log.splitlines() if "flood-line-" in line]
    assert numbers == list(range(3000)), (len(numbers), numbers[:5], numbers[-5:])
