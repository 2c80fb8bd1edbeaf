"""Upstream's `test_driver.machine.qmp`: the QMP session of `machine.qmp_client`."""

from ntd.qmp import QMPAPIError, QMPSession

__all__ = ["QMPAPIError", "QMPSession"]
