//! Supervision of the processes ntd starts: QEMU (through its start script) and vde_switch.
//!
//! Every child:
//! - runs in a process group of its own, so stopping it reaches whatever its start script
//!   forked (Debian's `/bin/sh` is dash, which does not exec the last command of `sh -c`; the
//!   upstream driver hangs there), and a Ctrl-C on the terminal reaches only the driver, which
//!   then stops its children in order;
//! - gets SIGKILL if the driver itself dies (`PR_SET_PDEATHSIG`). That signal follows the
//!   *thread* that forked, so children are forked from one long-lived spawner thread and never
//!   from a Python thread or a tokio worker that may end before the child;
//! - is reaped by a task that publishes its exit status, so any number of waiters can race
//!   its exit against their own I/O;
//! - is stopped with SIGTERM, a grace period, then SIGKILL to the group, and is killed when
//!   its handle is dropped, also on panic.

use std::io;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::process::{Child as TokioChild, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

/// A supervised child process, leader of its own process group.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// The child's stdin, if it was piped.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, if it was piped.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, if it was piped.
    pub stderr: Option<ChildStderr>,
}

struct SpawnRequest {
    command: Command,
    runtime: Handle,
    reply: oneshot::Sender<io::Result<TokioChild>>,
}

/// The one thread all children are forked from (see the module documentation).
fn spawner() -> &'static std_mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<std_mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ntd-spawner".into())
            .spawn(move || {
                for mut request in rx {
                    // tokio registers the child with the runtime's SIGCHLD driver here.
                    let _guard = request.runtime.enter();
                    let _ = request.reply.send(request.command.spawn());
                }
            })
            .expect("cannot start the ntd spawner thread");
        tx
    })
}

impl Child {
    /// Spawn `command` supervised. Must be called from within a tokio runtime.
    pub async fn spawn(mut command: Command) -> io::Result<Child> {
        let driver_pid = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (umask, setpgid, prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                // What children create (QEMU's QMP socket, a start script's disk image and
                // shared directories) is the user's alone.
                libc::umask(0o077);
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The driver may have died between fork and prctl.
                if u32::try_from(libc::getppid()).ok() != Some(driver_pid) {
                    return Err(io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
        let (reply, response) = oneshot::channel();
        spawner()
            .send(SpawnRequest { command, runtime: Handle::current(), reply })
            .map_err(|_| io::Error::other("the ntd spawner thread is gone"))?;
        let mut child = response.await.map_err(|_| io::Error::other("the ntd spawner thread is gone"))??;
        let pid = child.id().ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            // No status can only mean wait(2) failed; report it as a kill by SIGKILL, which
            // is what the caller can act on (the process is gone or unreachable).
            let status = status.unwrap_or_else(|_| {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::from_raw(libc::SIGKILL)
            });
            let _ = tx.send(Some(status));
        });
        Ok(Child { pid, exit, stdin, stdout, stderr })
    }

    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, if the child has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// A receiver that sees the exit status once the child exits; for racing it against I/O.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    /// Wait until the child exits.
    pub async fn wait(&self) -> ExitStatus {
        wait_exit(self.exit.clone()).await
    }

    /// Send `signal` to the child's whole process group. Errors (no such group) are ignored:
    /// the group being gone is what every caller wants.
    pub fn signal_group(&self, signal: libc::c_int) {
        // A pid that does not fit a pid_t cannot be ours; never signal group 0 or -1.
        let Ok(pgid) = libc::pid_t::try_from(self.pid) else { return };
        if pgid > 1 {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(pgid, signal);
            }
        }
    }

    /// Stop the child: SIGTERM to its group, `grace` to exit, then SIGKILL, and wait for it.
    /// Whatever is left in its group after it exited is killed too.
    pub async fn stop(&self, grace: Duration) -> ExitStatus {
        if self.exit_status().is_none() {
            self.signal_group(libc::SIGTERM);
            if tokio::time::timeout(grace, self.wait()).await.is_err() {
                self.signal_group(libc::SIGKILL);
            }
        }
        let status = self.wait().await;
        self.signal_group(libc::SIGKILL);
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // The reaper task still owns the process and reaps it; here we only make sure it dies.
        // After a normal exit this also clears anything the start script left in its group.
        self.signal_group(libc::SIGKILL);
    }
}

/// Wait on an exit watch (see [`Child::exit_watch`]) until the exit status is known.
pub async fn wait_exit(mut exit: watch::Receiver<Option<ExitStatus>>) -> ExitStatus {
    loop {
        if let Some(status) = *exit.borrow_and_update() {
            return status;
        }
        if exit.changed().await.is_err() {
            // The reaper task is gone (runtime shutting down): the last value is all there is.
            use std::os::unix::process::ExitStatusExt;
            return exit.borrow().unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL));
        }
    }
}

/// Describe an exit status the way a shell user reads it: "exit code 1", "signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGHUP => " (SIGHUP)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("signal {signal}{name}")
        }
        None => "an unknown status".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    /// Whether any live (non-zombie) process is in group `pgid`. Orphaned zombies are reaped
    /// by pid 1 in its own time, which can take seconds on some machines.
    fn group_alive(pgid: u32) -> bool {
        let Ok(entries) = std::fs::read_dir("/proc") else { return false };
        entries.flatten().any(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
            // Fields after the command name (which may contain spaces) start after the last ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else { return false };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
    }

    #[tokio::test]
    async fn stop_reaches_grandchildren_of_a_shell() {
        // dash forks `sleep` instead of exec'ing it: the group kill must still reach it.
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "sleep 600; true"]).stdin(Stdio::null());
        let child = Child::spawn(command).await.expect("spawn sh");
        let pgid = child.pid();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(group_alive(pgid));
        let status = child.stop(Duration::from_secs(5)).await;
        assert_eq!(describe_status(status), "signal 15 (SIGTERM)");
        assert_group_gone(pgid).await;
    }

    /// The grandchild may take a moment to be gone after its group was signalled.
    async fn assert_group_gone(pgid: u32) {
        for _ in 0..50 {
            if !group_alive(pgid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("process group {pgid} survived");
    }

    #[tokio::test]
    async fn exit_status_is_published() {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "exit 3"]);
        let child = Child::spawn(command).await.expect("spawn sh");
        assert_eq!(child.wait().await.code(), Some(3));
        assert_eq!(describe_status(child.exit_status().expect("exited")), "exit code 3");
    }

    #[tokio::test]
    async fn drop_kills_the_group() {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "sleep 600; true"]);
        let child = Child::spawn(command).await.expect("spawn sh");
        let pgid = child.pid();
        let watch = child.exit_watch();
        drop(child);
        let status =
            tokio::time::timeout(Duration::from_secs(5), wait_exit(watch)).await.expect("child reaped after drop");
        assert_eq!(describe_status(status), "signal 9 (SIGKILL)");
        assert_group_gone(pgid).await;
    }
}
