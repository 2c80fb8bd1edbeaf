//! Waiting for something in the guest.
//!
//! Upstream polls from the host once a second, each poll one or more full commands, so a
//! condition is noticed 0.5 s late on average and up to a second. ntd sends one command that
//! runs the polling loop inside the guest and returns when the condition holds: files are
//! checked every 25 ms with the shell's own `test`, TCP ports with bash's `/dev/tcp` (no process
//! started per check, so a check costs the guest next to nothing), and the pause between
//! checks is a `read -t` on a private fifo, not a `sleep` process. The loop runs under the wait's timeout (`timeout T`), and after a timeout
//! one last check decides, as upstream's `retry` does, so results and messages are upstream's.
//!
//! While a polling condition is active, waits poll from the host instead, as upstream does:
//! the conditions are checked before every command, and a loop inside the guest would let a
//! failing condition go unnoticed for the whole wait.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::quote::shell_quote;
use super::{Error, ExecuteOptions, Machine, Result, lock};
use crate::log;

/// The pause between checks of a file or a TCP port in the guest, in seconds. Those checks
/// are shell builtins (no process), so checking often is cheap: the wait returns 12.5 ms after
/// the condition holds on average (benches/e2e measures it).
const BUILTIN_CHECK_INTERVAL: &str = "0.025";

/// Shell code defining `nap SECONDS`: a pause without starting a process (a `read -t` on a
/// private fifo), falling back to `sleep` where no fifo can be made.
pub(crate) const NAP: &str = "nf=/tmp/.ntd-nap.$$.${RANDOM:-0}\n\
    if mkfifo \"$nf\" 2>/dev/null && exec 9<>\"$nf\"; then rm -f \"$nf\"; nap() { read -t \"$1\" -u 9 _; }\n\
    else nap() { sleep \"$1\"; }; fi\n";

/// How an in-guest wait loop ended.
pub(crate) enum GuestWait {
    /// The condition holds.
    Holds,
    /// The loop ran out of time.
    TimedOut {
        /// When the wait began (the error reports the time since, last check included).
        started: Instant,
    },
    /// The loop ended itself with another status (a check that can never succeed).
    Exited {
        /// Its exit status.
        status: i32,
        /// What it printed.
        output: Vec<u8>,
    },
}

/// The loop for a condition that a shell command tests: `until CHECK; do nap I; done`.
fn until_script(check: &str, interval: &str) -> String {
    // `until` returns the status of the last `nap` (a timed-out read), hence the `exit 0`.
    format!("set +eu +o pipefail\n{NAP}until {check}\ndo nap {interval}; done\nexit 0\n")
}

/// A TCP port check: bash's `/dev/tcp` (no process per check) where the shell is bash, else
/// upstream's `nc -z`.
fn tcp_check(addr: &str, port: u16) -> String {
    let addr = shell_quote(addr);
    // `true`, not `:`: bash as `sh` (a container's /bin/sh) is in POSIX mode, where a failed
    // redirection on a special builtin such as `:` ends the whole shell.
    format!(
        "{{ if [ -n \"${{BASH_VERSION:-}}\" ]; then true 2>/dev/null <>\"/dev/tcp/\"{addr}\"/{port}\"; \
         else nc -z {addr} {port}; fi; }}"
    )
}

/// The least time a single check of a wait is given (see `wait_for_condition`).
const CHECK_FLOOR: Duration = Duration::from_secs(10);

impl Machine {
    /// Run an in-guest wait loop under `timeout`.
    /// `what` says what is awaited, for an error (the loop's script says little to a user).
    pub(crate) async fn guest_wait(&self, script: &str, what: &str, timeout: Duration) -> Result<GuestWait> {
        let start = Instant::now();
        let executed =
            self.execute(script, ExecuteOptions { timeout: Some(timeout), ..ExecuteOptions::default() }).await;
        let (status, output) = executed.map_err(|error| match error {
            Error::ShellDisconnected { machine, context, serial_tail } => Error::ShellDisconnected {
                machine,
                context: context.replacen(&format!("while running `{script}`"), &format!("while {what}"), 1),
                serial_tail,
            },
            other => other,
        })?;
        Ok(match status {
            0 => GuestWait::Holds,
            // coreutils' timeout says 124; busybox's reports the TERM signal.
            124 | 143 => GuestWait::TimedOut { started: start },
            status => GuestWait::Exited { status, output },
        })
    }

    /// The error for a wait loop that ended in a way it should not.
    pub(crate) fn wait_loop_failed(&self, status: i32, output: &[u8]) -> Error {
        Error::WaitLoop {
            machine: self.name().to_owned(),
            status,
            output: String::from_utf8_lossy(output).trim_end().to_owned(),
        }
    }

    /// Wait until `check` (a shell condition) holds: in the guest, or from the host while
    /// polling conditions are active. Either way, upstream's timeout semantics.
    ///
    /// A single check (the last one after the loop timed out, or each host-side one) is bounded
    /// by the wait's timeout, as each attempt of `wait_until_succeeds` is: a check that blocks
    /// (a TCP connect whose SYNs are dropped waits some two minutes for the kernel to give up)
    /// must not take the wait far past its caller's budget. nixpkgs' `attempt-timeout` test
    /// holds a 5 s `wait_for_open_port` on such a port to under a minute.
    pub(crate) async fn wait_for_condition(&self, check: &str, interval: &str, timeout: Duration) -> Result<()> {
        let once = || async move {
            // At least CHECK_FLOOR: a wait with a tiny (or zero) timeout still gets its one
            // check, as upstream's `retry` gives it, answered.
            let options = ExecuteOptions { timeout: Some(timeout.max(CHECK_FLOOR)), ..ExecuteOptions::default() };
            let (status, _) = self.execute(check, options).await?;
            Ok::<_, Error>(status == 0)
        };
        if self.host_side_waits() {
            crate::retry::retry(timeout, |_| once()).await??;
            return Ok(());
        }
        match self
            .guest_wait(&until_script(check, interval), &format!("waiting until `{check}` succeeds"), timeout)
            .await?
        {
            GuestWait::Holds => Ok(()),
            GuestWait::TimedOut { started } => {
                if once().await? {
                    Ok(())
                } else {
                    Err(crate::retry::TimedOut { elapsed: started.elapsed(), timeout }.into())
                }
            }
            GuestWait::Exited { status, output } => Err(self.wait_loop_failed(status, &output)),
        }
    }

    /// Upstream's `wait_for_file(filename, timeout=900)` (the name goes to `test -e`
    /// unquoted, as upstream's does).
    pub async fn wait_for_file(&self, filename: &str, timeout: Duration) -> Result<()> {
        log::nested(Some(self.name()), &format!("waiting for file '{filename}'"), async {
            self.wait_for_condition(&format!("test -e {filename}"), BUILTIN_CHECK_INTERVAL, timeout).await
        })
        .await
    }

    /// Upstream's `wait_for_open_port(port, addr="localhost", timeout=900)`.
    pub async fn wait_for_open_port(&self, port: u16, addr: &str, timeout: Duration) -> Result<()> {
        log::nested(Some(self.name()), &format!("waiting for TCP port {port} on {addr}"), async {
            self.wait_for_condition(&tcp_check(addr, port), BUILTIN_CHECK_INTERVAL, timeout).await
        })
        .await
    }

    /// Upstream's `wait_for_closed_port(port, addr="localhost", timeout=900)`.
    pub async fn wait_for_closed_port(&self, port: u16, addr: &str, timeout: Duration) -> Result<()> {
        log::nested(Some(self.name()), &format!("waiting for TCP port {port} on {addr} to be closed"), async {
            self.wait_for_condition(&format!("! {}", tcp_check(addr, port)), BUILTIN_CHECK_INTERVAL, timeout).await
        })
        .await
    }

    /// Upstream's `wait_for_open_unix_socket(addr, is_datagram=False, timeout=900)`.
    pub async fn wait_for_open_unix_socket(&self, addr: &str, is_datagram: bool, timeout: Duration) -> Result<()> {
        let (flags, kind) = if is_datagram { ("-z -uU", "datagram") } else { ("-z -U", "stream") };
        log::nested(Some(self.name()), &format!("waiting for UNIX-domain {kind} on '{addr}'"), async {
            self.wait_for_condition(&format!("nc {flags} {addr}"), "0.2", timeout).await
        })
        .await
    }

    /// Upstream's `wait_until_succeeds(command, timeout=900)`: retry once a second until the
    /// command succeeds; returns its output. Each attempt is bounded by `attempt_timeout`
    /// (default: `timeout`, as upstream).
    pub async fn wait_until_succeeds(
        &self,
        command: &str,
        timeout: Duration,
        attempt_timeout: Option<Duration>,
    ) -> Result<Vec<u8>> {
        self.wait_until(command, timeout, attempt_timeout, true).await
    }

    /// Upstream's `wait_until_fails(command, timeout=900)`: retry until the command fails.
    pub async fn wait_until_fails(
        &self,
        command: &str,
        timeout: Duration,
        attempt_timeout: Option<Duration>,
    ) -> Result<Vec<u8>> {
        self.wait_until(command, timeout, attempt_timeout, false).await
    }

    async fn wait_until(
        &self,
        command: &str,
        timeout: Duration,
        attempt_timeout: Option<Duration>,
        success: bool,
    ) -> Result<Vec<u8>> {
        let what = if success { "success" } else { "failure" };
        log::nested(Some(self.name()), &format!("waiting for {what}: {command}"), async {
            let output = Mutex::new(Vec::new());
            let options =
                ExecuteOptions { timeout: Some(attempt_timeout.unwrap_or(timeout)), ..ExecuteOptions::default() };
            crate::retry::retry(timeout, |_| {
                let output = &output;
                async move {
                    let (status, out) = self.execute(command, options).await?;
                    *lock(output) = out;
                    Ok::<_, Error>((status == 0) == success)
                }
            })
            .await??;
            Ok(std::mem::take(&mut *lock(&output)))
        })
        .await
    }

    /// Upstream's `wait_for_console_text(regex, timeout=None)`: wait until `matches` holds for
    /// the console lines not consumed by an earlier wait, appended without separators (lines
    /// that end one wait are not seen by the next, as upstream's shared queue has it).
    /// `matches` is the regular expression's search (the Python bindings pass Python's `re`, so
    /// patterns mean what they mean upstream); `pattern` is its text, for the log. Unlike
    /// upstream, lines are taken as they arrive, not one per second.
    pub async fn wait_for_console_text(
        &self,
        pattern: &str,
        mut matches: impl FnMut(&str) -> bool + Send,
        timeout: Option<Duration>,
    ) -> Result<()> {
        log::nested(Some(self.name()), &format!("waiting for {pattern} to appear on console"), async {
            let console = self.console();
            let start = Instant::now();
            let mut buffer = String::new();
            let mut changes = console.subscribe();
            loop {
                // Mark the current count seen first, so a line arriving later wakes the wait.
                changes.borrow_and_update();
                let from = console.cursor();
                let lines = console.lines_from(from);
                let count = lines.len();
                for (offset, line) in lines.into_iter().enumerate() {
                    buffer.push_str(&line);
                    if matches(&buffer) {
                        console.set_cursor(from + offset + 1);
                        return Ok(());
                    }
                }
                console.set_cursor(from + count);
                let changed = async {
                    // The console lives as long as the machine: the channel never closes.
                    if changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                match timeout {
                    None => changed.await,
                    Some(timeout) => {
                        let remaining = timeout.checked_sub(start.elapsed()).filter(|left| !left.is_zero());
                        let Some(remaining) = remaining else {
                            return Err(crate::retry::TimedOut { elapsed: start.elapsed(), timeout }.into());
                        };
                        let _ = tokio::time::timeout(remaining, changed).await;
                    }
                }
            }
        })
        .await
    }

    /// Upstream's `sleep(secs)`: sleep in guest time (`succeed("sleep N")`).
    pub async fn sleep(&self, duration: Duration) -> Result<()> {
        // Upstream's newest sleeps `total_seconds()`: `sleep 5.0`.
        self.succeed(&[format!("sleep {}", crate::config::python_float(duration.as_secs_f64()))], None).await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shells guests run the backdoor in: bash (NixOS, Debian) and busybox ash.
    pub(crate) const GUEST_SHELLS: [&[&str]; 2] = [&["bash"], &["busybox", "sh"]];

    fn run(shell: &[&str], script: &str) -> std::process::ExitStatus {
        std::process::Command::new(shell[0]).args(&shell[1..]).arg("-c").arg(script).status().expect("run shell")
    }

    #[test]
    fn until_loops_run_in_posix_shells() {
        let dir = tempfile::tempdir().expect("temp dir");
        let flag = dir.path().join("flag");
        for shell in GUEST_SHELLS {
            let _ = std::fs::remove_file(&flag);
            let script = format!(
                "(sleep 0.3; touch {0}) & {1}",
                flag.display(),
                until_script(&format!("test -e {}", flag.display()), "0.1")
            );
            let start = Instant::now();
            assert!(run(shell, &script).success(), "{shell:?}");
            assert!(start.elapsed() < Duration::from_secs(5), "{shell:?} loop did not end");
        }
    }

    #[test]
    fn tcp_check_sees_open_and_closed_ports() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        // bash, and bash as a container's `sh` (POSIX mode), where a closed port must not end
        // the loop around the check.
        for shell in [&["bash"][..], &["bash", "--posix"][..]] {
            assert!(run(shell, &tcp_check("127.0.0.1", port)).success(), "{shell:?}");
        }
        drop(listener);
        for shell in [&["bash"][..], &["bash", "--posix"][..]] {
            assert!(!run(shell, &tcp_check("127.0.0.1", port)).success(), "{shell:?}");
            let looped = format!("{}; echo still here", tcp_check("127.0.0.1", port));
            let out =
                std::process::Command::new(shell[0]).args(&shell[1..]).arg("-c").arg(&looped).output().expect("run");
            assert_eq!(out.stdout, b"still here\n", "{shell:?}");
        }
    }
}
