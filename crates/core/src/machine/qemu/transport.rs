//! The command transport of a QEMU machine: one framed command at a time on the backdoor
//! shell ([`super::frame`], [`super::shell`]), raced against the console's faults and QEMU's
//! exit, so a guest that can no longer answer fails the command at once.
//!
//! Where the guest runs ntd's kill helper ([`super::channel`]), the host enforces a command's
//! timeout itself and an interrupted command is killed in the guest: when the caller's future
//! is dropped (Ctrl-C in the REPL, `KeyboardInterrupt` in a script), a task kills the command's
//! process tree at once, so nothing keeps running and the next command is answered without
//! waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::TAIL_LINES;
use super::channel::Mode;
use super::frame::{Frame, Framing, Reply};
use super::lifecycle::{Qemu, Running};
use super::shell::{Abandoned, Received, Settled, ShellError};
use crate::log;
use crate::machine::{Error, ExecuteOptions, Result};

/// A command with a timeout whose reply has not ended by then: the host gives up on the
/// guest this long after (a guest that cannot even run `timeout`, or kill, is hung). On the
/// console, this long after the last byte: there the output of a command is printed after it
/// ended, and a big one takes minutes under emulation.
const HOST_GRACE: Duration = Duration::from_secs(60);
/// However long a reply keeps arriving on the console, the host gives up this long after the
/// command's timeout (a background job writing to the console for ever holds no command).
const HOST_MAX_WAIT: Duration = Duration::from_secs(600);

/// The exit status of a command that ran out of time: `timeout`'s, as upstream reports it.
const TIMED_OUT_STATUS: i32 = 124;

/// Kills the command in flight if the exchange is dropped before its reply was read (see
/// the module documentation). Armed once the command is sent, disarmed when its reply is in
/// or when the shell is known to be gone.
struct AbandonGuard {
    running: Arc<Running>,
    machine: String,
    command: String,
    armed: AtomicBool,
}

impl AbandonGuard {
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let running = Arc::clone(&self.running);
        let machine = std::mem::take(&mut self.machine);
        let command = std::mem::take(&mut self.command);
        // Whichever takes the shell first, this task or the next command, settles the
        // command and says what became of it.
        runtime.spawn(async move {
            let mut shell = running.shell.lock().await;
            match shell.settle().await {
                Ok(abandoned) => log_abandoned(&machine, abandoned),
                Err(e) => log::warning(
                    Some(&machine),
                    &format!(
                        "`{command}` was interrupted, but killing it in the guest failed: {}",
                        crate::full_message(&e)
                    ),
                ),
            }
        });
    }
}

/// Log what became of a command whose caller gave up on it.
fn log_abandoned(machine: &str, abandoned: Option<Abandoned>) {
    match abandoned {
        None => {}
        Some(Abandoned { command, settled: Settled::Killed { processes } }) => log::log(
            Some(machine),
            &format!("`{command}` was interrupted: killed {processes} process(es) in the guest"),
        ),
        Some(Abandoned { command, settled: Settled::Skipped { bytes } }) => log::log(
            Some(machine),
            &format!(
                "`{command}`, given up on earlier, has ended; {bytes} byte(s) of its reply arrived since and were skipped"
            ),
        ),
    }
}

/// Run `exchange` to its end, or until the host gives up on the guest (`None`): [`HOST_GRACE`]
/// after `timeout` ran out, or, where `received` counts the reply's bytes (on the console,
/// where a command's output is printed after it ended), once the guest has sent nothing for
/// that long since the timeout or its last byte, and at the latest [`HOST_MAX_WAIT`] after the
/// timeout. A guest still sending its reply is busy, not hung.
async fn until_silent<T>(
    exchange: impl Future<Output = T>,
    timeout: Duration,
    received: Option<&Received>,
) -> Option<T> {
    tokio::pin!(exchange);
    let timed_out_at = Instant::now() + timeout;
    let give_up_at = || {
        let last = received.map_or(timed_out_at, Received::last_at);
        (timed_out_at.max(last) + HOST_GRACE).min(timed_out_at + HOST_MAX_WAIT)
    };
    loop {
        if let Ok(done) = tokio::time::timeout_at(give_up_at(), &mut exchange).await {
            return Some(done);
        }
        if give_up_at() <= Instant::now() {
            return None;
        }
    }
}

impl Qemu {
    /// Run one command on the backdoor shell with upstream's `execute` semantics (the
    /// callbacks have run). Connects first if needed.
    pub(super) async fn run_command(&self, command: &str, options: ExecuteOptions) -> Result<(i32, Vec<u8>)> {
        self.connect().await?;
        let running = self.running()?;
        let name = self.name();
        let console = self.base.console();
        let traceparent = log::current_traceparent();
        let mut shell = running.shell.lock().await;
        let received = shell.received();
        let mode = shell.mode();
        let framing = match mode {
            Mode::Port { .. } => Framing::Port,
            Mode::Console => Framing::Console,
        };
        // Where the host can kill, it enforces the timeout itself; else `timeout` in the guest.
        let guest_timeout = options.timeout.filter(|_| !mode.killable());
        let host_timeout = options.timeout.filter(|_| mode.killable());
        let frame = Frame::new(command, framing, guest_timeout, traceparent.as_deref()).map_err(|source| {
            Error::InvalidCommand { machine: name.to_owned(), command: command.replace('\0', "\\0"), source }
        })?;
        let stray = shell.take_stray_output();
        if !stray.is_empty() {
            let shown = &stray[..stray.len().min(200)];
            log::warning(
                Some(name),
                &format!("ignoring output printed after an earlier command had ended: {}", log::bytes_repr(shown)),
            );
        }
        // A fault seen since the shell connected (between two commands, say) means nothing
        // will read this command; one seen while it runs means no reply will come.
        let mut faults = console.subscribe_faults();
        faults.borrow_and_update();
        let earlier_fault = (console.fault_count() != self.faults_at_connect.load(Ordering::SeqCst))
            .then(|| console.last_fault())
            .flatten();
        let sent_at = Instant::now();
        let guard = AbandonGuard {
            running: Arc::clone(&running),
            machine: name.to_owned(),
            command: command.to_owned(),
            armed: AtomicBool::new(false),
        };
        let outcome = match earlier_fault {
            Some(fault) => Err((fault, "before running")),
            None => {
                // Sending may first settle the reply an earlier command still owes, so the
                // timeout and the fault watch cover it too.
                let exchange = async {
                    let waited_for = options.check_output.then(|| command.to_owned());
                    log_abandoned(name, shell.send(&frame, waited_for).await?);
                    if !options.check_output {
                        return Ok(None);
                    }
                    if mode.killable() {
                        guard.arm();
                    }
                    let lingering = || {
                        log::warning(
                            Some(name),
                            &format!(
                                // Upstream's words up to "stdout" (nixpkgs' `succeed-stdout-warning`
                                // check looks for them).
                                "Command '{command}' for the test script has exited, but not closed stdout after 10 \
                                 seconds: a process it \
                                 started holds it, and the output ends when that process closes it (redirect the \
                                 process's output, e.g. `daemon >/dev/null 2>&1 &`, to return at once)"
                            ),
                        );
                    };
                    let reply = match host_timeout {
                        None => shell.receive(lingering).await,
                        Some(timeout) => match tokio::time::timeout(timeout, shell.receive(lingering)).await {
                            Ok(reply) => reply,
                            Err(_) => shell.kill().await.map(|killed| {
                                if killed.processes == 0 {
                                    // It ended on its own as the time ran out.
                                    return killed.reply;
                                }
                                log::log(
                                    Some(name),
                                    &format!(
                                        "`{command}` timed out after {} seconds: killed {} process(es) in the guest",
                                        crate::config::format_seconds(timeout),
                                        killed.processes
                                    ),
                                );
                                Reply { status: TIMED_OUT_STATUS, output: killed.reply.output }
                            }),
                        },
                    };
                    guard.disarm();
                    reply.map(Some)
                };
                let bounded = async {
                    match options.timeout {
                        None => Some(exchange.await),
                        Some(timeout) => {
                            let reply_bytes = (framing == Framing::Console).then_some(&received);
                            until_silent(exchange, timeout, reply_bytes).await
                        }
                    }
                };
                let fault = async {
                    loop {
                        if faults.changed().await.is_err() {
                            return std::future::pending().await;
                        }
                        if let Some(fault) = faults.borrow_and_update().clone() {
                            return fault;
                        }
                    }
                };
                tokio::select! {
                    // A reply already received wins over a fault printed after it.
                    biased;
                    exchanged = bounded => Ok(exchanged),
                    fault = fault => Err((fault, "while running")),
                }
            }
        };
        let reply = match outcome {
            Ok(Some(Ok(None))) => return Ok((-2, Vec::new())),
            Ok(Some(Ok(Some(reply)))) => Ok(reply),
            Ok(Some(Err(e))) => {
                guard.disarm();
                Err(e)
            }
            Ok(None) => {
                // Hung: the guard kills what it can once this returns. On the console, a reply
                // whose end was dropped looks the same; the error says both, and the next
                // command resynchronises the shell (see `Shell::settle`).
                let (machine, command) = (name.to_owned(), command.to_owned());
                let timeout = options.timeout.unwrap_or_default();
                let waited = sent_at.elapsed().saturating_sub(timeout);
                return Err(match framing {
                    Framing::Port => Error::GuestHung { machine, command, timeout, waited },
                    Framing::Console => Error::ReplyEndLost { machine, command, timeout, waited },
                });
            }
            Err((fault, when)) => {
                // The shell that owed the reply is gone: the next command waits for a new one
                // (after the reboot that `panic=1` causes, say).
                guard.disarm();
                let partial_output = shell.partial_output();
                drop(shell);
                self.mark_disconnected();
                if !options.check_return {
                    return Ok((-1, partial_output));
                }
                // QEMU still runs; let the console pump log the lines after the fault.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(Error::ShellDisconnected {
                    machine: name.to_owned(),
                    context: format!("{when} `{command}` ({fault})"),
                    serial_tail: console.tail(TAIL_LINES),
                });
            }
        };
        drop(shell);
        match reply {
            Ok(reply) if options.check_return => Ok((reply.status, reply.output)),
            Ok(reply) => Ok((-1, reply.output)),
            // A command that takes the shell down (poweroff, reboot) is expected to lose it.
            Err(ShellError::Disconnected { partial_output }) if !options.check_return => Ok((-1, partial_output)),
            Err(ShellError::Disconnected { .. }) | Err(ShellError::Io(_)) => {
                Err(self.disconnected(&format!("while running `{command}`"), None).await)
            }
            Err(source) => Err(Error::Shell { machine: name.to_owned(), command: command.to_owned(), source }),
        }
    }

    /// Send `line` to the backdoor shell unframed and return the first line it prints back.
    /// For benchmarks: the channel's floor (`echo x`) and upstream's two-round-trip framing,
    /// measured on the same shell as ntd's. A line that prints anything but one line
    /// desynchronises the shell.
    pub(super) async fn exchange_raw_line(&self, line: &str) -> Result<Vec<u8>> {
        self.connect().await?;
        let running = self.running()?;
        let mut shell = running.shell.lock().await;
        shell.exchange_line(line.as_bytes()).await.map_err(|source| Error::Shell {
            machine: self.name().to_owned(),
            command: line.trim_end().to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes arriving every `every` until `until`, counted in `received`.
    fn trickle(received: &Received, every: Duration, until: Duration) {
        let received = received.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < until {
                tokio::time::sleep(every).await;
                received.add(1);
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_guest_is_given_up_on_its_grace_after_the_timeout() {
        let received = Received::default();
        let start = Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(until_silent(never, Duration::from_secs(30), Some(&received)).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(30) + HOST_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_before_the_timeout_do_not_extend_it() {
        let received = Received::default();
        trickle(&received, Duration::from_secs(1), Duration::from_secs(29));
        let start = Instant::now();
        assert_eq!(until_silent(std::future::pending::<()>(), Duration::from_secs(30), Some(&received)).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(30) + HOST_GRACE);
    }

    /// A reply that keeps arriving after the timeout (a big output on a slow console) is
    /// waited for, however long it takes; the guest is given up on one grace after its last
    /// byte.
    #[tokio::test(start_paused = true)]
    async fn a_reply_still_arriving_is_waited_for() {
        let received = Received::default();
        trickle(&received, Duration::from_secs(10), Duration::from_secs(300));
        let reply = tokio::time::sleep(Duration::from_secs(250));
        let start = Instant::now();
        assert_eq!(until_silent(reply, Duration::from_secs(30), Some(&received)).await, Some(()));
        assert_eq!(start.elapsed(), Duration::from_secs(250));
        // The trickle's last byte comes at 300 s.
        assert_eq!(until_silent(std::future::pending::<()>(), Duration::from_secs(1), Some(&received)).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(300) + HOST_GRACE);
    }

    /// Bytes that never stop hold a console command only up to the bound, and a port
    /// command (whose bytes are not counted) not at all.
    #[tokio::test(start_paused = true)]
    async fn endless_bytes_hold_a_command_only_so_long() {
        let received = Received::default();
        trickle(&received, Duration::from_secs(10), Duration::from_secs(100_000));
        let start = Instant::now();
        assert_eq!(until_silent(std::future::pending::<()>(), Duration::from_secs(30), Some(&received)).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(30) + HOST_MAX_WAIT);
        let start = Instant::now();
        assert_eq!(until_silent(std::future::pending::<()>(), Duration::from_secs(30), None).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(30) + HOST_GRACE);
    }
}
