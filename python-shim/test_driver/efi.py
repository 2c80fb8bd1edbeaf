"""Upstream's `test_driver.efi`: UEFI variables in a VM's OVMF variable store (see `ntd.efi`)."""

from ntd.efi import EfiGuid, EfiVariable, EfiVars, UEFITime, lookupUUID, resolveUUID

__all__ = ["EfiGuid", "EfiVariable", "EfiVars", "UEFITime", "lookupUUID", "resolveUUID"]
