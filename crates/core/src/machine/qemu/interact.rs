//! Interactive access for test authors: the backdoor shell through `socat` (upstream's
//! `shell_interact`).

use super::QemuMachine;
use crate::machine::{Error, Result};

impl QemuMachine {
    /// Upstream's `shell_interact(address)`: run `socat <address> FD:<n>` with the backdoor
    /// shell's connection inherited as fd `n`, until socat ends. socat stays in the terminal's
    /// foreground process group so it can read the terminal; it is killed if the wait is
    /// interrupted.
    pub async fn shell_interact(&self, address: &str) -> Result<()> {
        self.connect().await?;
        let running = self.qemu.running()?;
        let shell = running.shell.lock().await;
        let fd = shell.as_raw_fd();
        let mut command = tokio::process::Command::new("socat");
        command.arg(address).arg(format!("FD:{fd}")).kill_on_drop(true);
        // SAFETY: runs in the forked child before exec and only calls fcntl, which is
        // async-signal-safe; `fd` is open in the child, a copy of the parent's descriptor table.
        unsafe {
            command.pre_exec(move || {
                // Inherited by socat alone: the flag is cleared in this child, never in the
                // driver, where other children are spawned concurrently.
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
                Ok(())
            });
        }
        let status = command.status().await.map_err(|source| Error::Start {
            machine: self.name().to_owned(),
            action: "run socat for shell_interact (is socat installed?)".into(),
            source,
        })?;
        drop(shell);
        if !status.success() {
            self.log(&format!("socat exited with {}", crate::process::describe_status(status)));
        }
        Ok(())
    }
}
