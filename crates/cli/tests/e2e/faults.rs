//! Faults while a test runs: QEMU killed under a command, a wait and a screenshot, and a guest
//! that powers itself off. Each ends the test with one error naming the machine and how QEMU
//! ended, exit status 1, no Rust panic, and nothing left running.

use crate::harness::{Run, SMOKE_LIMIT, Scenario, Tier};

/// Run `body` after booting one smoke-tier machine; `{kill}` in it starts a host process
/// that SIGKILLs QEMU a second later.
fn run_fault(body: &str) -> Run {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let kill = r#"subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {machine.pid}"])"#;
    let script = format!("import subprocess\nstart_all()\nmachine.succeed('true')\n{}\n", body.replace("{kill}", kill));
    let script = scenario.write("test.py", &script);
    let run = scenario.run(&script, &[], SMOKE_LIMIT);
    run.assert_status(1);
    assert!(!run.stderr.contains("panicked"), "a Rust panic:\n{}", run.stderr);
    run
}

#[test]
fn qemu_killed_during_a_command() {
    let run = run_fault("{kill}\nmachine.succeed('sleep 30')");
    run.assert_stderr_contains(
        "MachineError: machine: the backdoor shell disconnected while running `sleep 30` \
         (QEMU exited with signal 9 (SIGKILL))",
    );
}

#[test]
fn qemu_killed_during_a_wait() {
    let run = run_fault("{kill}\nmachine.wait_for_file('/nonexistent')");
    run.assert_stderr_contains("MachineError: machine: the backdoor shell disconnected while waiting until `");
    run.assert_stderr_contains("succeeds (QEMU exited with signal 9 (SIGKILL))");
}

#[test]
fn qemu_killed_during_screenshots() {
    let run = run_fault("{kill}\nfor i in range(10000):\n    machine.screenshot(f'shot-{i}')");
    run.assert_stderr_contains("MachineError: machine: ");
    run.assert_stderr_contains("(QEMU exited with signal 9 (SIGKILL))");
}

#[test]
fn a_guest_that_powers_itself_off() {
    let run = run_fault(
        "machine.execute('(sleep 1; poweroff -f) >/dev/null 2>&1 &')\nimport time\ntime.sleep(3)\nmachine.succeed('true')",
    );
    run.assert_stderr_contains(
        "machine: the backdoor shell disconnected while running `true` (QEMU exited with exit code 0)",
    );
}
