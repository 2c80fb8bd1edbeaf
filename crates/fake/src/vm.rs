//! The machine: what QEMU and a NixOS test guest do together, as the driver sees it.
//!
//! A boot prints the kernel's lines on the console, and after the boot delay the backdoor
//! service prints `connecting to host...` on the console and `Spawning backdoor root shell...`
//! on hvc0, then runs the guest shell. The lifecycle follows QEMU's run-state rules: a guest
//! power-off ends QEMU with `SHUTDOWN` (`guest-shutdown`); a guest reset (`reboot`, Ctrl+Alt+Del,
//! a kernel panic with NixOS's `panic=1`) emits `RESET` and boots again on the same sockets, or
//! with `-no-reboot` ends QEMU with `SHUTDOWN` (`guest-reset`), as QEMU turns resets into
//! shutdowns then; `quit` and signals end it with `guest: false`.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};

use crate::args::{LaterUnit, QmpFaults};
use crate::console::{self, Console};
use crate::guest::{self, GuestPlan};
use crate::guest_dev::FuseMount;
use crate::ports::Ports;
use crate::qmp::{self, QmpError};
use crate::relay::{self, GuestInput, Link};
use crate::sessions::Events;
use crate::systemd::{ToolOutput, Units};
use crate::{FakeDir, hmp};

/// The line NixOS's backdoor service prints on hvc0 when the shell is ready.
pub const MARKER: &[u8] = b"Spawning backdoor root shell...\n";

/// How long the guest init gets to take the guest down before it is killed outright.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the machine does, beyond answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// QEMU exits (`quit`): `SHUTDOWN` with `guest: false` and this reason.
    Quit(&'static str),
    /// The guest powers off.
    PowerOff,
    /// The ACPI power button (`system_powerdown`): `POWERDOWN`, then the guest powers off.
    PowerButton,
    /// The guest halts: its shell ends, QEMU keeps running.
    Halt,
    /// A reset: by the guest (`reboot`, Ctrl+Alt+Del) or the host (`system_reset`).
    Reset {
        /// Whether the guest asked for it.
        guest: bool,
        /// The event's reason.
        reason: &'static str,
    },
    /// A kernel panic: the shell dies, and a second later the guest resets (`panic=1`).
    Panic,
}

/// The machine's settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// `-no-reboot`.
    pub no_reboot: bool,
    /// The guest's host name.
    pub hostname: String,
    /// Time from the boot lines to the marker.
    pub boot_delay: Duration,
    /// Never print the marker.
    pub no_backdoor: bool,
    /// Written after the marker.
    pub shell_garbage: Option<String>,
    /// Lines of console chatter at boot.
    pub console_lines: u64,
    /// Unit changes after every boot.
    pub units_later: Vec<LaterUnit>,
    /// QMP faults (applied by the QMP sessions).
    pub qmp_faults: QmpFaults,
    /// Whether the guest shell's stderr goes to stdout (the console is there).
    pub console_on_stdout: bool,
    /// Show the guest no virtio ports.
    pub no_ports: bool,
}

/// The guest shell while it runs.
struct Shell {
    /// The guest init's pid (bash's parent).
    pid: Pid,
    stopping: Arc<AtomicBool>,
    exited: watch::Receiver<Option<i32>>,
}

/// The machine.
pub struct Vm {
    config: Config,
    /// The serial console.
    pub console: Console,
    /// The guest's units.
    pub units: Units,
    /// The fake's directory.
    pub dir: FakeDir,
    /// QMP event subscribers.
    pub events: Events,
    plan: GuestPlan,
    link: Arc<Link>,
    input: Arc<GuestInput>,
    ports: Option<Arc<Ports>>,
    /// Serialises power-offs, resets and shell starts.
    lifecycle: Mutex<()>,
    generation: AtomicU64,
    booted_at: std::sync::Mutex<Instant>,
    shell: std::sync::Mutex<Option<Shell>>,
    exit: watch::Sender<Option<i32>>,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Vm {
    /// A machine on a connected backdoor `link`, with `input` fed by the driver, and virtio
    /// `ports` on their connected chardevs.
    pub fn new(
        config: Config,
        console: Console,
        dir: FakeDir,
        units: Units,
        plan: GuestPlan,
        (link, input): (Arc<Link>, Arc<GuestInput>),
        ports: Option<Arc<Ports>>,
    ) -> Arc<Vm> {
        Arc::new(Vm {
            config,
            console,
            units,
            dir,
            events: Events::default(),
            plan,
            link,
            input,
            ports,
            lifecycle: Mutex::new(()),
            generation: AtomicU64::new(0),
            booted_at: std::sync::Mutex::new(Instant::now()),
            shell: std::sync::Mutex::new(None),
            exit: watch::Sender::new(None),
        })
    }

    /// The machine's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Time since the current boot began (the kernel's clock).
    pub fn uptime(&self) -> Duration {
        lock(&self.booted_at).elapsed()
    }

    fn kernel(&self, text: &str) {
        self.console.kernel(self.uptime(), text);
    }

    /// A receiver that sees the exit status once the machine is to exit.
    pub fn exit_watch(&self) -> watch::Receiver<Option<i32>> {
        self.exit.subscribe()
    }

    /// Make the process exit with `status` (the first request wins).
    pub fn request_exit(&self, status: i32) {
        self.exit.send_if_modified(|exit| {
            if exit.is_some() {
                return false;
            }
            *exit = Some(status);
            true
        });
    }

    fn exiting(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Append a line to the record of what the machine was asked (`sendkey`, `set_link`...).
    pub fn record(&self, line: &str) {
        use std::io::Write as _;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.recorded());
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{line}");
        }
    }

    /// Start a boot: the kernel's lines now, the backdoor after the boot delay.
    pub fn start_boot(self: &Arc<Self>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *lock(&self.booted_at) = Instant::now();
        for line in console::boot_lines(&self.config.hostname) {
            self.kernel(&line);
        }
        for n in 1..=self.config.console_lines {
            self.kernel(&format!("fake: console chatter, line {n} of {}", self.config.console_lines));
        }
        if let Err(e) = self.units.reset() {
            self.kernel(&format!("systemd[1]: cannot reset the units in {}: {e}", self.units.dir().display()));
        }
        for later in self.config.units_later.clone() {
            let job = self.units.queue_job(&later.unit, &later.state);
            let vm = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(later.after).await;
                if vm.generation.load(Ordering::SeqCst) == generation {
                    let _ = vm.units.set(&later.unit, &later.state);
                    vm.units.finish_job(job);
                }
            });
        }
        let vm = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(vm.config.boot_delay).await;
            vm.start_shell(generation).await;
        });
    }

    /// The backdoor service starts, unless another boot or an exit came first.
    async fn start_shell(self: &Arc<Self>, generation: u64) {
        let _lifecycle = self.lifecycle.lock().await;
        if self.generation.load(Ordering::SeqCst) != generation || self.exiting() {
            return;
        }
        if self.units.reach_multi_user().is_ok() && self.units.state("multi-user.target").0 == "active" {
            self.kernel("systemd[1]: Reached target Multi-User System.");
        }
        if self.config.no_backdoor {
            return;
        }
        // The backdoor's stderr is the serial port, and so is the guest shell's.
        self.console.line("connecting to host...");
        let on_console = self.config.console_on_stdout;
        let stderr = || {
            use std::os::fd::AsFd;
            match std::io::stdout().as_fd().try_clone_to_owned() {
                Ok(fd) if on_console => Stdio::from(fd),
                _ => Stdio::null(),
            }
        };
        let ports = self.ports.as_ref().filter(|_| !self.config.no_ports);
        let device = ports.and_then(|_| match Ports::open_device() {
            Ok(device) => Some(device),
            Err(e) => {
                // The driver falls back to the console; a user should know why.
                self.kernel(&format!("virtio_console: no virtio ports: {}", crate::error_chain(&e)));
                None
            }
        });
        let mount = device.as_ref().map(FuseMount::new);
        let (mut child, mounted) = match self.plan.spawn(stderr, mount.as_ref()) {
            Ok(spawned) => spawned,
            Err(e) => {
                // A guest that cannot run its shell: say so where a user looks, keep running.
                self.kernel(&format!("systemd[1]: backdoor.service: Failed to start: {e}"));
                eprintln!("ntd-fake-qemu: {}", crate::error_chain(&e));
                return;
            }
        };
        match (ports, device) {
            (Some(ports), Some(device)) if mounted => {
                if let Err(e) = ports.serve(device) {
                    self.kernel(&format!("virtio_console: {}", crate::error_chain(&e)));
                }
            }
            (Some(_), Some(_)) => self.kernel("virtio_console: no virtio ports in a guest in a user namespace"),
            _ => {}
        }
        let (Some(stdin), Some(stdout), Some(pid)) = (child.stdin.take(), child.stdout.take(), child.id()) else {
            return;
        };
        self.link.write_service(MARKER).await;
        if let Some(garbage) = &self.config.shell_garbage {
            self.link.write_service(garbage.as_bytes()).await;
        }
        self.input.attach(Box::new(stdin)).await;
        tokio::spawn(relay::pump_output(stdout, Arc::clone(&self.link)));
        let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        let stopping = Arc::new(AtomicBool::new(false));
        let (exited_tx, exited) = watch::channel(None);
        let vm = Arc::clone(self);
        let watcher_stopping = Arc::clone(&stopping);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => guest::status_code(status),
                Err(_) => guest::STOPPED_STATUS,
            };
            let _ = exited_tx.send(Some(status));
            if !watcher_stopping.load(Ordering::SeqCst) {
                vm.backdoor_exited(pid, status).await;
            }
        });
        *lock(&self.shell) = Some(Shell { pid, stopping, exited });
    }

    /// The guest shell ended by itself: systemd says so on the console (journald forwards it
    /// there in a NixOS test VM), and the backdoor stays down.
    async fn backdoor_exited(&self, pid: Pid, status: i32) {
        let _lifecycle = self.lifecycle.lock().await;
        {
            let mut shell = lock(&self.shell);
            // A reset may have replaced it meanwhile: then its end was no surprise.
            if shell.as_ref().is_none_or(|shell| shell.pid != pid) {
                return;
            }
            shell.take();
        }
        self.input.detach().await;
        if status == 0 {
            self.kernel("systemd[1]: backdoor.service: Deactivated successfully.");
            let _ = self.units.set("backdoor.service", "inactive");
        } else {
            let how = if status > 128 {
                format!("code=killed, status={}/{}", status - 128, signal_name(status - 128))
            } else {
                format!("code=exited, status={status}/FAILURE")
            };
            self.kernel(&format!("systemd[1]: backdoor.service: Main process exited, {how}"));
            self.kernel("systemd[1]: backdoor.service: Failed with result 'exit-code'.");
            let _ = self.units.set("backdoor.service", "failed");
        }
    }

    /// Take the guest shell and everything it started down, and wait until they are gone.
    pub async fn kill_shell(&self) {
        let Some(shell) = lock(&self.shell).take() else { return };
        shell.stopping.store(true, Ordering::SeqCst);
        let mut exited = shell.exited;
        if exited.borrow().is_none() {
            let _ = kill(shell.pid, Signal::SIGTERM);
            let stopped = tokio::time::timeout(STOP_GRACE, exited.wait_for(Option::is_some)).await.is_ok();
            if !stopped {
                let _ = kill(shell.pid, Signal::SIGKILL);
                let _ = exited.wait_for(Option::is_some).await;
            }
        }
        self.input.detach().await;
    }

    /// Do what a command asked for after its answer was sent.
    pub async fn perform(self: &Arc<Self>, action: Action) {
        if let Action::Quit(reason) = action {
            // QEMU quits at once, whatever the guest is doing.
            self.events.emit("SHUTDOWN", Some(json!({"guest": false, "reason": reason}))).await;
            self.request_exit(0);
            return;
        }
        let _lifecycle = self.lifecycle.lock().await;
        if self.exiting() {
            return;
        }
        match action {
            Action::Quit(_) => {}
            Action::PowerButton | Action::PowerOff => {
                if action == Action::PowerButton {
                    self.events.emit("POWERDOWN", None).await;
                }
                self.kill_shell().await;
                self.kernel("reboot: Power down");
                self.console.flush().await;
                self.events.emit("SHUTDOWN", Some(json!({"guest": true, "reason": "guest-shutdown"}))).await;
                self.request_exit(0);
            }
            Action::Halt => {
                self.kill_shell().await;
                self.kernel("reboot: System halted");
            }
            Action::Reset { guest, reason } => {
                self.kill_shell().await;
                if guest {
                    self.kernel("reboot: Restarting system");
                }
                self.reset(guest, reason).await;
            }
            Action::Panic => {
                self.kernel("Kernel panic - not syncing: fake panic");
                self.kernel("Rebooting in 1 seconds..");
                self.kill_shell().await;
                self.kernel("---[ end Kernel panic - not syncing: fake panic ]---");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !self.exiting() {
                    self.reset(true, "guest-reset").await;
                }
            }
        }
    }

    /// After a reset: a new boot, or with `-no-reboot` the end of QEMU.
    async fn reset(self: &Arc<Self>, guest: bool, reason: &'static str) {
        let data = json!({"guest": guest, "reason": reason});
        if self.config.no_reboot {
            self.console.flush().await;
            self.events.emit("SHUTDOWN", Some(data)).await;
            self.request_exit(0);
        } else {
            self.events.emit("RESET", Some(data)).await;
            self.start_boot();
        }
    }

    /// Run a guest tool's request. `None` when the tool took the machine down (and the tool
    /// with it).
    pub async fn run_tool(self: &Arc<Self>, tool: &str, args: &[String]) -> Option<ToolOutput> {
        let verb = args.iter().find(|a| !a.starts_with('-')).map(String::as_str);
        let action = match (tool, verb) {
            ("poweroff", _) | ("systemctl", Some("poweroff")) => Action::PowerOff,
            ("halt", _) | ("systemctl", Some("halt")) => Action::Halt,
            ("reboot", _) | ("systemctl", Some("reboot")) => Action::Reset { guest: true, reason: "guest-reset" },
            ("shutdown", _) if args.iter().any(|a| a == "-r" || a == "--reboot") => {
                Action::Reset { guest: true, reason: "guest-reset" }
            }
            ("shutdown", _) if args.iter().any(|a| a == "-H" || a == "--halt") => Action::Halt,
            ("shutdown", _) => Action::PowerOff,
            ("fake-panic", _) => Action::Panic,
            ("systemctl", _) => return Some(self.units.systemctl(args)),
            (other, _) => {
                return Some(ToolOutput {
                    status: 127,
                    stdout: String::new(),
                    stderr: format!("{other}: unknown tool\n"),
                });
            }
        };
        self.perform(action).await;
        None
    }

    /// Run an HMP command: its output lines, and what to do after the prompt.
    pub async fn hmp(self: &Arc<Self>, command: &hmp::Command) -> (Vec<String>, Option<Action>) {
        if let Some(output) = hmp::static_output(command) {
            return (output, None);
        }
        match command {
            hmp::Command::InfoStatus => (vec!["VM status: running".to_owned()], None),
            hmp::Command::SendKey(keys) => {
                self.record(&format!("sendkey {}", keys.join("-")));
                (Vec::new(), qmp::is_ctrl_alt_delete(keys).then_some(CTRL_ALT_DEL))
            }
            hmp::Command::SetLink { name, up } => {
                self.record(&format!("set_link {name} {}", if *up { "on" } else { "off" }));
                (Vec::new(), None)
            }
            hmp::Command::HostfwdAdd(rule) => {
                self.record(&format!("hostfwd_add {rule}"));
                (Vec::new(), None)
            }
            hmp::Command::Screendump(file) => match self.screendump(file).await {
                Ok(()) => (Vec::new(), None),
                Err(e) => (vec![e.desc], None),
            },
            hmp::Command::SystemPowerdown => (Vec::new(), Some(Action::PowerButton)),
            hmp::Command::SystemReset => {
                (Vec::new(), Some(Action::Reset { guest: false, reason: "host-qmp-system-reset" }))
            }
            hmp::Command::Quit => (Vec::new(), Some(Action::Quit("host-qmp-quit"))),
            _ => (Vec::new(), None),
        }
    }

    /// Run a QMP command (after negotiation): its result, and what to do after the reply.
    pub async fn qmp(self: &Arc<Self>, command: qmp::Command) -> (Result<Value, QmpError>, Option<Action>) {
        let done = || Ok(json!({}));
        match command {
            qmp::Command::Capabilities => (done(), None),
            qmp::Command::QueryStatus => (Ok(json!({"status": "running", "running": true})), None),
            qmp::Command::QueryVersion => {
                (Ok(json!({"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": "fake"})), None)
            }
            qmp::Command::Screendump { filename } => (self.screendump(&filename).await.map(|()| json!({})), None),
            qmp::Command::SendKey(keys) => {
                self.record(&format!("send-key {}", keys.join("-")));
                (done(), qmp::is_ctrl_alt_delete(&keys).then_some(CTRL_ALT_DEL))
            }
            qmp::Command::HumanMonitor(line) => {
                let (output, action) = self.hmp(&hmp::parse(&line)).await;
                (Ok(Value::from(hmp::as_string(&output))), action)
            }
            qmp::Command::SystemPowerdown => (done(), Some(Action::PowerButton)),
            qmp::Command::SystemReset => {
                (done(), Some(Action::Reset { guest: false, reason: "host-qmp-system-reset" }))
            }
            qmp::Command::Quit => (done(), Some(Action::Quit("host-qmp-quit"))),
        }
    }

    /// Write the screen as QEMU's PPM: a dark 720×400 VGA text-mode screen. A relative path is
    /// QEMU's working directory's (the state directory).
    pub async fn screendump(&self, file: &str) -> Result<(), QmpError> {
        self.record(&format!("screendump {file}"));
        let (width, height) = (720, 400);
        let mut ppm = format!("P6\n{width} {height}\n255\n").into_bytes();
        ppm.resize(ppm.len() + width * height * 3, 0);
        tokio::fs::write(Path::new(file), ppm)
            .await
            .map_err(|e| QmpError::generic(format!("failed to open file '{file}': {}", strerror(&e))))
    }
}

/// Ctrl+Alt+Del: the guest's systemd starts `ctrl-alt-del.target`, a reboot.
const CTRL_ALT_DEL: Action = Action::Reset { guest: true, reason: "guest-reset" };

/// The C library's text for an I/O error (`No such file or directory`), without Rust's
/// ` (os error N)`.
fn strerror(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn signal_name(signal: i32) -> &'static str {
    Signal::try_from(signal).map(|s| s.as_str().trim_start_matches("SIG")).unwrap_or("UNKNOWN")
}
