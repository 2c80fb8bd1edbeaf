//! Failures give one clear message and the right exit status, and leave nothing running.

use std::time::Duration;

use crate::harness::{SMOKE_LIMIT, Scenario, Tier, repo_file};

#[test]
fn qemu_that_exits_at_once_is_reported_with_its_stderr() {
    let scenario = Scenario::new();
    let script = scenario.write(
        "run-broken-vm",
        "#!/bin/sh\necho 'about to fail' >&2\nexec qemu-system-x86_64 -kernel /nonexistent/kernel \"$@\"\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let test = scenario.write("test.py", "start_all()\nbroken.succeed('true')\n");
    let mut command = scenario.command(&[]);
    command.arg(&test).arg("--start-scripts").arg(&script);
    let run = scenario.run_command(command, Duration::from_secs(60));
    run.assert_status(1);
    run.assert_stderr_contains("broken: QEMU exited with exit code 1 before ");
    run.assert_stderr_contains("its last output:\n!!!     about to fail\n");
    run.assert_stderr_contains("could not open kernel file '/nonexistent/kernel'");
}

#[test]
fn missing_start_script_is_a_usage_error() {
    let scenario = Scenario::new();
    let test = scenario.write("test.py", "start_all()\n");
    let missing = scenario.path().join("bin/run-nope-vm");
    let mut command = scenario.command(&[]);
    command.arg(&test).arg("--start-scripts").arg(&missing);
    let run = scenario.run_command(command, Duration::from_secs(30));
    run.assert_status(2);
    run.assert_stderr_contains(&format!("nixos-test-driver: error: start script {} does not exist", missing.display()));
}

#[test]
fn global_timeout_interrupts_python_code() {
    let scenario = Scenario::new();
    let run =
        scenario.run(&repo_file("tests/e2e/global_timeout_in_python.py"), &["--global-timeout", "3"], SMOKE_LIMIT);
    run.assert_status(143);
    run.assert_stderr_contains("Test will time out and terminate in 3.0 seconds");
    run.assert_stderr_contains("timeout reached; test terminating...");
    run.assert_stderr_contains("!!! the test was stopped by its global timeout (3 seconds)");
}

#[test]
fn global_timeout_interrupts_a_guest_command() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let run =
        scenario.run(&repo_file("tests/e2e/global_timeout_in_command.py"), &["--global-timeout", "20"], SMOKE_LIMIT);
    run.assert_status(143);
    run.assert_stderr_contains("machine: must succeed: sleep 600");
    run.assert_stderr_contains("timeout reached; test terminating...");
    run.assert_stderr_contains("!!! the test was stopped by its global timeout (20 seconds)");
    scenario.assert_state_removed(&run);
}

#[test]
fn guest_that_never_connects_gives_up_after_the_connect_timeout() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    // Longer than 30 s, to see upstream's progress lines.
    let mut command = scenario.command(&["--connect-timeout", "32"]);
    // rdinit= replaces the guest's init: a shell on the serial port, no backdoor.
    command.env("QEMU_KERNEL_PARAMS", "rdinit=/bin/sh");
    command
        .arg(repo_file("tests/e2e/never_connects.py"))
        .arg("--start-scripts")
        .arg(scenario.path().join("bin/run-machine-vm"));
    let run = scenario.run_command(command, SMOKE_LIMIT);
    run.assert_status(1);
    run.assert_stderr_contains("machine: Guest root shell did not produce any data yet...");
    run.assert_stderr_contains("machine:   To debug, enter the VM and run 'systemctl status backdoor.service'.");
    run.assert_stderr_contains("machine: the guest's backdoor shell did not connect within 32 seconds");
    run.assert_stderr_contains("last serial console lines:");
}

#[test]
fn syntax_error_names_the_line() {
    let scenario = Scenario::new();
    let run = scenario.run(&repo_file("tests/e2e/syntax_error.py"), &[], Duration::from_secs(30));
    run.assert_status(1);
    run.assert_stderr_contains("!!! the test script has a syntax error on line 2: ");
}

#[test]
fn invalid_config_is_a_usage_error() {
    let scenario = Scenario::new();
    let config = scenario.write(
        "config.json",
        r#"{"vms": {}, "containers": {}, "global_timeout": 60, "enable_ssh_backdoor": false,
            "test_script": "t.py"}"#,
    );
    let run = scenario.run_command(scenario.command(&["--config", &config.to_string_lossy()]), Duration::from_secs(30));
    run.assert_status(2);
    run.assert_stderr_contains("missing field `vlans`");
}
