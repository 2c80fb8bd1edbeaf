# UEFI variables, as upstream's nixos/tests/nixos-test-driver/efivars.nix checks them, on the
# Debian guest booted through OVMF (mk-start-script --uefi): a variable the host writes into
# the store before the first boot is seen and changed by the guest; what the guest wrote is in
# the store once the VM is off; the store cannot be used while the VM runs; a store the host
# rewrote boots again. Run by crates/cli/tests/e2e/efi.rs.
import unittest
import uuid

from test_driver.efi import EfiGuid, EfiVariable
from test_driver.errors import RequestedAssertionFailed

vendor_uuid = uuid.UUID("a19f72f8-b554-4bd7-a0c2-2762bd854691")
# How upstream's EfiVariable keeps a vendor GUID: in its on-disk byte order.
guid = uuid.UUID(bytes=vendor_uuid.bytes_le)
efivars = "/sys/firmware/efi/efivars"
flags = EfiVariable.Flags.NON_VOLATILE | EfiVariable.Flags.BOOTSERVICE_ACCESS | EfiVariable.Flags.RUNTIME_ACCESS


class TestConcurrentAccess(unittest.TestCase):
    def __init__(self, machine):
        super().__init__()
        self.machine = machine

    def test_concurrent_access(self):
        for use in (
            self.machine.read_efi_vars,
            self.machine.create_efi_vars,
            lambda: self.machine.write_efi_vars([]),
            self.machine.dump_efi_vars,
        ):
            with self.assertRaises(RequestedAssertionFailed) as raised:
                use()
            self.assertEqual(
                str(raised.exception),
                "System is currently running and concurrent reads / writes to the OVMF variables is unsupported",
            )


def find(variables, name):
    return next((v for v in variables if v.name == name and v.vendorUUID == guid), None)


def guest_value(name):
    """The variable's bytes as the guest reads them: 4 bytes of attributes, then the data."""
    return bytes.fromhex(machine.succeed(f"od -An -v -tx1 {efivars}/{name}-{vendor_uuid}"))


with subtest("a variable written before the first boot"):
    assert machine.efi_vars_path == machine.state_dir / "machine-efi-vars.fd", machine.efi_vars_path
    assert not machine.efi_vars_path.exists()
    assert machine.read_efi_vars() == []
    machine.create_efi_vars()
    try:
        machine.create_efi_vars()
        raise Exception("a second create_efi_vars() did not raise")
    except RequestedAssertionFailed as e:
        assert str(e) == "OVMF variables store exists", str(e)
    machine.write_efi_vars([EfiVariable(vendor_uuid=vendor_uuid, name="Demo", data=bytes([0x2A]), flags=flags)])
    (demo,) = machine.read_efi_vars()
    assert (demo.name, demo.vendorUUID, demo.data) == ("Demo", guid, b"\x2a"), demo
    # Upstream's reading: the attribute bits move from `flags` into the booleans.
    assert (demo.flags, demo.volatile, demo.boot_access, demo.runtime_access) == (0, False, True, True), demo

with subtest("the guest reads and changes it through OVMF"):
    machine.start()
    machine.wait_for_unit("multi-user.target")
    machine.succeed(f"mountpoint -q {efivars}")
    assert guest_value("Demo") == b"\x07\x00\x00\x00\x2a", guest_value("Demo")
    # Linux makes variables it does not know immutable; upstream's helper lifts that too.
    machine.succeed(f"chattr -i {efivars}/Demo-{vendor_uuid}")
    machine.succeed(f"printf '\\x07\\x00\\x00\\x00\\x2b' > {efivars}/Demo-{vendor_uuid}")
    machine.succeed(f"printf '\\x07\\x00\\x00\\x00from the guest' > {efivars}/FromGuest-{vendor_uuid}")
    TestConcurrentAccess(machine).test_concurrent_access()
    machine.crash()

with subtest("the host reads what the guest wrote"):
    machine.dump_efi_vars()
    variables = machine.read_efi_vars()
    demo = find(variables, "Demo")
    assert demo is not None, [v.name for v in variables]
    demo.print()
    assert demo.data == bytes([0x2B]), demo
    from_guest = find(variables, "FromGuest")
    assert from_guest is not None and from_guest.data == b"from the guest", from_guest
    # The firmware's own variables are there too, under their vendor.
    boot_order = next(v for v in variables if v.name == "BootOrder")
    assert boot_order.vendorUUID == EfiGuid.gEfiGlobalVariableGuid, boot_order

with subtest("a store the host rewrote boots again"):
    machine.write_efi_vars([EfiVariable(vendor_uuid=vendor_uuid, name="Second", data=b"\x01", flags=flags)])
    machine.start()
    machine.wait_for_unit("multi-user.target")
    assert guest_value("Second") == b"\x07\x00\x00\x00\x01", guest_value("Second")
    assert guest_value("Demo") == b"\x07\x00\x00\x00\x2b", guest_value("Demo")
    machine.shutdown()
