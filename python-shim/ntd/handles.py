"""What upstream's `QemuMachine` exposes as raw objects, over ntd's machine: the backdoor
shell's socket (`machine.shell`) and QEMU's process (`machine.process`).

ntd's machine owns the shell and the process; these give scripts the part of upstream's
socket and `Popen` they use, and nothing that would take the shell away from the driver.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ntd._native import QemuMachine

__all__ = ["BackdoorShell", "QemuProcess"]


class BackdoorShell:
    """The backdoor shell's input (upstream's shell socket): `send(b"...")` types into it."""

    def __init__(self, machine: "QemuMachine") -> None:
        self._machine = machine

    def send(self, data: "bytes | str") -> int:
        """Write `data` to the shell as it is; return its length, as `socket.send` does.
        What the command prints is not read: use it for commands after which the guest goes
        away (then set `machine.connected = False`), or use `execute`."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self._machine._send_to_shell(raw)
        return len(raw)

    def sendall(self, data: "bytes | str") -> None:
        self.send(data)


class QemuProcess:
    """QEMU's process while the machine runs (upstream's `Popen`): its `pid`, and `wait()`."""

    def __init__(self, machine: "QemuMachine") -> None:
        self._machine = machine
        self.pid: "int | None" = machine.pid

    def wait(self, timeout: "float | None" = None) -> None:
        """Wait until QEMU has exited (`machine.wait_for_shutdown()`)."""
        if timeout is not None:
            raise NotImplementedError("ntd waits for QEMU without a timeout here; use machine.wait_for_shutdown()")
        self._machine.wait_for_shutdown()
