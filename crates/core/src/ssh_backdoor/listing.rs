//! What to type to reach each machine: upstream's `dump_machine_ssh()` listing, and ntd's own
//! commands where upstream's cannot work on this host ([`WhyOwnProxy`]).

use std::path::Path;

use crate::machine::quote::shlex_quote;

/// colorama's `Style.BRIGHT` and `Style.RESET_ALL`, which upstream prints whatever the output.
const BRIGHT: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The styles of a listing: upstream's, or none (for a log line).
fn styles(styled: bool) -> (&'static str, &'static str) {
    if styled { (BRIGHT, RESET) } else { ("", "") }
}

/// Why upstream's `ssh vsock-mux/<path>` cannot work here, so that ntd lists its own commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhyOwnProxy {
    /// The host's ssh has no proxy for `vsock-mux/` (no systemd-ssh-proxy 258 or newer).
    NoHostProxy,
    /// A socket path has capitals: ssh lower-cases the host name it passes systemd-ssh-proxy
    /// (`%h`), which then looks for another path.
    CapitalsInPath,
}

impl WhyOwnProxy {
    /// The line that introduces ntd's commands.
    fn heading(self) -> &'static str {
        match self {
            WhyOwnProxy::NoHostProxy => {
                "This host's ssh has no proxy for vsock-mux/ addresses (systemd-ssh-proxy 258 or newer); ntd's ssh \
                 configuration has one:"
            }
            WhyOwnProxy::CapitalsInPath => {
                "These socket paths have capitals, which ssh lower-cases before systemd-ssh-proxy sees them; ntd's \
                 ssh configuration passes them as typed:"
            }
        }
    }
}

/// How to reach one machine over the backdoor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The machine's name.
    pub name: String,
    /// Upstream's command for it (`ssh_backdoor_command()`).
    pub command: String,
    /// ntd's command for it, through ntd's proxy, where upstream's cannot work.
    pub via_ntd_proxy: Option<String>,
}

/// Upstream's `ssh_backdoor_command()` for a VM: its host socket behind `vsock-mux/`.
pub fn vm_command(host_socket: &Path) -> String {
    format!("ssh -o User=root vsock-mux/{}", host_socket.display())
}

/// The same command through ntd's ssh configuration ([`super::ssh_config()`]), for hosts where
/// upstream's cannot work ([`WhyOwnProxy`]).
pub fn vm_command_with_config(config: &Path, host_socket: &Path) -> String {
    format!(
        "ssh -F {} -o User=root {}",
        shlex_quote(&config.display().to_string()),
        shlex_quote(&format!("vsock-mux/{}", host_socket.display()))
    )
}

/// Upstream's `dump_machine_ssh()`: what to type to reach each machine (sorted by name, as
/// `driver.machines` is). ntd's own commands follow where upstream's cannot work, introduced by
/// `why`. `styled` adds upstream's bold (terminal escapes).
pub fn listing(machines: &[Access], why: Option<WhyOwnProxy>, styled: bool) -> String {
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
    let own: Vec<(&str, &str)> =
        machines.iter().filter_map(|m| Some((m.name.as_str(), m.via_ntd_proxy.as_deref()?))).collect();
    if let Some(why) = why
        && !own.is_empty()
    {
        text.push_str(why.heading());
        text.push('\n');
        for (name, command) in own {
            text.push_str(&line(name, command));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_upstreams_then_ntds_commands_where_needed() {
        let vm = Access {
            name: "machine".into(),
            command: vm_command(Path::new("/tmp/vsock-1/machine_host.socket")),
            via_ntd_proxy: Some(vm_command_with_config(
                Path::new("/tmp/vsock-1/ssh_config"),
                Path::new("/tmp/vsock-1/machine_host.socket"),
            )),
        };
        let container = Access {
            name: "box".into(),
            command:
                "ssh -o User=root -o ProxyCommand=\"socat - UNIX-CLIENT:/run/systemd/nspawn/unix-export/box/ssh\" bash"
                    .into(),
            via_ntd_proxy: None,
        };
        assert_eq!(
            listing(&[container.clone(), vm.clone()], Some(WhyOwnProxy::NoHostProxy), true),
            "SSH backdoor enabled, the machines can be accessed like this:\n\
             \x1b[1mNote:\x1b[0m this requires \x1b[1msystemd-ssh-proxy(1)\x1b[0m to be enabled (default on NixOS 25.05 and newer).\n\
             \x20   box:      \x1b[1mssh -o User=root -o ProxyCommand=\"socat - UNIX-CLIENT:/run/systemd/nspawn/unix-export/box/ssh\" bash\x1b[0m\n\
             \x20   machine:  \x1b[1mssh -o User=root vsock-mux//tmp/vsock-1/machine_host.socket\x1b[0m\n\
             This host's ssh has no proxy for vsock-mux/ addresses (systemd-ssh-proxy 258 or newer); ntd's ssh configuration has one:\n\
             \x20   machine:  \x1b[1mssh -F /tmp/vsock-1/ssh_config -o User=root vsock-mux//tmp/vsock-1/machine_host.socket\x1b[0m\n"
        );
        let plain = listing(&[container, vm.clone()], Some(WhyOwnProxy::CapitalsInPath), false);
        assert!(!plain.contains('\x1b') && plain.contains("    machine:  ssh -o User=root vsock-mux/"), "{plain}");
        assert!(plain.contains("\nThese socket paths have capitals, which ssh lower-cases"), "{plain}");
        assert!(!listing(&[vm], None, true).contains("ntd's ssh configuration"));
        assert_eq!(listing(&[], None, true), "SSH backdoor enabled, but no machines defined\n");
    }

    #[test]
    fn the_legacy_listing_numbers_machines_from_the_offset() {
        let text = legacy_listing(2, &[("a".into(), None), ("bb".into(), None)], true);
        assert!(text.ends_with(
            "    a:   \x1b[1mssh -o User=root vsock/3\x1b[0m\n    bb:  \x1b[1mssh -o User=root vsock/4\x1b[0m\n"
        ));
        assert!(text.contains("vsocks require"));
    }
}
