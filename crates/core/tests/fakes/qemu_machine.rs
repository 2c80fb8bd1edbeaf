//! A QEMU machine against ntd-fake's QEMU: the shared methods over the backdoor transport, what
//! only QEMU has (QMP, monitor, keys, screen, console, lifecycle, the UEFI variable store), and
//! faults.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ntd_core::efi::{Guid, Variable};
use ntd_core::machine::qemu::QemuMachine;
use ntd_core::machine::{Error, ExecuteOptions};
use ntd_core::{ErrorKind, full_message};
use serde_json::json;

use crate::support::{Scenario, eventually};

use crate::shared::{self, cmd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_byte_exact_and_keep_upstreams_statuses() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("bytes", &[]);
    shared::commands_behave(&machine).await;
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_files_and_commands() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("waits", &[]);
    shared::waits_behave(&machine).await;
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_the_shared_directory() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("files", &[]);
    shared::files_behave(&machine, &scenario).await;
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_units_follow_upstreams_rules() {
    let scenario = Scenario::new();
    let machine =
        scenario.qemu("units", &["--fake-unit-later", "web.service=active@1", "--fake-unit", "broken.service=failed"]);
    machine.wait_for_unit("web.service", None, Duration::from_secs(20)).await.expect("the unit comes up");
    let failed = machine.wait_for_unit("broken.service", None, Duration::from_secs(20)).await.expect_err("failed");
    assert_eq!(failed.to_string(), "unit \"broken.service\" reached state \"failed\"");
    let start = Instant::now();
    let inactive = machine.wait_for_unit("idle.service", None, Duration::from_secs(60)).await.expect_err("inactive");
    assert_eq!(inactive.to_string(), "unit \"idle.service\" is inactive and there are no pending jobs");
    assert!(start.elapsed() < Duration::from_secs(30), "an inactive unit with no job fails at once");
    assert_eq!(machine.get_unit_property("web.service", "ActiveState", None).await.expect("property"), "active");
    machine.require_unit_state("web.service", "active").await.expect("required state");
    let wrong = machine.require_unit_state("web.service", "failed").await.expect_err("not failed");
    assert_eq!(wrong.to_string(), "Expected unit 'web.service' to to be in state 'failed' but it is in state 'active'");
    // From the host, as while a polling condition is active: the same rules.
    machine.set_host_side_waits(true);
    ntd_fake::FakeDir::of(machine.state_dir()).set_unit_state("late.service", "activating").expect("set");
    let flip = {
        let fake = ntd_fake::FakeDir::of(machine.state_dir());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            fake.set_unit_state("late.service", "active")
        })
    };
    machine.wait_for_unit("late.service", None, Duration::from_secs(20)).await.expect("host-side unit wait");
    flip.await.expect("task").expect("set");
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_fire_and_forget_are_upstreams() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("timeouts", &[]);
    let timed = ExecuteOptions { timeout: Some(Duration::from_millis(300)), ..ExecuteOptions::default() };
    let (status, _) = machine.execute("sleep 10", timed).await.expect("run");
    assert_eq!(status, 124, "coreutils' timeout status");
    let forget = ExecuteOptions { check_output: false, ..ExecuteOptions::default() };
    assert_eq!(machine.execute("echo ignored", forget).await.expect("run"), (-2, Vec::new()));
    let no_status = ExecuteOptions { check_return: false, ..ExecuteOptions::default() };
    assert_eq!(machine.execute("echo kept; exit 5", no_status).await.expect("run"), (-1, b"kept\n".to_vec()));
    // The reply the fire-and-forget command still owed is drained before the next one.
    assert_eq!(machine.succeed(&cmd("echo next"), None).await.expect("next"), b"next\n");
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_run_before_every_command_and_can_abort_it() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("callbacks", &[]);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    machine.set_callbacks(vec![Arc::new(move || {
        if counted.fetch_add(1, Ordering::SeqCst) >= 2 { Err("the condition failed".into()) } else { Ok(()) }
    })]);
    machine.succeed(&cmd("true"), None).await.expect("first");
    machine.succeed(&cmd("true"), None).await.expect("second");
    let aborted = machine.succeed(&cmd("touch /tmp/should-not-exist"), None).await.expect_err("aborted");
    assert!(matches!(aborted, Error::Callback(_)), "{aborted}");
    assert_eq!(aborted.to_string(), "the condition failed");
    machine.set_callbacks(Vec::new());
    machine.fail(&cmd("test -e /tmp/should-not-exist"), None).await.expect("the command never ran");
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qmp_monitor_keys_screen_and_console() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("devices", &[]);
    machine.start(false).await.expect("start");
    let status = machine.qmp("query-status", None).await.expect("query-status");
    assert_eq!(status["status"], "running");
    let unknown = machine.qmp("no-such-command", None).await.expect_err("unknown");
    assert_eq!(
        full_message(&unknown),
        "devices: QMP failed: QMP error CommandNotFound: The command no-such-command has not been found"
    );
    let reply = machine.send_monitor_command("info status").await.expect("monitor");
    assert!(reply.contains("VM status: running") && reply.ends_with("(qemu) "), "{reply:?}");
    machine.send_key("alt-f2", None, true).await.expect("key");
    machine.send_chars("A!", None).await.expect("chars");
    let fake = ntd_fake::FakeDir::of(machine.state_dir());
    let recorded = fake.recorded_lines();
    assert_eq!(recorded, ["send-key alt-f2", "send-key shift-a", "send-key shift-0x02"], "as QMP got them");
    let png = machine.screenshot("screen").await.expect("screenshot");
    assert_eq!(png, scenario.out_dir().join("screen.png"));
    assert!(std::fs::read(&png).expect("png").starts_with(b"\x89PNG\r\n\x1a\n"));
    machine.send_console(b"typed\n").await.expect("console input");
    let typed = || std::fs::read(fake.console_input()).is_ok_and(|b| b == b"typed\n");
    assert!(eventually(Duration::from_secs(10), typed).await, "{:?}", std::fs::read(fake.console_input()));
    machine.connect().await.expect("connect");
    assert!(machine.console_log().contains("Linux version"), "{}", machine.console_log());
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_qmp_call_does_not_take_the_next_ones_reply() {
    let scenario = Scenario::new();
    let machine =
        scenario.qemu("slowqmp", &["--fake-qmp-delay", "1500", "--fake-qmp-event-before-reply", "--fake-qmp-garbage"]);
    machine.start(false).await.expect("start");
    // Cut short, as Ctrl-C or a timeout would: its reply arrives while the next call waits.
    let cut = tokio::time::timeout(Duration::from_millis(200), machine.qmp("query-version", None)).await;
    assert!(cut.is_err());
    let status = machine.qmp("query-status", None).await.expect("query-status");
    assert_eq!(status, json!({"status": "running", "running": true}), "its own reply, not query-version's");
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_reboot_crash_and_shutdown() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("lifecycle", &[]);
    machine.start(true).await.expect("start allowing reboots");
    machine.succeed(&cmd("touch /tmp/before-reboot"), None).await.expect("command");
    machine.reboot().await.expect("reboot");
    // A new guest: its /tmp is fresh, and the backdoor reconnects on the same socket.
    machine.fail(&cmd("test -e /tmp/before-reboot"), None).await.expect("a new boot");
    machine.crash().await.expect("crash");
    assert!(!machine.is_booted() && machine.pid().is_none());
    assert!(machine.succeed(&cmd("echo after crash"), None).await.is_ok(), "a command starts the machine again");
    machine.shutdown().await.expect("shutdown");
    assert!(!machine.is_up());
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uefi_variable_store_is_the_start_scripts_and_used_only_while_off() {
    let scenario = Scenario::new();
    let mut config = scenario.qemu_config("efi", &[]);
    // The start command notes the store it is given, then runs the fake as usual.
    config.start_command = format!("printf %s \"$NIX_EFI_VARS\" > nix-efi-vars; exec {}", config.start_command);
    config.name = Some("efi".to_owned());
    let machine = QemuMachine::new(config).expect("machine");
    let store = machine.state_dir().join("efi-efi-vars.fd");
    assert_eq!(machine.efi_vars_path(), store);
    assert_eq!(machine.read_efi_vars().await.expect("no store yet"), []);
    machine.create_efi_vars().await.expect("create");
    let exists = machine.create_efi_vars().await.expect_err("a second create");
    assert_eq!(
        (exists.to_string().as_str(), exists.kind()),
        ("OVMF variables store exists", ErrorKind::AssertionFailed)
    );
    let vendor = Guid::parse("a19f72f8-b554-4bd7-a0c2-2762bd854691").expect("guid");
    let demo = Variable::new(vendor, "Demo", [0x2a], 7);
    machine.write_efi_vars(vec![demo.clone()]).await.expect("write");
    assert_eq!(machine.read_efi_vars().await.expect("read"), std::slice::from_ref(&demo));

    machine.start(false).await.expect("start");
    let given = std::fs::read_to_string(machine.state_dir().join("nix-efi-vars")).expect("the start command ran");
    assert_eq!(Path::new(&given), store, "NIX_EFI_VARS");
    let running = "System is currently running and concurrent reads / writes to the OVMF variables is unsupported";
    let errors = [
        machine.read_efi_vars().await.map(drop).expect_err("read while running"),
        machine.write_efi_vars(Vec::new()).await.expect_err("write while running"),
        machine.create_efi_vars().await.expect_err("create while running"),
    ];
    for error in errors {
        assert_eq!((error.to_string().as_str(), error.kind()), (running, ErrorKind::AssertionFailed));
    }
    machine.shutdown().await.expect("shutdown");
    assert_eq!(machine.read_efi_vars().await.expect("off again"), [demo]);
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_that_exits_at_start_is_reported_with_its_last_words() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("early", &["--fake-exit-at-start", "1:qemu: could not load kernel"]);
    let error = machine.start(false).await.expect_err("exits");
    let message = full_message(&error);
    assert!(message.starts_with("early: QEMU exited with exit code 1 before connecting to the driver"), "{message}");
    assert!(message.contains("qemu: could not load kernel"), "{message}");
    assert_eq!(error.kind(), ErrorKind::Machine);
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_never_connects_times_out_with_the_console_tail() {
    let scenario = Scenario::new();
    let mut config = scenario.qemu_config("silent", &["--fake-no-backdoor", "--fake-console-lines", "3"]);
    config.connect_timeout = Duration::from_secs(2);
    let machine = ntd_core::machine::qemu::QemuMachine::new(config).expect("machine");
    let error = machine.connect().await.expect_err("never connects");
    let message = error.to_string();
    assert!(message.starts_with("silent: the guest's backdoor shell did not connect within 2 seconds"), "{message}");
    assert!(message.contains("last serial console lines:"), "{message}");
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_that_closes_mid_reply_fails_the_command() {
    let scenario = Scenario::new();
    // The console framing (no ports), where the reply comes on the console that closes.
    let machine = scenario.qemu("closing", &["--fake-no-ports", "--fake-shell-close-after", "100"]);
    let error = machine.succeed(&cmd("head -c 1000 /dev/zero"), None).await.expect_err("disconnects");
    assert!(
        error
            .to_string()
            .starts_with("closing: the backdoor shell disconnected while running `head -c 1000 /dev/zero`"),
        "{error}"
    );
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_panic_fails_the_command_in_flight_at_once() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("panicking", &[]);
    machine.connect().await.expect("connect");
    let start = Instant::now();
    let error = machine.succeed(&cmd("fake-panic; sleep 60"), None).await.expect_err("panics");
    assert!(start.elapsed() < Duration::from_secs(20), "noticed at once, not after the command's timeout");
    let message = error.to_string();
    assert!(message.contains("(the guest kernel panicked: Kernel panic - not syncing: fake panic)"), "{message}");
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_dying_under_a_command_fails_it_at_once() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("dying", &["--fake-die-after", "2"]);
    machine.connect().await.expect("connect");
    let start = Instant::now();
    let error = machine.succeed(&cmd("sleep 60"), None).await.expect_err("QEMU dies");
    assert!(start.elapsed() < Duration::from_secs(20), "noticed at once");
    assert!(error.to_string().contains("(QEMU exited with signal 9 (SIGKILL))"), "{error}");
    machine.release().await;
    scenario.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_waits_take_each_line_once() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("console", &["--fake-console-lines", "5"]);
    machine.start(false).await.expect("start");
    let seen = |needle: &'static str| move |buffer: &str| buffer.contains(needle);
    machine
        .wait_for_console_text("Linux version", seen("Linux version"), Some(Duration::from_secs(20)))
        .await
        .expect("the boot's first line");
    // The line that ended the first wait is consumed: the same text is not there any more.
    let again =
        machine.wait_for_console_text("Linux version", seen("Linux version"), Some(Duration::from_secs(1))).await;
    assert_eq!(again.expect_err("consumed").to_string().split(" seconds").last(), Some(" (timeout=1.0)"));
    machine.succeed(&cmd("echo to-the-console >&2"), None).await.expect("stderr goes to the console");
    machine
        .wait_for_console_text("to-the-console", seen("to-the-console"), None)
        .await
        .expect("a line arriving later, without a timeout");
    machine.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocr_wait_that_never_matches_says_what_it_read() {
    let scenario = Scenario::new();
    let machine = scenario.qemu("ocr", &[]);
    machine.start(false).await.expect("start");
    let error = machine
        .wait_for_text("never on a blank screen", |_| false, Duration::from_secs(1))
        .await
        .expect_err("a blank screen never matches");
    assert!(error.to_string().ends_with(" seconds (timeout=1.0)"), "{error}");
    assert!(crate::support::logs().contains("ocr: Last OCR attempt failed. Text was: ["), "{}", crate::support::logs());
    machine.release().await;
}
