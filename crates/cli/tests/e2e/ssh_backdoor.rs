//! The SSH backdoor on a real VM (`enable_ssh_backdoor`, nixpkgs' `sshBackdoor.enable`): the
//! guest's sshd listens on vsock (mk-start-script --ssh-backdoor), the driver serves the VM's
//! vsock device with the real `vhost-device-vsock`, and a user reaches the machine from the
//! host with the command the driver prints while the test is paused at a breakpoint, also
//! after the machine was started a second time.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::live::LiveDriver;
use crate::harness::{DEBIAN_LIMIT, Scenario, Tier, live_processes_mentioning, read_until};

/// The pdb port of the script's breakpoint: not the debug hook's default (4444), which
/// another test uses at the same time.
const PDB_PORT: u16 = 4445;

const SCRIPT: &str = r#"
machine.wait_for_unit("multi-user.target")
machine.succeed("echo written before the breakpoint > /root/marker")
# Started a second time, the machine is served again.
machine.shutdown()
machine.start()
machine.wait_for_unit("multi-user.target")
debug.breakpoint(port=4445)
# What the SSH session did while the test was paused.
t.assertEqual(machine.succeed("cat /root/from-ssh").strip(), "written before the breakpoint")
"#;

#[test]
fn a_paused_test_is_reachable_over_ssh_with_the_printed_command() {
    let scenario = Scenario::new();
    let start_script = scenario.start_script("machine", Tier::Debian, &["--ssh-backdoor"]);
    let script = scenario.write("test-script", SCRIPT);
    let config = scenario.write_configuration(&[("machine", &start_script)], &script, 900, true);
    let command = scenario.command(&["--config", &config.to_string_lossy(), "--debug-hook-attach", "/stub/attach"]);
    let mut driver = LiveDriver::spawn(command, DEBIAN_LIMIT);

    // At the start, on stdout: upstream's command.
    let listed = driver.wait_for_line("    machine:  \x1b[1mssh -o User=root vsock-mux/");
    assert!(listed.ends_with("machine_host.socket\x1b[0m"), "{listed:?}");
    // At the breakpoint, in the log: the same, and ntd's own where this host's ssh needs it.
    driver.wait_for_line("Breakpoint reached, run 'sudo /stub/attach ");
    let mut commands = Vec::new();
    loop {
        let line = driver.wait_for_line("");
        if line.contains(&format!("pdb is listening on 127.0.0.1:{PDB_PORT}")) {
            break;
        }
        if let Some(command) = line.trim_start().strip_prefix("machine:  ") {
            commands.push(command.to_owned());
        }
    }
    // The last command listed is the one that works here (ntd's, if there are two).
    let typed = commands.last().expect("a command for the machine at the breakpoint").clone();
    assert!(typed.starts_with("ssh ") && typed.contains(" -o User=root vsock-mux/"), "{commands:?}");

    // As a user types it, with a command for the guest.
    let started = Instant::now();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("{typed} 'cp /root/marker /root/from-ssh && hostname && id -un'"))
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    let ssh_took = started.elapsed();
    assert!(
        output.status.success(),
        "ssh failed: {}\n{}\n--- driver\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        driver.log()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "machine\nroot\n");
    eprintln!("ssh through the backdoor took {ssh_took:.2?}");

    // Resume the test; it checks what the session did.
    let mut pdb = TcpStream::connect(("127.0.0.1", PDB_PORT)).expect("connect to pdb");
    pdb.set_read_timeout(Some(Duration::from_secs(60))).expect("set a read timeout");
    read_until(&mut pdb, "(Pdb) ");
    pdb.write_all(b"c\n").expect("write to pdb");
    let status = driver.wait("after `continue`");
    assert_eq!(status.code(), Some(0), "{}", driver.log());
    // vhost-device-vsock's sockets are in the scenario's TMPDIR: nothing of it may be left.
    let needle = scenario.path().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "processes left running: {:?}", live_processes_mentioning(&needle));
        std::thread::sleep(Duration::from_millis(100));
    }
}
