//! The driver and the run's policy against fake QEMU machines and real `vde_switch`es: the
//! machines' lifecycle (`create_machine` included), cleanup, the global timeout, a dying switch,
//! and the hooks that interrupt and abandon a script.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ntd_core::config::MachineSpec;
use ntd_core::driver::{Driver, DriverOptions, Stop, StopHooks};
use ntd_core::{ErrorKind, full_message};

use crate::shared::cmd;
use crate::support::{CONNECT_TIMEOUT, Scenario, eventually, logs};

fn options(scenario: &Scenario, machines: &[(&str, &[&str])]) -> DriverOptions {
    let specs = machines
        .iter()
        .map(|(name, fake_options)| MachineSpec {
            name: None,
            start_command: scenario.start_script(name, fake_options).display().to_string(),
        })
        .collect();
    let mut options = DriverOptions::new(specs, scenario.out_dir());
    options.tmp_dir = Some(scenario.tmp_dir());
    options.connect_timeout = CONNECT_TIMEOUT;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_on_a_vlan_start_together_and_cleanup_leaves_nothing() {
    let scenario = Scenario::new();
    let mut options = options(&scenario, &[("zulu", &[]), ("alpha", &[])]);
    options.vlans = vec![1, 1];
    let driver = Driver::start(options).await.expect("driver");
    let names: Vec<&str> = driver.machines().iter().map(|m| m.name()).collect();
    assert_eq!(names, ["alpha", "zulu"], "sorted by name, as upstream");
    assert_eq!(driver.vlans().len(), 1, "one switch per distinct VLAN");
    let socket_dir = driver.vlans()[0].socket_dir().to_owned();
    assert!(socket_dir.join("ctl").exists());
    driver.start_all().await.expect("start all");
    assert!(driver.machines().iter().all(|m| m.is_booted()));
    // A machine made later is the driver's too: cleanup stops it.
    let script = scenario.start_script("later", &[]);
    let later = driver.create_machine(&script.display().to_string(), None, false).expect("create_machine");
    assert_eq!(later.name(), "later");
    later.succeed(&cmd("echo hi"), None).await.expect("command on the created machine");
    assert_eq!(driver.all_machines().len(), 3);
    for machine in driver.machines() {
        machine.succeed(&cmd("true"), None).await.expect("command");
    }
    let state_dirs: Vec<_> = driver.all_machines().iter().map(|m| m.state_dir().to_owned()).collect();
    driver.cleanup().await;
    assert!(!later.is_booted());
    assert!(state_dirs.iter().all(|dir| !dir.exists()), "state directories are removed");
    assert!(!socket_dir.exists(), "the switch's sockets are removed");
    assert!(!scenario.tmp_dir().join("shared-xchg").exists(), "the empty shared directory is removed");
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_timeout_kills_the_machines_and_stops_the_run() {
    let scenario = Scenario::new();
    let mut options = options(&scenario, &[("sleeper", &[])]);
    options.global_timeout = Duration::from_secs(3);
    let driver = Driver::start(options).await.expect("driver");
    let machine = driver.machines()[0].clone();
    machine.connect().await.expect("connect");
    let outcome = driver
        .run(async {
            machine.succeed(&cmd("sleep 60"), None).await.expect_err("the machine is killed under the command");
            // The script goes on as scripts do after an error; the run is stopped regardless.
            std::future::pending::<()>().await;
        })
        .await;
    assert_eq!(outcome, Err(Stop::GlobalTimeout(Duration::from_secs(3))));
    assert_eq!(driver.stop_reason(), Some(Stop::GlobalTimeout(Duration::from_secs(3))));
    assert_eq!(
        Stop::GlobalTimeout(Duration::from_secs(3)).message(),
        "the test was stopped by its global timeout (3 seconds)"
    );
    assert!(logs().contains("timeout reached; test terminating..."));
    driver.cleanup().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_switch_stops_the_run_with_its_name() {
    let scenario = Scenario::new();
    let mut options = options(&scenario, &[("networked", &[])]);
    options.vlans = vec![7];
    let driver = Driver::start(options).await.expect("driver");
    let machine = driver.machines()[0].clone();
    machine.connect().await.expect("connect");
    let switch = driver.vlans()[0].pid();
    let outcome = driver
        .run(async {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(switch as i32), nix::sys::signal::Signal::SIGKILL)
                .expect("kill the switch");
            machine.succeed(&cmd("sleep 60"), None).await.map(drop)
        })
        .await;
    let Err(Stop::SwitchFailed(message)) = outcome else { panic!("not stopped by the switch: {outcome:?}") };
    assert_eq!(
        message,
        "vlan 7: vde_switch exited unexpectedly with signal 9 (SIGKILL); the machines on this VLAN lost their network"
    );
    driver.cleanup().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_does_not_stop_is_interrupted_then_abandoned() {
    let scenario = Scenario::new();
    let mut options = options(&scenario, &[]);
    options.global_timeout = Duration::from_millis(500);
    options.stop_grace = Duration::from_millis(500);
    let driver = Driver::start(options).await.expect("driver");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (interrupted, abandoned) = (Arc::clone(&seen), Arc::clone(&seen));
    driver.set_stop_hooks(StopHooks {
        interrupt: Box::new(move |stop| {
            interrupted.lock().expect("lock").push(format!("interrupt: {}", stop.message()))
        }),
        abandon: Some(Box::new(move |stop| {
            abandoned.lock().expect("lock").push(format!("abandon: {}", stop.abandon_message()))
        })),
    });
    driver.arm_global_timeout();
    assert!(eventually(Duration::from_secs(20), || seen.lock().expect("lock").len() == 2).await, "{seen:?}");
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            "interrupt: the test was stopped by its global timeout (0.5 seconds)",
            "abandon: the test script did not stop after the global timeout",
        ]
    );
    driver.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_stops_in_time_is_not_abandoned() {
    let scenario = Scenario::new();
    let mut options = options(&scenario, &[]);
    options.global_timeout = Duration::from_millis(300);
    options.stop_grace = Duration::from_millis(500);
    let driver = Driver::start(options).await.expect("driver");
    let abandoned = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&abandoned);
    let finisher = driver.clone();
    driver.set_stop_hooks(StopHooks {
        // The script stops as soon as it is interrupted: the run is finished.
        interrupt: Box::new(move |_| finisher.finish()),
        abandon: Some(Box::new(move |_| *flag.lock().expect("lock") = true)),
    });
    driver.arm_global_timeout();
    assert!(eventually(Duration::from_secs(10), || driver.stop_reason().is_some()).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!*abandoned.lock().expect("lock"), "a finished run is never abandoned");
    driver.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_machines_with_one_name_are_refused() {
    let scenario = Scenario::new();
    let mut options = options(&scenario, &[("twin", &[])]);
    let again = options.machines[0].clone();
    options.machines.push(again);
    options.vlans = vec![3];
    let error = Driver::start(options).await.expect_err("duplicate");
    assert_eq!(error.to_string(), "two machines are named \"twin\"");
    assert_eq!(error.kind(), ErrorKind::Config);
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_failure_names_every_machine_and_its_cause() {
    let scenario = Scenario::new();
    let options = options(
        &scenario,
        &[
            ("ok", &[]),
            ("bad1", &["--fake-exit-at-start", "1:no kernel"]),
            ("bad2", &["--fake-exit-at-start", "3:no disk"]),
        ],
    );
    let driver = Driver::start(options).await.expect("driver");
    let error = driver.start_all().await.expect_err("two fail");
    let message = full_message(&error);
    assert!(
        message.starts_with("Failed to start the following machines:\nbad1: QEMU exited with exit code 1"),
        "{message}"
    );
    assert!(
        message.contains("no kernel")
            && message.contains("\nbad2: QEMU exited with exit code 3")
            && message.contains("no disk"),
        "{message}"
    );
    driver.cleanup().await;
    scenario.assert_nothing_left();
}
