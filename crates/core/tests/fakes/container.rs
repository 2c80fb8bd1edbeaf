//! ntd's systemd-nspawn containers ([`NspawnMachine`]) against ntd-fake's container start
//! script, which speaks the real contract (the three variables, `NOTIFY_SOCKET` with
//! `X_NSPAWN_LEADER_PID=` and `READY=1`, an init in namespaces of its own that `nsenter`
//! enters) without systemd-nspawn: the shared machine code runs on it unchanged, with the
//! same assertions as on a QEMU machine, and the faults a real container shows are reported
//! as such. The real containers are the end-to-end tier's.

use std::time::{Duration, Instant};

use ntd_core::config::MachineSpec;
use ntd_core::driver::{Driver, DriverOptions};
use ntd_core::machine::nspawn::{NspawnConfig, NspawnMachine};
use ntd_core::machine::{Error, ExecuteOptions};
use ntd_core::{ErrorKind, full_message};
use ntd_fake::{Behaviour, ContainerScript};

use crate::shared::{self, cmd};
use crate::support::{Scenario, logs};

fn container(scenario: &Scenario, name: &str, behaviour: Behaviour) -> NspawnMachine {
    let script = ContainerScript::new(name).behaviour(behaviour).write(scenario.path()).expect("script");
    let mut config = NspawnConfig::new(script.display().to_string(), scenario.tmp_dir(), scenario.out_dir());
    config.ready_timeout = Duration::from_secs(20);
    NspawnMachine::new(config).expect("container")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_waits_and_files_as_on_a_vm() {
    let scenario = Scenario::new();
    let machine = container(&scenario, "fakebox", Behaviour::Ready);
    assert_eq!(machine.name(), "fakebox", "named after run-<name>-nspawn");
    assert_eq!(format!("{:?}", machine.machine()), "<NspawnMachine 'fakebox'>");
    shared::commands_behave(&machine).await;
    shared::waits_behave(&machine).await;
    shared::files_behave(&machine, &scenario).await;
    assert!(machine.is_up());
    // Undecodable stderr is logged and drained: the command is not cut off by a closed pipe.
    let out = machine.succeed(&cmd(r"printf 'a\377b\n' >&2; sleep 0.3; echo more >&2; echo ok"), None).await;
    assert_eq!(out.expect("stderr that is not UTF-8"), b"ok\n");
    // Upstream's environment: nothing but what /etc/profile sets.
    let env = machine.succeed(&cmd("env | grep -c NOTIFY_SOCKET || true"), None).await.expect("env");
    assert_eq!(env, b"0\n");
    let log = logs();
    assert!(log.contains("fakebox: systemd-nspawn running (pid "), "{log}");
    assert!(log.contains("fakebox # Spawning container fakebox on "), "the script's output is the console: {log}");
    let state = machine.state_dir().to_owned();
    machine.release().await;
    assert!(!machine.is_booted());
    machine.discard_state();
    assert!(!state.exists());
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_command_and_returns_124_as_on_a_vm() {
    let scenario = Scenario::new();
    let machine = container(&scenario, "slowbox", Behaviour::Ready);
    let options = ExecuteOptions { timeout: Some(Duration::from_secs(1)), ..ExecuteOptions::default() };
    let started = Instant::now();
    let (status, out) = machine.execute("echo begun; sleep 30 & sleep 30", options).await.expect("timeout");
    assert_eq!((status, out.as_slice()), (124, &b"begun\n"[..]));
    assert!(started.elapsed() < Duration::from_secs(20), "the command was not waited for");
    // The background `sleep 30` went with it, as timeout(1) takes the whole group in a VM.
    let (status, _) = machine.execute("pgrep -fx 'sleep 30'", ExecuteOptions::default()).await.expect("pgrep");
    assert_eq!(status, 1, "no `sleep 30` is left");
    // A daemon a command starts lives on after it.
    machine.succeed(&cmd("sleep 300 >/dev/null 2>&1 < /dev/null &"), None).await.expect("daemon");
    let count = machine.succeed(&cmd("pgrep -fx 'sleep 300' -c"), None).await.expect("count");
    assert_eq!(count, b"1\n");
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_that_dies_fails_the_command_in_flight_at_once() {
    let scenario = Scenario::new();
    let machine = container(&scenario, "dyingbox", Behaviour::Ready);
    machine.connect().await.expect("ready");
    let killer = {
        let machine = machine.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // PID 1 of the container's PID namespace: its death ends every process in it.
            let pid = std::fs::read_to_string(format!(
                "/proc/{}/task/{}/children",
                machine.pid().expect("pid"),
                machine.pid().expect("pid")
            ))
            .expect("children");
            let unshare: i32 = pid.split_whitespace().next().expect("unshare").parse().expect("pid");
            let init = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).expect("init");
            let init: i32 = init.split_whitespace().next().expect("init").parse().expect("pid");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL).expect("kill");
        })
    };
    let started = Instant::now();
    let error = machine.succeed(&cmd("sleep 60"), None).await.expect_err("the container died");
    killer.await.expect("killer");
    assert!(started.elapsed() < Duration::from_secs(20), "failed at once, not after the command");
    assert!(matches!(error, Error::ContainerExited { .. }), "{error}");
    let message = full_message(&error);
    assert!(
        message.starts_with("dyingbox: systemd-nspawn process exited unexpectedly while running `sleep 60`"),
        "{message}"
    );
    assert_eq!(error.kind(), ErrorKind::Machine);
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_never_gets_ready_is_reported_with_what_it_said() {
    let scenario = Scenario::new();
    let script =
        ContainerScript::new("stuckbox").behaviour(Behaviour::NeverReady).write(scenario.path()).expect("script");
    let mut config = NspawnConfig::new(script.display().to_string(), scenario.tmp_dir(), scenario.out_dir());
    config.ready_timeout = Duration::from_secs(2);
    let machine = NspawnMachine::new(config).expect("container");
    let error = machine.succeed(&cmd("true"), None).await.expect_err("never ready");
    let message = error.to_string();
    assert!(message.starts_with("stuckbox: the container was not ready (READY=1 on its NOTIFY_SOCKET) within 2 seconds: the container runs (init pid "), "{message}");
    assert!(message.contains("but its systemd never reported READY=1"), "{message}");
    assert!(message.contains("Spawning container stuckbox"), "the last output is quoted: {message}");
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_script_that_exits_is_reported_with_its_status_and_words() {
    let scenario = Scenario::new();
    let machine = container(&scenario, "quitbox", Behaviour::ExitEarly(3));
    let error = machine.succeed(&cmd("true"), None).await.expect_err("exited");
    let message = error.to_string();
    assert!(
        message.starts_with(
            "quitbox: systemd-nspawn process exited unexpectedly before the container was ready (exit code 3)"
        ),
        "{message}"
    );
    assert!(message.contains("fake-nspawn: giving up on purpose"), "{message}");
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_start_script_and_a_nameless_one_are_clear_errors() {
    let scenario = Scenario::new();
    let missing = scenario.path().join("run-ghost-nspawn");
    let machine =
        NspawnMachine::new(NspawnConfig::new(missing.display().to_string(), scenario.tmp_dir(), scenario.out_dir()))
            .expect("created; checked when started");
    let error = machine.start().await.expect_err("missing");
    assert_eq!(error.to_string(), format!("ghost: start script {} does not exist", missing.display()));
    assert_eq!(error.kind(), ErrorKind::Config);
    let nameless = NspawnMachine::new(NspawnConfig::new("/x/bin/start-it", scenario.tmp_dir(), scenario.out_dir()))
        .expect_err("no name");
    assert_eq!(nameless.to_string(), "Could not extract node name from /x/bin/start-it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_container_never_stalls_on_its_output() {
    let scenario = Scenario::new();
    // Ten times a pipe's buffer, after the container is ready.
    let machine = container(&scenario, "chattybox", Behaviour::Chatty(640 * 1024));
    machine.connect().await.expect("ready");
    let done = machine.state_dir().join("chatter-done");
    let started = Instant::now();
    while !done.exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "the start script stalled on a full pipe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    machine.succeed(&cmd("true"), None).await.expect("still answers");
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_and_containers_start_together_and_cleanup_leaves_nothing() {
    let scenario = Scenario::new();
    let vm = scenario.start_script("mixvm", &[]);
    let box_script = ContainerScript::new("mixbox").write(scenario.path()).expect("script");
    let mut options = DriverOptions::new(
        vec![MachineSpec { name: None, start_command: vm.display().to_string() }],
        scenario.out_dir(),
    );
    options.containers = vec![MachineSpec { name: None, start_command: box_script.display().to_string() }];
    options.tmp_dir = Some(scenario.tmp_dir());
    options.connect_timeout = crate::support::CONNECT_TIMEOUT;
    let driver = Driver::start(options).await.expect("driver");
    let kinds: Vec<(&str, &str)> = driver.machines().iter().map(|m| (m.name(), m.class_name())).collect();
    assert_eq!(kinds, [("mixbox", "NspawnMachine"), ("mixvm", "QemuMachine")], "sorted by name, as upstream");
    driver.start_all().await.expect("start all");
    for machine in driver.machines() {
        machine.succeed(&cmd("echo hi > /tmp/shared/from-$(hostname)-$$"), None).await.expect("command");
    }
    driver.cleanup().await;
    assert!(driver.machines().iter().all(|m| !m.is_booted()));
    scenario.assert_nothing_left();
}
