//! The `--fake-*` faults, one family per test: what a test of ntd's error handling relies on.

mod common;

use common::{Machine, assert_no_processes, fake_binary};
use serde_json::json;

#[tokio::test]
async fn exit_at_start_creates_nothing() {
    let state = tempfile::tempdir().expect("temp dir");
    let qmp = state.path().join("qmp");
    let output = tokio::process::Command::new(fake_binary())
        .args(["--fake-exit-at-start", "3:qemu-system-x86_64: failed to initialize kvm: No such file or directory"])
        .args(["-qmp", &format!("unix:{},server=on,wait=off", qmp.display())])
        .env("TMPDIR", state.path())
        .output()
        .await
        .expect("run the fake");
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "qemu-system-x86_64: failed to initialize kvm: No such file or directory\n"
    );
    assert!(output.stdout.is_empty());
    assert_eq!(std::fs::read_dir(state.path()).expect("read dir").count(), 0, "nothing created");
}

#[tokio::test]
async fn missing_pieces_are_clear_errors() {
    let output = tokio::process::Command::new(fake_binary()).args(["-m", "512"]).output().await.expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "ntd-fake-qemu: no -qmp unix:PATH,server=on,wait=off option\n");

    let state = tempfile::tempdir().expect("temp dir");
    let output = tokio::process::Command::new(fake_binary())
        .args(["-qmp", &format!("unix:{}/qmp,server=on,wait=off", state.path().display())])
        .args(["-chardev", &format!("socket,id=shell,path={}/absent", state.path().display())])
        .args(["-device", "virtconsole,chardev=shell"])
        .env("TMPDIR", state.path())
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "qemu-system-x86_64: -chardev socket,id=shell: Failed to connect to '{}/absent': No such file or directory\n",
            state.path().display()
        )
    );
    let output =
        tokio::process::Command::new(fake_binary()).arg("--fake-shell-drop").arg("x").output().await.expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--fake-shell-drop: invalid value \"x\""));
}

#[tokio::test]
async fn shell_drop_discards_bytes_silently() {
    let mut machine = Machine::start(&["--fake-shell-drop", "3:4"], true).await;
    machine.wait_marker().await;
    // Guest output counts from the shell's first byte: `abcdefghij` loses `defg`.
    assert_eq!(machine.run("printf abcdefghij").await, (0, b"abchij".to_vec()));
    assert_eq!(machine.run("printf abcdefghij").await, (0, b"abcdefghij".to_vec()), "only once");
}

#[tokio::test]
async fn shell_close_after_disconnects_mid_reply() {
    let mut machine = Machine::start(&["--fake-shell-close-after", "5", "--fake-shell-garbage", "junk"], true).await;
    machine.wait_marker().await;
    machine.send("printf abcdefghij", "0123456789abcdef").await;
    // The garbage after the marker, then exactly five bytes of the reply, then the end.
    assert_eq!(machine.read_shell_to_end().await, b"junkabcde");
    // QEMU itself is still up: it answers QMP, and quits when asked.
    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    assert_eq!(qmp.execute(r#"{"execute": "query-status"}"#).await["return"]["running"], true);
    qmp.send(r#"{"execute": "quit"}"#).await;
    assert_eq!(machine.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn shell_delay_slows_every_chunk() {
    let mut machine = Machine::start(&["--fake-shell-delay", "200"], true).await;
    machine.wait_marker().await;
    let started = std::time::Instant::now();
    assert_eq!(machine.run("echo slow").await, (0, b"slow\n".to_vec()));
    // A lower bound: the delay happened (never an upper bound on speed).
    assert!(started.elapsed() >= std::time::Duration::from_millis(200), "{:?}", started.elapsed());
}

#[tokio::test]
async fn qmp_without_ids_and_with_garbage() {
    let machine = Machine::start(&["--fake-qmp-no-id", "--fake-qmp-garbage"], true).await;
    let mut qmp = machine.qmp().await;
    qmp.send(r#"{"execute": "qmp_capabilities", "id": 1}"#).await;
    assert_eq!(qmp.raw_line().await, "ntd-fake-qemu: this line is not JSON\r\n");
    assert_eq!(qmp.json().await, json!({"return": {}}), "no id");
    qmp.send(r#"{"execute": "query-status", "id": "a"}"#).await;
    assert!(serde_json::from_str::<serde_json::Value>(&qmp.raw_line().await).is_err(), "garbage before every reply");
    assert_eq!(qmp.json().await, json!({"return": {"status": "running", "running": true}}));
}

#[tokio::test]
async fn qmp_event_before_reply_and_no_reply() {
    let machine = Machine::start(&["--fake-qmp-event-before-reply", "--fake-qmp-no-reply", "query-status"], true).await;
    let mut qmp = machine.qmp().await;
    qmp.send(r#"{"execute": "qmp_capabilities", "id": 1}"#).await;
    let event = qmp.json().await;
    assert_eq!(event["event"], "RTC_CHANGE");
    assert!(event["timestamp"]["seconds"].is_u64());
    assert_eq!(qmp.json().await, json!({"return": {}, "id": 1}));
    // query-status is never answered; the next command is.
    qmp.send(r#"{"execute": "query-status", "id": 2}"#).await;
    qmp.send(r#"{"execute": "query-version", "id": 3}"#).await;
    assert_eq!(qmp.json().await["event"], "RTC_CHANGE");
    assert_eq!(qmp.json().await["id"], 3, "the unanswered command left no reply");
}

#[tokio::test]
async fn die_after_leaves_no_process_behind() {
    let mut machine = Machine::start(&["--fake-die-after", "3"], true).await;
    machine.wait_marker().await;
    assert_eq!(machine.run("(sleep 984.3 >/dev/null 2>&1 &); echo started").await, (0, b"started\n".to_vec()));
    common::wait_for_process("sleep 984.3").await;
    let status = machine.wait_exit().await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed like a crashing QEMU: {status:?}");
    assert_no_processes("sleep 984.3").await;
}

#[tokio::test]
async fn no_backdoor_boots_without_a_shell() {
    let mut machine = Machine::start(&["--fake-no-backdoor", "--fake-console-lines", "3"], true).await;
    machine.wait_console("console chatter, line 3 of 3").await;
    machine.wait_console("Reached target Multi-User System").await;
    // QEMU runs; the shell stays silent until QEMU goes.
    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    qmp.send(r#"{"execute": "quit"}"#).await;
    assert_eq!(machine.wait_exit().await.code(), Some(0));
    assert_eq!(machine.read_shell_to_end().await, b"", "no marker, nothing at all");
    assert!(!machine.console().contains("connecting to host"));
}

#[tokio::test]
async fn boot_delay_holds_the_marker_back() {
    let started = std::time::Instant::now();
    let mut machine = Machine::start(&["--fake-boot-delay", "0.3"], true).await;
    machine.wait_marker().await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "{:?}", started.elapsed());
    machine.wait_console("connecting to host...").await;
    let console = machine.console();
    let boot = console.find("Linux version").expect("boot lines");
    let connect = console.find("connecting to host...").expect("backdoor line");
    assert!(boot < connect, "{console}");
}
