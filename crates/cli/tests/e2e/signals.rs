//! SIGINT and SIGTERM sent to the driver during a boot, a command and an OCR wait, and the
//! per-command timeout: the test ends with the signal's exit status (130, 143), every QEMU,
//! vde_switch and tesseract child is gone (the process table is checked by command line and
//! by environment), the JUnit report and the XML log are complete, and the machines' state
//! directories are removed unless `--keep-machine-state` asked to keep them. A script that
//! swallows the interruption is ended by the next SIGTERM.

use std::path::Path;

use crate::harness::{Run, SMOKE_LIMIT, Scenario, Tier};

/// One smoke machine on VLAN 1 (so a vde_switch runs too); signal the driver when its
/// stderr shows `trigger`. Returns the run and the scenario, whose TMPDIR can be checked.
fn signalled(body: &str, trigger: &str, process: Option<&str>, signal: libc::c_int, extra: &[&str]) -> (Run, Scenario) {
    let mut scenario = Scenario::new();
    scenario.network(Tier::Smoke, &[("machine", &[1])]);
    let script = scenario.write("test.py", &format!("with subtest(\"signalled\"):\n    start_all()\n{body}\n"));
    let mut args = vec!["--junit-xml", "report.xml"];
    args.extend_from_slice(extra);
    let mut command = scenario.command(&args);
    command.env("LOGFILE", scenario.path().join("log.xml"));
    command.arg(&script).arg("--start-scripts").arg(scenario.path().join("bin/run-machine-vm"));
    command.args(["--vlans", "1"]);
    let run = scenario.run_signalled(command, trigger, process, signal, SMOKE_LIMIT);
    assert!(!run.stderr.contains("panicked at"), "a Rust panic:\n{}", run.stderr);
    check_reports(&scenario, &run);
    (run, scenario)
}

/// The JUnit report has the interrupted subtest as a failure; the XML log is well-formed.
fn check_reports(scenario: &Scenario, run: &Run) {
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}\n--- stderr\n{}", path.display(), run.stderr))
    };
    let junit = read(&scenario.out_dir().join("report.xml"));
    let doc = roxmltree::Document::parse(&junit).unwrap_or_else(|e| panic!("JUnit report: {e}\n{junit}"));
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("signalled"))
        .unwrap_or_else(|| panic!("no test case for the subtest:\n{junit}"));
    assert!(case.children().any(|n| n.has_tag_name("failure")), "the interrupted subtest is no failure:\n{junit}");
    let xml = read(&scenario.path().join("log.xml"));
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("XML log: {e}\n{xml}"));
    assert!(doc.root_element().has_tag_name("logfile"), "{xml}");
}

/// A command that runs long, sent once the machine is up (the first command connects).
const COMMAND: &str = "    machine.succeed('true')\n    machine.succeed('sleep 60')";

#[test]
fn sigterm_during_boot() {
    let (run, scenario) =
        signalled("    machine.succeed('true')", "QEMU running (pid", Some("qemu-system-x86"), libc::SIGTERM, &[]);
    run.assert_status(143);
    run.assert_stderr_contains("received SIGTERM; stopping the test");
    run.assert_stderr_contains("terminated by SIGTERM");
    scenario.assert_state_removed(&run);
}

#[test]
fn sigint_during_boot() {
    let (run, scenario) =
        signalled("    machine.succeed('true')", "QEMU running (pid", Some("qemu-system-x86"), libc::SIGINT, &[]);
    run.assert_status(130);
    run.assert_stderr_contains("interrupted");
    scenario.assert_state_removed(&run);
}

#[test]
fn sigterm_during_a_command() {
    let (run, scenario) = signalled(COMMAND, "must succeed: sleep 60", None, libc::SIGTERM, &[]);
    run.assert_status(143);
    run.assert_stderr_contains("terminated by SIGTERM");
    scenario.assert_state_removed(&run);
}

#[test]
fn sigint_during_a_command() {
    let (run, scenario) = signalled(COMMAND, "must succeed: sleep 60", None, libc::SIGINT, &[]);
    run.assert_status(130);
    scenario.assert_state_removed(&run);
}

#[test]
fn sigterm_during_ocr_leaves_no_tesseract() {
    // wait_for_text runs tesseract over and over; the environment check of the process table
    // finds a tesseract left behind even though its command line names no scenario path.
    let (run, scenario) = signalled(
        "    machine.wait_for_text('this text never appears', timeout=120)",
        "to appear on screen",
        Some("tesseract"),
        libc::SIGTERM,
        &[],
    );
    run.assert_status(143);
    scenario.assert_state_removed(&run);
}

#[test]
fn sigterm_keeps_the_state_directory_when_asked() {
    let (run, scenario) = signalled(COMMAND, "must succeed: sleep 60", None, libc::SIGTERM, &["--keep-machine-state"]);
    run.assert_status(143);
    assert!(
        scenario.tmp_dir().join("vm-state-machine").is_dir(),
        "--keep-machine-state lost the state:\n{}",
        run.stderr
    );
    assert!(!scenario.tmp_dir().join("vde1.ctl").exists(), "the switch's sockets were left:\n{}", run.stderr);
}

#[test]
fn a_per_command_timeout_ends_the_command_and_the_test_cleans_up() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let script = scenario.write("test.py", "start_all()\nmachine.succeed('sleep 60', timeout=2)\n");
    let run = scenario.run(&script, &[], SMOKE_LIMIT);
    run.assert_status(1);
    // The driver kills the command through the control port and reports coreutils' 124.
    run.assert_stderr_contains("`sleep 60` timed out after 2 seconds: killed ");
    run.assert_stderr_contains("RequestedAssertionFailed: command `sleep 60` failed (exit code 124)");
    scenario.assert_state_removed(&run);
}

#[test]
fn a_script_that_swallows_sigterm_is_ended_by_the_next_one() {
    // The script catches the interruption and carries on, as a supervisor's patience runs
    // out it sends SIGTERM again (here the script sends it to itself).
    let scenario = Scenario::new();
    let script = scenario.write(
        "test.py",
        "import os, signal, time\nwith subtest(\"stubborn\"):\n    while True:\n        try:\n            time.sleep(30)\n        \
         except BaseException:\n            log.info(\"swallowed\")\n            os.kill(os.getpid(), signal.SIGTERM)\n",
    );
    let mut command = scenario.command(&["--junit-xml", "report.xml"]);
    command.arg(&script);
    let run = scenario.run_signalled(command, "Test will time out", None, libc::SIGTERM, SMOKE_LIMIT);
    run.assert_status(143);
    run.assert_stderr_contains("swallowed");
    run.assert_stderr_contains("the test did not stop after SIGTERM; exiting");
    let junit = std::fs::read_to_string(scenario.out_dir().join("report.xml")).expect("the JUnit report");
    assert!(junit.contains("stubborn"), "{junit}");
}
