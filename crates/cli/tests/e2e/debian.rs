//! The methods that need systemd, X11 or virtual consoles, on the Debian guest
//! (tests/e2e/debian.py).

use crate::harness::{DEBIAN_LIMIT, Scenario, Tier, repo_file};

#[test]
fn systemd_ports_consoles_x11_and_power_off() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Debian, &[]);
    let run = scenario.run(&repo_file("tests/e2e/debian.py"), &[], DEBIAN_LIMIT * 2);
    run.assert_status(0);
    for subtest in [
        "systemd units",
        "user units",
        "ports and sockets",
        "virtual consoles",
        "X11",
        "a guest-side timeout",
        "power off",
    ] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    run.assert_stderr_contains("machine: (finished: waiting for the VM to power off, in ");
}

#[test]
fn switch_root_from_a_stage_1_backdoor() {
    let mut scenario = Scenario::new();
    let script = scenario.machine("machine", Tier::Debian, &[]);
    let mut command = scenario.command(&[]);
    command
        .env("QEMU_KERNEL_PARAMS", "ntd.initrd-backdoor=1")
        .arg(repo_file("tests/e2e/switch_root.py"))
        .arg("--start-scripts")
        .arg(&script);
    let run = scenario.run_command(command, DEBIAN_LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains("machine: (finished: waiting for unit initrd.target, in ");
    // Two backdoors announced themselves: stage 1's and stage 2's.
    assert_eq!(run.stderr.matches("machine: connected to guest root shell").count(), 2, "{}", run.stderr);
}
