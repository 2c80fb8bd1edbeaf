//! A passing run, through both interfaces runNixOSTest and older Nix code use (start scripts
//! and VLANs as arguments; `--config driverConfiguration.json`): the script's globals do what
//! upstream's do, and the log on stderr has upstream's lines. The script checks the values
//! itself (a wrong one fails the run); the test checks the exit status and the log.

use crate::harness::{LIMIT, Scenario, assert_finished};

/// The globals a test script meets, each used as test scripts use it.
const GLOBALS: &str = r#"
import os

start_all()

with subtest("the globals"):
    assert machines == [alpha, beta], machines
    assert driver.machines == machines
    assert [v.nr for v in vlans] == [1] and vlan1 is vlans[0], vlans
    assert os.path.isdir(vlan1.socket_dir), vlan1.socket_dir
    t.assertEqual(alpha.succeed("hostname").strip(), "alpha")
    t.assertEqual(beta.succeed("hostname").strip(), "beta")
    log.info("the globals are there")

with subtest("commands"):
    t.assertEqual(alpha.succeed("echo one", "echo two"), "one\ntwo\n")
    t.assertEqual(beta.execute("echo out; exit 3"), (3, "out\n"))
    t.assertEqual(beta.fail("echo failed; false"), "failed\n")
    beta.succeed("echo beta-on-the-console >&2")

with subtest("units"):
    alpha.wait_for_unit("nginx.service")
    alpha.wait_for_unit("app.service", timeout=30)
    t.assertEqual(alpha.succeed("systemctl is-active app.service"), "active\n")
    t.assertEqual(beta.execute("systemctl is-active app.service")[0], 3)

with subtest("files and retries"):
    beta.succeed("(sleep 0.3; touch /tmp/ready) >/dev/null 2>&1 &")
    beta.wait_for_file("/tmp/ready")
    attempts = []
    retry(lambda last: attempts.append(last) or len(attempts) == 2)
    t.assertEqual(attempts, [False, False])

with subtest("polling conditions"):
    checks = []

    @polling_condition
    def alpha_answers():
        "alpha answers"
        checks.append(alpha.succeed("echo up"))

    with alpha_answers:
        beta.succeed("true")
    assert checks == ["up\n"], checks

with subtest("serial output"):
    serial_stdout_off()
    alpha.succeed("echo hidden-serial >&2")
    alpha.wait_for_console_text("hidden-serial")
    serial_stdout_on()
    alpha.succeed("echo shown-serial >&2")
    alpha.wait_for_console_text("shown-serial")

with subtest("create_machine"):
    gamma = create_machine(os.environ["QUICK_GAMMA"], name="gamma")
    assert gamma not in machines and gamma.name == "gamma"
    gamma.start()
    t.assertEqual(gamma.succeed("hostname").strip(), "gamma")
    gamma.shutdown()

with subtest("join_all"):
    for m in machines:
        m.succeed("(sleep 0.2; poweroff) >/dev/null 2>&1 &")
    join_all()
    assert not alpha.booted and not beta.booted
print("the script ran to its end")
"#;

#[test]
fn two_machines_on_a_vlan_pass_with_upstreams_log() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &["--fake-unit", "nginx.service=active", "--fake-unit-later", "app.service=active@0.5"]);
    scenario.machine("beta", &[]);
    scenario.vlan(1);
    let gamma = scenario.start_script("gamma", &[]);
    let mut command = scenario.command(&[]);
    command.env("QUICK_GAMMA", &gamma);
    let run = scenario.run_with(command, &scenario.script(GLOBALS), LIMIT);
    run.assert_status(0);
    assert!(run.stdout.contains("additionally exposed symbols:\n    alpha, beta,\n    vlan1,\n"), "{}", run.stdout);
    assert!(run.stdout.contains("the script ran to its end\n"), "{}", run.stdout);

    // Upstream's lines: the switch, the machines, each command and wait as a block.
    run.assert_stderr_contains("Test will time out and terminate in 604800.0 seconds\n");
    run.assert_stderr_contains("\nrunning vlan (pid ");
    run.assert_stderr_contains("\nalpha: QEMU running (pid ");
    run.assert_stderr_contains("\nalpha: connected to guest root shell\n");
    run.assert_stderr_contains("\nalpha: must succeed: echo one\n");
    run.assert_stderr_contains("\nalpha: must succeed: echo two\n");
    assert_finished(&run, Some("alpha"), "must succeed: hostname");
    assert_finished(&run, Some("beta"), "must fail: echo failed; false");
    assert_finished(&run, Some("alpha"), "waiting for unit app.service");
    assert_finished(&run, Some("beta"), "waiting for file '/tmp/ready'");
    run.assert_stderr_contains("\nthe globals are there\n");
    for subtest in ["the globals", "commands", "units", "files and retries", "polling conditions", "serial output"] {
        run.assert_stderr_contains(&format!("\nsubtest: {subtest}\n"));
        assert_finished(&run, None, &format!("subtest: {subtest}"));
    }
    assert_finished(&run, None, "subtest: join_all");
    // Serial lines, as `machine # line`; none while serial_stdout_off().
    run.assert_stderr_contains("\nbeta # beta-on-the-console\n");
    run.assert_stderr_contains("\nalpha # shown-serial\n");
    assert!(!run.stderr.contains("hidden-serial\n"), "{}", run.stderr);
    // The created machine started and stopped; both machines powered off before join_all.
    run.assert_stderr_contains("\ngamma: QEMU running (pid ");
    run.assert_stderr_contains("reboot: Power down");
    run.assert_stderr_contains("\ntest script finished in ");
    assert!(!run.stderr.contains("!!!"), "{}", run.stderr);
}

#[test]
fn a_driver_configuration_runs_as_runnixostest_writes_it() {
    let scenario = Scenario::new();
    let server = scenario.start_script("server", &[]);
    let client = scenario.start_script("client", &["--fake-unit-later", "multi-user.target=active@0.3"]);
    let script = scenario.write(
        "test-script",
        "start_all()\n\
         assert [m.name for m in machines] == ['client', 'server'], machines\n\
         assert [v.nr for v in vlans] == [1, 2], vlans\n\
         client.wait_for_unit('multi-user.target')\n\
         print(server.succeed('hostname').strip(), client.succeed('hostname').strip())\n",
    );
    // As nixpkgs' driver.nix writes it: builtins.toJSON, keys sorted, one line.
    let config = serde_json::json!({
        "containers": {},
        "enable_ssh_backdoor": false,
        "global_timeout": 600,
        "test_script": script,
        "vlans": [1, 2],
        "vms": {
            "client": {"name": "client", "start_script": client},
            "server": {"name": "server", "start_script": server},
        },
    });
    let config = scenario.write("driverConfiguration.json", &config.to_string());
    let run = scenario.run_command(scenario.command(&["--config", &config.to_string_lossy()]), LIMIT);
    run.assert_status(0);
    assert_eq!(run.stdout.lines().last(), Some("server client"), "{}", run.stdout);
    run.assert_stderr_contains("Test will time out and terminate in 600.0 seconds\n");
    assert_eq!(run.stderr.matches("\nrunning vlan (pid ").count(), 2, "{}", run.stderr);
    assert_finished(&run, Some("client"), "waiting for unit multi-user.target");
    run.assert_stderr_contains("\ntest script finished in ");
}

/// What nixpkgs may pass that ntd cannot honour is one warning line each, and the test runs:
/// keys of a newer `driverConfiguration.json`, and `--dump-vsocks` beside the configuration's
/// SSH backdoor (which wins); and argparse's abbreviations and `--test-script` work.
#[test]
fn what_ntd_cannot_honour_is_one_line_each_and_the_test_runs() {
    let scenario = Scenario::new();
    let server = scenario.start_script("server", &[]);
    let configured = scenario.write("configured-script", "raise Exception('the --test-script was not used')\n");
    let script = scenario.write("test-script", "print(server.succeed('hostname').strip())\n");
    let config = serde_json::json!({
        "containers": {},
        "enable_ssh_backdoor": true,
        "global_timeout": 600,
        "test_script": configured,
        "vlans": [],
        "vms": {"server": {"name": "server", "start_script": server, "vsock_cid": 3}},
        "a_future_key": {"x": 1},
    });
    let config = scenario.write("driverConfiguration.json", &config.to_string());
    let command = scenario.command(&[
        "--conf",
        &config.to_string_lossy(),
        "--test-script",
        &script.to_string_lossy(),
        "--dump-vsocks",
        "3",
        "--junit=junit.xml",
    ]);
    let run = scenario.run_command(command, LIMIT);
    run.assert_status(0);
    assert_eq!(run.stdout.lines().last(), Some("server"), "{}", run.stdout);
    run.assert_stderr_contains(
        "--dump-vsocks 3: the configuration's enable_ssh_backdoor serves the VMs' vsock through vhost-device-vsock",
    );
    run.assert_stderr_contains(
        "driver configuration: ignoring keys ntd does not know: `a_future_key`, `vms.server.vsock_cid`\n",
    );
    assert!(run.stdout.contains("    server:  \x1b[1mssh -o User=root vsock-mux/"), "{}", run.stdout);
    assert!(scenario.out_dir().join("junit.xml").is_file(), "--junit= wrote no report");
}

#[test]
fn the_older_environment_variables_name_machines_and_script() {
    let scenario = Scenario::new();
    let script = scenario.start_script("legacy", &[]);
    let test = scenario.script("assert machine is legacy\nprint(legacy.succeed('hostname').strip())\n");
    let mut command = scenario.command(&[]);
    command.env("startScripts", &script).env("testScript", &test).env("globalTimeout", "500").env("vlans", "3");
    let run = scenario.run_command(command, LIMIT);
    run.assert_status(0);
    assert_eq!(run.stdout.lines().last(), Some("legacy"), "{}", run.stdout);
    run.assert_stderr_contains("Test will time out and terminate in 500.0 seconds\n");
    run.assert_stderr_contains("/vde3.ctl)\n");
}

#[test]
fn the_log_level_hides_the_lower_levels() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let script = "start_all()\nlog.info('an info line')\nlog.warning('a warning line')\nalpha.succeed('true')\n";
    let run = scenario.run_script(script, &["--log-level", "warning"]);
    run.assert_status(0);
    run.assert_stderr_contains("\na warning line\n");
    run.assert_stderr_contains("\nalpha: must succeed: true\n");
    for info in ["an info line", "Machine state will be reset", "Test will time out", "test script finished"] {
        assert!(!run.stderr.contains(info), "{info:?} shown at level warning:\n{}", run.stderr);
    }
}
