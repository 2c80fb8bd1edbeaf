//! The SSH backdoor on a real VM (`enable_ssh_backdoor`, nixpkgs' `sshBackdoor.enable`): the
//! guest's sshd listens on vsock (mk-start-script --ssh-backdoor), the driver serves the VM's
//! vsock device with the real `vhost-device-vsock`, and a user reaches the machine from the
//! host with the command the driver prints while the test is paused at a breakpoint, also
//! after the machine was started a second time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{DEBIAN_LIMIT, KillOnDrop, Scenario, Tier, live_processes_mentioning, read_until, wait_for_exit};

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
    let mut command = scenario.command(&["--config", &config.to_string_lossy(), "--debug-hook-attach", "/stub/attach"]);
    let driver = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run the driver");
    // Killed if the test fails half-way: a driver paused at a breakpoint would wait forever.
    let mut driver = KillOnDrop(driver);

    let (lines, received) = mpsc::channel();
    for stream in [
        Box::new(driver.0.stdout.take().expect("stdout pipe")) as Box<dyn Read + Send>,
        Box::new(driver.0.stderr.take().expect("stderr pipe")),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    let mut log = Vec::new();
    let deadline = Instant::now() + DEBIAN_LIMIT;
    let mut wait_for_line = |needle: &str| -> String {
        loop {
            match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("the driver never said {needle:?}:\n{}", log.join("\n")),
            }
        }
    };

    // At the start, on stdout: upstream's command.
    let listed = wait_for_line("    machine:  \x1b[1mssh -o User=root vsock-mux/");
    assert!(listed.ends_with("machine_host.socket\x1b[0m"), "{listed:?}");
    // At the breakpoint, in the log: the same, and ntd's own where this host's ssh needs it.
    wait_for_line("Breakpoint reached, run 'sudo /stub/attach ");
    let mut commands = Vec::new();
    loop {
        let line = wait_for_line("");
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
        log.join("\n")
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "machine\nroot\n");
    eprintln!("ssh through the backdoor took {ssh_took:.2?}");

    // Resume the test; it checks what the session did.
    let mut pdb = TcpStream::connect(("127.0.0.1", PDB_PORT)).expect("connect to pdb");
    pdb.set_read_timeout(Some(Duration::from_secs(60))).expect("set a read timeout");
    read_until(&mut pdb, "(Pdb) ");
    pdb.write_all(b"c\n").expect("write to pdb");
    let status = wait_for_exit(&mut driver.0, DEBIAN_LIMIT, "after `continue`");
    while let Ok(line) = received.recv_timeout(Duration::from_secs(1)) {
        log.push(line);
    }
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    // vhost-device-vsock's sockets are in the scenario's TMPDIR: nothing of it may be left.
    let needle = scenario.path().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "processes left running: {:?}", live_processes_mentioning(&needle));
        std::thread::sleep(Duration::from_millis(100));
    }
}
