"""Upstream's `test_driver` package, the import paths NixOS test tooling uses, over ntd.

nixpkgs type-checks a test script against these modules (its `test-script-prepend.py` imports
`test_driver.driver`, `.machine`, `.vlan`, `.logger` and `.debug`) and lints it with the names
`generate-driver-symbols` writes. The classes are ntd's own (`ntd.driver`, `ntd._native`); this
package only gives them upstream's module names.
"""

from ntd.driver import generate_driver_symbols

__all__ = ["generate_driver_symbols"]
