//! Failures reported as upstream reports them: a failed assertion with only the test script's
//! frames, a machine error (a QEMU that exits at start, a guest kernel panic) with its full
//! message and traceback, a syntax error with its line, an undefined name with the machine
//! it probably meant; the failure artifacts a failed command leaves. Each exits 1; the checks after every run make sure the machines and
//! the switch are gone.

use crate::harness::{Scenario, test_errors};

#[test]
fn a_failed_succeed_shows_only_the_scripts_frames() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    scenario.vlan(1);
    let run = scenario.run_script(
        "def check_the_guest():\n\
         \x20   alpha.succeed(\"echo some output; exit 3\")\n\
         \n\
         start_all()\n\
         with subtest(\"the guest is fine\"):\n\
         \x20   check_the_guest()\n\
         alpha.succeed(\"echo never reached\")\n",
        &[],
    );
    run.assert_status(1);
    run.assert_stderr_contains("\nalpha: must succeed: echo some output; exit 3\n");
    run.assert_stderr_contains("\nalpha: output: some output\n");
    let errors = test_errors(&run.stderr);
    assert_eq!(
        errors,
        [
            "Test \"the guest is fine\" failed with error: \"command `echo some output; exit 3` failed (exit code 3)\"",
            "Traceback (most recent call last):",
            "  File \"<string>\", line 6, in <module>",
            "    check_the_guest()",
            "  File \"<string>\", line 2, in check_the_guest",
            "    alpha.succeed(\"echo some output; exit 3\")",
            "",
            "RequestedAssertionFailed: command `echo some output; exit 3` failed (exit code 3)",
        ],
        "{}",
        run.stderr
    );
    // The failed block ends without upstream's `finished` line; nothing after it ran.
    assert!(!run.stderr.contains("(finished: must succeed: echo some output"), "{}", run.stderr);
    assert!(!run.stderr.contains("(finished: subtest: the guest is fine"), "{}", run.stderr);
    assert!(!run.stderr.contains("echo never reached"), "{}", run.stderr);
    assert!(!run.stderr.contains("test script finished"), "{}", run.stderr);
    // The failure artifacts: the fake's screen, console and journal, and the command's exact
    // output.
    let out = scenario.out_dir();
    let mut written: Vec<String> =
        std::fs::read_dir(&out).expect("out").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    written.sort();
    assert_eq!(
        written,
        [
            "alpha-command-failed-console.txt",
            "alpha-command-failed-journal.txt",
            "alpha-command-failed-output.txt",
            "alpha-command-failed-screen.png"
        ],
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(out.join("alpha-command-failed-output.txt")).expect("output"), b"some output\n");
    run.assert_stderr_contains(&format!("the failure left 4 file(s) in {}:", out.display()));
}

#[test]
fn a_qemu_that_exits_at_start_is_a_machine_error_with_its_output() {
    let mut scenario = Scenario::new();
    scenario.machine(
        "broken",
        &["--fake-exit-at-start", "1:qemu-system-x86_64: -drive file=/nix/store/disk.qcow2: Could not open"],
    );
    let run = scenario.run_script("start_all()\nbroken.succeed('true')\n", &[]);
    run.assert_status(1);
    let errors = test_errors(&run.stderr);
    // A machine error keeps its whole traceback (not only the script's frames) and message.
    assert_eq!(errors.first(), Some(&"Traceback (most recent call last):"), "{}", run.stderr);
    assert!(errors.contains(&"  File \"<string>\", line 1, in <module>"), "{}", run.stderr);
    assert!(errors.iter().any(|line| line.starts_with("  File \"ntd/driver.py\"")), "{}", run.stderr);
    run.assert_stderr_contains(
        "!!! ntd.errors.MachineError: Failed to start the following machines:\n\
         !!! broken: QEMU exited with exit code 1 before connecting to the driver; its last output:\n\
         !!!     qemu-system-x86_64: -drive file=/nix/store/disk.qcow2: Could not open\n",
    );
    assert!(!run.stderr.contains("must succeed: true"), "{}", run.stderr);
}

#[test]
fn a_kernel_panic_under_a_command_is_a_machine_error() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let run = scenario.run_script("alpha.succeed('true')\nalpha.succeed('fake-panic')\n", &[]);
    run.assert_status(1);
    run.assert_stderr_contains(
        "!!! ntd.errors.MachineError: alpha: the backdoor shell disconnected while running `fake-panic` \
         (the guest kernel panicked: Kernel panic - not syncing: fake panic); last serial console lines:\n",
    );
    // The console's last lines, the panic among them, follow the message.
    let errors = test_errors(&run.stderr);
    let message = errors.iter().position(|line| line.contains("the backdoor shell disconnected")).expect("message");
    assert!(
        errors[message + 1..].iter().any(|line| line.ends_with("Kernel panic - not syncing: fake panic")),
        "{}",
        run.stderr
    );
}

#[test]
fn a_guest_that_never_connects_gives_up_after_the_connect_timeout() {
    let mut scenario = Scenario::new();
    scenario.machine("mute", &["--fake-no-backdoor"]);
    let run = scenario.run_script("start_all()\nmute.succeed('true')\n", &["--connect-timeout", "1"]);
    run.assert_status(1);
    run.assert_stderr_contains(
        "\n!!! ntd.errors.MachineError: mute: the guest's backdoor shell did not connect within 1 seconds; is \
         backdoor.service running?; last serial console lines:\n",
    );
    run.assert_stderr_contains("systemd[1]: Reached target Multi-User System.\n");
}

#[test]
fn a_syntax_error_names_the_line_and_starts_nothing() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let run = scenario.run_script("start_all()\nif True:\nalpha.succeed('true')\n", &[]);
    run.assert_status(1);
    assert_eq!(
        test_errors(&run.stderr),
        [
            "the test script has a syntax error on line 3: expected an indented block after 'if' statement on line 2",
            "    alpha.succeed('true')",
        ],
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("QEMU running"), "{}", run.stderr);
}

#[test]
fn a_misspelt_machine_gets_a_hint() {
    let mut scenario = Scenario::new();
    scenario.machine("server", &[]);
    let run = scenario.run_script("start_all()\nservr.succeed('true')\n", &[]);
    run.assert_status(1);
    run.assert_stderr_contains("\nNameError: name 'servr' is not defined");
    run.assert_stderr_contains("\n!!! `servr` is not defined in the test script; did you mean the machine `server`?\n");
}

#[test]
fn sys_exit_sets_the_exit_status() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let run = scenario.run_script("import sys\nalpha.succeed('true')\nsys.exit(7)\n", &[]);
    run.assert_status(7);
    assert!(!run.stderr.contains("test script finished"), "{}", run.stderr);
}
