"""Upstream's `test_driver.errors`."""

from ntd.errors import MachineError, RequestedAssertionFailed, TestScriptError

__all__ = ["MachineError", "RequestedAssertionFailed", "TestScriptError"]
