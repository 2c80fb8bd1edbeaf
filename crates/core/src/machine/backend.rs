//! A kind of machine, as the shared machine code sees it: upstream's abstract `BaseMachine`
//! methods (`start`, `is_up`, `wait_for_shutdown`, `_execute`, `release`).
//!
//! [`super::Machine`] writes everything every machine has — commands, waits, systemd, files,
//! logging, spans — once, over this trait. A kind of machine (a QEMU VM, a systemd-nspawn
//! container) implements it: how the machine starts and stops, and its *command transport*,
//! the one way a command reaches the guest's shell and its output comes back (the backdoor
//! shell on a virtio console, `nsenter` into a container). Adding a kind touches neither the
//! command nor the wait code.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::Result;

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How to run one command: upstream's `execute` keyword arguments.
#[derive(Debug, Clone, Copy)]
pub struct ExecuteOptions {
    /// Wait for and return the exit status (otherwise return -1).
    pub check_return: bool,
    /// Wait for the output at all (otherwise return (-2, "") at once).
    pub check_output: bool,
    /// Kill the command in the guest after this long (exit status 124).
    pub timeout: Option<Duration>,
}

impl Default for ExecuteOptions {
    /// Upstream's defaults: check both, 900 s timeout.
    fn default() -> Self {
        ExecuteOptions { check_return: true, check_output: true, timeout: Some(super::DEFAULT_TIMEOUT) }
    }
}

/// A kind of machine: its lifecycle and its command transport. Implementations keep their own
/// state behind `&self` (they are shared by every handle of the machine).
pub trait Backend: Any + Send + Sync {
    /// The class upstream gives this kind (`QemuMachine`), for `repr` and messages.
    fn class_name(&self) -> &'static str;

    /// Start the machine without waiting for it to boot (upstream's `start()`); a no-op while
    /// it runs.
    fn start(&self) -> BoxFuture<'_, Result<()>>;

    /// Wait until the machine can run commands, starting it if needed (QEMU: the backdoor
    /// shell announced itself).
    fn connect(&self) -> BoxFuture<'_, Result<()>>;

    /// The command transport: run `command` in the guest's shell with upstream's `execute`
    /// semantics and return its exit status and stdout, byte for byte. Connects first if
    /// needed. The caller has run the callbacks.
    fn execute<'a>(&'a self, command: &'a str, options: ExecuteOptions) -> BoxFuture<'a, Result<(i32, Vec<u8>)>>;

    /// The machine's process runs (upstream's `booted`).
    fn is_booted(&self) -> bool;

    /// Commands can be sent (upstream's `connected`).
    fn is_connected(&self) -> bool;

    /// Forget the connection: the next command waits for the guest again (after a reboot).
    fn mark_disconnected(&self);

    /// The pid of the machine's process (its process group leader) while it runs.
    fn pid(&self) -> Option<u32>;

    /// Wait until the machine's process exits, without causing it.
    fn wait_for_shutdown(&self) -> BoxFuture<'_, Result<()>>;

    /// Stop the machine's process if it runs (terminate, grace, kill) and close everything;
    /// idempotent. The driver's cleanup.
    fn release(&self) -> BoxFuture<'_, ()>;

    /// Kill the machine's process group now, without waiting (a global timeout, a signal).
    fn kill_now(&self);
}
