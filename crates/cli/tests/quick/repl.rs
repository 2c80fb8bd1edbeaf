//! The interactive REPL (`nixos-test-driver --interactive`) on a fake machine, driven as a user
//! drives it: in a real terminal (tmux), typing commands, pressing Ctrl-C during a command and
//! Ctrl-D to leave; and the switch watcher, which runs in a session too: a VLAN switch that
//! dies while the prompt is open is named at once.

use std::time::{Duration, Instant};

use crate::common::scenario::{describe, has_name, send_signal};
use crate::common::tmux::{Tmux, shell_line};
use crate::harness::{Run, Scenario};

/// How long the terminal may take to show what a step expects.
const STEP: Duration = Duration::from_secs(20);

/// A session of the driver on the scenario's machines, in a terminal of its own.
fn session(scenario: &Scenario) -> Tmux {
    let script = scenario.script("start_all()\nprint('the test ' + alpha.succeed('echo script ran'))\n");
    let mut driver = scenario.command(&["--interactive"]);
    scenario.add_machines(&mut driver, &script);
    let tmux = Tmux::start(scenario.path(), &shell_line(&driver, "; echo driver exited with status $?; sleep 600"));
    tmux.wait_for(">>> ", STEP);
    tmux
}

/// After the session ended with `status`: nothing of the scenario runs and its state is gone.
fn assert_ended(scenario: &Scenario, tmux: &Tmux, status: i32) {
    tmux.wait_for(&format!("driver exited with status {status}\n"), STEP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tmux.processes_naming(scenario.path()).is_empty() {
        let left = describe(&tmux.processes_naming(scenario.path()));
        assert!(Instant::now() < deadline, "left running after the REPL ended: {left:?}\n{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    scenario.assert_state_removed(&Run { status: Some(status), stdout: String::new(), stderr: tmux.screen() });
}

/// Wait until a process named `name` runs for the scenario; its pid.
fn wait_for_process(scenario: &Scenario, tmux: &Tmux, name: &str) -> i32 {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(pid) = tmux.processes_naming(scenario.path()).into_iter().find(|pid| has_name(*pid, name)) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no {name} process:\n{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_repl_runs_commands_survives_ctrl_c_and_stops_on_ctrl_d() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let tmux = session(&scenario);

    // The first command boots the machine; test_script() runs the script in the session.
    tmux.type_line("alpha.succeed('echo hello from the ' + 'guest')");
    tmux.wait_for("'hello from the guest\\n'", STEP);
    tmux.type_line("test_script()");
    tmux.wait_for("\nthe test script ran\n", STEP);

    // Ctrl-C interrupts the command once it runs in the guest; the prompt comes back and the
    // machine goes on.
    tmux.type_line("alpha.succeed('sleep 30')");
    tmux.wait_for("alpha: must succeed: sleep 30", STEP);
    wait_for_process(&scenario, &tmux, "sleep");
    tmux.send(&["C-c"]);
    tmux.wait_for("\nKeyboardInterrupt\n", STEP);
    tmux.type_line("print(6 * 7)");
    tmux.wait_for("\n42\n", STEP);
    assert!(!tmux.screen().contains("driver exited"), "Ctrl-C ended the REPL:\n{}", tmux.screen());
    wait_for_process(&scenario, &tmux, "ntd-fake-qemu");

    // Ctrl-D leaves: the machine is stopped, the history kept.
    tmux.send(&["C-d"]);
    assert_ended(&scenario, &tmux, 0);
    assert!(tmux.screen().contains("\nkill QemuMachine (pid "), "{}", tmux.screen());
    let history = std::fs::read_to_string(scenario.path().join(".nixos-test-history")).expect("the history");
    assert!(history.contains("alpha.succeed('sleep 30')\n"), "{history}");
}

#[test]
fn the_repl_names_a_switch_that_dies_while_the_prompt_is_open() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    scenario.vlan(1);
    let tmux = session(&scenario);
    tmux.type_line("alpha.succeed('echo up')");
    tmux.wait_for("'up\\n'", STEP);
    tmux.wait_for_count(">>> ", 2, STEP);

    // The prompt is idle when the switch dies.
    send_signal(wait_for_process(&scenario, &tmux, "vde_switch"), libc::SIGKILL);
    let message =
        "vlan 1: vde_switch exited unexpectedly with signal 9 (SIGKILL); the machines on this VLAN lost their network";
    tmux.wait_for(message, STEP);
    tmux.type_line("print(6 * 7)");
    tmux.wait_for("\n42\n", STEP);

    // Leaving reports the failure, as the end of a run does.
    tmux.send(&["C-d"]);
    assert_ended(&scenario, &tmux, 1);
    assert!(tmux.screen().contains(&format!("\n!!! {message}\n")), "{}", tmux.screen());
}
