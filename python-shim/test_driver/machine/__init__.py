"""Upstream's `test_driver.machine`: the machine classes (native, `ntd._native`), `retry`, and
`QemuStartCommand`."""

import os
import re
from pathlib import Path

from ntd._native import BaseMachine, QemuMachine
from ntd.driver import Machine, NspawnMachine, retry
from ntd.errors import MachineError

__all__ = ["BaseMachine", "Machine", "NspawnMachine", "QemuMachine", "QemuStartCommand", "retry"]


class QemuStartCommand:
    """A machine's start command (a `run-<name>-vm` script), as upstream's class.

    `QemuMachine(..., start_command=QemuStartCommand(script))` works as with the script.
    ntd builds and runs QEMU's command line itself (it adds its own control ports), so a
    subclass cannot change it through `cmd()` or `run()`: `QemuMachine` refuses such a
    subclass with a clear error instead of ignoring it.
    """

    def __init__(self, script: str) -> None:
        self._cmd = script

    @property
    def machine_name(self) -> str:
        match = re.search("run-(.+)-vm$", self._cmd)
        return match.group(1) if match else "machine"

    @staticmethod
    def build_environment(
        state_dir: "str | os.PathLike[str]",
        shared_dir: "str | os.PathLike[str]",
        efi_vars_path: "Path | None" = None,
    ) -> dict[str, str]:
        """The start script's environment: this process's, with `TMPDIR`, `SHARED_DIR`,
        `USE_TMPDIR` (and `NIX_EFI_VARS`) as the driver sets them."""
        env = dict(os.environ)
        env.update(TMPDIR=os.fspath(state_dir), SHARED_DIR=os.fspath(shared_dir), USE_TMPDIR="1")
        if efi_vars_path is not None:
            env["NIX_EFI_VARS"] = os.fspath(efi_vars_path)
        return env

    def cmd(self, *_args: object, **_kwargs: object) -> str:
        raise MachineError("ntd builds QEMU's command line itself; QemuStartCommand.cmd() is not available")

    def run(self, *_args: object, **_kwargs: object) -> object:
        raise MachineError("ntd starts QEMU itself; QemuStartCommand.run() is not available: use machine.start()")
