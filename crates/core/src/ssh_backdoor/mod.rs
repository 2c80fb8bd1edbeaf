//! The SSH backdoor: a root shell in a running test machine over vsock, for debugging a test
//! (nixpkgs' `sshBackdoor.enable`, on by default with `enableDebugHook`).
//!
//! The guest side is the guest's business: NixOS's sshd listens on vsock port 22 through
//! systemd-ssh-generator, and lets root in without a password. The driver's side, as upstream's
//! newest driver does it:
//! - one [`VHostDeviceVsock`] serves every VM of the configuration ([`vsock`]); each VM gets a
//!   `vhost-user-vsock-pci` device on its guest socket (upstream's QEMU arguments);
//! - [`listing`] is upstream's `dump_machine_ssh()`: what to type for each machine,
//!   `ssh -o User=root vsock-mux/<host socket>` for a VM. That needs an ssh whose
//!   configuration sends `vsock-mux/` addresses through systemd-ssh-proxy(1), 258 or newer.
//!
//! What ntd adds, where that proxy is missing (Debian 12 has systemd 252; no proxy before 256,
//! no `vsock-mux/` before 258): its own proxy, `ntd-ssh-proxy` ([`proxy`]), and an ssh
//! configuration using it next to the sockets ([`ssh_config`]). The listing then gives each VM
//! a second line, `ssh -F <that file> -o User=root vsock-mux/<host socket>`, which works on any
//! host with an ssh client.

pub mod proxy;
pub mod vsock;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use vsock::{VHostDeviceVsock, VsockPair};

use crate::machine::quote::shlex_quote;

/// colorama's `Style.BRIGHT` and `Style.RESET_ALL`, which upstream prints whatever the output.
const BRIGHT: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The styles of a listing: upstream's, or none (for a log line).
fn styles(styled: bool) -> (&'static str, &'static str) {
    if styled { (BRIGHT, RESET) } else { ("", "") }
}
/// The name of the ssh configuration ntd writes beside the sockets.
pub const SSH_CONFIG: &str = "ssh_config";

/// How to reach one machine over the backdoor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The machine's name.
    pub name: String,
    /// Upstream's command for it (`ssh_backdoor_command()`).
    pub command: String,
    /// ntd's command for it that needs no systemd-ssh-proxy, when the host needs one.
    pub without_systemd: Option<String>,
}

/// Upstream's `ssh_backdoor_command()` for a VM: its host socket behind `vsock-mux/`.
pub fn vm_command(host_socket: &Path) -> String {
    format!("ssh -o User=root vsock-mux/{}", host_socket.display())
}

/// The same command through ntd's ssh configuration ([`ssh_config`]), for hosts without
/// systemd-ssh-proxy's `vsock-mux/`.
pub fn vm_command_with_config(config: &Path, host_socket: &Path) -> String {
    format!("ssh -F {} -o User=root vsock-mux/{}", shlex_quote(&config.display().to_string()), host_socket.display())
}

/// Upstream's `dump_machine_ssh()`: what to type to reach each machine (sorted by name, as
/// `driver.machines` is). ntd's own commands follow where the host's ssh cannot reach
/// `vsock-mux/` addresses. `styled` adds upstream's bold (terminal escapes).
pub fn listing(machines: &[Access], styled: bool) -> String {
    let (bright, reset) = styles(styled);
    if machines.is_empty() {
        return "SSH backdoor enabled, but no machines defined\n".to_owned();
    }
    let mut text = format!(
        "SSH backdoor enabled, the machines can be accessed like this:\n{bright}Note:{reset} this requires \
         {bright}systemd-ssh-proxy(1){reset} to be enabled (default on NixOS 25.05 and newer).\n"
    );
    let longest = machines.iter().map(|m| m.name.chars().count()).max().unwrap_or(0);
    let line = |name: &str, command: &str| {
        let spaces = " ".repeat(longest - name.chars().count() + 2);
        format!("    {name}:{spaces}{bright}{command}{reset}\n")
    };
    for machine in machines {
        text.push_str(&line(&machine.name, &machine.command));
    }
    let fallbacks: Vec<&Access> = machines.iter().filter(|m| m.without_systemd.is_some()).collect();
    if !fallbacks.is_empty() {
        text.push_str(
            "This host's ssh has no proxy for vsock-mux/ addresses (systemd-ssh-proxy 258 or newer); ntd's ssh \
             configuration has one:\n",
        );
        for machine in fallbacks {
            text.push_str(&line(&machine.name, machine.without_systemd.as_deref().unwrap_or_default()));
        }
    }
    text
}

/// The listing of nixpkgs releases whose VMs had a kernel vsock device of their own
/// (`-device vhost-vsock-pci,guest-cid=<offset + node number>` in the start script) and whose
/// driver printed it for `--dump-vsocks <offset>`: machine `i` (sorted by name, from 0) is
/// `vsock/<offset + 1 + i>`. `machines` are the names and, for containers, their own command.
pub fn legacy_listing(offset: u32, machines: &[(String, Option<String>)], styled: bool) -> String {
    let (bright, reset) = styles(styled);
    let mut text = format!(
        "SSH backdoor enabled, the machines can be accessed like this:\n{bright}Note:{reset} vsocks require \
         {bright}systemd-ssh-proxy(1){reset} to be enabled (default on NixOS 25.05 and newer).\n"
    );
    let longest = machines.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    for ((name, command), index) in machines.iter().zip(u64::from(offset) + 1..) {
        let spaces = " ".repeat(longest - name.chars().count() + 2);
        let command = command.clone().unwrap_or_else(|| format!("ssh -o User=root vsock/{index}"));
        text.push_str(&format!("    {name}:{spaces}{bright}{command}{reset}\n"));
    }
    text
}

/// An ssh configuration that sends `vsock-mux/<path>` through `proxy` (a command: the program
/// and its first arguments), as systemd's `20-systemd-ssh-proxy.conf` does through
/// systemd-ssh-proxy. The proxy gets `%n`, the host name as typed: `%h` is lower-cased by ssh.
pub fn ssh_config(proxy: &[String]) -> String {
    // ssh runs ProxyCommand with the user's shell and expands `%` tokens first.
    let command: Vec<String> = proxy.iter().map(|word| shlex_quote(word).replace('%', "%%")).collect();
    format!(
        "# Written by ntd: `ssh -F <this file> -o User=root vsock-mux/<host socket>` reaches a test VM's sshd\n\
         # on vsock port 22 where systemd-ssh-proxy(1) 258 or newer is not at hand. The addresses are\n\
         # one run's, so host keys are neither checked nor kept.\n\
         Host vsock-mux/* unix/*\n\
         \x20 ProxyCommand {} %n %p\n\
         \x20 ProxyUseFdpass yes\n\
         \x20 CheckHostIP no\n\
         \x20 StrictHostKeyChecking no\n\
         \x20 UserKnownHostsFile /dev/null\n\
         \x20 LogLevel ERROR\n",
        command.join(" ")
    )
}

/// Write [`ssh_config`] into `dir` and return its path.
pub fn write_ssh_config(dir: &Path, proxy: &[String]) -> std::io::Result<PathBuf> {
    let path = dir.join(SSH_CONFIG);
    std::fs::write(&path, ssh_config(proxy))?;
    Ok(path)
}

/// Whether the host's ssh sends `vsock-mux/` addresses through a proxy command (as
/// systemd 256 and newer configure it in `/etc/ssh/ssh_config.d`), as `ssh -G` shows. No
/// ssh, or no answer, counts as no.
pub async fn host_ssh_proxies_vsock_mux() -> bool {
    let mut command = tokio::process::Command::new("ssh");
    command
        .args(["-G", "vsock-mux//ntd-probe"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(5), command.output()).await {
        Ok(Ok(output)) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).lines().any(|line| line.starts_with("proxycommand "))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_upstreams_then_ntds_commands_where_needed() {
        let vm = Access {
            name: "machine".into(),
            command: vm_command(Path::new("/tmp/vsock-1/machine_host.socket")),
            without_systemd: Some(vm_command_with_config(
                Path::new("/tmp/vsock-1/ssh_config"),
                Path::new("/tmp/vsock-1/machine_host.socket"),
            )),
        };
        let container = Access {
            name: "box".into(),
            command:
                "ssh -o User=root -o ProxyCommand=\"socat - UNIX-CLIENT:/run/systemd/nspawn/unix-export/box/ssh\" bash"
                    .into(),
            without_systemd: None,
        };
        assert_eq!(
            listing(&[container.clone(), vm.clone()], true),
            "SSH backdoor enabled, the machines can be accessed like this:\n\
             \x1b[1mNote:\x1b[0m this requires \x1b[1msystemd-ssh-proxy(1)\x1b[0m to be enabled (default on NixOS 25.05 and newer).\n\
             \x20   box:      \x1b[1mssh -o User=root -o ProxyCommand=\"socat - UNIX-CLIENT:/run/systemd/nspawn/unix-export/box/ssh\" bash\x1b[0m\n\
             \x20   machine:  \x1b[1mssh -o User=root vsock-mux//tmp/vsock-1/machine_host.socket\x1b[0m\n\
             This host's ssh has no proxy for vsock-mux/ addresses (systemd-ssh-proxy 258 or newer); ntd's ssh configuration has one:\n\
             \x20   machine:  \x1b[1mssh -F /tmp/vsock-1/ssh_config -o User=root vsock-mux//tmp/vsock-1/machine_host.socket\x1b[0m\n"
        );
        let plain = listing(&[container, vm], false);
        assert!(!plain.contains('\x1b') && plain.contains("    machine:  ssh -o User=root vsock-mux/"), "{plain}");
        assert_eq!(listing(&[], true), "SSH backdoor enabled, but no machines defined\n");
    }

    #[test]
    fn the_legacy_listing_numbers_machines_from_the_offset() {
        let text = legacy_listing(2, &[("a".into(), None), ("bb".into(), None)], true);
        assert!(text.ends_with(
            "    a:   \x1b[1mssh -o User=root vsock/3\x1b[0m\n    bb:  \x1b[1mssh -o User=root vsock/4\x1b[0m\n"
        ));
        assert!(text.contains("vsocks require"));
    }

    #[test]
    fn the_ssh_config_quotes_the_proxy_for_the_shell_and_for_ssh() {
        let text = ssh_config(&["/opt/a b/ntd-ssh-proxy".into(), "50%".into()]);
        assert!(text.contains("\n  ProxyCommand '/opt/a b/ntd-ssh-proxy' 50%% %n %p\n"), "{text}");
        assert!(text.contains("\n  ProxyUseFdpass yes\n"));
        assert!(text.contains("\nHost vsock-mux/* unix/*\n"));
    }
}
