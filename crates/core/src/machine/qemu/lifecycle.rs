//! Starting, connecting to and stopping a QEMU machine: upstream's `QemuMachine.start`,
//! `connect`, `wait_for_shutdown` and `release`.
//!
//! [`Qemu`] is the backend of a QEMU machine: while it runs, it owns the QEMU process (through
//! the start script), the HMP monitor and backdoor shell connections (the driver listens, QEMU
//! connects), the QMP session and the pumps of the serial console and of QEMU's stderr. Every
//! wait races QEMU's exit, so a QEMU that dies is reported as such, with its last words, never
//! as a hang or a bare socket error.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::process::ChildStdin;
use tokio::task::JoinHandle;

use super::monitor::Monitor;
use super::qmp::{self, Qmp};
use super::shell::{Shell, ShellError};
use super::start_command::{StartCommand, StartPaths};
use super::{QemuConfig, TAIL_LINES};
use crate::log;
use crate::machine::{Base, BoxFuture, Error, ExecuteOptions, Result, console, lock};
use crate::process::{self, describe_status};
use crate::ssh_backdoor::VsockPair;

/// How often to say that the guest has not connected yet (upstream: every 30 seconds).
const CONNECT_PROGRESS_INTERVAL: Duration = Duration::from_secs(30);
/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The connection QEMU made to `listener`, if it made one already.
fn accept_now(listener: UnixListener) -> Option<tokio::net::UnixStream> {
    let listener = listener.into_std().ok()?;
    let (stream, _) = listener.accept().ok()?;
    stream.set_nonblocking(true).ok()?;
    tokio::net::UnixStream::from_std(stream).ok()
}

/// The parts of a running QEMU machine.
pub(super) struct Running {
    /// When the start command was run (the boot's duration counts from here).
    spawned_at: Instant,
    pub(super) child: process::Child,
    pub(super) monitor: tokio::sync::Mutex<Monitor>,
    pub(super) qmp: Qmp,
    pub(super) shell: tokio::sync::Mutex<Shell>,
    pub(super) stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// The backend of a QEMU machine (see the module documentation).
pub struct Qemu {
    pub(super) base: Arc<Base>,
    pub(super) start_command: StartCommand,
    pub(super) monitor_path: PathBuf,
    pub(super) qmp_path: PathBuf,
    pub(super) shell_path: PathBuf,
    /// ntd's output port's socket ([`super::channel`]).
    pub(super) out_path: PathBuf,
    /// ntd's control port's socket.
    pub(super) ctl_path: PathBuf,
    env: Vec<(String, String)>,
    /// The SSH backdoor's vsock sockets, if the driver gave the machine some.
    pub(super) vsock: Option<VsockPair>,
    /// The VNC server's socket, if the machine has one (QEMU creates it on every start).
    pub(super) vnc_path: Option<PathBuf>,
    connect_timeout: Duration,
    display_available: bool,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Serialises `start`, `connect` and `wait_for_shutdown` (and keeps them off the EFI
    /// variable store while it is used: [`super::efi`]).
    pub(super) lifecycle: tokio::sync::Mutex<()>,
    /// The UEFI variable store, `NIX_EFI_VARS` of the start script.
    pub(super) efi_vars_path: PathBuf,
    running: Mutex<Option<Arc<Running>>>,
    booted: AtomicBool,
    connected: AtomicBool,
    /// The console's fault count when the backdoor last connected: a fault after it means
    /// the shell is gone, even if no command was running then.
    pub(super) faults_at_connect: AtomicU64,
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

/// The shell the start command runs in: bash, as NixOS's `/bin/sh` is, when there is one (it
/// execs a lone command, so QEMU stays our direct child); else `/bin/sh`.
fn command_shell() -> PathBuf {
    process::find_program("bash").unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

/// How long a starting machine waits for the SSH backdoor's device to listen for it.
const VSOCK_DEVICE_TIMEOUT: Duration = Duration::from_secs(10);

/// Listen on a fresh unix socket at `path` that only the user can connect to: whoever
/// connects to the shell socket is root in the guest.
fn listen_privately(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(listener)
}

impl Qemu {
    pub(super) fn new(base: Arc<Base>, config: QemuConfig, start_command: StartCommand) -> Qemu {
        let state_dir = base.state_dir().to_owned();
        let efi_vars_path = state_dir.join(format!("{}-efi-vars.fd", base.name()));
        Qemu {
            base,
            start_command,
            monitor_path: state_dir.join("monitor"),
            qmp_path: state_dir.join("qmp"),
            shell_path: state_dir.join("shell"),
            out_path: state_dir.join("out"),
            ctl_path: state_dir.join("ctl"),
            efi_vars_path,
            env: config.env,
            vsock: config.vsock,
            vnc_path: config.vnc.then(|| state_dir.join("vnc")),
            connect_timeout: config.connect_timeout,
            display_available: config.display_available,
            stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
            lifecycle: tokio::sync::Mutex::new(()),
            running: Mutex::new(None),
            booted: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            faults_at_connect: AtomicU64::new(0),
        }
    }

    pub(super) fn name(&self) -> &str {
        self.base.name()
    }

    pub(super) fn is_booted(&self) -> bool {
        self.booted.load(Ordering::SeqCst)
    }

    pub(super) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub(super) fn mark_disconnected(&self) {
        self.connected.store(false, Ordering::SeqCst);
    }

    pub(super) fn running(&self) -> Result<Arc<Running>> {
        lock(&self.running).clone().ok_or_else(|| Error::NotRunning { machine: self.name().to_owned() })
    }

    fn stderr_tail(&self) -> Vec<String> {
        lock(&self.stderr_tail).iter().cloned().collect()
    }

    /// Check that the start script exists and is executable, when the command starts with a
    /// path (commands with shell syntax first are left to the shell).
    pub(super) fn check_start_script(&self) -> Result<()> {
        match self.start_command.script_problem() {
            Some((path, problem)) => {
                Err(Error::StartScript { machine: self.name().to_owned(), path: path.to_owned(), problem })
            }
            None => Ok(()),
        }
    }

    /// Start the machine (upstream's `start(allow_reboot=False)`): listen on the monitor and
    /// shell sockets, run the start command, accept QEMU's connections, open QMP and wait for
    /// the monitor prompt. Does not wait for the guest to boot. A no-op if already booted.
    pub(super) async fn start(&self, allow_reboot: bool) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        if self.is_booted() {
            return Ok(());
        }
        self.start_locked(allow_reboot).await
    }

    async fn start_locked(&self, allow_reboot: bool) -> Result<()> {
        let name = self.name();
        self.base.log("starting vm");
        self.check_start_script()?;
        let start_error = |action: String, source| Error::Start { machine: name.to_owned(), action, source };
        let listen =
            |path: &Path| listen_privately(path).map_err(|e| start_error(format!("listen on {}", path.display()), e));
        // QEMU connects to the SSH backdoor's device once, at start, and fails if nothing
        // listens. vhost-device-vsock listens again only after it has seen the last QEMU go,
        // so a machine started again at once could be too early.
        if let Some(pair) = &self.vsock {
            crate::ssh_backdoor::vsock::wait_for_socket(&pair.guest, VSOCK_DEVICE_TIMEOUT).await.map_err(|e| {
                start_error(
                    format!(
                        "connect to the SSH backdoor's vsock device {} (is vhost-device-vsock still running?)",
                        pair.guest.display()
                    ),
                    e,
                )
            })?;
        }
        let monitor_listener = listen(&self.monitor_path)?;
        let shell_listener = listen(&self.shell_path)?;
        let out_listener = listen(&self.out_path)?;
        let ctl_listener = listen(&self.ctl_path)?;

        let paths = StartPaths {
            state_dir: self.base.state_dir(),
            shared_dir: self.base.shared_dir(),
            monitor: &self.monitor_path,
            qmp: &self.qmp_path,
            shell: &self.shell_path,
            out: &self.out_path,
            ctl: &self.ctl_path,
            efi_vars: &self.efi_vars_path,
            vsock_guest: self.vsock.as_ref().map(|pair| pair.guest.as_path()),
            vnc: self.vnc_path.as_deref(),
        };
        if let Some(vnc) = &self.vnc_path {
            // A socket left by a killed QEMU (with --keep-machine-state) must not pass for this
            // start's: whether QEMU made one is how the log tells a start command that drops
            // ntd's arguments.
            let _ = std::fs::remove_file(vnc);
            if self.display_available {
                self.base.log("QEMU opens no window while it has a VNC server: watch the screen over VNC");
            }
        }
        let command_line = self.start_command.command_line(&paths, allow_reboot, self.display_available);
        let mut command = Command::new(command_shell());
        command
            .arg("-c")
            .arg(&command_line)
            .current_dir(self.base.state_dir())
            .envs(StartCommand::environment(&paths))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let console = Arc::clone(self.base.console());
        console.clear();
        lock(&self.stderr_tail).clear();
        let spawned_at = Instant::now();
        let spawn_phase = BootPhase::new(name, "spawn");
        let mut child = process::Child::spawn(command)
            .await
            .map_err(|e| start_error(format!("run the start command {}", self.start_command.as_str()), e))?;

        let mut pumps = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            pumps.push(tokio::spawn(console::pump(stdout, name.to_owned(), console)));
        }
        if let Some(stderr) = child.stderr.take() {
            let machine = name.to_owned();
            let tail = Arc::clone(&self.stderr_tail);
            pumps.push(tokio::spawn(async move {
                // Every line, whatever its bytes: QEMU must never write into a closed pipe.
                console::each_line(stderr, |line| {
                    log::log(Some(&machine), &line);
                    let mut tail = lock(&tail);
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                })
                .await;
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
                    machine: name.to_owned(),
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
            _ = tokio::time::sleep(self.connect_timeout) => {
                child.stop(STOP_GRACE).await;
                return Err(Error::StartTimeout { machine: name.to_owned(), waited: self.connect_timeout });
            }
        };
        let ((monitor_stream, _), (shell_stream, _)) = match accepted {
            Ok(streams) => streams,
            Err(e) => return Err(explain(stage, start_error("accept QEMU's connections".into(), e)).await),
        };
        drop((monitor_listener, shell_listener));
        spawn_phase.done();
        let qmp_phase = BootPhase::new(name, "qmp");
        let mut monitor = Monitor::new(monitor_stream);

        let qmp = match tokio::time::timeout(self.connect_timeout, self.open_qmp()).await {
            Ok(Ok(qmp)) => qmp,
            Ok(Err(source)) => {
                return Err(explain("opening QMP", Error::Qmp { machine: name.to_owned(), source }).await);
            }
            Err(_) => {
                let source = qmp::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "QEMU did not answer"));
                return Err(explain("opening QMP", Error::Qmp { machine: name.to_owned(), source }).await);
            }
        };
        let prompt = tokio::time::timeout(self.connect_timeout, monitor.wait_for_prompt())
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "QEMU did not answer")));
        if let Err(source) = prompt {
            return Err(explain("its monitor was ready", Error::Monitor { machine: name.to_owned(), source }).await);
        }

        // QEMU connects every chardev before it runs its monitors, so the ports' connections
        // are queued by now if its command line had them (a start command may drop arguments).
        let out_stream = accept_now(out_listener);
        let ctl_stream = accept_now(ctl_listener);
        qmp_phase.done();
        let pid = child.pid();
        *lock(&self.running) = Some(Arc::new(Running {
            spawned_at,
            child,
            monitor: tokio::sync::Mutex::new(monitor),
            qmp,
            shell: tokio::sync::Mutex::new(Shell::new(shell_stream, out_stream, ctl_stream)),
            stdin: tokio::sync::Mutex::new(stdin),
            pumps: Mutex::new(pumps),
        }));
        self.connected.store(false, Ordering::SeqCst);
        self.booted.store(true, Ordering::SeqCst);
        self.base.log(&format!("QEMU running (pid {pid})"));
        self.log_vnc();
        Ok(())
    }

    /// Say how to watch the screen, when the machine has a VNC server. QEMU sets up its
    /// displays before it runs its monitors, so the socket is there by now unless the start
    /// command dropped ntd's arguments.
    fn log_vnc(&self) {
        let Some(path) = &self.vnc_path else { return };
        if path.exists() {
            self.base.log(&format!("screen over VNC: {}", super::vnc_command(path)));
        } else {
            self.base.log(&format!(
                "no VNC server: QEMU did not create {} (does the start command pass on its arguments?)",
                path.display()
            ));
        }
    }

    /// Connect to QMP. QEMU created the socket before it connected to ours; retry briefly
    /// regardless.
    async fn open_qmp(&self) -> std::result::Result<Qmp, qmp::Error> {
        let mut attempts = 0;
        loop {
            match Qmp::connect(&self.qmp_path).await {
                Err(qmp::Error::Io(e))
                    if attempts < 50
                        && matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Wait for the guest's backdoor shell (upstream's `connect()`), starting the machine if
    /// needed. Logs progress every 30 seconds and gives up after the connect timeout.
    pub(super) async fn connect(&self) -> Result<()> {
        if self.is_connected() {
            return Ok(());
        }
        let _lifecycle = self.lifecycle.lock().await;
        if self.is_connected() {
            return Ok(());
        }
        let name = self.name().to_owned();
        log::nested(Some(&name), "waiting for the VM to finish booting", async {
            if !self.is_booted() {
                self.start_locked(false).await?;
            }
            let running = self.running()?;
            let start = Instant::now();
            let shell_phase = BootPhase::new(&name, "shell");
            enum Outcome {
                Marker(std::result::Result<(), ShellError>),
                Exited(ExitStatus),
                TimedOut,
            }
            let outcome = {
                let mut shell = running.shell.lock().await;
                let marker = shell
                    .wait_for_marker(|chunk| self.base.log(&format!("Guest shell says: {}", log::bytes_repr(chunk))));
                tokio::pin!(marker);
                let deadline = tokio::time::Instant::now() + self.connect_timeout;
                loop {
                    tokio::select! {
                        result = &mut marker => break Outcome::Marker(result),
                        status = running.child.wait() => break Outcome::Exited(status),
                        _ = tokio::time::sleep_until(deadline) => break Outcome::TimedOut,
                        _ = tokio::time::sleep(CONNECT_PROGRESS_INTERVAL) => {
                            self.base.log("Guest root shell did not produce any data yet...");
                            self.base.log("  To debug, enter the VM and run 'systemctl status backdoor.service'.");
                        }
                    }
                }
            };
            match outcome {
                Outcome::Marker(Ok(())) => {
                    let mut shell = running.shell.lock().await;
                    let set_up = tokio::select! {
                        set_up = shell.set_up() => set_up,
                        status = running.child.wait() => {
                            drop(shell);
                            return Err(self.disconnected("while setting up the command channel", Some(status)).await);
                        }
                        _ = tokio::time::sleep(self.connect_timeout) => Err(ShellError::Unanswered {
                            what: "the command channel's setup",
                            waited: self.connect_timeout,
                        }),
                    };
                    match set_up {
                        Ok(mode) => self.base.log(&format!("command channel: {}", mode.describe())),
                        Err(ShellError::Disconnected { .. }) => {
                            drop(shell);
                            return Err(self.disconnected("while setting up the command channel", None).await);
                        }
                        Err(source) => {
                            return Err(Error::Shell {
                                machine: name.clone(),
                                command: "(channel setup)".into(),
                                source,
                            });
                        }
                    }
                }
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
                        waited: self.connect_timeout,
                        serial_tail: self.base.console().tail(TAIL_LINES),
                    });
                }
            }
            self.base.log("connected to guest root shell");
            self.base.log(&format!("(connecting took {:.2} seconds)", start.elapsed().as_secs_f64()));
            shell_phase.span.record("boot.duration_s", running.spawned_at.elapsed().as_secs_f64());
            shell_phase.done();
            self.faults_at_connect.store(self.base.console().fault_count(), Ordering::SeqCst);
            self.connected.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await
    }

    /// The error for a shell that went away, waiting briefly for QEMU's exit status.
    pub(super) async fn disconnected(&self, context: &str, status: Option<ExitStatus>) -> Error {
        let (context, serial_tail) = self.exit_context(context, status).await;
        Error::ShellDisconnected { machine: self.name().to_owned(), context, serial_tail }
    }

    /// `context` with how QEMU exited (waiting up to 2 s for it, unless `status` is known),
    /// and the console's last lines.
    pub(super) async fn exit_context(&self, context: &str, status: Option<ExitStatus>) -> (String, Vec<String>) {
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
        (context, self.base.console().tail(TAIL_LINES))
    }

    /// Upstream's `wait_for_shutdown()`: wait until QEMU exits (does not cause it).
    pub(super) async fn wait_for_shutdown(&self) -> Result<()> {
        if !self.is_booted() {
            return Ok(());
        }
        log::nested(Some(self.name()), "waiting for the VM to power off", async {
            let running = self.running()?;
            running.child.wait().await;
            self.finish_run(&running).await;
            Ok(())
        })
        .await
    }

    /// After QEMU exited: let the pumps drain, forget the run, mark the machine down. What
    /// the start script left in QEMU's group was killed before its exit was published.
    async fn finish_run(&self, running: &Running) {
        let pumps: Vec<JoinHandle<()>> = lock(&running.pumps).drain(..).collect();
        for pump in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
        *lock(&self.running) = None;
        self.booted.store(false, Ordering::SeqCst);
        self.connected.store(false, Ordering::SeqCst);
    }

    /// Upstream's `release()`: stop QEMU if it runs (SIGTERM, then SIGKILL) and close
    /// everything. Idempotent.
    pub(super) async fn release(&self) {
        let Some(running) = lock(&self.running).clone() else { return };
        log::info(None, &format!("kill QemuMachine (pid {})", running.child.pid()));
        running.child.stop(STOP_GRACE).await;
        self.finish_run(&running).await;
    }

    /// Kill QEMU's process group now, without waiting.
    pub(super) fn kill_now(&self) {
        if let Some(running) = lock(&self.running).as_ref() {
            running.child.signal_group(nix::sys::signal::Signal::SIGKILL);
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        lock(&self.running).as_ref().map(|running| running.child.pid())
    }
}

impl crate::machine::Backend for Qemu {
    fn class_name(&self) -> &'static str {
        "QemuMachine"
    }

    fn start(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Qemu::start(self, false))
    }

    fn connect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Qemu::connect(self))
    }

    fn execute<'a>(&'a self, command: &'a str, options: ExecuteOptions) -> BoxFuture<'a, Result<(i32, Vec<u8>)>> {
        Box::pin(self.run_command(command, options))
    }

    fn is_booted(&self) -> bool {
        Qemu::is_booted(self)
    }

    fn is_connected(&self) -> bool {
        Qemu::is_connected(self)
    }

    fn mark_disconnected(&self) {
        Qemu::mark_disconnected(self);
    }

    fn pid(&self) -> Option<u32> {
        Qemu::pid(self)
    }

    fn wait_for_shutdown(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Qemu::wait_for_shutdown(self))
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(Qemu::release(self))
    }

    fn kill_now(&self) {
        Qemu::kill_now(self);
    }
}
