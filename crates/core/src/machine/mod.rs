//! Machines: what every machine has (upstream's `BaseMachine`, `test_driver/machine/__init__.py`),
//! and the kinds of machine.
//!
//! A [`Machine`] is a cheap handle to one machine of any kind. It holds what upstream's
//! `BaseMachine` constructor sets up — the name, the state directory (wiped unless the state
//! is kept), the shared directory, the output directory — plus the callbacks run before every
//! command and the console log, and it implements every method all kinds share: commands
//! ([`command`]), waits ([`waits`]), systemd ([`systemd`]) and files ([`files`]). They reach the
//! guest only through the machine's [`Backend`]: its lifecycle and its command transport.
//!
//! The kinds: [`qemu::QemuMachine`], a QEMU VM (upstream's `QemuMachine`), which adds QMP, the
//! monitor, the screen, keys and the serial console on top; [`nspawn::NspawnMachine`], a
//! systemd-nspawn container (upstream's `NspawnMachine`).

pub mod backend;
mod command;
pub mod console;
mod error;
mod files;
pub mod nspawn;
pub mod qemu;
pub mod quote;
mod systemd;
mod unit_events;
mod waits;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use backend::{Backend, BoxFuture, ExecuteOptions};
pub use console::Console;
pub(crate) use error::Result;
pub use error::{Error, NulInCommand};

use crate::log;

/// Upstream's default timeout of `execute` and of every wait: 900 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

/// A callback run before every command, as upstream runs `machine.callbacks` (the driver's
/// polling conditions). An error aborts the command and is returned as [`Error::Callback`].
pub type Callback = Arc<dyn Fn() -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync>;

/// What upstream's `BaseMachine` constructor sets up, shared by a machine's handles and its
/// backend.
#[derive(Debug)]
pub struct Base {
    name: String,
    tmp_dir: PathBuf,
    state_dir: PathBuf,
    shared_dir: PathBuf,
    out_dir: PathBuf,
    keep_machine_state: bool,
    console: Arc<Console>,
}

impl Base {
    /// Prepare a machine named `name` in `tmp_dir`, as upstream's `BaseMachine.__init__`:
    /// `<tmp>/vm-state-<name>` (wiped first unless the state is kept) and `<tmp>/shared-xchg`,
    /// both private to the user. `console` is the machine's console log.
    pub fn prepare(
        name: String,
        tmp_dir: PathBuf,
        out_dir: PathBuf,
        keep_machine_state: bool,
        console: Console,
    ) -> Result<Base> {
        let state_dir = tmp_dir.join(format!("vm-state-{name}"));
        let shared_dir = tmp_dir.join("shared-xchg");
        let dir_error = |path: &Path, source| Error::StateDir { machine: name.clone(), path: path.to_owned(), source };
        if !keep_machine_state && state_dir.exists() {
            std::fs::remove_dir_all(&state_dir).map_err(|e| dir_error(&state_dir, e))?;
            log::log(Some(&name), &format!("deleting machine state directory {}", state_dir.display()));
            log::log(Some(&name), "if you want to keep the machine state, pass --keep-machine-state");
        }
        create_private_dir(&state_dir).map_err(|e| dir_error(&state_dir, e))?;
        create_private_dir(&shared_dir).map_err(|e| dir_error(&shared_dir, e))?;
        Ok(Base { name, tmp_dir, state_dir, shared_dir, out_dir, keep_machine_state, console: Arc::new(console) })
    }

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<tmp>/vm-state-<name>`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `<tmp>/shared-xchg`, the guest's `/tmp/shared`.
    pub fn shared_dir(&self) -> &Path {
        &self.shared_dir
    }

    /// The console log.
    pub fn console(&self) -> &Arc<Console> {
        &self.console
    }

    /// Log a line tagged with this machine.
    pub fn log(&self, message: &str) {
        log::log(Some(&self.name), message);
    }
}

/// The state every handle of a machine shares.
struct Inner {
    base: Arc<Base>,
    backend: Arc<dyn Backend>,
    callbacks: Mutex<Vec<Callback>>,
    /// Waits poll from the host while a polling condition is active (see `waits`).
    host_side_waits: AtomicBool,
}

/// A machine of any kind (upstream's `BaseMachine`). Cloning gives another handle to the same
/// machine.
#[derive(Clone)]
pub struct Machine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} '{}'>", self.inner.backend.class_name(), self.inner.base.name)
    }
}

/// Lock a mutex, taking the data of a poisoned one: a panic elsewhere must not wedge cleanup.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What is wrong with a start script at `path`, if anything: it `does not exist`, `is a
/// directory` or `is not executable`.
pub fn start_script_problem(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(_) => Some("does not exist"),
        Ok(meta) if meta.is_dir() => Some("is a directory"),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Some("is not executable"),
        Ok(_) => None,
    }
}

/// Create a directory with mode 0700 if it does not exist (upstream's `mkdir(mode=0o700,
/// exist_ok=True)`).
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

impl Machine {
    /// A machine of the kind `backend` implements, over the prepared `base`.
    pub fn new(base: Arc<Base>, backend: Arc<dyn Backend>) -> Machine {
        Machine {
            inner: Arc::new(Inner {
                base,
                backend,
                callbacks: Mutex::new(Vec::new()),
                host_side_waits: AtomicBool::new(false),
            }),
        }
    }

    /// The backend as its concrete kind, when it is of kind `B`.
    pub fn backend_as<B: Backend>(&self) -> Option<Arc<B>> {
        let any: Arc<dyn std::any::Any + Send + Sync> = self.inner.backend.clone();
        any.downcast::<B>().ok()
    }

    /// The class upstream gives this kind (`QemuMachine`).
    pub fn class_name(&self) -> &'static str {
        self.inner.backend.class_name()
    }

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.inner.base.name
    }

    /// Upstream's `tmp_dir`: where the state directories and the shared directory live.
    pub fn tmp_dir(&self) -> &Path {
        &self.inner.base.tmp_dir
    }

    /// `<tmp>/vm-state-<name>`.
    pub fn state_dir(&self) -> &Path {
        &self.inner.base.state_dir
    }

    /// `<tmp>/shared-xchg`, the guest's `/tmp/shared`.
    pub fn shared_dir(&self) -> &Path {
        &self.inner.base.shared_dir
    }

    /// Where screenshots and copied files go.
    pub fn out_dir(&self) -> &Path {
        &self.inner.base.out_dir
    }

    /// Whether the state directory is kept between runs.
    pub fn keep_machine_state(&self) -> bool {
        self.inner.base.keep_machine_state
    }

    /// The console log (serial console, journal).
    pub fn console(&self) -> &Arc<Console> {
        &self.inner.base.console
    }

    /// Everything the console printed since the last start, lines joined by `\n` (upstream's
    /// `get_console_log`).
    pub fn console_log(&self) -> String {
        self.inner.base.console.text()
    }

    /// Log a line tagged with this machine (upstream's `machine.log`).
    pub fn log(&self, message: &str) {
        self.inner.base.log(message);
    }

    /// Upstream's `booted`: the machine's process runs.
    pub fn is_booted(&self) -> bool {
        self.inner.backend.is_booted()
    }

    /// Upstream's `connected`: commands can be sent.
    pub fn is_connected(&self) -> bool {
        self.inner.backend.is_connected()
    }

    /// Upstream's `is_up()`: booted and connected.
    pub fn is_up(&self) -> bool {
        self.is_booted() && self.is_connected()
    }

    /// Forget the connection: the next command waits for the guest again (after a reboot or a
    /// switch to stage 2).
    pub fn mark_disconnected(&self) {
        self.inner.backend.mark_disconnected();
    }

    /// The pid of the machine's process while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.inner.backend.pid()
    }

    /// Upstream's `start()`: start the machine without waiting for it to boot.
    pub async fn start(&self) -> Result<()> {
        self.inner.backend.start().await
    }

    /// Wait until the machine can run commands, starting it if needed.
    pub async fn connect(&self) -> Result<()> {
        self.inner.backend.connect().await
    }

    /// Upstream's `wait_for_shutdown()`: wait until the machine's process exits.
    pub async fn wait_for_shutdown(&self) -> Result<()> {
        self.inner.backend.wait_for_shutdown().await
    }

    /// Upstream's `release()`: stop the machine's process if it runs and close everything.
    /// Used by the driver's cleanup; idempotent.
    pub async fn release(&self) {
        self.inner.backend.release().await;
    }

    /// Kill the machine's process group now, without waiting (for a global timeout or a
    /// signal handler that cannot await).
    pub fn kill_now(&self) {
        self.inner.backend.kill_now();
    }

    /// Remove the machine's state directory unless its state is to be kept, after it was
    /// released: without `--keep-machine-state` the next run would wipe it anyway, and a
    /// disk image left in `TMPDIR` by every run adds up.
    pub fn discard_state(&self) {
        if self.keep_machine_state() || self.is_booted() {
            return;
        }
        self.cleanup_statedir();
    }

    /// Upstream's `cleanup_statedir()`: remove the state directory.
    pub fn cleanup_statedir(&self) {
        let state_dir = self.state_dir();
        match std::fs::remove_dir_all(state_dir) {
            Ok(()) => log::debug(Some(self.name()), &format!("removed {}", state_dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warning(
                Some(self.name()),
                &format!("cannot remove the state directory {}: {e}", state_dir.display()),
            ),
        }
    }

    /// Replace the callbacks run before every command.
    pub fn set_callbacks(&self, callbacks: Vec<Callback>) {
        *lock(&self.inner.callbacks) = callbacks;
    }

    /// Run the callbacks (upstream's `run_callbacks`).
    pub fn run_callbacks(&self) -> Result<()> {
        let callbacks = lock(&self.inner.callbacks).clone();
        for callback in callbacks {
            callback().map_err(Error::Callback)?;
        }
        Ok(())
    }

    /// Whether waits must poll from the host: a polling condition is active.
    pub fn host_side_waits(&self) -> bool {
        self.inner.host_side_waits.load(Ordering::SeqCst)
    }

    /// Make waits poll from the host (while a polling condition is active) or from the guest.
    pub fn set_host_side_waits(&self, enable: bool) {
        self.inner.host_side_waits.store(enable, Ordering::SeqCst);
    }
}
