# The test-script globals beyond the machines, on the smoke tier.
# Run by crates/cli/tests/e2e/globals.rs (with E2E_OTHER_START_SCRIPT set).
import datetime
import os
import time

from ntd.errors import RequestedAssertionFailed
from ntd.polling_condition import PollingConditionError

start_all()
machine.wait_until_succeeds("true")

with subtest("classes and machine lists"):
    assert isinstance(machine, QemuMachine) and isinstance(machine, BaseMachine)
    assert Machine is QemuMachine
    assert machines == [machine] and machines_qemu == [machine] and machines_nspawn == []
    assert vlans == []
    assert driver.machines == [machine]
    debug.breakpoint()
    dump_machine_ssh()
    # Upstream's constructor arguments are required, as upstream's.
    try:
        NspawnMachine()
        raise Exception("NspawnMachine() worked")
    except TypeError as e:
        assert "missing 4 required positional arguments" in str(e), str(e)
    t.assertEqual(1, 1)
    try:
        t.assertEqual(1, 2)
    except RequestedAssertionFailed:
        pass

with subtest("retry"):
    calls = []
    retry(lambda last: calls.append(last) or len(calls) == 3)
    assert calls == [False, False, False], calls
    calls.clear()
    try:
        retry(lambda last: calls.append(last) and False, timeout=datetime.timedelta(seconds=1.5))
        raise Exception("retry did not time out")
    except RequestedAssertionFailed as e:
        assert str(e).startswith("action timed out after ") and str(e).endswith("(timeout=1.5)"), str(e)
    assert calls == [False, False, True], calls
    calls.clear()
    try:
        retry(lambda last: calls.append(last) and False, 0)
    except RequestedAssertionFailed:
        pass
    assert calls == [True], calls
    try:
        retry(lambda last: True, timeout_seconds=1, timeout=datetime.timedelta(seconds=1))
        raise Exception("retry took both timeouts")
    except TypeError:
        pass

with subtest("subtests nest"):
    with subtest("inner"):
        machine.succeed("true")
    try:
        with subtest("outer-failing"):
            with subtest("inner-failing"):
                raise RequestedAssertionFailed("inner went wrong")
    except RequestedAssertionFailed:
        pass

with subtest("the log"):
    log.log("a plain line")
    log.info("an info line")
    with log.nested("a nested block"):
        log.log("inside the block")
    log.warning("a warning", {"machine": "machine"})
    serial_stdout_off()
    machine.succeed("echo hidden-serial >&2")
    machine.wait_for_console_text("hidden-serial")
    serial_stdout_on()
    machine.succeed("echo shown-serial >&2")
    machine.wait_for_console_text("shown-serial")

with subtest("polling conditions"):

    @polling_condition
    def no_broken_flag():
        "the guest has no /tmp/broken"
        machine.fail("test -e /tmp/broken")

    with no_broken_flag:
        machine.succeed("true")
        machine.succeed("(sleep 3; touch /tmp/broken) >/dev/null 2>&1 &")
        try:
            # While a condition is active, the wait polls from the host and checks it.
            machine.wait_for_file("/tmp/never-there", timeout=60)
            raise Exception("the polling condition was not checked during the wait")
        except PollingConditionError as e:
            assert str(e) == "Polling condition failed: the guest has no /tmp/broken", str(e)
    machine.succeed("rm /tmp/broken")

    counter = []

    @polling_condition(interval=datetime.timedelta(seconds=30), description="checked rarely")
    def checked_rarely():
        counter.append(1)

    with checked_rarely:
        for _ in range(5):
            machine.succeed("true")
    assert len(counter) == 1, counter

    machine.succeed("(sleep 2; touch /tmp/ready) >/dev/null 2>&1 &")

    @polling_condition
    def ready():
        machine.succeed("test -e /tmp/ready")

    ready.wait(timeout=datetime.timedelta(seconds=30))

with subtest("create_machine"):
    other = create_machine(os.environ["E2E_OTHER_START_SCRIPT"], name="other")
    assert other not in machines and other.name == "other"
    other.start()
    assert other.succeed("hostname").strip() == "other"
    other.shutdown()

with subtest("join_all"):
    machine.succeed("(sleep 1; poweroff) >/dev/null 2>&1 &")
    join_all()
    assert not machine.booted
