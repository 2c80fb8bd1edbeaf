//! The command channel against ntd-fake's QEMU, whose guest has the two virtio ports (served
//! with a real port's semantics: one open at a time, writes that wait for the reader) unless
//! `--fake-no-ports`: output that a stalled reader does not lose, output that ends at the end
//! of stdout, commands killed in the guest on a timeout or when the caller gives up, and the
//! console fallback, where a lost byte is an error and never a result.

use std::time::{Duration, Instant};

use ntd_core::machine::ExecuteOptions;
use ntd_core::machine::qemu::QemuMachine;

use crate::shared::{self, cmd};
use crate::support::{Scenario, logs};

/// `seq 1 N`, as the guest prints it.
fn seq(n: u32) -> Vec<u8> {
    (1..=n).flat_map(|i| format!("{i}\n").into_bytes()).collect()
}

/// The command lines in the fake guest's process table that contain `needle`.
async fn guest_processes(machine: &QemuMachine, needle: &str) -> Vec<String> {
    let table = machine
        .succeed(&cmd("for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <$f 2>/dev/null; echo; done"), None)
        .await
        .expect("the process table");
    String::from_utf8_lossy(&table).lines().filter(|line| line.contains(needle)).map(str::to_owned).collect()
}

/// How long `echo` takes to answer.
async fn answer_time(machine: &QemuMachine) -> Duration {
    let start = Instant::now();
    assert_eq!(machine.succeed(&cmd("echo here"), None).await.expect("echo"), b"here\n");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_output_port_loses_nothing() {
    let scenario = Scenario::new();
    // The fake stops reading the output port for 2 s after the first 100 kB.
    let machine = scenario.qemu("stalled", &["--fake-port-stall", "org.nixos.ntd.out:100000:2000"]);
    machine.connect().await.expect("connect");
    assert!(logs().contains("stalled: command channel: command output through the virtio port"), "{}", logs());
    let start = Instant::now();
    let out = machine.succeed(&cmd("seq 1 300000"), None).await.expect("seq");
    assert!(start.elapsed() >= Duration::from_millis(1900), "the stall held the writer back");
    assert!(out == seq(300_000), "{} bytes, not the {} that seq printed", out.len(), seq(300_000).len());
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_ends_at_the_end_of_stdout_on_the_port_and_on_the_console() {
    let scenario = Scenario::new();
    for (name, options) in [("eof-port", &[][..]), ("eof-console", &["--fake-no-ports"][..])] {
        let machine = scenario.qemu(name, options);
        // A background job that keeps stdout is waited for; its output is part of the result.
        let out = machine.succeed(&cmd("(echo ONE; sleep 1; echo TWO) &"), None).await.expect("background");
        assert_eq!(String::from_utf8_lossy(&out), "ONE\nTWO\n", "{name}");
        // One with its own stdout is not.
        let start = Instant::now();
        machine.succeed(&cmd("sleep 30 >/dev/null &"), None).await.expect("detached");
        assert!(start.elapsed() < Duration::from_secs(10), "{name}: waited for a job with its own stdout");
        machine.release().await;
    }
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_command_tree_in_the_guest() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("timeout", &[]);
    let options = ExecuteOptions { timeout: Some(Duration::from_secs(1)), ..ExecuteOptions::default() };
    let (status, out) =
        machine.execute("echo begun; sleep 71 | sleep 72 & setsid sleep 73 & sleep 74", options).await.expect("run");
    assert_eq!((status, out.as_slice()), (124, &b"begun\n"[..]));
    assert!(logs().contains("timed out after 1 seconds: killed "), "{}", logs());
    let answer = answer_time(&machine).await;
    assert!(answer < Duration::from_secs(1), "the shell answered after {answer:?}");
    for sleeper in ["sleep 71", "sleep 72", "sleep 73", "sleep 74"] {
        assert_eq!(guest_processes(&machine, sleeper).await, Vec::<String>::new(), "{sleeper} survived");
    }
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_caller_gives_up_is_killed_in_the_guest() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("abandoned", &[]);
    machine.connect().await.expect("connect");
    // The caller stops waiting (as a KeyboardInterrupt makes the script do).
    let abandoned = tokio::time::timeout(Duration::from_secs(1), machine.succeed(&cmd("sleep 81"), None)).await;
    assert!(abandoned.is_err(), "sleep 81 returned: {abandoned:?}");
    let answer = answer_time(&machine).await;
    assert!(answer < Duration::from_secs(1), "the shell answered after {answer:?}");
    assert_eq!(guest_processes(&machine, "sleep 81").await, Vec::<String>::new());
    assert!(logs().contains("abandoned: `sleep 81` was interrupted: killed "), "{}", logs());
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_fallback_runs_commands_and_turns_lost_bytes_into_an_error() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("fallback", &["--fake-no-ports"]);
    shared::commands_behave(&machine).await;
    assert!(logs().contains("fallback: command channel: command output on the console"), "{}", logs());
    // The guest runs the timeout, as upstream's does.
    let options = ExecuteOptions { timeout: Some(Duration::from_secs(1)), ..ExecuteOptions::default() };
    let start = Instant::now();
    let (status, _) = machine.execute("sleep 30", options).await.expect("run");
    assert_eq!(status, 124);
    assert!(start.elapsed() < Duration::from_secs(10), "the guest's timeout took {:?}", start.elapsed());
    machine.release().await;

    // 100 bytes of the reply are dropped, as QEMU drops console bytes a full socket refuses.
    let machine = scenario.qemu("lossy", &["--fake-no-ports", "--fake-shell-drop", "20000:100"]);
    machine.connect().await.expect("connect");
    let error = machine.succeed(&cmd("seq 1 20000"), None).await.expect_err("bytes were lost");
    let message = ntd_core::full_message(&error);
    assert!(message.contains("bytes were lost: the guest sent 108894 bytes of output"), "{message}");
    // The shell goes on.
    assert_eq!(machine.succeed(&cmd("echo after"), None).await.expect("after"), b"after\n");
    machine.release().await;
    scenario.assert_nothing_left();
}
