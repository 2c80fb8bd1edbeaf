"""Upstream's `test_driver.config`: the contents of `driverConfiguration.json`.

Upstream validates the file with pydantic models; ntd reads and checks it natively (the same
reader as `nixos-test-driver --config`: a missing key is an error, keys ntd does not know are
ignored with one warning line) and gives the result upstream's names.
"""

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

from ntd import _native

__all__ = [
    "DriverConfiguration",
    "MachineConfiguration",
    "NspawnMachineConfiguration",
    "QemuMachineConfiguration",
    "VMConfiguration",
    "load_driver_configuration",
]


@dataclass
class MachineConfiguration:
    """One machine: its name and its start script."""

    name: str
    start_script: Path


class QemuMachineConfiguration(MachineConfiguration):
    """A QEMU machine (`vms`)."""


class NspawnMachineConfiguration(MachineConfiguration):
    """A systemd-nspawn container (`containers`)."""


# The name ntd used before upstream's split into QEMU and nspawn machines.
VMConfiguration = QemuMachineConfiguration


@dataclass
class DriverConfiguration:
    """The contents of `driverConfiguration.json`, as the Nix side writes it."""

    vms: dict[str, QemuMachineConfiguration]
    vlans: list[int]
    global_timeout: datetime.timedelta
    test_script: Path
    containers: dict[str, NspawnMachineConfiguration] = field(default_factory=dict)
    enable_ssh_backdoor: bool = False


def load_driver_configuration(file_path: "str | os.PathLike[str]") -> DriverConfiguration:
    """Read and check a `driverConfiguration.json` as `nixos-test-driver --config` does."""
    raw = _native.load_driver_configuration(file_path)
    return DriverConfiguration(
        vms={
            key: QemuMachineConfiguration(name=vm["name"], start_script=Path(vm["start_script"]))
            for key, vm in raw["vms"].items()
        },
        vlans=list(raw["vlans"]),
        global_timeout=datetime.timedelta(seconds=raw["global_timeout"]),
        test_script=Path(raw["test_script"]),
        enable_ssh_backdoor=raw["enable_ssh_backdoor"],
    )
