//! Starting, waiting for and stopping a container: upstream's `NspawnMachine.start`,
//! `get_systemd_process`, `wait_for_shutdown` and `release`.
//!
//! [`Nspawn`] is the backend of a container. While it runs, it owns the start script (which
//! makes the network namespace and veths, then runs systemd-nspawn), the `NOTIFY_SOCKET`
//! listener ([`super::notify`]), the pumps of the script's output, the journal follower
//! ([`super::journal`]) and, once the container is ready, its init process ([`Leader`]).
//! The script's output is drained for the whole run: upstream stops reading it after boot,
//! and a chatty container then stalls on a full pipe.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::leader::Leader;
use super::notify::{self, NotifyState};
use super::{NspawnConfig, TAIL_LINES, journal};
use crate::log;
use crate::machine::console;
use crate::machine::{Base, BoxFuture, Error, ExecuteOptions, Result, lock};
use crate::process::{self, describe_status};

/// How often to say that the container is not ready yet (upstream: every 10 seconds).
const READY_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// How long the start script gets to stop the container and remove its network after
/// SIGTERM before SIGKILL (upstream waits 30 seconds).
const STOP_GRACE: Duration = Duration::from_secs(30);
/// The line upstream's start script prints before it runs systemd-nspawn.
const PID_LINE: &str = "systemd-nspawn's PID is ";

/// The parts of a running container.
pub(super) struct Running {
    /// When the start script was run (readiness counts from here).
    spawned_at: Instant,
    pub(super) child: process::Child,
    notify: watch::Receiver<NotifyState>,
    /// The pid the start script announced for systemd-nspawn, for start scripts whose
    /// systemd-nspawn does not report its leader.
    nspawn_pid: watch::Receiver<Option<u32>>,
    /// The container's init, once the container is ready.
    pub(super) leader: OnceLock<Arc<Leader>>,
    /// The notify socket's reader: it reads until it is stopped.
    listener: JoinHandle<()>,
    _stdin: Option<tokio::process::ChildStdin>,
    /// Set when ntd stops the container: the journal follower ends.
    stopping: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The backend of a systemd-nspawn container (see the module documentation).
pub struct Nspawn {
    pub(super) base: Arc<Base>,
    pub(super) start_script: PathBuf,
    /// The `NOTIFY_SOCKET` given to the start script.
    pub(super) notify_path: PathBuf,
    /// Where the journal follower keeps its place (see [`journal::follow`]).
    journal_cursor: PathBuf,
    ready_timeout: Duration,
    /// Serialises `start`, `connect` and `wait_for_shutdown`.
    lifecycle: tokio::sync::Mutex<()>,
    running: Mutex<Option<Arc<Running>>>,
    connected: AtomicBool,
}

impl Nspawn {
    pub(super) fn new(base: Arc<Base>, config: &NspawnConfig, start_script: PathBuf) -> Nspawn {
        // Upstream's path: `<tmp>/<name>-nspawn.sock`.
        let notify_path = base.tmp_dir.join(format!("{}-nspawn.sock", base.name()));
        let journal_cursor = base.tmp_dir.join(format!("{}-journal.cursor", base.name()));
        Nspawn {
            base,
            start_script,
            notify_path,
            journal_cursor,
            ready_timeout: config.ready_timeout,
            lifecycle: tokio::sync::Mutex::new(()),
            running: Mutex::new(None),
            connected: AtomicBool::new(false),
        }
    }

    pub(super) fn name(&self) -> &str {
        self.base.name()
    }

    /// The start script runs (upstream's `is_up()` for a container).
    fn is_booted(&self) -> bool {
        lock(&self.running).as_ref().is_some_and(|running| running.child.exit_status().is_none())
    }

    pub(super) fn running(&self) -> Result<Arc<Running>> {
        lock(&self.running).clone().ok_or_else(|| Error::NotRunning { machine: self.name().to_owned() })
    }

    /// Check that the start script exists and is executable.
    fn check_start_script(&self) -> Result<()> {
        match crate::machine::start_script_problem(&self.start_script) {
            Some(problem) => {
                Err(Error::StartScript { machine: self.name().to_owned(), path: self.start_script.clone(), problem })
            }
            None => Ok(()),
        }
    }

    /// Upstream's `start()`: bind the notify socket, run the start script in the state
    /// directory with upstream's three variables and nothing else, and start following its
    /// output and the journal. Does not wait for the container to be ready; a no-op while it
    /// runs.
    pub(super) async fn start(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        self.start_locked().await
    }

    async fn start_locked(&self) -> Result<()> {
        if self.is_booted() {
            return Ok(());
        }
        // A run whose script exited without anyone waiting for it: forget it first.
        let ended = lock(&self.running).clone();
        if let Some(ended) = ended {
            self.finish_run(&ended).await;
        }
        let name = self.name();
        self.check_start_script()?;
        let start_error = |action: String, source| Error::Start { machine: name.to_owned(), action, source };
        let socket = notify::bind(&self.notify_path)
            .map_err(|e| start_error(format!("listen on {}", self.notify_path.display()), e))?;
        let mut command = Command::new(&self.start_script);
        command
            .current_dir(self.base.state_dir())
            .env_clear()
            .env("RUN_NSPAWN_ROOT_DIR", self.base.state_dir())
            .env("RUN_NSPAWN_SHARED_DIR", self.base.shared_dir())
            .env("NOTIFY_SOCKET", &self.notify_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.base.console().clear();
        let spawned_at = Instant::now();
        // SIGTERM if ntd dies: the script then still stops the container and removes the
        // network it made.
        let mut child = process::Child::spawn_with_death_signal(command, Signal::SIGTERM)
            .await
            .map_err(|e| start_error(format!("run the start script {}", self.start_script.display()), e))?;
        let pid = child.pid();
        self.base.log(&format!("systemd-nspawn running (pid {pid})"));

        let mut tasks = Vec::new();
        let (notify, listener) = notify::listen(socket, name.to_owned());
        let (announce, nspawn_pid) = watch::channel(None);
        if let Some(stdout) = child.stdout.take() {
            tasks.push(tokio::spawn(pump_stdout(stdout, Arc::clone(&self.base), announce)));
        }
        if let Some(stderr) = child.stderr.take() {
            let machine = name.to_owned();
            let console = Arc::clone(self.base.console());
            tasks.push(tokio::spawn(crate::machine::console::each_line(stderr, move |line| {
                log::log(Some(&machine), &line);
                console.push(line);
            })));
        }
        // The script's stdin stays open, as upstream's pipe does, for as long as it runs.
        let stdin = child.stdin.take();
        let (stopping, stopped) = watch::channel(false);
        tasks.push(tokio::spawn(journal::follow(
            Arc::clone(&self.base),
            self.journal_cursor.clone(),
            child.exit_watch(),
            stopped,
        )));
        *lock(&self.running) = Some(Arc::new(Running {
            spawned_at,
            child,
            notify,
            nspawn_pid,
            leader: OnceLock::new(),
            listener,
            _stdin: stdin,
            stopping,
            tasks: Mutex::new(tasks),
        }));
        self.connected.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Wait until the container is ready (upstream's `get_systemd_process`): systemd-nspawn
    /// reported `READY=1` and the pid of the container's init. Starts the container if needed.
    pub(super) async fn connect(&self) -> Result<()> {
        if self.connected.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _lifecycle = self.lifecycle.lock().await;
        if self.connected.load(Ordering::SeqCst) && self.is_booted() {
            return Ok(());
        }
        // A container whose start script exited unwaited for is gone: say so, rather than
        // booting another one under a command (`start()` does that).
        let ended = lock(&self.running).clone();
        if let Some(ended) = ended
            && ended.child.exit_status().is_some()
        {
            return Err(self.exited(&ended, "before the command could run").await);
        }
        let name = self.name().to_owned();
        log::nested(Some(&name), "waiting for the container to be ready", async {
            self.start_locked().await?;
            let running = self.running()?;
            let phase = log::boot_span(&name, "ready");
            let _tracked = log::track(&phase);
            let started = Instant::now();
            let result = self.wait_until_ready(&running).await;
            let pid = match result {
                Ok(pid) => pid,
                Err(e) => {
                    log::record_error(&phase, "failed");
                    return Err(e);
                }
            };
            let leader = match Leader::open(pid) {
                Ok(leader) => leader,
                Err(e) => {
                    log::record_error(&phase, "failed");
                    let context = format!("before ntd could hold its init (pid {pid}: {e})");
                    return Err(self.exited(&running, &context).await);
                }
            };
            let _ = running.leader.set(Arc::new(leader));
            self.base.log(&format!("the container is ready (init pid {pid})"));
            self.base.log(&format!("(waiting took {:.2} seconds)", started.elapsed().as_secs_f64()));
            phase.record("boot.duration_s", running.spawned_at.elapsed().as_secs_f64());
            self.connected.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await
    }

    /// The pid of the container's init once systemd-nspawn says the container is ready.
    async fn wait_until_ready(&self, running: &Running) -> Result<u32> {
        let mut notify = running.notify.clone();
        let mut notify_open = true;
        let mut nspawn_pid = running.nspawn_pid.clone();
        let mut pump_open = true;
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        loop {
            let state = notify.borrow_and_update().clone();
            if state.ready {
                let announced = *nspawn_pid.borrow_and_update();
                if let Some(pid) = state.leader.or_else(|| announced.and_then(only_child)) {
                    return Ok(pid);
                }
            }
            tokio::select! {
                changed = notify.changed(), if notify_open => notify_open = changed.is_ok(),
                changed = nspawn_pid.changed(), if pump_open => pump_open = changed.is_ok(),
                status = running.child.wait() => {
                    let context = format!("before the container was ready ({})", describe_status(status));
                    return Err(self.exited(running, &context).await);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::ContainerNotReady {
                        machine: self.name().to_owned(),
                        waited: self.ready_timeout,
                        notified: describe_notify(&state),
                        console_tail: self.base.console().tail(TAIL_LINES),
                    });
                }
                _ = tokio::time::sleep(READY_PROGRESS_INTERVAL) => {
                    self.base.log(&format!("still waiting for container '{}' to reach ready state...", self.name()));
                }
            }
        }
    }

    /// The error for a container that is gone: upstream's words, how the start script exited
    /// (waiting up to 2 s for it) and the last lines it and the journal printed.
    pub(super) async fn exited(&self, running: &Running, context: &str) -> Error {
        let status = tokio::time::timeout(Duration::from_secs(2), running.child.wait()).await.ok();
        let context = match status {
            Some(status) if !context.contains("exit") && !context.contains("signal") => {
                format!("{context} (the start script exited with {})", describe_status(status))
            }
            _ => context.to_owned(),
        };
        // Let the pumps log the last lines before they are quoted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Error::ContainerExited {
            machine: self.name().to_owned(),
            context,
            console_tail: self.base.console().tail(TAIL_LINES),
        }
    }

    /// Upstream's `wait_for_shutdown()`: wait until the start script exits (does not cause
    /// it).
    pub(super) async fn wait_for_shutdown(&self) -> Result<()> {
        let Some(running) = lock(&self.running).clone() else { return Ok(()) };
        let _lifecycle = self.lifecycle.lock().await;
        log::nested(Some(self.name()), "waiting for the container to power off", async {
            running.child.wait().await;
            self.finish_run(&running).await;
            Ok(())
        })
        .await
    }

    /// After the start script exited: make sure the container's init is gone, stop the
    /// journal, let the pumps drain, forget the run.
    async fn finish_run(&self, running: &Running) {
        running.stopping.send_replace(true);
        // The init of a PID namespace takes a moment to go after systemd-nspawn killed it.
        if let Some(leader) = running.leader.get()
            && tokio::time::timeout(Duration::from_secs(2), leader.exited()).await.is_err()
        {
            // systemd-nspawn was killed without a chance to stop its container.
            self.base.log(&format!(
                "the container's init (pid {}) outlived systemd-nspawn; killing the container",
                leader.pid()
            ));
            leader.signal(Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), leader.exited()).await;
        }
        running.listener.abort();
        let tasks: Vec<JoinHandle<()>> = lock(&running.tasks).drain(..).collect();
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
                task.abort();
            }
        }
        // Only if it is still this run's: a new one may have started meanwhile.
        let mut current = lock(&self.running);
        if current.as_ref().is_some_and(|current| std::ptr::eq(Arc::as_ptr(current), running)) {
            *current = None;
            let _ = std::fs::remove_file(&self.notify_path);
            let _ = std::fs::remove_file(&self.journal_cursor);
            self.connected.store(false, Ordering::SeqCst);
        }
    }

    /// Upstream's `release()`: stop the container if it runs (SIGTERM to the start script,
    /// which stops systemd-nspawn and removes the container's network; SIGKILL after the
    /// grace) and close everything. Idempotent.
    pub(super) async fn release(&self) {
        let Some(running) = lock(&self.running).clone() else { return };
        log::info(None, &format!("kill NspawnMachine (pid {})", running.child.pid()));
        running.stopping.send_replace(true);
        if running.child.exit_status().is_none() {
            running.child.signal_group(Signal::SIGTERM);
            if tokio::time::timeout(STOP_GRACE, running.child.wait()).await.is_err() {
                log::error(
                    None,
                    &format!(
                        "NspawnMachine {} (pid {}) did not exit after SIGTERM; sending SIGKILL",
                        self.name(),
                        running.child.pid()
                    ),
                );
                running.child.signal_group(Signal::SIGKILL);
                running.child.wait().await;
            }
        }
        self.finish_run(&running).await;
    }

    /// Kill the container now, without waiting: its init gets SIGKILL (which ends every
    /// process in it) and the start script SIGTERM, so that it still removes the network.
    pub(super) fn kill_now(&self) {
        if let Some(running) = lock(&self.running).as_ref() {
            running.stopping.send_replace(true);
            if let Some(leader) = running.leader.get() {
                leader.signal(Signal::SIGKILL);
            }
            running.child.signal_group(Signal::SIGTERM);
        }
    }

    fn pid(&self) -> Option<u32> {
        lock(&self.running).as_ref().map(|running| running.child.pid())
    }

    /// The pid of the container's init, once it is ready.
    pub(super) fn leader_pid(&self) -> Option<u32> {
        lock(&self.running).as_ref().and_then(|running| running.leader.get().map(|leader| leader.pid()))
    }
}

/// What systemd-nspawn said so far, for the not-ready error.
fn describe_notify(state: &NotifyState) -> String {
    match (state.ready, state.leader) {
        (false, None) => "systemd-nspawn sent neither READY=1 nor its leader's pid".to_owned(),
        (false, Some(pid)) => format!("the container runs (init pid {pid}) but its systemd never reported READY=1"),
        (true, None) => "READY=1 came, but no X_NSPAWN_LEADER_PID".to_owned(),
        (true, Some(_)) => "it was ready".to_owned(),
    }
}

/// The single child of `pid` (systemd-nspawn's only child is the container's init).
fn only_child(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let mut pids = children.split_whitespace().filter_map(|p| p.parse::<u32>().ok());
    match (pids.next(), pids.next()) {
        (Some(child), None) => Some(child),
        _ => None,
    }
}

/// Log the start script's stdout (systemd-nspawn's and the container console's lines) as the
/// machine's serial lines until it closes, noting the pid line upstream's script prints.
async fn pump_stdout(stdout: tokio::process::ChildStdout, base: Arc<Base>, announce: watch::Sender<Option<u32>>) {
    let _ = console::pump_lines(stdout, |line| {
        if let Some(pid) = line.strip_prefix(PID_LINE).and_then(|pid| pid.trim().parse::<u32>().ok()) {
            // Runs before systemd-nspawn is exec'd: its child appears later.
            announce.send_replace(Some(pid));
        }
        console::serial_line(base.name(), base.console(), line);
    })
    .await;
}

impl crate::machine::Backend for Nspawn {
    fn class_name(&self) -> &'static str {
        "NspawnMachine"
    }

    fn start(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Nspawn::start(self))
    }

    fn connect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Nspawn::connect(self))
    }

    fn execute<'a>(&'a self, command: &'a str, options: ExecuteOptions) -> BoxFuture<'a, Result<(i32, Vec<u8>)>> {
        Box::pin(self.run_command(command, options))
    }

    fn is_booted(&self) -> bool {
        Nspawn::is_booted(self)
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst) && Nspawn::is_booted(self)
    }

    fn mark_disconnected(&self) {
        // A container has no connection to lose: commands enter its namespaces each time.
    }

    fn pid(&self) -> Option<u32> {
        Nspawn::pid(self)
    }

    fn wait_for_shutdown(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Nspawn::wait_for_shutdown(self))
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(Nspawn::release(self))
    }

    fn kill_now(&self) {
        Nspawn::kill_now(self);
    }
}
