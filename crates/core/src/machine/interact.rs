//! Interactive access for test authors: the backdoor shell through `socat` (upstream's
//! `shell_interact`).

use super::{Error, Machine, Result};

/// The fd number the shell connection gets in `socat`.
const SHELL_FD: libc::c_int = 3;

impl Machine {
    /// Upstream's `shell_interact(address)`: run `socat <address> FD:3` with the backdoor
    /// shell's connection as fd 3, until socat ends. socat stays in the terminal's foreground
    /// process group so it can read the terminal; it is killed if the wait is interrupted.
    pub async fn shell_interact(&self, address: &str) -> Result<()> {
        self.connect().await?;
        let running = self.running()?;
        let shell = running.shell.lock().await;
        let fd = shell.as_raw_fd();
        let mut command = tokio::process::Command::new("socat");
        command.arg(address).arg(format!("FD:{SHELL_FD}")).kill_on_drop(true);
        // SAFETY: runs in the forked child before exec; dup2 and fcntl are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if fd == SHELL_FD {
                    // dup2 onto itself keeps close-on-exec set: clear it instead.
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, SHELL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
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
