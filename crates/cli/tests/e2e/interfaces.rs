//! The ways runNixOSTest and older Nix code pass machines and scripts to the driver.

use crate::harness::{SMOKE_LIMIT, Scenario, Tier, repo_file};

#[test]
fn json_config_names_machines() {
    let mut scenario = Scenario::new();
    let script = scenario.machine("custom-name", Tier::Smoke, &[]);
    let config = serde_json::json!({
        "vms": {"custom-name": {"name": "custom-name", "start_script": script}},
        "containers": {},
        "vlans": [],
        "global_timeout": 600,
        "enable_ssh_backdoor": false,
        "test_script": repo_file("tests/e2e/named.py"),
    });
    let config = scenario.write("driverConfiguration.json", &config.to_string());
    let run = scenario.run_command(scenario.command(&["--config", &config.to_string_lossy()]), SMOKE_LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains("Test will time out and terminate in 600.0 seconds");
}

#[test]
fn legacy_environment_variables() {
    let mut scenario = Scenario::new();
    let script = scenario.machine("legacy", Tier::Smoke, &[]);
    let test = scenario.write("test.py", "assert machine is legacy\nlegacy.succeed('true')\n");
    let mut command = scenario.command(&[]);
    command.env("startScripts", &script).env("testScript", &test).env("globalTimeout", "500").env("vlans", "");
    let run = scenario.run_command(command, SMOKE_LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains("Test will time out and terminate in 500.0 seconds");
}

#[test]
fn vm_names_flags() {
    let mut scenario = Scenario::new();
    let script = scenario.machine("ignored", Tier::Smoke, &[]);
    let mut command = scenario.command(&[]);
    command.arg(repo_file("tests/e2e/named.py")).args(["--vm-names", "custom-name", "--vm-start-scripts"]).arg(&script);
    let run = scenario.run_command(command, SMOKE_LIMIT);
    run.assert_status(0);
}

/// The command line a runNixOSTest derivation runs: driver.nix's wrapper adds `--config`,
/// `--log-level` and the test's `extraDriverArgs`; run.nix sets `LOGFILE=/dev/null` and passes
/// `-o $out` and, with `enableDebugHook`, `--debug-hook=<attach>`.
#[test]
fn the_command_line_of_a_run_nix_derivation() {
    let mut scenario = Scenario::new();
    let script = scenario.machine("machine", Tier::Smoke, &[]);
    let config = serde_json::json!({
        "vms": {"machine": {"name": "machine", "start_script": script}},
        "containers": {},
        "vlans": [],
        "global_timeout": 600,
        "enable_ssh_backdoor": false,
        "test_script": scenario.write("test-script", "start_all()\nmachine.succeed('true')\n"),
    });
    let config = scenario.write("driverConfiguration.json", &config.to_string());
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nixos-test-driver"));
    command
        .env("TMPDIR", scenario.tmp_dir())
        .env("LOGFILE", "/dev/null")
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(&config)
        .args(["--log-level", "info", "--junit-xml", "junit.xml", "-o"])
        .arg(scenario.out_dir())
        .arg("--debug-hook=/stub/attach");
    let run = scenario.run_command(command, SMOKE_LIMIT);
    run.assert_status(0);
    assert!(scenario.out_dir().join("junit.xml").is_file(), "no junit.xml in the output directory");
}
