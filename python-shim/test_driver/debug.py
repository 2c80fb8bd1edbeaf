"""Upstream's `test_driver.debug`."""

from ntd.debug import Debug, DebugAbstract, DebugNop

__all__ = ["Debug", "DebugAbstract", "DebugNop"]
