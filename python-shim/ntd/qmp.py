"""Upstream's QMP session (`test_driver.machine.qmp`): `machine.qmp_client`.

Upstream's driver keeps its own QMP socket open and a script may use it directly
(`machine.qmp_client.send("query-status")`); ntd's machine owns the one QMP connection, and
this session sends through it. QEMU's refusals raise `QMPAPIError`, as upstream's do.
"""

import datetime
from typing import TYPE_CHECKING, Any

from ntd.duration import Duration, as_timedelta

if TYPE_CHECKING:
    from ntd._native import QemuMachine

__all__ = ["QMPAPIError", "QMPSession"]


class QMPAPIError(RuntimeError):
    """QEMU refused a QMP command: its error `class_name` and `description`, and the
    `transaction_id` the command was sent with (`None`: sessions send none)."""

    def __init__(self, message: dict[str, Any]) -> None:
        assert "error" in message, "Not an error message!"
        try:
            self.class_name: str = message["error"]["class"]
            self.description: str = message["error"]["desc"]
            self.transaction_id: Any = message.get("id")
        except (KeyError, TypeError):
            raise RuntimeError("Malformed QMP API error response") from None
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"<QMP API error related to transaction {self.transaction_id} [{self.class_name}]: {self.description}>"


class QMPSession:
    """A QMP session of a running machine."""

    def __init__(self, machine: "QemuMachine") -> None:
        self._machine = machine

    def send(self, cmd: str, args: "dict[str, Any] | None" = None) -> dict[str, Any]:
        """Run a QMP command; return QEMU's whole answer (`{"return": ...}`), or raise
        `QMPAPIError` if QEMU refused it."""
        message: dict[str, Any] = self._machine._qmp_send(cmd, args or None)
        if "error" in message:
            raise QMPAPIError(message)
        return message

    def wait_for_event(self, timeout: Duration = datetime.timedelta(seconds=10)) -> dict[str, Any]:
        """The next QMP event, within `timeout`; `TimeoutError` if none comes."""
        return self._machine.wait_for_qmp_event(lambda _event: True, as_timedelta(timeout))

    def close(self) -> None:
        """Nothing to do: the machine owns the connection and closes it when QEMU stops."""
