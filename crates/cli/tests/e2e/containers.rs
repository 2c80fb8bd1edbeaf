//! systemd-nspawn containers of the container guest (tests/container/build), alone and beside
//! VMs on shared VLANs, through the real `nixos-test-driver`: upstream's containers.nix and
//! nspawn-daemon-reexec-dbus checks, every shared machine method, the faults a container
//! shows, and that nothing of a container — processes, veths, bridges, taps — outlives a run,
//! however it ends (the global timeout, SIGTERM, even SIGKILL of the driver).
//!
//! Each test uses VLAN numbers of its own: a bridge `br<N>` and a tap `vde-tap<N>` are one per
//! host, and the tests run side by side.

use std::path::Path;
use std::time::Duration;

use crate::harness::{DEBIAN_LIMIT, Scenario, Tier, repo_file};

/// How long a test with containers only may take (a hang guard).
const CONTAINER_LIMIT: Duration = Duration::from_secs(180);

/// Network devices a container run of `names` on `vlans` makes on the host: bridges, taps and
/// the host ends of the veths. None may be left after a run.
fn assert_no_network_left(names: &[&str], vlans: &[u32]) {
    let devices: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let left: Vec<&String> = devices
        .iter()
        .filter(|device| {
            vlans.iter().any(|vlan| **device == format!("br{vlan}") || **device == format!("vde-tap{vlan}"))
                || names.iter().any(|name| device.starts_with(&format!("{name}-eth")))
        })
        .collect();
    assert!(left.is_empty(), "network devices outlived the run: {left:?}");
}

/// Fail if a process runs in a container whose root is in `dir` (what the scenario's process
/// check cannot see: a container's processes name nothing of the scenario).
fn assert_no_container_process_left(dir: &Path) {
    let dir = dir.to_string_lossy().into_owned();
    let mut left = Vec::new();
    for _ in 0..50 {
        left = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|entry| {
                std::fs::read_link(entry.path().join("root")).is_ok_and(|root| root.to_string_lossy().starts_with(&dir))
            })
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        if left.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("container processes outlived the run: {left:?}");
}

#[test]
fn a_container_alone_runs_every_shared_method() {
    let mut scenario = Scenario::new();
    scenario.machine("box", Tier::Container, &[]);
    let run = scenario.run(&repo_file("tests/e2e/container_alone.py"), &[], CONTAINER_LIMIT);
    run.assert_status(0);
    for subtest in ["commands", "systemd", "files", "the bus survives daemon-reexec", "shutdown"] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    run.assert_stderr_contains("box: systemd-nspawn running (pid ");
    // The container's journal is its console log.
    run.assert_stderr_contains("box # ");
    run.assert_stderr_contains("Startup finished in");
    run.assert_stderr_contains("box: waiting for the container to power off");
    assert_no_container_process_left(scenario.path());
}

#[test]
fn containers_and_a_vm_share_vlans_as_upstreams_containers_test() {
    let mut scenario = Scenario::new();
    scenario.mixed_network(&[
        ("c1", Tier::Container, &[3]),
        ("c2", Tier::Container, &[4]),
        ("c12", Tier::Container, &[3, 4]),
        ("n1", Tier::Debian, &[3]),
    ]);
    let run = scenario.run(&repo_file("tests/e2e/containers.py"), &[], DEBIAN_LIMIT * 2);
    run.assert_status(0);
    for subtest in [
        "containers on a VLAN reach each other",
        "containers on separate VLANs do not",
        "a container and a VM on a VLAN reach each other both ways",
        "a container and a VM on separate VLANs do not",
    ] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    assert_eq!(std::fs::read_to_string(scenario.out_dir().join("hello.txt")).expect("copied"), "hello\n");
    run.assert_stderr_contains("creating tap interface vde-tap3");
    assert_no_network_left(&["c1", "c2", "c12"], &[3, 4]);
    assert_no_container_process_left(scenario.path());
}

#[test]
fn faults_are_clear_and_leave_nothing() {
    let mut scenario = Scenario::new();
    scenario.mixed_network(&[("dying", Tier::Container, &[5]), ("stuck", Tier::Container, &[5])]);
    // A container whose systemd-nspawn never reports (its NOTIFY_SOCKET taken away).
    let real = scenario.bin_dir().join("run-stuck-nspawn");
    let inner = scenario.bin_dir().join("real-run-stuck-nspawn");
    std::fs::rename(&real, &inner).expect("move");
    scenario.write(
        "bin/run-stuck-nspawn",
        &format!("#!/bin/sh\nexec /usr/bin/env -u NOTIFY_SOCKET {} \"$@\"\n", inner.display()),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let test = scenario.write(
        "test.py",
        r#"
import os, signal, threading, time
from test_driver.errors import MachineError
pid = dying.get_systemd_process
threading.Timer(2, os.kill, (pid, signal.SIGKILL)).start()
started = time.monotonic()
try:
    dying.succeed("sleep 600")
    raise Exception("the command outlived its container")
except MachineError as e:
    assert "dying: systemd-nspawn process exited unexpectedly while running `sleep 600`" in str(e), str(e)
assert time.monotonic() - started < 60
try:
    stuck.succeed("true")
    raise Exception("a container that never got ready ran a command")
except MachineError as e:
    assert "stuck: the container was not ready (READY=1 on its NOTIFY_SOCKET) within 15 seconds" in str(e), str(e)
print("faults reported")
"#,
    );
    let run = scenario.run(&test, &["--connect-timeout", "15"], CONTAINER_LIMIT);
    run.assert_status(0);
    assert_eq!(run.stdout.lines().last(), Some("faults reported"), "{}", run.stderr);
    assert_no_network_left(&["dying", "stuck"], &[5]);
    assert_no_container_process_left(scenario.path());

    // A start script that is not there: one clear error before anything starts.
    let mut missing = Scenario::new();
    missing.pass_container_script(missing.bin_dir().join("run-ghost-nspawn"));
    let test = missing.write("test.py", "ghost.start()\n");
    let run = missing.run(&test, &[], CONTAINER_LIMIT);
    run.assert_status(2);
    run.assert_stderr_contains(&format!(
        "start script {} does not exist",
        missing.bin_dir().join("run-ghost-nspawn").display()
    ));
}

#[test]
fn the_global_timeout_and_sigterm_leave_no_container_behind() {
    let mut scenario = Scenario::new();
    scenario.mixed_network(&[("late", Tier::Container, &[6])]);
    let test = scenario.write("test.py", "late.wait_for_unit('multi-user.target')\nlate.succeed('sleep 600')\n");
    let run = scenario.run(&test, &["--global-timeout", "20"], CONTAINER_LIMIT);
    run.assert_status(143);
    assert_no_network_left(&["late"], &[6]);
    assert_no_container_process_left(scenario.path());

    // SIGTERM during a command: the driver stops the run and the container goes with it.
    let mut scenario = Scenario::new();
    scenario.mixed_network(&[("term", Tier::Container, &[7])]);
    let test = scenario.write("test.py", "term.wait_for_unit('multi-user.target')\nterm.succeed('sleep 600')\n");
    let mut command = scenario.command(&[]);
    scenario.add_machines(&mut command, &test);
    let run = scenario.run_signalled(command, "must succeed: sleep 600", None, libc::SIGTERM, CONTAINER_LIMIT);
    run.assert_status(143);
    run.assert_stderr_contains("received SIGTERM; stopping the test");
    assert_no_network_left(&["term"], &[7]);
    assert_no_container_process_left(scenario.path());

    // SIGKILL: the driver cannot clean up; its children's death signals do (the start script
    // gets SIGTERM and removes the container and its network, vde_plug2tap and the switch die).
    let mut scenario = Scenario::new();
    scenario.mixed_network(&[("killed", Tier::Container, &[8])]);
    let test = scenario.write("test.py", "killed.wait_for_unit('multi-user.target')\nkilled.succeed('sleep 600')\n");
    let mut command = scenario.command(&[]);
    scenario.add_machines(&mut command, &test);
    let run = scenario.run_signalled(command, "must succeed: sleep 600", None, libc::SIGKILL, CONTAINER_LIMIT);
    assert_eq!(run.status, None, "killed by a signal:\n{}", run.stderr);
    let mut left = Vec::new();
    for _ in 0..100 {
        left = std::fs::read_dir("/sys/class/net")
            .expect("/sys/class/net")
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|device| ["br8", "vde-tap8", "killed-eth1"].contains(&device.as_str()))
            .collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left.is_empty(), "network devices outlived the killed driver: {left:?}");
    assert_no_container_process_left(scenario.path());
}
