//! The policy of a test run: the global timeout, termination on signals, and the VLAN
//! switches' health — one implementation for the command line, the REPL, the Python library
//! and a Rust program.
//!
//! Each of them can *stop* a run ([`Stop`]). Stopping means: say why, kill what must die (the
//! global timeout kills every machine and switch, as upstream's does), record the reason
//! (the first one wins) and *interrupt* the test script through the embedding program's
//! [`StopHooks`] — in Python, `KeyboardInterrupt` in the script's thread; in a Rust program,
//! [`Driver::run`] returns. A script that does not stop within a grace period ([`GRACE`] unless
//! [`super::DriverOptions::stop_grace`] says otherwise; it may swallow the interruption) is
//! *abandoned*: its machines and switches are killed and its state cleaned up under it, then
//! the embedding program decides what else that means. The command line writes its reports and
//! exits; a library never exits its user's process, so without an `abandon` hook the watchdog
//! only says that the script did not stop.
//!
//! Everything here runs as tasks on the tokio runtime the driver was started on; they end
//! when the run does ([`Driver::finish`]).

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::Driver;
use crate::log;

/// How long a stopped script gets to wind down before it is abandoned, unless the driver was
/// given another grace.
pub const GRACE: Duration = Duration::from_secs(30);

/// Why a run was stopped from outside its test script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The global timeout fired; every machine and switch was killed.
    GlobalTimeout(Duration),
    /// The process was asked to terminate (SIGTERM).
    Signal(Signal),
    /// A VLAN switch died: the machines on it lost their network.
    SwitchFailed(String),
}

impl Stop {
    /// What the test report says about it (a `!!! ` line).
    pub fn message(&self) -> String {
        match self {
            Stop::GlobalTimeout(timeout) => format!(
                "the test was stopped by its global timeout ({} seconds)",
                crate::config::format_seconds(*timeout)
            ),
            Stop::Signal(signal) => format!("terminated by {signal}"),
            Stop::SwitchFailed(message) => message.clone(),
        }
    }

    /// What to say when the script did not stop after it.
    pub fn abandon_message(&self) -> String {
        match self {
            Stop::GlobalTimeout(_) => "the test script did not stop after the global timeout".to_owned(),
            Stop::Signal(signal) => format!("the test did not stop after {signal}"),
            Stop::SwitchFailed(_) => "the test script did not stop after its switch failed".to_owned(),
        }
    }

    /// The exit status a program reports for a run stopped this way, as a shell reports it:
    /// 128 + the signal's number for a signal; 143 (128 + SIGTERM) for the global timeout,
    /// because upstream's driver ends its run by sending itself SIGTERM; 1 for a failed switch.
    pub fn exit_status(&self) -> i32 {
        match self {
            Stop::Signal(signal) => 128 + *signal as i32,
            Stop::GlobalTimeout(_) => 128 + Signal::SIGTERM as i32,
            Stop::SwitchFailed(_) => 1,
        }
    }

    /// The run's outcome, for the run span's `test.outcome`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Stop::GlobalTimeout(_) => "timed out",
            Stop::Signal(_) => "terminated",
            Stop::SwitchFailed(_) => "failed",
        }
    }
}

/// Something the program that runs the test script does about a [`Stop`].
pub type StopHook = Box<dyn Fn(&Stop) + Send + Sync>;

/// What the program that runs the test script does when the watchdog stops the run.
pub struct StopHooks {
    /// Interrupt the test script wherever it is (in a boot, a command, a sleep).
    pub interrupt: StopHook,
    /// The script did not stop in time: do what the program does then (the command line
    /// writes its reports and exits). Without this hook the watchdog logs a warning only.
    pub abandon: Option<StopHook>,
}

/// The watchdog's state, kept by the driver.
pub(super) struct Watchdog {
    /// The first reason the run was stopped for.
    reason: watch::Sender<Option<Stop>>,
    /// Set when the script is interrupted for it (the global timeout records its reason
    /// first, takes the failure artifacts, kills, and only then interrupts).
    interrupted: watch::Sender<bool>,
    /// Set when the run is over: every task of the watchdog ends.
    finished: watch::Sender<bool>,
    hooks: OnceLock<StopHooks>,
    timer_armed: AtomicBool,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            reason: watch::Sender::new(None),
            interrupted: watch::Sender::new(false),
            finished: watch::Sender::new(false),
            hooks: OnceLock::new(),
            timer_armed: AtomicBool::new(false),
        }
    }
}

/// Spawn `task` on the current runtime; outside one, say that `what` is not watched.
fn spawn(what: &str, task: impl Future<Output = ()> + Send + 'static) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
            true
        }
        Err(_) => {
            log::error(None, &format!("cannot watch {what} outside a tokio runtime"));
            false
        }
    }
}

impl Driver {
    /// Set what interrupts and abandons the test script; the first hooks set stay.
    pub fn set_stop_hooks(&self, hooks: StopHooks) -> bool {
        self.inner.watchdog.hooks.set(hooks).is_ok()
    }

    /// Why the run was stopped from outside the script, if it was.
    pub fn stop_reason(&self) -> Option<Stop> {
        self.inner.watchdog.reason.borrow().clone()
    }

    /// The run is over (the script ended): the global timeout and the other watches stop.
    /// Idempotent; [`Driver::cleanup`] calls it.
    pub fn finish(&self) {
        self.inner.watchdog.finished.send_replace(true);
    }

    /// Resolves once [`Driver::finish`] was called.
    fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut finished = self.inner.watchdog.finished.subscribe();
        async move {
            let _ = finished.wait_for(|finished| *finished).await;
        }
    }

    /// Stop the run for `stop`: record it (the first reason wins) and interrupt the script.
    /// Returns whether this was the first reason.
    pub fn stop(&self, stop: Stop) -> bool {
        let first = self.record_stop(&stop);
        if first {
            self.interrupt(&stop);
        }
        first
    }

    /// Record why the run is stopped (the first reason wins), without interrupting the script
    /// yet: a script that ends from here on ends as stopped. Returns whether this was the first
    /// reason.
    fn record_stop(&self, stop: &Stop) -> bool {
        self.inner.watchdog.reason.send_if_modified(|reason| {
            if reason.is_some() {
                return false;
            }
            *reason = Some(stop.clone());
            true
        })
    }

    /// Interrupt the test script through the program's hook.
    fn interrupt(&self, stop: &Stop) {
        self.inner.watchdog.interrupted.send_replace(true);
        if let Some(hooks) = self.inner.watchdog.hooks.get() {
            (hooks.interrupt)(stop);
        }
    }

    /// The script did not stop: clean up under it (kill every machine and switch, remove the
    /// state that is not to be kept), then hand over to the program, or say so.
    async fn abandon(&self) {
        let Some(stop) = self.stop_reason() else { return };
        self.kill_now();
        self.cleanup().await;
        match self.inner.watchdog.hooks.get().and_then(|hooks| hooks.abandon.as_ref()) {
            Some(abandon) => abandon(&stop),
            None => log::warning(None, &format!("{}; its machines are stopped", stop.abandon_message())),
        }
    }

    /// Start the global timeout (once; later calls do nothing): when it fires, log upstream's
    /// message, kill every machine and switch, and stop the run. Must be called within a
    /// tokio runtime.
    pub fn arm_global_timeout(&self) {
        if self.inner.watchdog.timer_armed.swap(true, Ordering::SeqCst) {
            return;
        }
        let driver = self.clone();
        let timeout = self.global_timeout();
        spawn("the global timeout", async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = driver.finished() => return,
            }
            // Recorded first: a script that ends while the artifacts are taken has still run
            // out of time.
            let stop = Stop::GlobalTimeout(timeout);
            let first = driver.record_stop(&stop);
            {
                let block = log::block(None, "timeout reached; test terminating...", &[]);
                // What the machines show now is what explains the timeout: keep it (when
                // asked for) before they are killed. Each step is bounded in time.
                let failure =
                    super::artifacts::Failure { kind: super::artifacts::FailureKind::GlobalTimeout, command: None };
                tracing::Instrument::instrument(driver.collect_failure_artifacts(&failure), block.clone()).await;
                let _block = block.entered();
                driver.kill_now();
            }
            if first {
                driver.interrupt(&stop);
            }
            tokio::select! {
                _ = tokio::time::sleep(driver.inner.stop_grace) => driver.abandon().await,
                _ = driver.finished() => {}
            }
        });
    }

    /// Make SIGTERM stop the run as Ctrl-C does: the script is interrupted where it is, then
    /// the program cleans up as after any failure. A script that swallows the interruption is
    /// abandoned after the grace or at the next SIGTERM; a SIGTERM during cleanup abandons at
    /// once. `interactive` (a prompt swallows interruptions by design) abandons at the first
    /// SIGTERM. For a program that owns the process's signals (the command line); a library
    /// leaves them to its user. Must be called within a tokio runtime.
    pub fn terminate_on_sigterm(&self, interactive: bool) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terms = signal(SignalKind::terminate())?;
        let driver = self.clone();
        spawn("SIGTERM", async move {
            if terms.recv().await.is_none() {
                return;
            }
            log::warning(None, "received SIGTERM; stopping the test");
            let stopped = Stop::Signal(Signal::SIGTERM);
            if interactive {
                driver.inner.watchdog.reason.send_if_modified(|reason| reason.replace(stopped).is_none());
                driver.abandon().await;
                return;
            }
            driver.stop(stopped);
            tokio::select! {
                _ = terms.recv() => driver.abandon().await,
                _ = tokio::time::sleep(driver.inner.stop_grace) => driver.abandon().await,
                _ = driver.finished() => {
                    if terms.recv().await.is_some() {
                        driver.abandon().await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Watch the VLAN switches: one that dies takes every machine's network with it, so the
    /// run is stopped at once with the switch named, rather than failing later in some
    /// unrelated-looking network wait.
    pub(super) fn watch_switches(&self) {
        if self.vlans().is_empty() {
            return;
        }
        let driver = self.clone();
        spawn("the VLAN switches", async move {
            let failure = async {
                let watches: Vec<_> = driver.vlans().iter().map(|vlan| Box::pin(vlan.unexpected_exit())).collect();
                first_of(watches).await
            };
            tokio::select! {
                message = failure => {
                    log::error(None, &message);
                    driver.stop(Stop::SwitchFailed(message));
                }
                _ = driver.finished() => {}
            }
        });
    }

    /// Say so if the SSH backdoor's vhost-device-vsock dies during the run. The test goes on:
    /// the backdoor is for debugging it, not part of it.
    pub(super) fn watch_vsock_device(&self) {
        if self.vsock_device().is_none() {
            return;
        }
        let driver = self.clone();
        spawn("the SSH backdoor's vhost-device-vsock", async move {
            let Some(device) = driver.vsock_device() else { return };
            tokio::select! {
                message = device.unexpected_exit() => log::warning(None, &message),
                _ = driver.finished() => {}
            }
        });
    }

    /// Run `script` under the run's policy, for a Rust program: the global timeout is armed,
    /// and the script is dropped (cancelled) as soon as it is interrupted; a run that was
    /// stopped has its reason as the error. The run is finished when this returns; clean up with
    /// [`Driver::cleanup`].
    pub async fn run<F: Future>(&self, script: F) -> Result<F::Output, Stop> {
        self.arm_global_timeout();
        let mut interrupted = self.inner.watchdog.interrupted.subscribe();
        let result = tokio::select! {
            // A script that ends after the global timeout fired (while the failure artifacts
            // are taken) has still run out of time.
            output = script => match self.stop_reason() {
                Some(stop) => Err(stop),
                None => Ok(output),
            },
            _ = interrupted.wait_for(|interrupted| *interrupted) => {
                Err(self.stop_reason().unwrap_or(Stop::GlobalTimeout(self.global_timeout())))
            }
        };
        self.finish();
        result
    }
}

/// The output of whichever future finishes first.
async fn first_of<F: Future + Unpin>(mut futures: Vec<F>) -> F::Output {
    std::future::poll_fn(|cx| {
        for future in &mut futures {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready(output);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
