"""A pytest suite against a real VM: the machine methods of NixOS tests as a library."""

from pathlib import Path

import pytest

from ntd.errors import RequestedAssertionFailed
from test_driver.machine import QemuMachine


def test_the_guest_runs_linux(machine: QemuMachine) -> None:
    assert machine.succeed("uname -s") == "Linux\n"


def test_a_service_comes_up(machine: QemuMachine) -> None:
    machine.wait_for_unit("hello.service")
    assert machine.get_unit_property("hello.service", "ActiveState") == "active"


def test_execute_returns_status_and_output(machine: QemuMachine) -> None:
    status, output = machine.execute("echo out; echo err >&2; exit 3")
    assert (status, output) == (3, "out\n")


def test_a_failing_command_raises(machine: QemuMachine) -> None:
    with pytest.raises(RequestedAssertionFailed, match=r"command `false` failed \(exit code 1\)"):
        machine.succeed("false")


def test_a_wait_gives_up_at_its_timeout(machine: QemuMachine) -> None:
    with pytest.raises(RequestedAssertionFailed, match="timed out"):
        machine.wait_until_succeeds("test -e /nonexistent", timeout=2)


def test_files_go_both_ways(machine: QemuMachine, tmp_path: Path) -> None:
    source = tmp_path / "greeting"
    source.write_text("hello from the host\n")
    machine.copy_from_host(str(source), "/root/greeting")
    assert machine.succeed("cat /root/greeting") == "hello from the host\n"

    machine.succeed("echo 'hello from the guest' > /root/reply")
    machine.copy_from_machine("/root/reply", str(tmp_path))
    assert (tmp_path / "reply").read_text() == "hello from the guest\n"
