"""Breakpoints for failing tests (upstream's `test_driver/debug.py`).

`debug.breakpoint()` is a no-op (`DebugNop`) unless the driver runs with
`--debug-hook-attach`, which the Nix sandbox's debug hook uses.
"""

from abc import ABC, abstractmethod


class DebugAbstract(ABC):
    @abstractmethod
    def breakpoint(self, host: str = "127.0.0.1", port: int = 4444) -> None:
        pass


class DebugNop(DebugAbstract):
    def __init__(self) -> None:
        pass

    def breakpoint(self, host: str = "127.0.0.1", port: int = 4444) -> None:
        pass
