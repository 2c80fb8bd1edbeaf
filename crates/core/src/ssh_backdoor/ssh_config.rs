//! ntd's ssh configuration for the backdoor: `vsock-mux/` addresses through ntd's proxy, for
//! hosts whose ssh cannot reach them by itself ([`host_ssh_proxies_vsock_mux`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::machine::quote::shlex_quote;

/// The name of the ssh configuration ntd writes beside the sockets.
pub const SSH_CONFIG: &str = "ssh_config";

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
    fn the_ssh_config_quotes_the_proxy_for_the_shell_and_for_ssh() {
        let text = ssh_config(&["/opt/a b/ntd-ssh-proxy".into(), "50%".into()]);
        assert!(text.contains("\n  ProxyCommand '/opt/a b/ntd-ssh-proxy' 50%% %n %p\n"), "{text}");
        assert!(text.contains("\n  ProxyUseFdpass yes\n"));
        assert!(text.contains("\nHost vsock-mux/* unix/*\n"));
    }
}
