//! Bad input: each gives one clear error and the right exit status (2 for a bad command line
//! or configuration, before anything starts; 1 for a test that fails), and leaves nothing
//! running. (More cases: `failures`; quoting and odd output bytes: tests/e2e/commands.py.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{Run, SMOKE_LIMIT, Scenario, Tier};

const NO_VM_LIMIT: Duration = Duration::from_secs(60);

fn executable(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn run_with_script(scenario: &Scenario, script: &Path, extra: &[&str]) -> Run {
    let test = scenario.write("test.py", "start_all()\n");
    let mut command = scenario.command(extra);
    command.arg(&test).arg("--start-scripts").arg(script);
    scenario.run_command(command, NO_VM_LIMIT)
}

#[test]
fn a_start_script_that_is_not_executable() {
    let scenario = Scenario::new();
    let script = scenario.write("run-plain-vm", "#!/bin/sh\nexit 0\n");
    executable(&script, 0o644);
    let run = run_with_script(&scenario, &script, &[]);
    run.assert_status(2);
    run.assert_stderr_contains(&format!(
        "nixos-test-driver: error: start script {} is not executable",
        script.display()
    ));
    assert_eq!(run.stderr.lines().count(), 1, "more than one line:\n{}", run.stderr);
}

#[test]
fn a_start_script_that_exits_at_once_is_quoted() {
    let scenario = Scenario::new();
    let script = scenario
        .write("run-early-vm", "#!/bin/sh\necho 'error: disk image /nonexistent.qcow2 not found' >&2\nexit 3\n");
    executable(&script, 0o755);
    let run = run_with_script(&scenario, &script, &[]);
    run.assert_status(1);
    run.assert_stderr_contains("early: QEMU exited with exit code 3 before ");
    run.assert_stderr_contains("error: disk image /nonexistent.qcow2 not found");
    assert!(!run.stderr.contains("panicked at"), "a Rust panic:\n{}", run.stderr);
}

#[test]
fn a_config_that_is_not_json() {
    let scenario = Scenario::new();
    let config = scenario.write("config.json", "{\"vms\": {},\n  \"vlans\": [1,\n");
    let run = scenario.run_command(scenario.command(&["--config", &config.to_string_lossy()]), NO_VM_LIMIT);
    run.assert_status(2);
    run.assert_stderr_contains(&format!(
        "nixos-test-driver: error: invalid driver configuration {}: ",
        config.display()
    ));
    run.assert_stderr_contains("at line 3 column 0");
    assert_eq!(run.stderr.lines().count(), 1, "more than one line:\n{}", run.stderr);
}

#[test]
fn a_missing_config() {
    let scenario = Scenario::new();
    let missing = scenario.path().join("nope.json");
    let run = scenario.run_command(scenario.command(&["--config", &missing.to_string_lossy()]), NO_VM_LIMIT);
    run.assert_status(2);
    run.assert_stderr_contains(&missing.display().to_string());
    assert_eq!(run.stderr.lines().count(), 1, "more than one line:\n{}", run.stderr);
}

#[test]
fn a_name_that_is_not_a_machine() {
    let mut scenario = Scenario::new();
    scenario.machine("server", Tier::Smoke, &[]);
    let script = scenario.write("test.py", "servr.succeed('true')\n");
    let run = scenario.run(&script, &[], SMOKE_LIMIT);
    run.assert_status(1);
    run.assert_stderr_contains("NameError: name 'servr' is not defined");
    run.assert_stderr_contains("`servr` is not defined in the test script; did you mean the machine `server`?");
}

#[test]
fn a_missing_output_directory() {
    let scenario = Scenario::new();
    let missing = scenario.path().join("no/such/dir");
    let test = scenario.write("test.py", "pass\n");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nixos-test-driver"));
    command.env("TMPDIR", scenario.tmp_dir()).arg("-o").arg(&missing).arg(&test);
    let run = scenario.run_command(command, NO_VM_LIMIT);
    run.assert_status(2);
    run.assert_stderr_contains(&format!("nixos-test-driver: error: {} is not a directory", missing.display()));
}

/// A read-only file system mounted for the test (root writes into any directory, whatever
/// its mode); unmounted when dropped.
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn new(path: std::path::PathBuf) -> ReadOnlyMount {
        std::fs::create_dir_all(&path).expect("mount point");
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", "ro,size=1m", "ntd-ro"]).arg(&path).status();
        assert!(status.is_ok_and(|s| s.success()), "mount a read-only tmpfs (the e2e tests run as root)");
        ReadOnlyMount(path)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_output_directory() {
    let scenario = Scenario::new();
    let read_only = ReadOnlyMount::new(scenario.path().join("ro"));
    let test = scenario.write("test.py", "pass\n");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nixos-test-driver"));
    command.env("TMPDIR", scenario.tmp_dir()).arg("-o").arg(&read_only.0).arg(&test);
    let run = scenario.run_command(command, NO_VM_LIMIT);
    run.assert_status(2);
    run.assert_stderr_contains(&format!("{} is not a writeable directory", read_only.0.display()));
}

#[test]
fn a_read_only_tmpdir() {
    let scenario = Scenario::new();
    let read_only = ReadOnlyMount::new(scenario.path().join("ro"));
    let test = scenario.write("test.py", "pass\n");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nixos-test-driver"));
    command.env("TMPDIR", &read_only.0).arg("-o").arg(scenario.out_dir()).arg(&test);
    let run = scenario.run_command(command, NO_VM_LIMIT);
    assert_ne!(run.status, Some(0), "{}", run.stderr);
    run.assert_stderr_contains(&format!("{}", read_only.0.display()));
    run.assert_stderr_contains("is not writable");
    assert!(!run.stderr.contains("panicked at"), "a Rust panic:\n{}", run.stderr);
}
