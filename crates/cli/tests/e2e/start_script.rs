//! The test guest's start scripts honour qemu-vm.nix's contract, and the driver uses it as
//! upstream does (tests/e2e/start_script.py, tests/e2e/keep_state.py).

use crate::harness::{SMOKE_LIMIT, Scenario, Tier, repo_file};

#[test]
fn shared_dirs_kernel_params_qemu_and_net_options() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut command = scenario.command(&[]);
    command
        .env("QEMU_KERNEL_PARAMS", "ntd.e2e=kernel-params")
        .env("QEMU_OPTS", "-smp 2")
        .env("QEMU_NET_OPTS", format!("hostfwd=tcp:127.0.0.1:{port}-:8080"))
        .env("E2E_HOST_PORT", port.to_string())
        .arg(repo_file("tests/e2e/start_script.py"))
        .arg("--start-scripts")
        .arg(scenario.path().join("bin/run-machine-vm"));
    let run = scenario.run_command(command, SMOKE_LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains("(finished: subtest: QEMU_NET_OPTS adds to the user-mode network, in ");
}

#[test]
fn keep_machine_state_keeps_the_state_directory() {
    let mut scenario = Scenario::new();
    let script = scenario.machine("machine", Tier::Smoke, &[]);
    let run_with = |expect: &str, keep: bool| {
        let mut command = scenario.command(if keep { &["-K"] } else { &[] });
        command.env("E2E_EXPECT", expect).arg(repo_file("tests/e2e/keep_state.py")).arg("--start-scripts").arg(&script);
        let run = scenario.run_command(command, SMOKE_LIMIT);
        run.assert_status(0);
        run
    };
    let state_dir = scenario.tmp_dir().join("vm-state-machine");
    // Without -K the state is removed when the run ends (upstream: when the next run starts).
    let first = run_with("fresh", false);
    first.assert_stderr_contains("Machine state will be reset. To keep it, pass --keep-machine-state");
    assert!(!state_dir.exists(), "the state outlived a run without -K:\n{}", first.stderr);
    // With -K it outlives the run, and the next run with -K finds it.
    run_with("fresh", true);
    assert!(state_dir.is_dir(), "-K did not keep the state directory");
    let kept = run_with("kept", true);
    assert!(!kept.stderr.contains("Machine state will be reset"), "{}", kept.stderr);
    // A run without -K starts from scratch.
    let wiped = run_with("fresh", false);
    wiped.assert_stderr_contains("machine: deleting machine state directory ");
    assert!(!state_dir.exists(), "the state outlived a run without -K:\n{}", wiped.stderr);
}
