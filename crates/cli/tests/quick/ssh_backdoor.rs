//! The SSH backdoor's driver side on fake machines, with the real `vhost-device-vsock`: the
//! device serves every VM and each VM's QEMU connects to it, the listing says what to type,
//! a run without the backdoor starts nothing extra, a missing `vhost-device-vsock` is one clear
//! error, and older nixpkgs' `--dump-vsocks` gets its listing. (That ssh reaches a guest's sshd
//! through the printed command is the end-to-end test's, on a real VM.)

use std::path::Path;
use std::process::Command;

use crate::harness::{LIMIT, Scenario};

/// A `driverConfiguration.json` as nixpkgs writes it, for fake VMs `names` and `script`.
fn configuration(scenario: &Scenario, names: &[&str], script: &str, backdoor: bool) -> std::path::PathBuf {
    let scripts: Vec<_> = names.iter().map(|name| scenario.start_script(name, &[])).collect();
    let vms: Vec<(&str, &Path)> = names.iter().copied().zip(scripts.iter().map(|s| s.as_path())).collect();
    scenario.write_configuration(&vms, &scenario.write("test-script", script), 600, backdoor)
}

/// Whether this host's ssh sends `vsock-mux/` addresses through a proxy of its own
/// (systemd-ssh-proxy's configuration), which decides whether ntd adds its own commands.
fn host_ssh_proxies_vsock_mux() -> bool {
    let output = Command::new("ssh").args(["-G", "vsock-mux//probe"]).output().expect("run ssh -G");
    String::from_utf8_lossy(&output.stdout).lines().any(|line| line.starts_with("proxycommand "))
}

/// What each VM's QEMU was started with, and what the script asserts of the backdoor.
const BACKDOOR_SCRIPT: &str = r#"
import time
from pathlib import Path

start_all()
device = driver.vhost_vsock
assert device is not None
assert sorted(device.sockets) == ["client", "server"], device.sockets
# CIDs from 3, in the configuration's order (nixpkgs writes it sorted).
assert [device.sockets[n].cid for n in ("client", "server")] == [3, 4], device.sockets
for m in machines:
    pair = device.sockets[m.name]
    assert m.vsock_host == pair.host and m.vsock_guest == pair.guest, (m.vsock_host, pair)
    # The guest socket is gone while its QEMU is connected (QEMU connects as it starts, which
    # start_all() does not wait for); the host socket stays.
    deadline = time.monotonic() + 10
    while pair.guest.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pair.host.is_socket() and not pair.guest.exists(), pair
    assert pair.host.parent == device.temp_dir and device.temp_dir.name == device.temp_dir.name.lower()
    assert m.ssh_backdoor_command() == f"ssh -o User=root vsock-mux/{pair.host}", m.ssh_backdoor_command()
    argv = Path(f"/proc/{m.pid}/cmdline").read_bytes().split(b"\0")
    assert f"socket,id=vsock_ssh,path={pair.guest}".encode() in argv, argv
    assert b"vhost-user-vsock-pci,chardev=vsock_ssh" in argv, argv
    # QEMU connected to the device's socket (the fake holds the connection, as QEMU does).
    assert Path(f"/proc/{device.pid}/comm").read_text().strip() == "vhost-device-vs", device.pid
print("ssh_config:", driver.native.ssh_config)
extra = create_machine(server.start_command, name="extra")
assert extra.vsock_host is None
"#;

#[test]
fn every_vm_gets_a_vsock_device_and_the_listing_says_what_to_type() {
    let scenario = Scenario::new();
    let config = configuration(&scenario, &["server", "client"], BACKDOOR_SCRIPT, true);
    let run = scenario.run_command(scenario.command(&["--config", &config.to_string_lossy()]), LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains("\nstart vhost-device-vsock\n");
    run.assert_stderr_contains("\nkill vhost-device-vsock (pid ");
    run.assert_stderr_contains(
        "create_machine(extra): not enabling SSH backdoor, this is not supported for VMs created with create_machine!",
    );

    // Upstream's listing, on stdout before the script runs, machines sorted by name.
    let start = run.stdout.find("SSH backdoor enabled, the machines can be accessed like this:\n").expect("a listing");
    assert!(start < run.stdout.find("additionally exposed symbols").expect("the symbols"), "{}", run.stdout);
    let listing: Vec<&str> = run.stdout[start..].lines().take_while(|l| !l.starts_with("additionally")).collect();
    assert_eq!(
        listing[1],
        "\x1b[1mNote:\x1b[0m this requires \x1b[1msystemd-ssh-proxy(1)\x1b[0m to be enabled (default on NixOS 25.05 and newer)."
    );
    let socket_dir = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ssh_config: "))
        .map(|path| Path::new(path).parent().expect("a directory").to_owned())
        .expect("the script printed the ssh configuration's path");
    let host = |name: &str| socket_dir.join(format!("{name}_host.socket")).display().to_string();
    assert_eq!(listing[2], format!("    client:  \x1b[1mssh -o User=root vsock-mux/{}\x1b[0m", host("client")));
    assert_eq!(listing[3], format!("    server:  \x1b[1mssh -o User=root vsock-mux/{}\x1b[0m", host("server")));
    let config = socket_dir.join("ssh_config").display().to_string();
    // Upstream's commands cannot work where the host's ssh has no proxy for vsock-mux/, or
    // where the paths have capitals (the scenario's TMPDIR may): then ntd's commands follow.
    let capitals = host("client").chars().any(char::is_uppercase);
    if host_ssh_proxies_vsock_mux() && !capitals {
        assert_eq!(listing.len(), 4, "{listing:#?}");
    } else {
        let heading = if host_ssh_proxies_vsock_mux() {
            "These socket paths have capitals"
        } else {
            "This host's ssh has no proxy"
        };
        assert!(listing[4].starts_with(heading), "{listing:#?}");
        assert_eq!(
            listing[5],
            format!("    client:  \x1b[1mssh -F {config} -o User=root vsock-mux/{}\x1b[0m", host("client"))
        );
        assert_eq!(listing.len(), 7, "{listing:#?}");
    }
    // The device and its sockets went with the run (the harness checks that nothing of the
    // scenario is left running).
    assert!(!socket_dir.exists(), "{} is left", socket_dir.display());
}

#[test]
fn the_ssh_configuration_sends_vsock_mux_through_ntds_proxy() {
    let scenario = Scenario::new();
    let script = "import shutil\nshutil.copy(driver.native.ssh_config, driver.out_dir / 'ssh_config')\n";
    let config = configuration(&scenario, &["machine"], script, true);
    let run = scenario.run_command(scenario.command(&["--config", &config.to_string_lossy()]), LIMIT);
    run.assert_status(0);
    let proxy = Path::new(env!("CARGO_BIN_EXE_ntd-ssh-proxy"));
    let written = std::fs::read_to_string(scenario.out_dir().join("ssh_config")).expect("the copied configuration");
    assert!(written.contains("\nHost vsock-mux/* unix/*\n"), "{written}");
    assert!(written.contains(&format!("\n  ProxyCommand {} %n %p\n", proxy.display())), "{written}");
    assert!(written.contains("\n  ProxyUseFdpass yes\n"), "{written}");
    // ssh reads it as meant: the proxy gets the socket path as typed.
    let output = Command::new("ssh")
        .arg("-F")
        .arg(scenario.out_dir().join("ssh_config"))
        .args(["-G", "vsock-mux//tmp/Some_Socket"])
        .output()
        .expect("ssh -G");
    let effective = String::from_utf8_lossy(&output.stdout);
    assert!(effective.lines().any(|l| l == format!("proxycommand {} %n %p", proxy.display())), "{effective}");
    assert!(effective.lines().any(|l| l == "proxyusefdpass yes"), "{effective}");
}

#[test]
fn without_the_backdoor_nothing_extra_starts() {
    let scenario = Scenario::new();
    let script = r#"
import os
from pathlib import Path

start_all()
assert driver.vhost_vsock is None and not driver.enable_ssh_backdoor
assert machine.vsock_host is None and machine.vsock_guest is None
assert b"vsock" not in Path(f"/proc/{machine.pid}/cmdline").read_bytes()
children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and (p / "stat").exists()]
names = []
for p in children:
    try:
        stat = (p / "stat").read_text()
    except OSError:
        continue
    if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
        names.append((p / "comm").read_text().strip())
assert "vhost-device-vs" not in names, names
try:
    machine.ssh_backdoor_command()
except AssertionError as e:
    print("refused:", e)
else:
    raise Exception("ssh_backdoor_command() without the backdoor")
dump_machine_ssh()
"#;
    let config = configuration(&scenario, &["machine"], script, false);
    let run = scenario.run_command(scenario.command(&["--config", &config.to_string_lossy()]), LIMIT);
    run.assert_status(0);
    assert!(!run.stderr.contains("vhost-device-vsock"), "{}", run.stderr);
    assert!(!run.stdout.contains("SSH backdoor enabled"), "{}", run.stdout);
    assert!(
        run.stdout.contains("refused: machine has no SSH backdoor: the driver's enable_ssh_backdoor"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_missing_vhost_device_vsock_is_one_clear_error() {
    let scenario = Scenario::new();
    let config = configuration(&scenario, &["machine"], "raise Exception('the script ran')\n", true);
    // PATH without vhost-device-vsock (scripts/install-host-deps puts it in /usr/local/bin).
    let path = std::env::var_os("PATH").expect("PATH");
    let without: Vec<_> = std::env::split_paths(&path).filter(|dir| !dir.join("vhost-device-vsock").exists()).collect();
    assert!(without.iter().any(|dir| dir.join("bash").exists()), "vhost-device-vsock shares a directory with bash");
    let mut command = scenario.command(&["--config", &config.to_string_lossy()]);
    command.env("PATH", std::env::join_paths(without).expect("PATH"));
    let run = scenario.run_command(command, LIMIT);
    run.assert_status(1);
    run.assert_stderr_contains(
        "cannot start the driver: MachineError: the SSH backdoor (enable_ssh_backdoor, nixpkgs' sshBackdoor.enable) \
         needs vhost-device-vsock on PATH: install it (`cargo install vhost-device-vsock`, or nixpkgs' \
         vhost-device-vsock) or turn the backdoor off: No such file or directory (os error 2)\n",
    );
    assert!(!run.stderr.contains("the script ran"), "{}", run.stderr);
    let left: Vec<_> = std::fs::read_dir(scenario.tmp_dir())
        .expect("TMPDIR")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("vsock-"))
        .collect();
    assert!(left.is_empty(), "socket directories left: {left:?}");
}

#[test]
fn older_nixpkgs_dump_vsocks_lists_its_kernel_vsock_numbers() {
    let mut scenario = Scenario::new();
    scenario.machine("beta", &[]);
    scenario.machine("alpha", &[]);
    let run = scenario.run_script("print('script ran')\n", &["--dump-vsocks=2"]);
    run.assert_status(0);
    assert!(
        run.stdout.contains(
            "\x1b[1mNote:\x1b[0m vsocks require \x1b[1msystemd-ssh-proxy(1)\x1b[0m to be enabled (default on NixOS \
             25.05 and newer).\n    alpha:  \x1b[1mssh -o User=root vsock/3\x1b[0m\n    beta:   \x1b[1mssh -o User=root \
             vsock/4\x1b[0m\n"
        ),
        "{}",
        run.stdout
    );
    // It only lists: no device of ntd's.
    assert!(!run.stderr.contains("vhost-device-vsock"), "{}", run.stderr);
}

/// The interactive session says what to type before its prompt, as upstream's does, and
/// `dump_machine_ssh()` says it again.
#[test]
fn the_repl_says_how_to_reach_the_machines_before_its_prompt() {
    use crate::common::tmux::{Tmux, shell_line};
    use std::time::Duration;
    let scenario = Scenario::new();
    let config = configuration(&scenario, &["machine"], "print('the script ran')\n", true);
    let driver = scenario.command(&["--interactive", "--config", &config.to_string_lossy()]);
    let tmux = Tmux::start(scenario.path(), &shell_line(&driver, "; echo driver exited with status $?; sleep 600"));
    let step = Duration::from_secs(20);
    tmux.wait_for(">>> ", step);
    let screen = tmux.screen();
    let listed = screen.find("    machine:  ssh -o User=root vsock-mux/").expect("the listing");
    assert!(listed < screen.find(">>> ").expect("the prompt"), "{screen}");
    tmux.type_line("dump_machine_ssh()");
    tmux.wait_for_count("    machine:  ssh -o User=root vsock-mux/", 2, step);
    tmux.send(&["C-d"]);
    tmux.wait_for("driver exited with status 0\n", step);
}
