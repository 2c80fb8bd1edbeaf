//! The command transport of a QEMU machine: one framed command at a time on the backdoor
//! shell ([`super::frame`], [`super::shell`]), raced against the console's faults and QEMU's
//! exit, so a guest that can no longer answer fails the command at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::TAIL_LINES;
use super::frame::Frame;
use super::lifecycle::Qemu;
use super::shell::ShellError;
use crate::log;
use crate::machine::{Error, ExecuteOptions, Result};

/// A command with a guest-side timeout gets this long beyond it before the host gives up on
/// the guest (a guest that cannot even run `timeout` is hung).
const HOST_GRACE: Duration = Duration::from_secs(60);

impl Qemu {
    /// Run one command on the backdoor shell with upstream's `execute` semantics (the
    /// callbacks have run). Connects first if needed.
    pub(super) async fn run_command(&self, command: &str, options: ExecuteOptions) -> Result<(i32, Vec<u8>)> {
        self.connect().await?;
        let running = self.running()?;
        let name = self.name();
        let console = self.base.console();
        let traceparent = log::current_traceparent();
        let frame = Frame::new(command, options.timeout, traceparent.as_deref()).map_err(|source| {
            Error::InvalidCommand { machine: name.to_owned(), command: command.replace('\0', "\\0"), source }
        })?;
        let mut shell = running.shell.lock().await;
        let stray = shell.take_stray_output().await;
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
        let waited = options.timeout.map(|timeout| timeout + HOST_GRACE);
        let outcome = match earlier_fault {
            Some(fault) => Err((fault, "before running")),
            None => {
                // Sending may first drain the reply an earlier command still owes, so the
                // timeout and the fault watch cover it too.
                let exchange = async {
                    shell.send(&frame).await?;
                    if !options.check_output {
                        return Ok(None);
                    }
                    shell.receive().await.map(Some)
                };
                let bounded = async {
                    match waited {
                        None => Some(exchange.await),
                        Some(waited) => tokio::time::timeout(waited, exchange).await.ok(),
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
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => {
                return Err(Error::GuestHung {
                    machine: name.to_owned(),
                    command: command.to_owned(),
                    waited: waited.unwrap_or_default(),
                });
            }
            Err((fault, when)) => {
                // The shell that owed the reply is gone: the next command waits for a new one
                // (after the reboot that `panic=1` causes, say).
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
