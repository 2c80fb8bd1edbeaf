//! The foundation's machine methods, on one smoke-tier machine (tests/e2e/commands.py).

use crate::harness::{SMOKE_LIMIT, Scenario, Tier, repo_file};

#[test]
fn machine_methods_behave_as_upstreams() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let run = scenario.run(&repo_file("tests/e2e/commands.py"), &[], SMOKE_LIMIT * 2);
    run.assert_status(0);
    for subtest in [
        "output comes back byte for byte",
        "commands reach the shell exactly as written",
        "commands are isolated from each other and from the protocol",
        "timeouts",
        "waits for files and console text",
        "files between host and guest",
        "shell_interact",
        "waits",
        "monitor, QMP and console",
        "crash, start again, reboot, shutdown",
    ] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    run.assert_stderr_contains("machine: forced crash");
}
