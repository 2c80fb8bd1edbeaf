//! Faults while a test runs: QEMU killed under a command, a wait and a screenshot, and a guest
//! that powers itself off. Each ends the test with one error naming the machine and how QEMU
//! ended, exit status 1, no Rust panic, and nothing left running.

use crate::harness::{DEBIAN_LIMIT, Run, SMOKE_LIMIT, Scenario, Tier};

/// A guest-side wait until the command under test has started (it touches /tmp/running), so a
/// fault injected after it hits that command, however slowly the host sends it.
const RUNNING: &str = "until test -e /tmp/running; do sleep 0.1; done";

/// Run `body` after booting one smoke-tier machine; `{kill}` in it starts a host process
/// that SIGKILLs QEMU a second later.
fn run_fault(body: &str) -> Run {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let kill = r#"subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {machine.pid}"])"#;
    let script = format!(
        "import subprocess\nstart_all()\nmachine.succeed('true')\n{}\n",
        body.replace("{kill}", kill).replace("{running}", RUNNING)
    );
    let script = scenario.write("test.py", &script);
    let run = scenario.run(&script, &[], SMOKE_LIMIT);
    run.assert_status(1);
    assert!(!run.stderr.contains("panicked at"), "a Rust panic:\n{}", run.stderr);
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

#[test]
fn a_kernel_panic_during_a_command() {
    // QEMU keeps running (the guest reboots after `panic=1`): only the console tells.
    let run = run_fault(
        "machine.execute('({running}; echo c > /proc/sysrq-trigger) >/dev/null 2>&1 &')\n\
         machine.succeed('touch /tmp/running; sleep 30')",
    );
    run.assert_stderr_contains(
        "MachineError: machine: the backdoor shell disconnected while running `touch /tmp/running; sleep 30` \
         (the guest kernel panicked: Kernel panic - not syncing: sysrq triggered crash)",
    );
}

#[test]
fn the_backdoor_shell_killed_on_the_smoke_tier() {
    // Without a guest-side timeout the command runs in the backdoor's own subshell, where
    // `$$` is the backdoor shell; the smoke tier's init powers off when it dies.
    let run = run_fault(
        "machine.execute('({running}; kill -9 $$) >/dev/null 2>&1 &', timeout=None)\n\
         machine.succeed('touch /tmp/running; sleep 30')",
    );
    run.assert_stderr_contains(
        "MachineError: machine: the backdoor shell disconnected while running `touch /tmp/running; sleep 30` \
         (QEMU exited with exit code 0)",
    );
}

/// One Debian machine; `body` runs after it is up.
fn run_debian_fault(body: &str) -> Run {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Debian, &[]);
    let body = body.replace("{running}", RUNNING);
    let script = format!("import subprocess\nmachine.wait_for_unit('multi-user.target')\n{body}\n");
    let script = scenario.write("test.py", &script);
    let run = scenario.run(&script, &[], DEBIAN_LIMIT);
    run.assert_status(1);
    assert!(!run.stderr.contains("panicked at"), "a Rust panic:\n{}", run.stderr);
    scenario.assert_state_removed(&run);
    run
}

#[test]
fn the_backdoor_service_killed_while_qemu_runs() {
    // systemd logs the end of backdoor.service to the console (as NixOS forwards the journal);
    // nothing else would ever answer the command in flight.
    let run = run_debian_fault(
        "machine.execute('({running}; systemctl kill --kill-who=main --signal=KILL backdoor.service) \
         >/dev/null 2>&1 &')\nmachine.succeed('touch /tmp/running; sleep 60')",
    );
    run.assert_stderr_contains(
        "MachineError: machine: the backdoor shell disconnected while running `touch /tmp/running; sleep 60` \
         (the backdoor shell exited: backdoor.service: Main process exited, code=killed, status=9/KILL)",
    );
}

#[test]
fn qemu_killed_during_wait_for_unit() {
    let run = run_debian_fault(
        "machine.succeed('systemd-run --no-block --unit=slow --service-type=oneshot sleep 600')\n\
         subprocess.Popen(['sh', '-c', f'sleep 1; kill -9 {machine.pid}'])\n\
         machine.wait_for_unit('slow.service')",
    );
    run.assert_stderr_contains(
        "MachineError: machine: the backdoor shell disconnected while waiting for unit slow.service",
    );
    run.assert_stderr_contains("(QEMU exited with signal 9 (SIGKILL))");
}

#[test]
fn a_vde_switch_that_dies_stops_the_test() {
    let mut scenario = Scenario::new();
    scenario.network(Tier::Smoke, &[("machine", &[1])]);
    let script = scenario.write(
        "test.py",
        "import subprocess, time\nstart_all()\nmachine.succeed('true')\n\
         subprocess.run(['kill', '-9', str(vlans[0].pid)], check=True)\n\
         time.sleep(60)\nprint('the script went on')\n",
    );
    let run = scenario.run(&script, &[], SMOKE_LIMIT);
    run.assert_status(1);
    run.assert_stderr_contains(
        "vlan 1: vde_switch exited unexpectedly with signal 9 (SIGKILL); the machines on this VLAN lost their network",
    );
    assert!(!run.stdout.contains("the script went on"), "the script was not stopped:\n{}", run.stdout);
    assert!(!run.stderr.contains("Traceback"), "a traceback for a switch failure:\n{}", run.stderr);
    scenario.assert_state_removed(&run);
}

#[test]
fn a_kernel_panic_between_commands_fails_the_next_one() {
    // Nothing runs when the guest panics; the next command is not sent into the void.
    let run = run_fault(
        "machine.execute('(sleep 1; echo c > /proc/sysrq-trigger) >/dev/null 2>&1 &')\nimport time\ntime.sleep(4)\n\
         machine.succeed('true')",
    );
    run.assert_stderr_contains(
        "MachineError: machine: the backdoor shell disconnected before running `true` \
         (the guest kernel panicked: Kernel panic - not syncing: sysrq triggered crash)",
    );
}
