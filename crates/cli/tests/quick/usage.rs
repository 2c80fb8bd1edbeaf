//! Bad command lines and configurations: each is one `nixos-test-driver: error: …` line and
//! exit status 2, before anything starts — no switch, no machine, nothing in TMPDIR — even
//! when the rest of the command line names valid machines and VLANs.

use std::process::Command;

use crate::harness::{LIMIT, Run, Scenario};

/// Run `command`, expecting a usage error: status 2, `nixos-test-driver: error: <message>` as
/// the only line, and an untouched TMPDIR.
fn assert_usage_error(scenario: &Scenario, command: Command, message: &str) -> Run {
    let run = scenario.run_command(command, LIMIT);
    run.assert_status(2);
    assert_eq!(run.stderr, format!("nixos-test-driver: error: {message}\n"), "stderr");
    let made: Vec<_> =
        std::fs::read_dir(scenario.tmp_dir()).expect("read TMPDIR").flatten().map(|e| e.file_name()).collect();
    assert!(made.is_empty(), "the driver made {made:?} in TMPDIR before failing");
    run
}

/// A scenario with a valid fake machine on VLAN 1, and its test script.
fn valid_machine() -> (Scenario, std::path::PathBuf) {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    scenario.vlan(1);
    let script = scenario.script("start_all()\nalpha.succeed('true')\n");
    (scenario, script)
}

#[test]
fn a_missing_start_script() {
    let scenario = Scenario::new();
    let valid = scenario.start_script("alpha", &[]);
    let missing = scenario.bin_dir().join("run-nope-vm");
    let mut command = scenario.command(&[]);
    command.arg(scenario.script("start_all()\n")).arg("--start-scripts").arg(&valid).arg(&missing);
    command.args(["--vlans", "1"]);
    assert_usage_error(&scenario, command, &format!("start script {} does not exist", missing.display()));
}

#[test]
fn an_unknown_log_level() {
    let (scenario, script) = valid_machine();
    let mut command = scenario.command(&["--log-level", "loud"]);
    scenario.add_machines(&mut command, &script);
    assert_usage_error(&scenario, command, "invalid log level \"loud\": choose from debug, info, warning, error");
}

#[test]
fn an_invalid_global_timeout() {
    let (scenario, script) = valid_machine();
    let mut command = scenario.command(&["--global-timeout", "soon"]);
    scenario.add_machines(&mut command, &script);
    assert_usage_error(
        &scenario,
        command,
        "invalid duration \"soon\": expected seconds, an ISO 8601 duration (PT1H) or HH:MM:SS",
    );
}

#[test]
fn a_missing_config() {
    let scenario = Scenario::new();
    let missing = scenario.path().join("nope.json");
    let command = scenario.command(&["--config", &missing.to_string_lossy()]);
    let run = scenario.run_command(command, LIMIT);
    run.assert_status(2);
    run.assert_stderr_contains(&format!(
        "nixos-test-driver: error: cannot read driver configuration {}",
        missing.display()
    ));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn an_unreadable_config_says_why() {
    // A directory: unreadable even for root, whom file modes do not stop.
    let scenario = Scenario::new();
    let config = scenario.path().join("config.d");
    std::fs::create_dir(&config).expect("mkdir");
    let command = scenario.command(&["--config", &config.to_string_lossy()]);
    assert_usage_error(
        &scenario,
        command,
        &format!("cannot read driver configuration {}: Is a directory (os error 21)", config.display()),
    );
}

#[test]
fn a_config_with_a_missing_container_start_script() {
    let scenario = Scenario::new();
    let script = scenario.start_script("alpha", &[]);
    let missing = scenario.bin_dir().join("run-box-nspawn");
    let config = serde_json::json!({
        "containers": {"box": {"name": "box", "start_script": missing}},
        "enable_ssh_backdoor": false,
        "global_timeout": 600,
        "test_script": scenario.script("start_all()\n"),
        "vlans": [1],
        "vms": {"alpha": {"name": "alpha", "start_script": script}},
    });
    let config = scenario.write("driverConfiguration.json", &config.to_string());
    let command = scenario.command(&["--config", &config.to_string_lossy()]);
    assert_usage_error(&scenario, command, &format!("start script {} does not exist", missing.display()));
}

#[test]
fn a_config_with_a_missing_start_script() {
    let scenario = Scenario::new();
    let missing = scenario.bin_dir().join("run-alpha-vm");
    let config = serde_json::json!({
        "containers": {},
        "enable_ssh_backdoor": false,
        "global_timeout": 600,
        "test_script": scenario.script("start_all()\n"),
        "vlans": [1],
        "vms": {"alpha": {"name": "alpha", "start_script": missing}},
    });
    let config = scenario.write("driverConfiguration.json", &config.to_string());
    let command = scenario.command(&["--config", &config.to_string_lossy()]);
    assert_usage_error(&scenario, command, &format!("start script {} does not exist", missing.display()));
}

#[test]
fn an_unknown_option() {
    let (scenario, script) = valid_machine();
    let mut command = scenario.command(&["--bogus"]);
    scenario.add_machines(&mut command, &script);
    let run = scenario.run_command(command, LIMIT);
    run.assert_status(2);
    run.assert_stderr_contains("error: unexpected argument '--bogus' found");
    assert!(std::fs::read_dir(scenario.tmp_dir()).expect("read TMPDIR").next().is_none(), "TMPDIR was used");
}

#[test]
fn a_taken_web_view_port() {
    let (scenario, script) = valid_machine();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("its address").port();
    let mut command = scenario.command(&["--web-view", &port.to_string()]);
    scenario.add_machines(&mut command, &script);
    let message = format!("--web-view: cannot listen on 127.0.0.1:{port}: Address already in use (os error 98)");
    assert_usage_error(&scenario, command, &message);
}
