//! The foundation on the Debian guest, with systemd (tests/e2e/debian.py).

use crate::harness::{DEBIAN_LIMIT, Scenario, Tier, repo_file};

#[test]
fn systemd_units_timeouts_and_power_off() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Debian, &[]);
    let run = scenario.run(&repo_file("tests/e2e/debian.py"), &[], DEBIAN_LIMIT);
    run.assert_status(0);
    for subtest in ["systemd units", "a guest-side timeout", "power off"] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    run.assert_stderr_contains("machine: (finished: waiting for the VM to power off, in ");
}
