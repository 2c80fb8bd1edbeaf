//! nixpkgs' own driver tests (`nixos/tests/nixos-test-driver/*.nix`) on the built-in guest:
//! one test per upstream test, named after it, asserting what the upstream test asserts and,
//! where a wrapper derivation checks its result (`testBuildFailure` for the tests that must
//! fail, the JUnit case count), what the wrapper asserts. The scripts are in
//! tests/e2e/upstream/, each saying how it differs from upstream's (node configuration made at
//! run time, Debian bookworm's older systemd). docs/compat.md lists every upstream test and
//! what became of it.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{DEBIAN_LIMIT, Run, SMOKE_LIMIT, Scenario, Tier, repo_file};

/// The port of one upstream test: tests/e2e/upstream/NAME.py.
fn script(name: &str) -> PathBuf {
    repo_file(&format!("tests/e2e/upstream/{name}.py"))
}

/// The log upstream's `testBuildFailure` keeps: everything the driver printed.
fn log(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

/// Show the lines of the log that carry `prefix` (what a script prints about itself).
fn show(run: &Run, prefix: &str) {
    for line in log(run).lines().filter(|line| line.contains(prefix)) {
        println!("{line}");
    }
}

/// Fail unless the log holds `needle` (the wrapper's `grep -F`).
fn assert_log_contains(run: &Run, needle: &str) {
    assert!(log(run).contains(needle), "the log lacks {needle:?}:\n{}", log(run));
}

/// The lines `sed -n '/START/,/END/p'` prints: each range from a line containing `start`
/// through the next line after it containing `end` (or the end of the text).
fn sed_ranges<'a>(text: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if inside {
            lines.push(line);
            inside = !line.contains(end);
        } else if line.contains(start) {
            lines.push(line);
            inside = true;
        }
    }
    lines
}

/// A Debian machine named `machine` and the driver run on the port of `name` with `extra`.
fn run_on_debian(name: &str, extra: &[&str], limit: Duration) -> (Scenario, Run) {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Debian, &[]);
    let run = scenario.run(&script(name), extra, limit);
    (scenario, run)
}

/// `nixos-test-driver.junit`: `--junit=junit.xml` (argparse's prefix of `--junit-xml`) writes
/// a report under the output directory whose suite counts the two subtests.
#[test]
fn junit() {
    let (scenario, run) = run_on_debian("junit", &["--junit=junit.xml"], DEBIAN_LIMIT);
    run.assert_status(0);
    let xml = std::fs::read_to_string(scenario.out_dir().join("junit.xml")).expect("out/junit.xml");
    let doc = roxmltree::Document::parse(&xml).expect("junit.xml is XML");
    // The wrapper: [[ 2 = $(yq '.testsuites.testsuite.+@tests' junit.xml) ]].
    let root = doc.root_element();
    assert!(root.has_tag_name("testsuites"), "{xml}");
    let suites: Vec<_> = root.children().filter(|node| node.has_tag_name("testsuite")).collect();
    assert_eq!(suites.len(), 1, "{xml}");
    assert_eq!(suites[0].attribute("tests"), Some("2"), "{xml}");
}

/// `nixos-test-driver.ssh-backdoor` (`sshBackdoor.enable`): `driver.vhost_vsock` names the
/// machine's host socket, and ssh through it runs `true` in the guest. The node's sshd on vsock
/// is the guest's `--ssh-backdoor`; the driver configuration turns the backdoor on.
#[test]
fn ssh_backdoor() {
    let scenario = Scenario::new();
    let start_script = scenario.start_script("machine", Tier::Debian, &["--ssh-backdoor"]);
    let config = scenario.write_configuration(&[("machine", &start_script)], &script("ssh_backdoor"), 3600, true);
    let mut command = scenario.command(&["--config", &config.to_string_lossy()]);
    command.env("NTD_SSH_PROXY", env!("CARGO_BIN_EXE_ntd-ssh-proxy"));
    let run = scenario.run_command(command, DEBIAN_LIMIT);
    run.assert_status(0);
    assert_log_contains(&run, "(finished: subtest: ssh from the host via systemd-ssh-proxy");
}

/// `nixos-test-driver.driver-timeout` (`timeout.nix`, wrapped in `testBuildFailure`): a 5 s
/// global timeout stops the test during its boot wait; the log says so and the driver exits
/// 143, the status of upstream's driver, which sends itself SIGTERM.
#[test]
fn driver_timeout() {
    let (scenario, run) = run_on_debian("driver_timeout", &["--global-timeout", "5"], DEBIAN_LIMIT);
    assert_log_contains(&run, "timeout reached; test terminating");
    run.assert_status(143);
    scenario.assert_state_removed(&run);
}

/// `nixos-test-driver.succeed-stdout-warning` (wrapped in `testBuildFailure`): the test fails
/// on purpose at its end; its log has the warning for the background job that held stdout
/// open, none between the markers around the quick command, the command's stderr, and the
/// final exception.
#[test]
fn succeed_stdout_warning() {
    let (_scenario, run) = run_on_debian("succeed_stdout_warning", &[], DEBIAN_LIMIT);
    run.assert_status(1);
    let warning = "for the test script has exited, but not closed stdout";
    assert_log_contains(&run, &format!("(echo ONE; sleep 15; echo TWO) &' {warning}"));
    let fast = sed_ranges(&run.stderr, "MARKER: before fast command", "MARKER: after fast command");
    assert!(!fast.is_empty(), "no marker of the quick command:\n{}", run.stderr);
    assert!(!fast.iter().any(|line| line.contains(warning)), "the quick command warned:\n{}", fast.join("\n"));
    assert_log_contains(&run, "STDERR_TEST_MARKER: user command stderr output");
    assert_log_contains(
        &run,
        "Test script done and successful so far. Intentionally failing so that testBuildFailure can perform \
         remaining log checks",
    );
}

/// `nixos-test-driver.node-name`: machines `ok`, `one_two` and `a-b` are the Python variables
/// `ok`, `one_two` and `a_b`, with the hostnames `ok`, `onetwo` and `a-b`.
#[test]
fn node_name() {
    let mut scenario = Scenario::new();
    for name in ["ok", "one_two", "a-b"] {
        scenario.machine(name, Tier::Debian, &[]);
    }
    let run = scenario.run(&script("node_name"), &[], DEBIAN_LIMIT * 2);
    run.assert_status(0);
}

/// `nixos-test-driver.console-timeout`: a console line 16 lines after the previous match is
/// found within a 10 s timeout.
#[test]
fn console_timeout() {
    let (_scenario, run) = run_on_debian("console_timeout", &[], DEBIAN_LIMIT);
    run.assert_status(0);
}

/// `nixos-test-driver.console-log`: the console log of the current boot holds the kernel's and
/// systemd's lines, a command's stderr and `/dev/kmsg` lines; a restart begins a fresh one.
/// The node logs at kernel level 7, as NixOS test VMs do.
#[test]
fn console_log() {
    let mut scenario = Scenario::new();
    let start_script = scenario.machine("machine", Tier::Debian, &[]);
    let mut command = scenario.command(&[]);
    command
        .env("QEMU_KERNEL_PARAMS", "loglevel=7")
        .arg(script("console_log"))
        .arg("--start-scripts")
        .arg(&start_script);
    let run = scenario.run_command(command, DEBIAN_LIMIT * 2);
    show(&run, "console-log: ");
    run.assert_status(0);
}

/// `nixos-test-driver.unit-active-state`: a service seen inactive, activating, active,
/// reloading, active, deactivating and failed.
#[test]
fn unit_active_state() {
    let (_scenario, run) = run_on_debian("unit_active_state", &[], DEBIAN_LIMIT);
    run.assert_status(0);
}

/// `nixos-test-driver.busybox`: `wait_for_unit` works when busybox's applets come first on the
/// backdoor's PATH.
#[test]
fn busybox() {
    let (_scenario, run) = run_on_debian("busybox", &[], DEBIAN_LIMIT * 2);
    run.assert_status(0);
}

/// `nixos-test-driver.skip-typecheck`: its script (boot, wait, shut down); the `skipTypeCheck`
/// wiring it exists for is Nix's, checked in tests/nix/eval.nix.
#[test]
fn qmp_api_error() {
    // QEMU answers before the guest boots: the smoke tier is enough.
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let run = scenario.run(&script("qmp_api_error"), &[], SMOKE_LIMIT);
    run.assert_status(0);
    assert_log_contains(&run, "refused: <QMP API error related to transaction None [CommandNotFound]: ");
}

#[test]
fn skip_typecheck() {
    let (_scenario, run) = run_on_debian("skip_typecheck", &[], DEBIAN_LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains("machine: (finished: waiting for the VM to power off, in ");
}

/// `nixos-test-driver.extra-python-packages`: a package on the driver's PYTHONPATH (where
/// `extraPythonPackages` go) is importable from the test script, and only through it.
#[test]
fn extra_python_packages() {
    let scenario = Scenario::new();
    std::fs::create_dir_all(scenario.path().join("site/tinyarray")).expect("package dir");
    scenario.write(
        "site/tinyarray/__init__.py",
        "class Array:\n\
         \x20   def __init__(self, values):\n\
         \x20       self.values = [float(v) for v in values]\n\
         \x20   def __repr__(self):\n\
         \x20       return 'array([' + ', '.join(f'{v:g}.' for v in self.values) + '])'\n\
         def zeros(n):\n\
         \x20   return Array([0] * n)\n",
    );
    let mut without = scenario.command(&[]);
    without.env_remove("PYTHONPATH").arg(script("extra_python_packages"));
    let run = scenario.run_command(without, Duration::from_secs(60));
    run.assert_status(1);
    assert_log_contains(&run, "No module named 'tinyarray'");

    let mut with = scenario.command(&[]);
    with.env("PYTHONPATH", scenario.path().join("site")).arg(script("extra_python_packages"));
    let run = scenario.run_command(with, Duration::from_secs(60));
    run.assert_status(0);
}

/// `nixos-test-driver.attempt-timeout`: a blocking command is retried within the wait's budget
/// (at least 4 attempts of 2 s in 20 s, under 40 s in all), and a port probe that blocks gives
/// up within the caller's 5 s budget (under 60 s in all).
#[test]
fn attempt_timeout() {
    let mut scenario = Scenario::new();
    // On VLAN 1 as a NixOS test node is: the blocked probe goes to an address there.
    scenario.network(Tier::Debian, &[("machine", &[1])]);
    let run = scenario.run(&script("attempt_timeout"), &[], DEBIAN_LIMIT * 2);
    show(&run, "attempt-timeout: ");
    run.assert_status(0);
}

// nixpkgs' unmerged driver-coverage suite (`default.nix` with `common.py` and one script per
// test; no `all-tests.nix` registers it). The scripts that fit the built-in guest, each after
// the shared prelude, as `default.nix` concatenates them.

/// One test of the coverage suite: the prelude, then the script, on a machine `machine`.
fn coverage(name: &str, tier: Tier, limit: Duration) -> Run {
    let mut scenario = Scenario::new();
    scenario.machine("machine", tier, &[]);
    let prelude = std::fs::read_to_string(script("coverage_common")).expect("the prelude");
    let body = std::fs::read_to_string(script(name)).expect("the script");
    let test = scenario.write("test.py", &format!("{prelude}\n{body}"));
    let run = scenario.run(&test, &[], limit);
    run.assert_status(0);
    run
}

/// The coverage suite's `systemd`: `require_unit_state` and its message.
#[test]
fn coverage_systemd() {
    coverage("coverage_systemd", Tier::Debian, DEBIAN_LIMIT);
}

/// The coverage suite's `files`: copies both ways, files and directories, and
/// `wait_for_file`, found and timed out.
#[test]
fn coverage_files() {
    let run = coverage("coverage_files", Tier::Smoke, SMOKE_LIMIT);
    run.assert_stderr_contains("(finished: subtest: a file that never does, in ");
}

/// The coverage suite's `power`: `shutdown` and `crash`, each twice, and a restart between.
#[test]
fn coverage_power() {
    coverage("coverage_power", Tier::Debian, DEBIAN_LIMIT * 2);
}

/// The coverage suite's `polling_condition`: failing and holding conditions, descriptions.
#[test]
fn coverage_polling_condition() {
    coverage("coverage_polling_condition", Tier::Smoke, SMOKE_LIMIT);
}
