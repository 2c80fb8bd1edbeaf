"""Upstream's `test_driver.vlan`: a VLAN switch (native, `ntd._native`)."""

from ntd._native import VLan

__all__ = ["VLan"]
