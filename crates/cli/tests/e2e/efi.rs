//! UEFI variables on the Debian guest booted through OVMF (tests/e2e/efi.py): upstream's
//! `efivars` test, ported.

use crate::harness::{DEBIAN_LIMIT, Scenario, Tier, repo_file};

#[test]
fn uefi_variables_cross_between_host_and_guest() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Debian, &["--uefi"]);
    let run = scenario.run(&repo_file("tests/e2e/efi.py"), &[], DEBIAN_LIMIT * 2);
    run.assert_status(0);
    for subtest in [
        "a variable written before the first boot",
        "the guest reads and changes it through OVMF",
        "the host reads what the guest wrote",
        "a store the host rewrote boots again",
    ] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    // dump_efi_vars() and print() write ovmfvartool's form to stdout: the firmware's variables
    // (BootOrder, under its vendor's name) and the one the guest changed.
    for line in [
        "Name:                'BootOrder'",
        "Vendor UUID:         gEfiGlobalVariableGuid",
        "Name:                'Demo'",
        "Vendor UUID:         f8729fa1-54b5-d74b-a0c2-2762bd854691",
        "Name:                'FromGuest'",
    ] {
        assert!(run.stdout.lines().any(|l| l == line), "no {line:?} in stdout:\n{}", run.stdout);
    }
}
