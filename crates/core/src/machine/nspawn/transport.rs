//! The command transport of a container (upstream's `NspawnMachine._execute`): each command
//! is its own `nsenter` into the namespaces of the container's init, running
//! `/bin/sh -c "set -eo pipefail; source /etc/profile; set -u; <command>"` with an empty
//! environment, and its stdout comes back whole.
//!
//! Where upstream differs from a VM, ntd keeps what a test sees the same as upstream's for
//! containers (universal newlines: `\r\n` and `\r` become `\n`), and is otherwise the same as
//! for VMs: a command that outlives its `timeout` is killed and returns 124 (upstream raises
//! `subprocess.TimeoutExpired`), and its stderr is logged. A container whose init dies
//! fails the command in flight at once.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;

use super::leader::Leader;
use super::lifecycle::Nspawn;
use crate::log;
use crate::machine::{Error, ExecuteOptions, NulInCommand, Result};

/// The status `timeout(1)` returns for a command it killed, as VMs return it.
const TIMED_OUT: i32 = 124;
/// The status of a command killed by SIGKILL, as a PID namespace's end kills everything in it.
const KILLED: i32 = 128 + 9;

/// `nsenter` on the driver's PATH (as upstream's `shutil.which`): the command's own
/// environment is empty, so it cannot be looked up there (a Nix build has util-linux on PATH
/// only).
fn nsenter() -> std::path::PathBuf {
    crate::process::find_program("nsenter").unwrap_or_else(|| std::path::PathBuf::from("nsenter"))
}

/// Kills a command's process group when dropped (the command's caller gave up on it: an
/// interrupted script), unless disarmed once the command was waited for.
struct GroupGuard(Option<nix::unistd::Pid>);

impl GroupGuard {
    /// Kill the group now (it is not reaped yet, so its id is still its own).
    fn kill(&mut self) {
        if let Some(group) = self.0.take() {
            let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Upstream's shell prelude for a container command.
pub fn container_command(command: &str) -> String {
    format!("set -eo pipefail; source /etc/profile; set -u; {command}")
}

/// The exit status as a shell reports it: the code, or 128 + the signal.
fn shell_status(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(-1)
}

/// Python's universal newlines, as upstream's `subprocess.run(text=True)` reads the output:
/// `\r\n` and a lone `\r` become `\n`.
pub fn universal_newlines(bytes: Vec<u8>) -> Vec<u8> {
    if !bytes.contains(&b'\r') {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.into_iter().peekable();
    while let Some(byte) = iter.next() {
        if byte == b'\r' {
            if iter.peek() == Some(&b'\n') {
                iter.next();
            }
            out.push(b'\n');
        } else {
            out.push(byte);
        }
    }
    out
}

impl Nspawn {
    /// Run `command` in the container (see the module documentation). `check_return` and
    /// `check_output` do not apply, as upstream's containers ignore them: the status and
    /// the output always come back.
    pub(super) async fn run_command(&self, command: &str, options: ExecuteOptions) -> Result<(i32, Vec<u8>)> {
        if command.contains('\0') {
            return Err(Error::InvalidCommand {
                machine: self.name().to_owned(),
                command: command.replace('\0', "\\0"),
                source: NulInCommand,
            });
        }
        self.connect().await?;
        let running = self.running()?;
        let Some(leader) = running.leader.get().cloned() else {
            return Err(Error::NotRunning { machine: self.name().to_owned() });
        };
        if leader.has_exited() {
            return Err(self.exited(&running, &format!("before `{command}` could run")).await);
        }
        // Not a supervised child: what the command starts in the background lives on after
        // it, as in a VM. Its own process group, so that a timeout can end all of it, as
        // timeout(1) does in a VM.
        let mut nsenter = tokio::process::Command::new(nsenter());
        nsenter
            .arg("--target")
            .arg(leader.pid().to_string())
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "/bin/sh", "-c"])
            .arg(container_command(command))
            .env_clear()
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = nsenter.spawn().map_err(|source| Error::Start {
            machine: self.name().to_owned(),
            action: "run nsenter (util-linux) to enter the container".to_owned(),
            source,
        })?;
        let mut group = GroupGuard(child.id().and_then(|pid| i32::try_from(pid).ok()).map(nix::unistd::Pid::from_raw));
        if let Some(stderr) = child.stderr.take() {
            let machine = self.name().to_owned();
            tokio::spawn(crate::machine::console::each_line(stderr, move |line| log::log(Some(&machine), &line)));
        }
        let Some(mut stdout) = child.stdout.take() else {
            return Err(Error::NotRunning { machine: self.name().to_owned() });
        };
        let mut output = Vec::new();
        enum Outcome {
            Done(std::io::Result<ExitStatus>),
            TimedOut,
            InitExited,
        }
        let outcome = {
            // All of the output, then the status: a daemon the command started keeps the
            // output open, as it keeps a VM's; the timeout ends that wait.
            let run = async {
                stdout.read_to_end(&mut output).await?;
                child.wait().await
            };
            tokio::pin!(run);
            let timeout = async {
                match options.timeout {
                    Some(timeout) => tokio::time::sleep(timeout).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A command that finished is reported as it finished, even if the container
                // went at the same moment.
                biased;
                done = &mut run => Outcome::Done(done),
                _ = timeout => Outcome::TimedOut,
                _ = leader.exited() => Outcome::InitExited,
            }
        };
        // nsenter is not reaped yet (only `wait` reaps it), so its group id is still its own.
        let mut kill_group = |child: &mut tokio::process::Child| {
            group.kill();
            let _ = child.start_kill();
        };
        match outcome {
            Outcome::Done(Ok(status)) => {
                // Waited for: the group id may belong to someone else from now on.
                group.0 = None;
                let code = shell_status(status);
                // A command killed with the container (the end of a PID namespace is a
                // SIGKILL to everything in it); the init's exit follows within moments.
                if code == KILLED && self.init_exits_soon(&leader).await {
                    return Err(self.exited(&running, &format!("while running `{command}`")).await);
                }
                Ok((code, universal_newlines(output)))
            }
            Outcome::Done(Err(e)) => Err(Error::Start {
                machine: self.name().to_owned(),
                action: format!("read the output of `{command}`"),
                source: e,
            }),
            Outcome::TimedOut => {
                kill_group(&mut child);
                let _ = child.wait().await;
                let waited = options.timeout.unwrap_or_default();
                self.base
                    .log(&format!("`{command}` did not finish within {} seconds; killed it", waited.as_secs_f64()));
                Ok((TIMED_OUT, universal_newlines(output)))
            }
            Outcome::InitExited => {
                kill_group(&mut child);
                let _ = child.wait().await;
                Err(self.exited(&running, &format!("while running `{command}`")).await)
            }
        }
    }

    /// Whether the container's init exits within a second.
    async fn init_exits_soon(&self, leader: &Arc<Leader>) -> bool {
        tokio::time::timeout(Duration::from_secs(1), leader.exited()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_are_read_as_python_reads_text() {
        assert_eq!(universal_newlines(b"a\r\nb\rc\n\r".to_vec()), b"a\nb\nc\n\n");
        assert_eq!(universal_newlines(b"plain\n".to_vec()), b"plain\n");
    }

    #[test]
    fn upstream_prelude() {
        assert_eq!(container_command("true"), "set -eo pipefail; source /etc/profile; set -u; true");
    }
}
