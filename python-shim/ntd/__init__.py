"""ntd: a native (Rust) NixOS test driver.

`ntd._native` holds the machines, the driver and the logger, implemented in Rust;
`ntd.driver` runs test scripts with upstream's globals and is the entry point for Python
programs (`ntd.Driver`); `ntd.errors` has upstream's exceptions. The `test_driver` package
beside this one has upstream's import paths for the same classes.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ntd.driver import Driver
    from ntd.errors import MachineError, RequestedAssertionFailed, TestScriptError

__all__ = ["Driver", "MachineError", "RequestedAssertionFailed", "TestScriptError"]


def __getattr__(name: str) -> Any:
    # Lazy, so that the package can be set up module by module (nixos-test-driver compiles
    # these sources into its binary and registers them in order).
    if name == "Driver":
        from ntd.driver import Driver

        return Driver
    if name in ("MachineError", "RequestedAssertionFailed", "TestScriptError"):
        from ntd import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'ntd' has no attribute {name!r}")
