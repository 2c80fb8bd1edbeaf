//! The fake QEMU driven as ntd drives QEMU: boot, QMP, HMP, the backdoor shell, the guest's
//! isolation, systemd, power-off, reboot, panic and signals.

mod common;

use common::{Machine, Qmp, assert_no_processes};
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn boots_runs_commands_and_powers_off() {
    let mut machine = Machine::start(&[], true).await;

    // HMP: greeting and prompt, then a command echoed with its output.
    let greeting = machine.monitor_reply().await;
    assert_eq!(greeting, "QEMU 10.0.2 monitor - type 'help' for more information\r\n(qemu) ");
    assert_eq!(machine.monitor_command("info status").await, "info status\r\nVM status: running\r\n(qemu) ");

    // QMP: commands before negotiation fail, ids of any type are echoed.
    let mut qmp = machine.qmp().await;
    let early = qmp.execute(r#"{"execute": "query-status", "id": 1}"#).await;
    assert_eq!(
        early,
        json!({"error": {"class": "CommandNotFound",
            "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}, "id": 1})
    );
    assert_eq!(
        qmp.execute(r#"{"execute": "qmp_capabilities", "id": {"n": [1, "two"]}}"#).await,
        json!({"return": {}, "id": {"n": [1, "two"]}})
    );
    assert_eq!(
        qmp.execute(r#"{"execute": "query-status", "id": "s"}"#).await,
        json!({"return": {"status": "running", "running": true}, "id": "s"})
    );

    // The backdoor: the marker, then commands through a real bash.
    std::fs::write(machine.shared.join("from-host.txt"), "x").expect("write to the shared dir");
    assert_eq!(machine.wait_marker().await, b"", "nothing before the marker");
    let (status, output) = machine.run("echo hello; ls /tmp/shared").await;
    assert_eq!((status, output.as_slice()), (0, &b"hello\nfrom-host.txt\n"[..]));
    let (status, output) = machine.run("echo 'it'\\''s'; exit 3").await;
    assert_eq!((status, output.as_slice()), (3, &b"it's\n"[..]));

    // The guest's /tmp is its own: a host file there is invisible, a guest file stays inside,
    // and what the guest writes to /tmp/shared reaches the host.
    let host_file = tempfile::NamedTempFile::new_in("/tmp").expect("host temp file");
    let host_name = host_file.path().file_name().expect("name").to_string_lossy().into_owned();
    let (status, _) = machine.run(&format!("test ! -e /tmp/{host_name}")).await;
    assert_eq!(status, 0, "the guest sees the host's /tmp");
    let guest_name = format!("ntd-fake-guest-{}", std::process::id());
    assert_eq!(machine.run(&format!("touch /tmp/{guest_name}; echo out > /tmp/shared/back.txt")).await.0, 0);
    assert!(!std::path::Path::new("/tmp").join(&guest_name).exists(), "a guest file leaked into the host's /tmp");
    assert_eq!(std::fs::read_to_string(machine.shared.join("back.txt")).expect("shared file"), "out\n");

    // The guest's stderr is the serial console; what is typed on the console is read.
    assert_eq!(machine.run("echo on-the-console >&2").await, (0, Vec::new()));
    machine.wait_console("on-the-console").await;
    let typed = machine.child.stdin.as_mut().expect("stdin");
    typed.write_all(b"typed\n").await.expect("type on the console");
    let input = machine.fake_dir().console_input();
    common::wait_until(|| std::fs::read(&input).is_ok_and(|bytes| bytes == b"typed\n")).await;

    // systemd: the booted system's target is active.
    let (status, output) = machine.run("systemctl show multi-user.target --property=ActiveState").await;
    assert_eq!((status, output.as_slice()), (0, &b"ActiveState=active\n"[..]));

    // `poweroff` raw, as ntd's shutdown() sends it: SHUTDOWN, then QEMU exits 0.
    machine.shell.write_all(b"poweroff\n").await.expect("write poweroff");
    let event = qmp.event("SHUTDOWN").await;
    assert_eq!(event["data"], json!({"guest": true, "reason": "guest-shutdown"}));
    assert!(event["timestamp"]["seconds"].as_u64().is_some_and(|s| s > 0), "{event}");
    assert!(event["timestamp"]["microseconds"].is_u64(), "{event}");
    let status = machine.wait_exit().await;
    assert_eq!(status.code(), Some(0));
    // The console is read by a task of its own, which may still be reading its last lines.
    machine.wait_console("reboot: Power down").await;
    assert_eq!(qmp.raw_line().await, "", "QMP closes when QEMU exits");
    assert_eq!(machine.stderr(), "");
}

#[tokio::test]
async fn runs_unprivileged_in_a_user_namespace() {
    // As root, run it as nobody; otherwise every test already runs unprivileged.
    let user = nix::unistd::geteuid().is_root().then_some((65534, 65534));
    let mut machine = Machine::start_as(&[], true, user).await;
    machine.wait_marker().await;
    let (status, output) = machine.run("id -u; touch /tmp/shared/mine; ls /tmp/shared; echo $$").await;
    assert_eq!((status, output.as_slice()), (0, &b"0\nmine\n1\n"[..]), "root in the guest, pid 1");
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(machine.shared.join("mine")).expect("shared file").uid();
    assert_eq!(
        owner,
        user.map_or_else(|| nix::unistd::geteuid().as_raw(), |(uid, _)| uid),
        "the guest's root is the caller"
    );
    machine.send("poweroff", "0000000000000000").await;
    assert_eq!(machine.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn the_binary_is_found_next_to_the_tests() {
    let found = ntd_fake::binary();
    let built = std::path::Path::new(common::fake_binary());
    assert_eq!(found.canonicalize().expect("found"), built.canonicalize().expect("built"));
    let help = std::process::Command::new(&found).arg("--fake-help").output().expect("run --fake-help");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--fake-shell-drop N:M"));
}

#[tokio::test]
async fn reboot_keeps_the_socket_and_ends_the_guests_processes() {
    let mut machine = Machine::start(&[], false).await;
    machine.wait_marker().await;
    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    // A background job and a unit started before the reboot.
    assert_eq!(
        machine.run("(sleep 987.61 >/dev/null 2>&1 &); systemctl start web; echo $$").await,
        (0, b"1\n".to_vec())
    );
    common::wait_for_process("sleep 987.61").await;
    assert_eq!(machine.fake_dir().unit_state("web.service"), "active");

    machine.send("reboot", "0000000000000000").await;
    let event = qmp.event("RESET").await;
    assert_eq!(event["data"], json!({"guest": true, "reason": "guest-reset"}));
    // Same connection: a second marker, and a fresh shell.
    let before = machine.wait_marker().await;
    assert!(!before.windows(16).any(|w| w == b"0000000000000000"), "the reboot command never answered");
    assert_no_processes("sleep 987.61").await;
    assert_eq!(machine.run("systemctl is-active web").await, (3, b"inactive\n".to_vec()));
    assert_eq!(machine.run("echo again").await, (0, b"again\n".to_vec()));
    machine.wait_console("reboot: Restarting system").await;
    assert_eq!(machine.console().matches("Linux version").count(), 2, "booted twice");

    // Ctrl+Alt+Del over QMP reboots too.
    let keys = json!({"execute": "send-key", "arguments": {"keys": [
        {"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}]}});
    assert_eq!(qmp.execute(&keys.to_string()).await, json!({"return": {}}));
    qmp.event("RESET").await;
    machine.wait_marker().await;
    assert_eq!(machine.fake_dir().recorded_lines(), vec!["send-key ctrl-alt-delete".to_owned()]);

    // `quit` ends QEMU at once.
    assert_eq!(qmp.execute(r#"{"execute": "quit", "id": 9}"#).await, json!({"return": {}, "id": 9}));
    assert_eq!(qmp.event("SHUTDOWN").await["data"], json!({"guest": false, "reason": "host-qmp-quit"}));
    assert_eq!(machine.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn reboot_under_no_reboot_ends_qemu() {
    let mut machine = Machine::start(&[], true).await;
    machine.wait_marker().await;
    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    machine.send("reboot", "0000000000000000").await;
    assert_eq!(qmp.event("SHUTDOWN").await["data"], json!({"guest": true, "reason": "guest-reset"}));
    assert_eq!(machine.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_kernel_panic_kills_the_shell_then_resets() {
    let mut machine = Machine::start(&[], true).await;
    machine.wait_marker().await;
    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    assert_eq!(machine.run("(sleep 986.5 >/dev/null 2>&1 &)").await.0, 0);
    common::wait_for_process("sleep 986.5").await;
    machine.send("fake-panic", "0000000000000000").await;
    machine.wait_console("] Kernel panic - not syncing: fake panic").await;
    let line = machine.console().lines().find(|l| l.contains("Kernel panic")).expect("panic line").to_owned();
    // The kernel's format: `[%5lu.%06lu] `.
    let stamp = line.strip_prefix('[').and_then(|l| l.split_once("] ")).map(|(stamp, _)| stamp).expect("timestamp");
    let (seconds, micros) = stamp.split_once('.').expect("seconds.micros");
    assert!(seconds.len() >= 5 && seconds.trim_start().parse::<u64>().is_ok(), "{line}");
    assert!(micros.len() == 6 && micros.parse::<u32>().is_ok(), "{line}");
    assert_no_processes("sleep 986.5").await;
    assert_eq!(qmp.event("SHUTDOWN").await["data"], json!({"guest": true, "reason": "guest-reset"}));
    assert_eq!(machine.wait_exit().await.code(), Some(0));
    let after = machine.read_shell_to_end().await;
    assert!(!after.windows(16).any(|w| w == b"0000000000000000"), "no reply after a panic");
}

#[tokio::test]
async fn sigterm_ends_it_as_qemu() {
    let mut machine = Machine::start(&[], true).await;
    machine.wait_marker().await;
    assert_eq!(machine.run("(sleep 985.4 >/dev/null 2>&1 &)").await.0, 0);
    common::wait_for_process("sleep 985.4").await;
    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    let pid = machine.child.id().expect("pid");
    // The start script execs the fake, so the shell's pid is the fake's.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("send SIGTERM");
    assert_eq!(qmp.event("SHUTDOWN").await["data"], json!({"guest": false, "reason": "host-signal"}));
    assert_eq!(machine.wait_exit().await.code(), Some(0));
    let stderr = machine.stderr();
    let expected = format!("qemu-system-x86_64: terminating on signal 15 from pid {} (", std::process::id());
    assert!(stderr.starts_with(&expected), "{stderr:?}");
    assert_no_processes("sleep 985.4").await;
}

#[tokio::test]
async fn a_shell_that_exits_is_reported_as_systemd_reports_it() {
    let mut machine = Machine::start(&[], true).await;
    machine.wait_marker().await;
    machine.shell.write_all(b"exit 3\n").await.expect("write exit");
    // The line ntd's console watcher takes for the end of the backdoor.
    machine.wait_console("] systemd[1]: backdoor.service: Main process exited, code=exited, status=3/FAILURE").await;
    machine.wait_console("systemd[1]: backdoor.service: Failed with result 'exit-code'.").await;
    assert_eq!(machine.fake_dir().unit_state("backdoor.service"), "failed");
    // QEMU itself runs on.
    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    assert_eq!(qmp.execute(r#"{"execute": "query-status"}"#).await["return"]["status"], "running");
    qmp.send(r#"{"execute": "quit"}"#).await;
    assert_eq!(machine.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn monitor_commands() {
    let mut machine = Machine::start(&[], true).await;
    machine.monitor_reply().await;
    assert_eq!(machine.monitor_command("sendkey ctrl-alt-f1").await, "sendkey ctrl-alt-f1\r\n(qemu) ");
    assert_eq!(machine.monitor_command("set_link eth1 off").await, "set_link eth1 off\r\n(qemu) ");
    assert_eq!(machine.monitor_command("hostfwd_add tcp::2222-:22").await, "hostfwd_add tcp::2222-:22\r\n(qemu) ");
    assert_eq!(
        machine.monitor_command("frobnicate now").await,
        "frobnicate now\r\nunknown command: 'frobnicate'\r\n(qemu) "
    );
    let screen = machine.state.join("screen.ppm");
    let reply = machine.monitor_command(&format!("screendump {}", screen.display())).await;
    assert_eq!(reply, format!("screendump {}\r\n(qemu) ", screen.display()));
    let ppm = std::fs::read(&screen).expect("screendump written");
    assert!(ppm.starts_with(b"P6\n720 400\n255\n"));
    assert_eq!(ppm.len(), "P6\n720 400\n255\n".len() + 720 * 400 * 3);
    assert_eq!(
        machine.fake_dir().recorded_lines(),
        vec![
            "sendkey ctrl-alt-f1".to_owned(),
            "set_link eth1 off".to_owned(),
            "hostfwd_add tcp::2222-:22".to_owned(),
            format!("screendump {}", screen.display()),
        ]
    );

    // QMP's human-monitor-command gives the same output, CRLF-terminated.
    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    let reply =
        qmp.execute(r#"{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}}"#).await;
    assert_eq!(reply, json!({"return": "VM status: running\r\n"}));
    let reply = qmp.execute(r#"{"execute": "screendump", "arguments": {"filename": "/nonexistent/dir/x.ppm"}}"#).await;
    assert_eq!(reply["error"]["class"], "GenericError");
    assert_eq!(reply["error"]["desc"], "failed to open file '/nonexistent/dir/x.ppm': No such file or directory");
    assert_eq!(
        qmp.execute(r#"{"execute": "no-such-command"}"#).await,
        json!({"error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}})
    );
    qmp.send("{\"execute\": nope}").await;
    assert_eq!(
        qmp.json().await,
        json!({"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'nope'"}})
    );

    // `quit` on the monitor: echoed, then QEMU is gone without a prompt.
    machine.monitor.write_all(b"quit\n").await.expect("write quit");
    assert_eq!(qmp.event("SHUTDOWN").await["data"], json!({"guest": false, "reason": "host-qmp-quit"}));
    assert_eq!(machine.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn units_seeded_and_scheduled() {
    let mut machine =
        Machine::start(&["--fake-unit", "db=failed", "--fake-unit-later", "web.service=active@0.3"], true).await;
    machine.wait_marker().await;
    assert_eq!(
        machine.run("systemctl show db -p ActiveState,SubState").await,
        (0, b"ActiveState=failed\nSubState=failed\n".to_vec())
    );
    // Until its time, the scheduled change is a queued job, so a wait keeps waiting.
    let (status, jobs) = machine.run("systemctl list-jobs --full; systemctl is-active web").await;
    let jobs = String::from_utf8(jobs).expect("utf-8");
    if status == 0 {
        // Only on a machine so slow that 0.3 s passed already.
        assert!(jobs.ends_with("\nactive\n"), "{jobs}");
    } else {
        assert_eq!(status, 3, "{jobs}");
        assert!(jobs.contains("web.service start waiting") && jobs.ends_with("\ninactive\n"), "{jobs}");
    }
    // The loop ntd's wait_for_unit runs in the guest ends when the unit becomes active.
    let wait = "until [ \"$(systemctl --no-pager show web --property=ActiveState)\" = ActiveState=active ]; do sleep 0.05; done";
    assert_eq!(machine.run(wait).await.0, 0);
    assert_eq!(machine.run("systemctl list-jobs").await, (0, b"No jobs running.\n".to_vec()));
    // A host-side change is seen in the guest.
    machine.fake_dir().set_unit_state("db", "active").expect("set from the host");
    assert_eq!(machine.run("systemctl is-active db.service").await, (0, b"active\n".to_vec()));
    machine.send("poweroff", "0000000000000000").await;
    assert_eq!(machine.wait_exit().await.code(), Some(0));
}

#[tokio::test]
async fn qmp_serves_one_client_after_another() {
    let machine = Machine::start(&[], true).await;
    let mut first = machine.qmp().await;
    first.negotiate().await;
    drop(first);
    let mut second: Qmp = machine.qmp().await;
    let reply = second.execute(r#"{"execute": "query-status"}"#).await;
    assert_eq!(reply["error"]["class"], "CommandNotFound", "a new client negotiates again");
    second.negotiate().await;
    // Two requests in one write, one spanning lines: two replies, in order.
    second.send("{\"execute\": \"query-status\", \"id\": 1}{\"execute\":\n\"query-version\", \"id\": 2}").await;
    assert_eq!(second.json().await["id"], 1);
    let version = second.json().await;
    assert_eq!(version["id"], 2);
    assert_eq!(version["return"]["qemu"], json!({"major": 10, "minor": 0, "micro": 2}));
}
