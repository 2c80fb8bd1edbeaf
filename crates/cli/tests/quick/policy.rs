//! The run's policy through the command line: the global timeout, SIGINT and SIGTERM during a
//! guest command, a script that swallows the interruption, a VLAN switch that dies, and
//! `--keep-machine-state`. Each run has a fake machine on VLAN 1, so a QEMU, its guest and a
//! `vde_switch` run when the driver is stopped; the checks after every run make sure none of
//! them is left and the state is removed (unless kept).

use std::time::{Duration, Instant};

use crate::common::scenario::{has_name, live_processes_mentioning, send_signal};
use crate::harness::{LIMIT, Run, Scenario, parse_xml, read_output};

/// One fake machine on VLAN 1 running `body` (after booting it) inside a subtest.
fn scenario_running(body: &str) -> (Scenario, std::path::PathBuf) {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    scenario.vlan(1);
    let script = scenario.script(&format!("start_all()\nalpha.succeed('true')\nwith subtest('long'):\n{body}\n"));
    (scenario, script)
}

/// A command that runs for longer than any of these tests.
const LONG_COMMAND: &str = "    alpha.succeed('sleep 30')";

/// Run the long command with both reports and send the driver `signal` once the command
/// runs in the guest; the reports must be complete, with the subtest failed.
fn signalled_during_the_command(signal: libc::c_int) -> Run {
    let (scenario, script) = scenario_running(LONG_COMMAND);
    let logfile = scenario.path().join("log.xml");
    let mut command = scenario.command(&["--junit-xml", "report.xml"]);
    command.env("LOGFILE", &logfile);
    scenario.add_machines(&mut command, &script);
    let run = scenario.run_signalled(command, "alpha: must succeed: sleep 30", Some("sleep"), signal, LIMIT);
    assert!(!run.stderr.contains("panicked at"), "a Rust panic:\n{}", run.stderr);
    let junit = read_output(&scenario.out_dir().join("report.xml"), &run);
    let doc = parse_xml("JUnit report", &junit);
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("long"))
        .unwrap_or_else(|| panic!("no test case for the subtest:\n{junit}"));
    assert!(case.children().any(|n| n.has_tag_name("failure")), "the interrupted subtest is no failure:\n{junit}");
    let xml = read_output(&logfile, &run);
    assert!(parse_xml("XML log", &xml).root_element().has_tag_name("logfile"), "{xml}");
    run
}

#[test]
fn the_global_timeout_stops_a_command() {
    let (scenario, script) = scenario_running(LONG_COMMAND);
    let start = Instant::now();
    let run = scenario.run(&script, &["--global-timeout", "3"], LIMIT);
    run.assert_status(143);
    run.assert_stderr_contains("Test will time out and terminate in 3.0 seconds\n");
    run.assert_stderr_contains("\ntimeout reached; test terminating...\n");
    run.assert_stderr_contains("\n!!! Test \"long\" was interrupted\n");
    run.assert_stderr_contains("\n!!! the test was stopped by its global timeout (3 seconds)\n");
    assert!(!run.stderr.contains("test script finished"), "{}", run.stderr);
    // Well before the command's 30 seconds (a generous bound: the machine and switch stop in
    // milliseconds).
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}\n{}", start.elapsed(), run.stderr);
}

#[test]
fn the_global_timeout_interrupts_python_code() {
    let (scenario, script) = scenario_running("    import time\n    time.sleep(30)");
    let run = scenario.run(&script, &["--global-timeout", "2"], LIMIT);
    run.assert_status(143);
    run.assert_stderr_contains("\ntimeout reached; test terminating...\n");
    run.assert_stderr_contains("\n!!! the test was stopped by its global timeout (2 seconds)\n");
}

#[test]
fn sigterm_during_the_boot_exits_143() {
    // The guest takes 20 seconds to connect; the first command waits for it.
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &["--fake-boot-delay", "20"]);
    scenario.vlan(1);
    let script = scenario.script("start_all()\nalpha.succeed('true')\n");
    let mut command = scenario.command(&[]);
    scenario.add_machines(&mut command, &script);
    let run =
        scenario.run_signalled(command, "alpha: waiting for the VM to finish booting", None, libc::SIGTERM, LIMIT);
    run.assert_status(143);
    run.assert_stderr_contains("\n!!! terminated by SIGTERM\n");
    assert!(!run.stderr.contains("connected to guest root shell"), "{}", run.stderr);
}

#[test]
fn sigint_during_a_command_exits_130() {
    let run = signalled_during_the_command(libc::SIGINT);
    run.assert_status(130);
    run.assert_stderr_contains("\n!!! Test \"long\" was interrupted\n");
    run.assert_stderr_contains("\n!!! interrupted\n");
    run.assert_stderr_contains("\ncleanup\n");
}

#[test]
fn sigterm_during_a_command_exits_143() {
    let run = signalled_during_the_command(libc::SIGTERM);
    run.assert_status(143);
    run.assert_stderr_contains("\nreceived SIGTERM; stopping the test\n");
    run.assert_stderr_contains("\n!!! terminated by SIGTERM\n");
    run.assert_stderr_contains("\ncleanup\n");
}

#[test]
fn an_interrupted_command_is_not_logged_as_finished() {
    // Upstream's `nested` prints `(finished: …)` only when its block ends normally; so does
    // ntd for a failed command. An interrupted one did not finish either.
    let run = signalled_during_the_command(libc::SIGINT);
    run.assert_status(130);
    assert!(
        !run.stderr.contains("alpha: (finished: must succeed: sleep 30, in "),
        "the interrupted command is logged as finished:\n{}",
        run.stderr
    );
}

/// A subtest that runs the long command again whenever it is interrupted.
const SWALLOWING: &str = "    while True:
        try:
            alpha.succeed('sleep 30')
        except BaseException as e:
            log.info(f'swallowed {type(e).__name__}')";

#[test]
fn a_script_that_swallows_sigterm_is_ended_by_the_second() {
    let (scenario, script) = scenario_running(SWALLOWING);
    let mut command = scenario.command(&[]);
    scenario.add_machines(&mut command, &script);
    let mut sent = 0;
    let run = scenario.run_driven(command, LIMIT, &mut |pid, stderr| {
        // The first SIGTERM during the command; the second once the script swallowed it and
        // runs the command again.
        let commands = stderr.matches("alpha: must succeed: sleep 30\n").count();
        if (sent == 0 && commands == 1)
            || (sent == 1 && stderr.contains("swallowed KeyboardInterrupt") && commands == 2)
        {
            send_signal(pid, libc::SIGTERM);
            sent += 1;
        }
    });
    assert_eq!(sent, 2, "the driver ended before the second SIGTERM:\n{}", run.stderr);
    run.assert_status(143);
    run.assert_stderr_contains("\nreceived SIGTERM; stopping the test\n");
    run.assert_stderr_contains("\nswallowed KeyboardInterrupt\n");
    run.assert_stderr_contains("\nthe test did not stop after SIGTERM; exiting\n");
}

#[test]
fn a_switch_that_dies_during_a_command_stops_the_test_and_is_named() {
    let (scenario, script) = scenario_running(LONG_COMMAND);
    let mut command = scenario.command(&[]);
    scenario.add_machines(&mut command, &script);
    let needle = scenario.path().to_string_lossy().into_owned();
    let mut killed = None;
    let run = scenario.run_driven(command, LIMIT, &mut |_, stderr| {
        if killed.is_none() && stderr.contains("alpha: must succeed: sleep 30\n") {
            let switch = live_processes_mentioning(&needle).into_iter().find(|pid| has_name(*pid, "vde_switch"));
            if let Some(pid) = switch {
                send_signal(pid, libc::SIGKILL);
                killed = Some(pid);
            }
        }
    });
    assert!(killed.is_some(), "the driver ended before the switch was killed:\n{}", run.stderr);
    run.assert_status(1);
    let message = "vlan 1: vde_switch exited unexpectedly with signal 9 (SIGKILL); the machines on this VLAN lost \
                   their network";
    run.assert_stderr_contains(&format!("\n{message}\n"));
    run.assert_stderr_contains(&format!("\n!!! {message}\n"));
    assert!(!run.stderr.contains("!!! interrupted"), "{}", run.stderr);
}

#[test]
fn keep_machine_state_keeps_the_state_directory_across_runs() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    scenario.vlan(1);
    // The script runs on the host: it sees whether the state it starts with has the marker.
    let script = scenario.script(
        "import os\nprint('marker kept:', os.path.exists(os.environ['QUICK_MARKER']))\n\
         start_all()\nalpha.succeed('true')\n",
    );
    let marker = scenario.state_dir("alpha").join("left-by-the-test");
    let run_with = |extra: &[&str]| {
        let mut command = scenario.command(extra);
        command.env("QUICK_MARKER", &marker);
        scenario.run_with(command, &script, LIMIT)
    };

    // -K keeps the state directory; the next -K run starts with it as it was.
    let run = run_with(&["-K"]);
    run.assert_status(0);
    assert!(scenario.state_dir("alpha").is_dir(), "-K removed the state directory:\n{}", run.stderr);
    assert!(!scenario.tmp_dir().join("vde1.ctl").exists(), "the switch's sockets were left:\n{}", run.stderr);
    std::fs::write(&marker, "kept").expect("write into the state directory");
    let run = run_with(&["--keep-machine-state"]);
    run.assert_status(0);
    assert!(run.stdout.contains("marker kept: True\n"), "{}", run.stdout);
    assert!(!run.stderr.contains("Machine state will be reset"), "{}", run.stderr);

    // Without it the state is reset at the start (and removed at the end).
    let run = run_with(&[]);
    run.assert_status(0);
    assert!(run.stdout.contains("marker kept: False\n"), "{}", run.stdout);
    run.assert_stderr_contains("Machine state will be reset. To keep it, pass --keep-machine-state\n");
}
