//! Interactive access for test authors: the backdoor shell through `socat` (upstream's
//! `shell_interact`).

use super::QemuMachine;
use crate::machine::{Error, Result};

impl QemuMachine {
    /// Upstream's `shell_interact(address)`: run `socat <address> FD:<n>` until socat ends,
    /// `n` being one end of a socket pair whose other end is relayed to the backdoor shell
    /// (upstream hands socat the shell's own socket; ntd's console pump must keep reading
    /// it). socat stays in the terminal's foreground process group so it can read the
    /// terminal; it is killed if the wait is interrupted.
    pub async fn shell_interact(&self, address: &str) -> Result<()> {
        self.connect().await?;
        let running = self.qemu.running()?;
        let mut shell = running.shell.lock().await;
        let start_error =
            |action: &str, source| Error::Start { machine: self.name().to_owned(), action: action.into(), source };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| start_error("make a socket pair for shell_interact", e))?;
        let ours = ours
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(ours))
            .map_err(|e| start_error("make a socket pair for shell_interact", e))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
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
        let mut child =
            command.spawn().map_err(|e| start_error("run socat for shell_interact (is socat installed?)", e))?;
        // socat has its copy; ours would keep the pair open after socat ends.
        drop(theirs);
        let (status, relayed) = tokio::join!(child.wait(), shell.relay(ours));
        drop(shell);
        if let Err(e) = relayed {
            self.log(&format!("shell_interact: the backdoor shell failed: {e}"));
        }
        match status {
            Ok(status) if !status.success() => {
                self.log(&format!("socat exited with {}", crate::process::describe_status(status)));
            }
            Ok(_) => {}
            Err(e) => self.log(&format!("shell_interact: waiting for socat failed: {e}")),
        }
        Ok(())
    }
}
