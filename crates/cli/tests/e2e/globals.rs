//! The test-script globals (tests/e2e/globals.py) and console_interact's stdin.

use crate::harness::{SMOKE_LIMIT, Scenario, Tier, repo_file};

#[test]
fn globals_behave_as_upstreams() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let other = scenario.start_script("other", Tier::Smoke, &[]);
    let mut command = scenario.command(&[]);
    command
        .env("E2E_OTHER_START_SCRIPT", &other)
        .arg(repo_file("tests/e2e/globals.py"))
        .arg("--start-scripts")
        .arg(scenario.path().join("bin/run-machine-vm"));
    let run = scenario.run_command(command, SMOKE_LIMIT * 2);
    run.assert_status(0);
    for subtest in [
        "classes and machine lists",
        "retry",
        "subtests nest",
        "the log",
        "polling conditions",
        "create_machine",
        "join_all",
    ] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    // Failing subtests report at every level, as upstream.
    run.assert_stderr_contains("!!! Test \"inner-failing\" failed with error: \"inner went wrong\"");
    run.assert_stderr_contains("!!! Test \"outer-failing\" failed with error: \"inner went wrong\"");
    // The log object.
    run.assert_stderr_contains("\na plain line\n");
    run.assert_stderr_contains("\nan info line\n");
    run.assert_stderr_contains("\na nested block\ninside the block\n(finished: a nested block, in ");
    run.assert_stderr_contains("\nmachine: a warning\n");
    // serial_stdout_off hides serial lines, serial_stdout_on shows them again.
    assert!(!run.stderr.contains("machine # hidden-serial"), "{}", run.stderr);
    run.assert_stderr_contains("machine # shown-serial");
    // Polling conditions log as upstream's.
    run.assert_stderr_contains("Checking polling condition 'the guest has no /tmp/broken'");
    run.assert_stderr_contains("Polling condition failed: the guest has no /tmp/broken");
    run.assert_stderr_contains("waiting for ready");
    // create_machine's machine is stopped with the rest.
    run.assert_stderr_contains("other: QEMU running (pid ");
}

#[test]
fn console_interact_forwards_stdin_to_the_serial_console() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let mut command = scenario.command(&[]);
    command
        .arg(repo_file("tests/e2e/console_interact.py"))
        .arg("--start-scripts")
        .arg(scenario.path().join("bin/run-machine-vm"));
    let run = scenario.run_command_with_stdin(command, Some(b"typed-on-the-console\n"), SMOKE_LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains("machine: Terminal is ready (there is no prompt):");
    run.assert_stderr_contains("machine: Closing connection to the console");
}
