"""Fixtures for a pytest suite that drives a VM through ntd's Python library.

One Debian machine from the built-in test guest, booted once for the whole session and shut
down when the session ends (also when a test fails or pytest is interrupted). With NixOS, pass
the `run-<name>-vm` script of a built node instead: `Driver(["./result/bin/run-machine-vm"])`.
"""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ntd import Driver
from test_driver.machine import QemuMachine

REPO = Path(__file__).resolve().parents[2]


def built_guest() -> str:
    """The test guest: `NTD_GUEST_DIR`, else built (or found in its cache) by tests/guest/build."""
    guest = os.environ.get("NTD_GUEST_DIR")
    if guest:
        return guest
    return subprocess.run([REPO / "tests/guest/build"], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


@pytest.fixture(scope="session")
def start_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `run-machine-vm` start script for the Debian test guest."""
    bin_dir = tmp_path_factory.mktemp("bin")
    output = subprocess.run(
        [REPO / "tests/guest/mk-start-script", "--guest", built_guest(), "--tier", "debian", "machine", bin_dir],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(output.stdout.strip())


@pytest.fixture(scope="session")
def driver(start_script: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    """An open driver with its machine booted; closed (the VM stopped) after the last test."""
    with Driver([start_script], out_dir=tmp_path_factory.mktemp("out")) as driver:
        driver.start_all()
        yield driver


@pytest.fixture(scope="session")
def machine(driver: Driver) -> QemuMachine:
    """The machine, once it has reached multi-user.target."""
    (machine,) = driver.machines
    machine.wait_for_unit("multi-user.target")
    return machine
