//! A QEMU machine: upstream's `QemuMachine` (`test_driver/machine/__init__.py`).
//!
//! A [`Machine`] owns the machine's state directory and, while it runs, its QEMU process
//! (through the start script), the HMP monitor and backdoor shell connections (the driver
//! listens, QEMU connects), the QMP session, and the serial console pump. Methods keep
//! upstream's names, defaults, log lines and error messages; underneath, commands take one
//! round trip ([`shell`]), and every wait races QEMU's exit so a dead VM is an error at once,
//! never a hang.

pub mod console;
mod files;
mod interact;
pub mod keys;
pub mod monitor;
mod network;
pub mod qmp;
mod screen;
pub mod shell;
pub mod start_command;
mod systemd;
mod waits;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::ChildStdin;
use tokio::task::JoinHandle;

use crate::error::ErrorKind;
use crate::log;
use crate::process::{self, describe_status};
use console::Console;
use monitor::Monitor;
use qmp::Qmp;
use shell::{Frame, Shell, ShellError};
use start_command::{StartCommand, StartPaths};

/// Upstream's default timeout of `execute` and of every wait: 900 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);
/// How long to wait for the backdoor shell before giving up (upstream: 5 minutes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// How often to say that the guest has not connected yet (upstream: every 30 seconds).
const CONNECT_PROGRESS_INTERVAL: Duration = Duration::from_secs(30);
/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A command with a guest-side timeout gets this long beyond it before the host gives up on
/// the guest (a guest that cannot even run `timeout` is hung).
const HOST_GRACE: Duration = Duration::from_secs(60);
/// How many lines of QEMU's stderr and of the serial console go into error messages.
const TAIL_LINES: usize = 12;

/// A callback run before every command, as upstream runs `machine.callbacks` (the driver's
/// polling conditions). An error aborts the command and is returned as [`Error::Callback`].
pub type Callback = Arc<dyn Fn() -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync>;

/// A machine failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory cannot be prepared.
    #[error("{machine}: cannot prepare {path}")]
    StateDir {
        /// The machine.
        machine: String,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The start script is missing or cannot be run.
    #[error("{machine}: start script {path} {problem}")]
    StartScript {
        /// The machine.
        machine: String,
        /// The script.
        path: PathBuf,
        /// `does not exist`, `is not executable`, …
        problem: &'static str,
    },
    /// Setting up or running the start command failed.
    #[error("{machine}: cannot {action}")]
    Start {
        /// The machine.
        machine: String,
        /// What was being done.
        action: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU (or its start script) exited before the machine was up.
    #[error("{machine}: QEMU exited with {status} before {stage}{}", tail_text(stderr_tail, "its last output"))]
    ExitedEarly {
        /// The machine.
        machine: String,
        /// How it exited.
        status: String,
        /// What it had not done yet.
        stage: &'static str,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
    /// QEMU did not connect to the driver's sockets in time.
    #[error("{machine}: QEMU did not connect to the monitor and shell sockets within {} seconds", waited.as_secs())]
    StartTimeout {
        /// The machine.
        machine: String,
        /// How long the driver waited.
        waited: Duration,
    },
    /// QMP failed.
    #[error("{machine}: QMP failed")]
    Qmp {
        /// The machine.
        machine: String,
        /// What failed.
        #[source]
        source: qmp::Error,
    },
    /// The HMP monitor failed.
    #[error("{machine}: the QEMU monitor connection failed")]
    Monitor {
        /// The machine.
        machine: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The guest's backdoor shell never announced itself.
    #[error(
        "{machine}: the guest's backdoor shell did not connect within {} seconds; is backdoor.service running?{}",
        waited.as_secs(),
        tail_text(serial_tail, "last serial console lines")
    )]
    ConnectTimeout {
        /// The machine.
        machine: String,
        /// How long the driver waited.
        waited: Duration,
        /// The last serial console lines.
        serial_tail: Vec<String>,
    },
    /// The backdoor shell went away (QEMU exited, or the guest's shell died).
    #[error(
        "{machine}: the backdoor shell disconnected {context}{}",
        tail_text(serial_tail, "last serial console lines")
    )]
    ShellDisconnected {
        /// The machine.
        machine: String,
        /// While doing what, and how QEMU exited if it did.
        context: String,
        /// The last serial console lines.
        serial_tail: Vec<String>,
    },
    /// QEMU's QMP socket closed under a command: QEMU is gone.
    #[error("{machine}: QEMU's QMP connection closed {context}{}", tail_text(serial_tail, "last serial console lines"))]
    QmpClosed {
        /// The machine.
        machine: String,
        /// While doing what, and how QEMU exited if it did.
        context: String,
        /// The last serial console lines.
        serial_tail: Vec<String>,
    },
    /// The backdoor shell failed otherwise.
    #[error("{machine}: backdoor shell failure while running `{command}`")]
    Shell {
        /// The machine.
        machine: String,
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: ShellError,
    },
    /// A command contained a NUL byte.
    #[error("{machine}: cannot run `{command}`")]
    InvalidCommand {
        /// The machine.
        machine: String,
        /// The command (with the NUL shown escaped).
        command: String,
        /// Why.
        #[source]
        source: shell::NulInCommand,
    },
    /// The guest did not answer long after a command's own timeout.
    #[error("{machine}: the guest did not answer within {} seconds while running `{command}`; it seems hung", waited.as_secs())]
    GuestHung {
        /// The machine.
        machine: String,
        /// The command.
        command: String,
        /// How long the host waited.
        waited: Duration,
    },
    /// An operation needs a running machine.
    #[error("{machine}: the machine is not running")]
    NotRunning {
        /// The machine.
        machine: String,
    },
    /// `succeed` saw a non-zero exit status (upstream's message, word for word).
    #[error("command `{command}` failed (exit code {status})")]
    CommandFailed {
        /// The command.
        command: String,
        /// Its exit status.
        status: i32,
    },
    /// `fail` saw a zero exit status (upstream's message, word for word).
    #[error("command `{command}` unexpectedly succeeded")]
    CommandSucceeded {
        /// The command.
        command: String,
    },
    /// A retried wait ran out of time.
    #[error(transparent)]
    TimedOut(#[from] crate::retry::TimedOut),
    /// `systemctl show` failed (upstream's message).
    #[error("retrieving systemctl {what} for unit \"{unit}\"{} failed with exit code {status}", user.as_ref().map(|u| format!(" under user \"{u}\"")).unwrap_or_default())]
    SystemctlFailed {
        /// `info` or `property "<name>"`.
        what: String,
        /// The unit.
        unit: String,
        /// The user of `systemctl --user`, if any.
        user: Option<String>,
        /// systemctl's exit status.
        status: i32,
    },
    /// `systemctl show --property` printed something else (upstream's message, missing space
    /// included).
    #[error("systemctl show --property \"{property}\" \"{unit}\"produced invalid output: {output}")]
    InvalidSystemctlOutput {
        /// The property.
        property: String,
        /// The unit.
        unit: String,
        /// What it printed.
        output: String,
    },
    /// A unit waited for has failed.
    #[error("unit \"{unit}\" reached state \"{state}\"")]
    UnitFailed {
        /// The unit.
        unit: String,
        /// Its state.
        state: String,
    },
    /// A unit is not in the state required (upstream's message, its doubled word included).
    #[error("Expected unit '{unit}' to to be in state '{expected}' but it is in state '{state}'")]
    UnexpectedUnitState {
        /// The unit.
        unit: String,
        /// The state required.
        expected: String,
        /// The state it is in.
        state: String,
    },
    /// An in-guest wait loop ended in a way it cannot (the shell could not run it).
    #[error("{machine}: the wait loop in the guest ended with exit status {status}: {output}")]
    WaitLoop {
        /// The machine.
        machine: String,
        /// Its exit status.
        status: i32,
        /// What it printed.
        output: String,
    },
    /// OCR failed.
    #[error("{machine}: OCR failed")]
    Ocr {
        /// The machine.
        machine: String,
        /// What failed.
        #[source]
        source: crate::ocr::Error,
    },
    /// Copying a file on the host failed.
    #[error("{machine}: cannot {action}")]
    HostFile {
        /// The machine.
        machine: String,
        /// What was being done.
        action: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A unit waited for is inactive and nothing will start it.
    #[error("unit \"{unit}\" is inactive and there are no pending jobs")]
    UnitInactive {
        /// The unit.
        unit: String,
    },
    /// No matching QMP event arrived in time.
    #[error("no matching QMP event within {} seconds", .0.as_secs_f64())]
    EventTimeout(Duration),
    /// A callback (polling condition) failed; its error is passed through as it is.
    #[error("{0}")]
    Callback(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn tail_text(lines: &[String], what: &str) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut text = format!("; {what}:");
    for line in lines {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}

impl Error {
    /// The upstream error class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::CommandFailed { .. }
            | Error::CommandSucceeded { .. }
            | Error::TimedOut(_)
            | Error::SystemctlFailed { .. }
            | Error::InvalidSystemctlOutput { .. }
            | Error::UnitFailed { .. }
            | Error::UnitInactive { .. }
            | Error::UnexpectedUnitState { .. } => ErrorKind::AssertionFailed,
            Error::EventTimeout(_) => ErrorKind::Timeout,
            Error::StartScript { .. } => ErrorKind::Config,
            _ => ErrorKind::Machine,
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

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
        ExecuteOptions { check_return: true, check_output: true, timeout: Some(DEFAULT_TIMEOUT) }
    }
}

/// Everything needed to create a machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// The name; `None` derives it from the start command (`run-<name>-vm`).
    pub name: Option<String>,
    /// The start command (shell syntax).
    pub start_command: String,
    /// Where state directories and the shared directory live (upstream's `tmp_dir`).
    pub tmp_dir: PathBuf,
    /// Where screenshots and copied files go.
    pub out_dir: PathBuf,
    /// Keep the state directory from an earlier run instead of wiping it.
    pub keep_machine_state: bool,
    /// Extra environment for the start script (the driver's `QEMU_VDE_SOCKET_<n>`).
    pub env: Vec<(String, String)>,
    /// How long to wait for the guest's backdoor shell.
    pub connect_timeout: Duration,
    /// Whether a display is available (upstream: `DISPLAY` or `WAYLAND_DISPLAY` set);
    /// otherwise QEMU gets `-nographic`.
    pub display_available: bool,
}

impl MachineConfig {
    /// A configuration with upstream's defaults.
    pub fn new(start_command: impl Into<String>, tmp_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        MachineConfig {
            name: None,
            start_command: start_command.into(),
            tmp_dir: tmp_dir.into(),
            out_dir: out_dir.into(),
            keep_machine_state: false,
            env: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            display_available: std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some(),
        }
    }
}

/// The parts of a running machine.
struct Running {
    /// When the start command was run (the boot's duration counts from here).
    spawned_at: Instant,
    child: process::Child,
    monitor: tokio::sync::Mutex<Monitor>,
    qmp: Qmp,
    shell: tokio::sync::Mutex<Shell>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    name: String,
    start_command: StartCommand,
    out_dir: PathBuf,
    state_dir: PathBuf,
    shared_dir: PathBuf,
    monitor_path: PathBuf,
    qmp_path: PathBuf,
    shell_path: PathBuf,
    keep_machine_state: bool,
    env: Vec<(String, String)>,
    connect_timeout: Duration,
    display_available: bool,
    console: Arc<Console>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Serialises `start`, `connect` and `wait_for_shutdown`.
    lifecycle: tokio::sync::Mutex<()>,
    running: Mutex<Option<Arc<Running>>>,
    booted: AtomicBool,
    connected: AtomicBool,
    /// The console's fault count when the backdoor last connected: a fault after it means
    /// the shell is gone, even if no command was running then.
    faults_at_connect: std::sync::atomic::AtomicU64,
    /// Waits poll from the host while a polling condition is active (see `waits`).
    host_side_waits: AtomicBool,
    callbacks: Mutex<Vec<Callback>>,
}

/// A QEMU machine. Cloning gives another handle to the same machine.
#[derive(Clone)]
pub struct Machine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<QemuMachine '{}'>", self.inner.name)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A boot phase's span (see [`log::boot_span`]): it starts when made and ends when dropped,
/// marked failed unless [`BootPhase::done`] was called.
struct BootPhase {
    span: tracing::Span,
    _tracked: log::Tracked,
    done: bool,
}

impl BootPhase {
    fn new(machine: &str, phase: &str) -> BootPhase {
        let span = log::boot_span(machine, phase);
        let tracked = log::track(&span);
        BootPhase { span, _tracked: tracked, done: false }
    }

    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for BootPhase {
    fn drop(&mut self) {
        if !self.done {
            log::record_error(&self.span, "failed");
        }
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

/// The shell the start command runs in: bash, as NixOS's `/bin/sh` is, when there is one (it
/// execs a lone command, so QEMU stays our direct child); else `/bin/sh`.
fn command_shell() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("bash")).find(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

impl Machine {
    /// Create a machine: prepare its state directory (wiped unless `keep_machine_state`) and
    /// the shared directory, as upstream's constructor does. Nothing is started.
    pub fn new(config: MachineConfig) -> Result<Machine> {
        let start_command = StartCommand::new(config.start_command);
        let name = config.name.unwrap_or_else(|| start_command.machine_name());
        let state_dir = config.tmp_dir.join(format!("vm-state-{name}"));
        let shared_dir = config.tmp_dir.join("shared-xchg");
        let dir_error = |path: &Path, source| Error::StateDir { machine: name.clone(), path: path.to_owned(), source };
        if !config.keep_machine_state && state_dir.exists() {
            std::fs::remove_dir_all(&state_dir).map_err(|e| dir_error(&state_dir, e))?;
            log::log(Some(&name), &format!("deleting machine state directory {}", state_dir.display()));
            log::log(Some(&name), "if you want to keep the machine state, pass --keep-machine-state");
        }
        create_private_dir(&state_dir).map_err(|e| dir_error(&state_dir, e))?;
        create_private_dir(&shared_dir).map_err(|e| dir_error(&shared_dir, e))?;
        Ok(Machine {
            inner: Arc::new(Inner {
                monitor_path: state_dir.join("monitor"),
                qmp_path: state_dir.join("qmp"),
                shell_path: state_dir.join("shell"),
                name,
                start_command,
                out_dir: config.out_dir,
                state_dir,
                shared_dir,
                keep_machine_state: config.keep_machine_state,
                env: config.env,
                connect_timeout: config.connect_timeout,
                display_available: config.display_available,
                console: Arc::new(Console::default()),
                stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
                lifecycle: tokio::sync::Mutex::new(()),
                running: Mutex::new(None),
                booted: AtomicBool::new(false),
                faults_at_connect: std::sync::atomic::AtomicU64::new(0),
                connected: AtomicBool::new(false),
                host_side_waits: AtomicBool::new(false),
                callbacks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The start command as given.
    pub fn start_command(&self) -> &str {
        self.inner.start_command.as_str()
    }

    /// `<tmp>/vm-state-<name>`.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// `<tmp>/shared-xchg`, the guest's `/tmp/shared`.
    pub fn shared_dir(&self) -> &Path {
        &self.inner.shared_dir
    }

    /// Where screenshots and copied files go.
    pub fn out_dir(&self) -> &Path {
        &self.inner.out_dir
    }

    /// The HMP monitor socket.
    pub fn monitor_path(&self) -> &Path {
        &self.inner.monitor_path
    }

    /// The QMP socket.
    pub fn qmp_path(&self) -> &Path {
        &self.inner.qmp_path
    }

    /// The backdoor shell socket.
    pub fn shell_path(&self) -> &Path {
        &self.inner.shell_path
    }

    /// Whether the state directory is kept between runs.
    pub fn keep_machine_state(&self) -> bool {
        self.inner.keep_machine_state
    }

    /// Upstream's `booted`: QEMU is running.
    pub fn is_booted(&self) -> bool {
        self.inner.booted.load(Ordering::SeqCst)
    }

    /// Upstream's `connected`: the backdoor shell is ready.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
    }

    /// Forget the backdoor connection: the next command waits for the guest's marker again
    /// (after a reboot or a switch to stage 2).
    pub fn mark_disconnected(&self) {
        self.inner.connected.store(false, Ordering::SeqCst);
    }

    /// Upstream's `is_up()`: booted and connected.
    pub fn is_up(&self) -> bool {
        self.is_booted() && self.is_connected()
    }

    /// The pid of the start command's process while the machine runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.inner.running).as_ref().map(|r| r.child.pid())
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

    /// Log a line tagged with this machine (upstream's `machine.log`).
    pub fn log(&self, message: &str) {
        log::log(Some(&self.inner.name), message);
    }

    fn running(&self) -> Result<Arc<Running>> {
        lock(&self.inner.running).clone().ok_or_else(|| Error::NotRunning { machine: self.inner.name.clone() })
    }

    fn stderr_tail(&self) -> Vec<String> {
        lock(&self.inner.stderr_tail).iter().cloned().collect()
    }

    /// Check that the start script exists and is executable, when the command starts with a
    /// path (commands with shell syntax first are left to the shell).
    pub fn check_start_script(&self) -> Result<()> {
        match self.inner.start_command.script_problem() {
            Some((path, problem)) => {
                Err(Error::StartScript { machine: self.inner.name.clone(), path: path.to_owned(), problem })
            }
            None => Ok(()),
        }
    }

    /// Start the machine (upstream's `start(allow_reboot=False)`): listen on the monitor and
    /// shell sockets, run the start command, accept QEMU's connections, open QMP and wait for
    /// the monitor prompt. Does not wait for the guest to boot. A no-op if already booted.
    pub async fn start(&self, allow_reboot: bool) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        if self.is_booted() {
            return Ok(());
        }
        self.start_locked(allow_reboot).await
    }

    async fn start_locked(&self, allow_reboot: bool) -> Result<()> {
        let inner = &self.inner;
        let name = inner.name.as_str();
        self.log("starting vm");
        self.check_start_script()?;
        let start_error =
            |action: &str, source| Error::Start { machine: name.to_owned(), action: action.to_owned(), source };

        let listen = |path: &Path| -> Result<UnixListener> {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(start_error(&format!("remove the stale socket {}", path.display()), e)),
            }
            let listener =
                UnixListener::bind(path).map_err(|e| start_error(&format!("listen on {}", path.display()), e))?;
            // Whoever connects to the shell socket is root in the guest: owner only, as the
            // state directory around it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| start_error(&format!("make {} private", path.display()), e))?;
            Ok(listener)
        };
        let monitor_listener = listen(&inner.monitor_path)?;
        let shell_listener = listen(&inner.shell_path)?;

        let paths = StartPaths {
            state_dir: &inner.state_dir,
            shared_dir: &inner.shared_dir,
            monitor: &inner.monitor_path,
            qmp: &inner.qmp_path,
            shell: &inner.shell_path,
        };
        let command_line = inner.start_command.command_line(&paths, allow_reboot, inner.display_available);
        let mut command = Command::new(command_shell());
        command
            .arg("-c")
            .arg(&command_line)
            .current_dir(&inner.state_dir)
            .envs(StartCommand::environment(&paths))
            .envs(inner.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        inner.console.clear();
        lock(&inner.stderr_tail).clear();
        let spawned_at = Instant::now();
        let spawn_phase = BootPhase::new(name, "spawn");
        let mut child = process::Child::spawn(command)
            .await
            .map_err(|e| start_error(&format!("run the start command {}", inner.start_command.as_str()), e))?;

        let mut pumps = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            pumps.push(tokio::spawn(console::pump(stdout, name.to_owned(), Arc::clone(&inner.console))));
        }
        if let Some(stderr) = child.stderr.take() {
            let machine = name.to_owned();
            let tail = Arc::clone(&inner.stderr_tail);
            pumps.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log::log(Some(&machine), &line);
                    let mut tail = lock(&tail);
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }));
        }
        let stdin = child.stdin.take();
        let exit = child.exit_watch();
        // Any failure from here on is most likely QEMU having died: if it exited, say so with
        // its last words rather than the socket error it caused.
        let explain = |stage: &'static str, error: Error| {
            let exit = exit.clone();
            async move {
                let Ok(status) = tokio::time::timeout(Duration::from_secs(1), process::wait_exit(exit)).await else {
                    return error;
                };
                // Let the stderr pump catch QEMU's last words before quoting them.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Error::ExitedEarly {
                    machine: self.inner.name.clone(),
                    status: describe_status(status),
                    stage,
                    stderr_tail: self.stderr_tail(),
                }
            }
        };

        // QEMU connects to both sockets as soon as it has parsed its arguments.
        let stage = "connecting to the driver";
        let accepted = tokio::select! {
            accepted = async { tokio::try_join!(monitor_listener.accept(), shell_listener.accept()) } => accepted,
            _ = process::wait_exit(exit.clone()) => {
                return Err(explain(stage, Error::NotRunning { machine: name.to_owned() }).await);
            }
            _ = tokio::time::sleep(inner.connect_timeout) => {
                child.stop(STOP_GRACE).await;
                return Err(Error::StartTimeout { machine: name.to_owned(), waited: inner.connect_timeout });
            }
        };
        let ((monitor_stream, _), (shell_stream, _)) = match accepted {
            Ok(streams) => streams,
            Err(e) => return Err(explain(stage, start_error("accept QEMU's connections", e)).await),
        };
        drop((monitor_listener, shell_listener));
        spawn_phase.done();
        let qmp_phase = BootPhase::new(name, "qmp");
        let mut monitor = Monitor::new(monitor_stream);

        // QEMU created the QMP socket before it connected to ours; retry briefly regardless.
        let qmp = async {
            let mut attempts = 0;
            loop {
                match Qmp::connect(&inner.qmp_path).await {
                    Err(qmp::Error::Io(e))
                        if attempts < 50
                            && matches!(
                                e.kind(),
                                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                            ) =>
                    {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => break other,
                }
            }
        };
        let hung = || std::io::Error::new(std::io::ErrorKind::TimedOut, "QEMU did not answer");
        let qmp = match tokio::time::timeout(inner.connect_timeout, qmp).await {
            Ok(Ok(qmp)) => qmp,
            Ok(Err(source)) => {
                return Err(explain("opening QMP", Error::Qmp { machine: name.to_owned(), source }).await);
            }
            Err(_) => {
                let source = qmp::Error::Io(hung());
                return Err(explain("opening QMP", Error::Qmp { machine: name.to_owned(), source }).await);
            }
        };
        let prompt = tokio::time::timeout(inner.connect_timeout, monitor.wait_for_prompt())
            .await
            .unwrap_or_else(|_| Err(hung()));
        if let Err(source) = prompt {
            return Err(explain("its monitor was ready", Error::Monitor { machine: name.to_owned(), source }).await);
        }

        qmp_phase.done();
        let pid = child.pid();
        *lock(&inner.running) = Some(Arc::new(Running {
            spawned_at,
            child,
            monitor: tokio::sync::Mutex::new(monitor),
            qmp,
            shell: tokio::sync::Mutex::new(Shell::new(shell_stream)),
            stdin: tokio::sync::Mutex::new(stdin),
            pumps: Mutex::new(pumps),
        }));
        inner.connected.store(false, Ordering::SeqCst);
        inner.booted.store(true, Ordering::SeqCst);
        self.log(&format!("QEMU running (pid {pid})"));
        Ok(())
    }

    /// Wait for the guest's backdoor shell (upstream's `connect()`), starting the machine if
    /// needed. Logs progress every 30 seconds and gives up after the connect timeout.
    pub async fn connect(&self) -> Result<()> {
        if self.is_connected() {
            return Ok(());
        }
        let _lifecycle = self.inner.lifecycle.lock().await;
        if self.is_connected() {
            return Ok(());
        }
        let name = self.inner.name.clone();
        log::nested(Some(&name), "waiting for the VM to finish booting", async {
            if !self.is_booted() {
                self.start_locked(false).await?;
            }
            let running = self.running()?;
            let start = Instant::now();
            let shell_phase = BootPhase::new(&name, "shell");
            enum Outcome {
                Marker(Result<(), ShellError>),
                Exited(ExitStatus),
                TimedOut,
            }
            let outcome = {
                let mut shell = running.shell.lock().await;
                let progress = async {
                    loop {
                        tokio::time::sleep(CONNECT_PROGRESS_INTERVAL).await;
                        self.log("Guest root shell did not produce any data yet...");
                        self.log("  To debug, enter the VM and run 'systemctl status backdoor.service'.");
                    }
                };
                let marker =
                    shell.wait_for_marker(|chunk| self.log(&format!("Guest shell says: {}", log::bytes_repr(chunk))));
                tokio::select! {
                    result = marker => Outcome::Marker(result),
                    _ = progress => unreachable!("the progress loop never ends"),
                    status = running.child.wait() => Outcome::Exited(status),
                    _ = tokio::time::sleep(self.inner.connect_timeout) => Outcome::TimedOut,
                }
            };
            match outcome {
                Outcome::Marker(Ok(())) => {}
                Outcome::Marker(Err(ShellError::Disconnected { .. })) => {
                    return Err(self.disconnected("while waiting for the guest to connect", None).await);
                }
                Outcome::Marker(Err(source)) => {
                    return Err(Error::Shell { machine: name.clone(), command: "(connect)".into(), source });
                }
                Outcome::Exited(status) => {
                    return Err(self.disconnected("while waiting for the guest to connect", Some(status)).await);
                }
                Outcome::TimedOut => {
                    return Err(Error::ConnectTimeout {
                        machine: name.clone(),
                        waited: self.inner.connect_timeout,
                        serial_tail: self.inner.console.tail(TAIL_LINES),
                    });
                }
            }
            self.log("connected to guest root shell");
            self.log(&format!("(connecting took {:.2} seconds)", start.elapsed().as_secs_f64()));
            shell_phase.span.record("boot.duration_s", running.spawned_at.elapsed().as_secs_f64());
            shell_phase.done();
            self.inner.faults_at_connect.store(self.inner.console.fault_count(), Ordering::SeqCst);
            self.inner.connected.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await
    }

    /// Build the error for a shell that went away, waiting briefly for QEMU's exit status.
    async fn disconnected(&self, context: &str, status: Option<ExitStatus>) -> Error {
        let (context, serial_tail) = self.qemu_exit_context(context, status).await;
        Error::ShellDisconnected { machine: self.inner.name.clone(), context, serial_tail }
    }

    /// `context` with how QEMU exited (waiting up to 2 s for it, unless `status` is known),
    /// and the console's last lines.
    async fn qemu_exit_context(&self, context: &str, status: Option<ExitStatus>) -> (String, Vec<String>) {
        let status = match status {
            Some(status) => Some(status),
            None => match self.running() {
                Ok(running) => tokio::time::timeout(Duration::from_secs(2), running.child.wait()).await.ok(),
                Err(_) => None,
            },
        };
        let context = match status {
            Some(status) => format!("{context} (QEMU exited with {})", describe_status(status)),
            None => context.to_owned(),
        };
        // Let the console pump log the guest's last lines before they are quoted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (context, self.inner.console.tail(TAIL_LINES))
    }

    /// Run a shell command in the guest (upstream's `execute`): returns the exit status and
    /// stdout as bytes. Runs the callbacks first and connects if needed.
    pub async fn execute(&self, command: &str, options: ExecuteOptions) -> Result<(i32, Vec<u8>)> {
        self.run_callbacks()?;
        self.connect().await?;
        let running = self.running()?;
        let name = &self.inner.name;
        let traceparent = log::current_traceparent();
        let frame = Frame::new(command, options.timeout, traceparent.as_deref()).map_err(|source| {
            Error::InvalidCommand { machine: name.clone(), command: command.replace('\0', "\\0"), source }
        })?;
        let shell_error = |source| Error::Shell { machine: name.clone(), command: command.to_owned(), source };
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
        let mut faults = self.inner.console.subscribe_faults();
        faults.borrow_and_update();
        let earlier_fault = (self.inner.console.fault_count() != self.inner.faults_at_connect.load(Ordering::SeqCst))
            .then(|| self.inner.console.last_fault())
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
                    machine: name.clone(),
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
                    machine: name.clone(),
                    context: format!("{when} `{command}` ({fault})"),
                    serial_tail: self.inner.console.tail(TAIL_LINES),
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
            Err(e) => Err(shell_error(e)),
        }
    }

    /// Send `line` to the backdoor shell unframed and return the first line it prints back.
    /// For benchmarks: the channel's floor (`echo x`) and upstream's two-round-trip framing,
    /// measured on the same shell as ntd's. A line that prints anything but one line
    /// desynchronises the shell.
    pub async fn exchange_raw_line(&self, line: &str) -> Result<Vec<u8>> {
        self.connect().await?;
        let running = self.running()?;
        let mut shell = running.shell.lock().await;
        shell.exchange_line(line.as_bytes()).await.map_err(|source| Error::Shell {
            machine: self.inner.name.clone(),
            command: line.trim_end().to_owned(),
            source,
        })
    }

    /// Upstream's `succeed(*commands, timeout=None)`: run each command, fail on a non-zero
    /// status, return the concatenated output.
    pub async fn succeed(&self, commands: &[String], timeout: Option<Duration>) -> Result<Vec<u8>> {
        self.run_each(commands, timeout, true).await
    }

    /// Upstream's `fail(*commands, timeout=None)`: like `succeed`, but every command must fail.
    pub async fn fail(&self, commands: &[String], timeout: Option<Duration>) -> Result<Vec<u8>> {
        self.run_each(commands, timeout, false).await
    }

    async fn run_each(&self, commands: &[String], timeout: Option<Duration>, must_succeed: bool) -> Result<Vec<u8>> {
        let mut output = Vec::new();
        let verb = if must_succeed { "must succeed" } else { "must fail" };
        for command in commands {
            let out = log::nested(Some(&self.inner.name), &format!("{verb}: {command}"), async {
                let (status, out) =
                    self.execute(command, ExecuteOptions { timeout, ..ExecuteOptions::default() }).await?;
                if (status == 0) == must_succeed {
                    Ok(out)
                } else if must_succeed {
                    self.log(&format!("output: {}", String::from_utf8_lossy(&out)));
                    Err(Error::CommandFailed { command: command.clone(), status })
                } else {
                    Err(Error::CommandSucceeded { command: command.clone() })
                }
            })
            .await?;
            output.extend_from_slice(&out);
        }
        Ok(output)
    }

    /// Send a command to the HMP monitor and return its reply up to the prompt (upstream's
    /// `send_monitor_command`). Runs the callbacks first.
    pub async fn send_monitor_command(&self, command: &str) -> Result<String> {
        self.run_callbacks()?;
        let running = self.running()?;
        let mut monitor = running.monitor.lock().await;
        monitor.command(command).await.map_err(|source| Error::Monitor { machine: self.inner.name.clone(), source })
    }

    /// Read the HMP monitor until its prompt (upstream's `wait_for_monitor_prompt`).
    pub async fn wait_for_monitor_prompt(&self) -> Result<String> {
        let running = self.running()?;
        let mut monitor = running.monitor.lock().await;
        monitor.wait_for_prompt().await.map_err(|source| Error::Monitor { machine: self.inner.name.clone(), source })
    }

    /// Run a QMP command and return its `return` value.
    pub async fn qmp(
        &self,
        command: &str,
        arguments: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<serde_json::Value> {
        let running = self.running()?;
        match running.qmp.execute(command, arguments).await {
            Ok(value) => Ok(value),
            // A closed socket means QEMU is gone: say how it went, not just "connection reset".
            Err(qmp::Error::Io(_) | qmp::Error::Closed) => {
                let (context, serial_tail) = self.qemu_exit_context(&format!("while running `{command}`"), None).await;
                Err(Error::QmpClosed { machine: self.inner.name.clone(), context, serial_tail })
            }
            Err(source) => Err(Error::Qmp { machine: self.inner.name.clone(), source }),
        }
    }

    /// Wait for a QMP event accepted by `filter` (upstream's `wait_for_qmp_event`).
    pub async fn wait_for_qmp_event(
        &self,
        filter: impl FnMut(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let running = self.running()?;
        running.qmp.wait_for_event(filter, timeout).await.map_err(|source| match source {
            qmp::Error::Timeout(waited) => Error::EventTimeout(waited),
            source => Error::Qmp { machine: self.inner.name.clone(), source },
        })
    }

    /// Everything the serial console printed since the last start, lines joined by `\n`.
    pub fn console_log(&self) -> String {
        self.inner.console.text()
    }

    /// The console, for waiting on its lines.
    pub fn console(&self) -> &Arc<Console> {
        &self.inner.console
    }

    /// Write to QEMU's stdin, i.e. type on the serial console (upstream's `send_console`).
    pub async fn send_console(&self, chars: &[u8]) -> Result<()> {
        let running = self.running()?;
        let mut stdin = running.stdin.lock().await;
        let Some(stdin) = stdin.as_mut() else {
            return Err(Error::NotRunning { machine: self.inner.name.clone() });
        };
        let write = async {
            stdin.write_all(chars).await?;
            stdin.flush().await
        };
        write.await.map_err(|source| Error::Start {
            machine: self.inner.name.clone(),
            action: "write to the serial console".into(),
            source,
        })
    }

    /// Upstream's `shutdown()`: write `poweroff` into the backdoor shell and wait for QEMU to
    /// exit. A no-op if the machine is not booted.
    pub async fn shutdown(&self) -> Result<()> {
        if !self.is_booted() {
            return Ok(());
        }
        let running = self.running()?;
        let sent = running.shell.lock().await.send_raw(b"poweroff\n").await;
        if let Err(source) = sent {
            // The shell may already be gone with the VM; waiting below tells.
            log::debug(Some(&self.inner.name), &format!("cannot send poweroff: {source}"));
        }
        self.wait_for_shutdown().await
    }

    /// Upstream's `crash()`: make QEMU quit at once (a power failure) and wait for it.
    pub async fn crash(&self) -> Result<()> {
        if !self.is_booted() {
            return Ok(());
        }
        self.log("forced crash");
        let running = self.running()?;
        let sent = running.monitor.lock().await.send("quit").await;
        if let Err(source) = sent {
            log::debug(Some(&self.inner.name), &format!("cannot send quit: {source}"));
        }
        self.wait_for_shutdown().await
    }

    /// Upstream's `wait_for_shutdown()`: wait until QEMU exits (does not cause it).
    pub async fn wait_for_shutdown(&self) -> Result<()> {
        if !self.is_booted() {
            return Ok(());
        }
        log::nested(Some(&self.inner.name), "waiting for the VM to power off", async {
            let running = self.running()?;
            running.child.wait().await;
            self.finish_run(&running).await;
            Ok(())
        })
        .await
    }

    /// After QEMU exited: let the pumps drain, forget the run, mark the machine down.
    /// What the start script left in QEMU's group was killed before its exit was published.
    async fn finish_run(&self, running: &Running) {
        let pumps: Vec<JoinHandle<()>> = lock(&running.pumps).drain(..).collect();
        for pump in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
        *lock(&self.inner.running) = None;
        self.inner.booted.store(false, Ordering::SeqCst);
        self.inner.connected.store(false, Ordering::SeqCst);
    }

    /// Upstream's `release()`: stop QEMU if it runs (SIGTERM, then SIGKILL) and close
    /// everything. Used by the driver's cleanup; idempotent.
    pub async fn release(&self) {
        let Some(running) = lock(&self.inner.running).clone() else { return };
        log::info(None, &format!("kill QemuMachine (pid {})", running.child.pid()));
        running.child.stop(STOP_GRACE).await;
        self.finish_run(&running).await;
    }

    /// Remove the machine's state directory unless its state is to be kept, after it was
    /// released: without `--keep-machine-state` the next run would wipe it anyway, and a
    /// disk image left in `TMPDIR` by every run adds up.
    pub fn discard_state(&self) {
        if self.inner.keep_machine_state || lock(&self.inner.running).is_some() {
            return;
        }
        match std::fs::remove_dir_all(&self.inner.state_dir) {
            Ok(()) => log::debug(Some(&self.inner.name), &format!("removed {}", self.inner.state_dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warning(
                Some(&self.inner.name),
                &format!("cannot remove the state directory {}: {e}", self.inner.state_dir.display()),
            ),
        }
    }

    /// Kill QEMU's process group now, without waiting (for a global timeout or a signal
    /// handler that cannot await).
    pub fn kill_now(&self) {
        if let Some(running) = lock(&self.inner.running).as_ref() {
            running.child.signal_group(nix::sys::signal::Signal::SIGKILL);
        }
    }
}
