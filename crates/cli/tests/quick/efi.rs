//! The EFI helpers and `test_driver.efi` as test scripts use them, on a fake machine: upstream's
//! `EfiVariable` semantics (the vendor GUID's byte order, the inverted `state`, `flags` read
//! into booleans), its `EfiGuid` values, the machine's store (create, write, read, dump) and
//! its refusal while the machine runs. The real firmware's side is the end-to-end test's
//! (tests/e2e/efi.py).

use crate::harness::{LIMIT, Scenario};

const EFI: &str = r#"
import io
import uuid

import ntd.efi
from test_driver.efi import EfiGuid, EfiVariable, EfiVars, resolveUUID
from test_driver.errors import RequestedAssertionFailed

assert EfiVariable is ntd.efi.EfiVariable and EfiVars is ntd.efi.EfiVars

# Upstream's constants: GUIDs in on-disk order, resolving to ovmfvartool's names.
assert EfiGuid.gEfiGlobalVariableGuid == uuid.UUID("61dfe48b-ca93-d211-aa0d-00e098032b8c")
assert EfiGuid.gEfiSecureBootEnableDisableGuid == uuid.UUID("f0a30bc7-af08-4556-99c4-001009c93a44")
for name in [n for n in vars(EfiGuid) if n[0] in "gm"]:
    registered = "gEfiIscsiInitiatorNameProtocolGuid" if name == "gEfiIScsiInitiatorNameProtocolGuid" else name
    assert resolveUUID(getattr(EfiGuid, name)) == registered, name

vendor = uuid.UUID("a19f72f8-b554-4bd7-a0c2-2762bd854691")
guid = uuid.UUID(bytes=vendor.bytes_le)
flags = EfiVariable.Flags.NON_VOLATILE | EfiVariable.Flags.BOOTSERVICE_ACCESS | EfiVariable.Flags.RUNTIME_ACCESS
demo = EfiVariable(vendor_uuid=vendor, name="Demo", data=b"\x2a", flags=flags)
assert demo.vendorUUID == guid and str(demo.vendorUUID) == "f8729fa1-54b5-d74b-a0c2-2762bd854691"
assert (demo.state, demo.flags, demo.nameLen, demo.dataLen, demo.magic) == (0x3F, 7, 10, 1, 0x55AA)
assert not demo.isDeleted and not demo.volatile
assert EfiVariable(state=EfiVariable.State.VAR_ADDED).state == 0xC0, "upstream stores the state inverted"

raw = demo.serialize()
assert raw[:8] == bytes([0xAA, 0x55, 0x3F, 0x00, 7, 0, 0, 0]) and raw[44:60] == vendor.bytes_le, raw
assert raw[60:] == "Demo\0".encode("utf-16-le") + b"\x2a" and len(raw) == 71
stream = io.BytesIO(raw + b"\xff" + b"\xff" * 60)
back = EfiVariable.deserialize(stream)
assert stream.tell() == 72, "the padding to 4 bytes is consumed"
assert (back.name, back.vendorUUID, back.data, back.state) == ("Demo", guid, b"\x2a", 0x3F)
# Upstream's reading: the attribute bits move into the booleans.
assert (back.flags, back.volatile, back.boot_access, back.runtime_access) == (0, False, True, True)
assert EfiVariable.deserialize(stream) is None, "erased flash ends the variables"

doc = EfiVariable.deserializeFromDocument("gEfiGlobalVariableGuid", "X", {"Data": b"1", "Boot Access": True})
assert doc.vendorUUID == EfiGuid.gEfiGlobalVariableGuid and doc.boot_access and not doc.volatile

with subtest("the machine's store"):
    assert machine.efi_vars_path == machine.state_dir / "alpha-efi-vars.fd"
    assert machine.read_efi_vars() == [] and machine.efi_vars.read_content() is None
    machine.create_efi_vars()
    try:
        machine.create_efi_vars()
        raise Exception("a second create_efi_vars() did not raise")
    except RequestedAssertionFailed as e:
        assert str(e) == "OVMF variables store exists", str(e)
    machine.write_efi_vars([demo, EfiVariable(vendor_uuid=vendor, name="Other", data=b"", flags=flags)])
    demo.data = b"\x2b"
    machine.write_efi_vars([demo])
    read = machine.read_efi_vars()
    assert [(v.name, v.data, v.vendorUUID) for v in read] == [("Demo", b"\x2b", guid), ("Other", b"", guid)], read
    content = EfiVars(machine.efi_vars_path, machine).read_content()
    assert list(content) == [str(guid)] and list(content[str(guid)]) == ["Demo", "Other"], content
    assert machine.efi_vars.state_path == machine.efi_vars_path and machine.efi_vars.machine is machine
    machine.dump_efi_vars()

with subtest("not while the machine runs"):
    machine.start()
    for use in (
        machine.read_efi_vars,
        machine.create_efi_vars,
        lambda: machine.write_efi_vars([demo]),
        machine.dump_efi_vars,
        machine.efi_vars.read_content,
    ):
        try:
            use()
            raise Exception("the store was used while the machine runs")
        except RequestedAssertionFailed as e:
            assert str(e) == "System is currently running and concurrent reads / writes to the OVMF variables is unsupported", str(e)
    machine.shutdown()
    assert len(machine.read_efi_vars()) == 2
print("the EFI helpers hold")
"#;

#[test]
fn efi_helpers_and_variables_behave_as_upstreams() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let run = scenario.run(&scenario.script(EFI), &[], LIMIT);
    run.assert_status(0);
    let stdout: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(stdout.last(), Some(&"the EFI helpers hold"), "stdout:\n{}\n--- stderr\n{}", run.stdout, run.stderr);
    // dump_efi_vars(): ovmfvartool's printer on stdout, as the variables read back (attribute
    // bits moved out of `flags`, so none are named).
    let dump = stdout.iter().position(|line| *line == "Authenticated Variable").expect("a dump on stdout");
    assert_eq!(
        &stdout[dump..dump + 10],
        [
            "Authenticated Variable",
            "======================",
            "Name:                'Demo'",
            "Vendor UUID:         f8729fa1-54b5-d74b-a0c2-2762bd854691",
            "Monotonic Count:     0",
            "Public Key Index:    0",
            "State:               VAR_HEADER_VALID_ONLY | VAR_ADDED",
            "Flags:               ",
            "Data Length:         1 bytes",
            &format!("0)  2b{}|+|{}", " ".repeat(48), " ".repeat(15)),
        ]
    );
    assert_eq!(stdout.iter().filter(|line| **line == "Authenticated Variable").count(), 2);
}
