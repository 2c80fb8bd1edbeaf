"""Upstream's `test_driver.debug`."""

from ntd.debug import DebugAbstract, DebugNop

__all__ = ["DebugAbstract", "DebugNop"]
