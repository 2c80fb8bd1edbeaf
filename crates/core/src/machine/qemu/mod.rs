//! A QEMU machine: upstream's `QemuMachine` (`test_driver/machine/__init__.py`).
//!
//! A [`QemuMachine`] is a [`Machine`] (every shared method works on it, through `Deref`, as a
//! Python subclass inherits) whose backend is QEMU ([`lifecycle`]): commands go over the
//! backdoor shell in one round trip, their output through ntd's own virtio port ([`channel`],
//! [`frame`], [`shell`], [`transport`]); on top of the shared
//! methods it has what only QEMU has: QMP ([`qmp`]), the HMP monitor ([`monitor`]), the
//! screen and OCR ([`screen`]), keys ([`keys`]), the serial console, crash and reboot, the
//! network links ([`network`]), `shell_interact` ([`interact`]) and the UEFI variable store
//! ([`EfiVars`]). Methods keep upstream's
//! names, defaults, log lines and error messages.

pub mod channel;
mod efi;
pub mod faults;
pub mod frame;
mod interact;
pub mod keys;
mod lifecycle;
pub mod monitor;
mod network;
mod probe;
pub mod qmp;
mod screen;
pub mod shell;
pub mod start_command;
mod transport;
mod tty;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

pub use efi::EfiVars;
pub use lifecycle::Qemu;
use start_command::StartCommand;

use super::{Base, Console, Error, Machine, Result};
use crate::log;
use crate::ssh_backdoor::{self, VsockPair};

/// How long to wait for the backdoor shell before giving up (upstream: 5 minutes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// How many lines of QEMU's stderr and of the serial console go into error messages.
const TAIL_LINES: usize = 12;

/// Everything needed to create a QEMU machine (upstream's `QemuMachine` constructor).
#[derive(Debug, Clone)]
pub struct QemuConfig {
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
    /// The SSH backdoor's sockets (from the driver's [`VHostDeviceVsock`]): QEMU gets a
    /// `vhost-user-vsock-pci` device on the guest socket.
    ///
    /// [`VHostDeviceVsock`]: crate::ssh_backdoor::VHostDeviceVsock
    pub vsock: Option<VsockPair>,
    /// Give the machine a VNC server on a unix socket in its state directory (`vnc`), on every
    /// start: only this user can reach it, and no two machines or runs share an address.
    pub vnc: bool,
}

impl QemuConfig {
    /// A configuration with upstream's defaults.
    pub fn new(start_command: impl Into<String>, tmp_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        QemuConfig {
            name: None,
            start_command: start_command.into(),
            tmp_dir: tmp_dir.into(),
            out_dir: out_dir.into(),
            keep_machine_state: false,
            env: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            display_available: std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some(),
            vsock: None,
            vnc: false,
        }
    }
}

/// TigerVNC's command for a VNC server on the unix socket `socket`.
fn vnc_command(socket: &Path) -> String {
    format!("vncviewer {}", crate::machine::quote::shlex_quote(&socket.display().to_string()))
}

/// A QEMU virtual machine. Cloning gives another handle to the same machine; every shared
/// [`Machine`] method is available through `Deref`.
#[derive(Clone)]
pub struct QemuMachine {
    machine: Machine,
    qemu: Arc<Qemu>,
}

impl std::fmt::Debug for QemuMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.machine.fmt(f)
    }
}

impl Deref for QemuMachine {
    type Target = Machine;

    fn deref(&self) -> &Machine {
        &self.machine
    }
}

impl QemuMachine {
    /// Create a machine: prepare its state directory (wiped unless `keep_machine_state`) and
    /// the shared directory, as upstream's constructor does. Nothing is started.
    pub fn new(config: QemuConfig) -> Result<QemuMachine> {
        // The command runs in the state directory: a relative script path (`./result/bin/…`,
        // as a library user or `create_machine` passes it) means one under this process's
        // directory.
        let start_command = match std::env::current_dir() {
            Ok(cwd) => StartCommand::new(config.start_command.clone()).absolutized(&cwd),
            Err(_) => StartCommand::new(config.start_command.clone()),
        };
        let name = config.name.clone().unwrap_or_else(|| start_command.machine_name());
        let console = Console::new(Some(faults::describe_fault));
        let base = Arc::new(Base::prepare(
            name,
            config.tmp_dir.clone(),
            config.out_dir.clone(),
            config.keep_machine_state,
            console,
        )?);
        let qemu = Arc::new(Qemu::new(Arc::clone(&base), config, start_command));
        let machine = Machine::new(base, qemu.clone());
        Ok(QemuMachine { machine, qemu })
    }

    /// The QEMU machine behind `machine`, if it is one.
    pub fn from_machine(machine: &Machine) -> Option<QemuMachine> {
        let qemu = machine.backend_as::<Qemu>()?;
        Some(QemuMachine { machine: machine.clone(), qemu })
    }

    /// The machine as any machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The start command as given.
    pub fn start_command(&self) -> &str {
        self.qemu.start_command.as_str()
    }

    /// The HMP monitor socket.
    pub fn monitor_path(&self) -> &Path {
        &self.qemu.monitor_path
    }

    /// The QMP socket.
    pub fn qmp_path(&self) -> &Path {
        &self.qemu.qmp_path
    }

    /// The backdoor shell socket.
    pub fn shell_path(&self) -> &Path {
        &self.qemu.shell_path
    }

    /// The VNC server's unix socket, if the machine has one ([`QemuConfig::vnc`]); it exists
    /// while QEMU runs.
    pub fn vnc_socket(&self) -> Option<&Path> {
        self.qemu.vnc_path.as_deref()
    }

    /// How to watch the screen (`vncviewer <socket>`), if the machine has a VNC server.
    pub fn vnc_command(&self) -> Option<String> {
        self.vnc_socket().map(vnc_command)
    }

    /// The SSH backdoor's sockets (upstream's `vsock_guest` and `vsock_host`), if the driver
    /// gave the machine some.
    pub fn vsock(&self) -> Option<&VsockPair> {
        self.qemu.vsock.as_ref()
    }

    /// Upstream's `ssh_backdoor_command()`: `ssh -o User=root vsock-mux/<host socket>`, or
    /// `None` for a machine without the backdoor (upstream's assertion fails there).
    pub fn ssh_backdoor_command(&self) -> Option<String> {
        self.vsock().map(|pair| ssh_backdoor::vm_command(&pair.host))
    }

    /// Check that the start script exists and is executable, when the command starts with a
    /// path (commands with shell syntax first are left to the shell).
    pub fn check_start_script(&self) -> Result<()> {
        self.qemu.check_start_script()
    }

    /// Start the machine (upstream's `start(allow_reboot=False)`): listen on the monitor and
    /// shell sockets, run the start command, accept QEMU's connections, open QMP and wait for
    /// the monitor prompt. Does not wait for the guest to boot. A no-op if already booted.
    pub async fn start(&self, allow_reboot: bool) -> Result<()> {
        self.qemu.start(allow_reboot).await
    }

    /// Send `line` to the backdoor shell unframed and return the first line it prints back:
    /// for benchmarks (the channel's floor, upstream's framing on the same shell).
    pub async fn exchange_raw_line(&self, line: &str) -> Result<Vec<u8>> {
        self.qemu.exchange_raw_line(line).await
    }

    /// Send a command to the HMP monitor and return its reply up to the prompt (upstream's
    /// `send_monitor_command`). Runs the callbacks first.
    pub async fn send_monitor_command(&self, command: &str) -> Result<String> {
        self.run_callbacks()?;
        let running = self.qemu.running()?;
        let mut monitor = running.monitor.lock().await;
        monitor.command(command).await.map_err(|source| Error::Monitor { machine: self.name().to_owned(), source })
    }

    /// Read the HMP monitor until its prompt (upstream's `wait_for_monitor_prompt`).
    pub async fn wait_for_monitor_prompt(&self) -> Result<String> {
        let running = self.qemu.running()?;
        let mut monitor = running.monitor.lock().await;
        monitor.wait_for_prompt().await.map_err(|source| Error::Monitor { machine: self.name().to_owned(), source })
    }

    /// Run a QMP command and return its `return` value.
    pub async fn qmp(
        &self,
        command: &str,
        arguments: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<serde_json::Value> {
        let running = self.qemu.running()?;
        match running.qmp.execute(command, arguments).await {
            Ok(value) => Ok(value),
            // A closed socket means QEMU is gone: say how it went, not just "connection reset".
            Err(qmp::Error::Io(_) | qmp::Error::Closed) => {
                let (context, serial_tail) = self.qemu.exit_context(&format!("while running `{command}`"), None).await;
                Err(Error::QmpClosed { machine: self.name().to_owned(), context, serial_tail })
            }
            Err(source) => Err(Error::Qmp { machine: self.name().to_owned(), source }),
        }
    }

    /// Run a QMP command and return QEMU's answer as upstream's `QMPSession.send` reads it:
    /// `{"return": …}`, or `{"error": {"class": …, "desc": …}}` when QEMU refused the command
    /// (ntd numbers its requests, but the answer is given without the `id`, as upstream sends
    /// none).
    pub async fn qmp_message(
        &self,
        command: &str,
        arguments: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<serde_json::Value> {
        match self.qmp(command, arguments).await {
            Ok(value) => Ok(serde_json::json!({ "return": value })),
            Err(Error::Qmp { source: qmp::Error::Api { class, desc }, .. }) => {
                Ok(serde_json::json!({ "error": { "class": class, "desc": desc } }))
            }
            Err(error) => Err(error),
        }
    }

    /// Write bytes to the backdoor shell as they are, unframed (upstream's
    /// `machine.shell.send`): for a script that types into the shell itself, typically a
    /// command after which the guest goes away (`reboot -f`). What it prints is not read.
    pub async fn send_to_shell(&self, bytes: &[u8]) -> Result<()> {
        let running = self.qemu.running()?;
        let mut shell = running.shell.lock().await;
        shell.send_raw(bytes).await.map_err(|source| Error::Shell {
            machine: self.name().to_owned(),
            command: String::from_utf8_lossy(bytes).trim_end().to_owned(),
            source,
        })
    }

    /// Wait for a QMP event accepted by `filter` (upstream's `wait_for_qmp_event`).
    pub async fn wait_for_qmp_event(
        &self,
        filter: impl FnMut(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let running = self.qemu.running()?;
        running.qmp.wait_for_event(filter, timeout).await.map_err(|source| match source {
            qmp::Error::Timeout(waited) => Error::EventTimeout(waited),
            source => Error::Qmp { machine: self.name().to_owned(), source },
        })
    }

    /// Write to QEMU's stdin, i.e. type on the serial console (upstream's `send_console`).
    pub async fn send_console(&self, chars: &[u8]) -> Result<()> {
        let running = self.qemu.running()?;
        let mut stdin = running.stdin.lock().await;
        let Some(stdin) = stdin.as_mut() else {
            return Err(Error::NotRunning { machine: self.name().to_owned() });
        };
        let write = async {
            stdin.write_all(chars).await?;
            stdin.flush().await
        };
        write.await.map_err(|source| Error::Start {
            machine: self.name().to_owned(),
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
        let running = self.qemu.running()?;
        let sent = running.shell.lock().await.send_raw(b"poweroff\n").await;
        if let Err(source) = sent {
            // The shell may already be gone with the VM; waiting below tells.
            log::debug(Some(self.name()), &format!("cannot send poweroff: {}", crate::full_message(&source)));
        }
        self.wait_for_shutdown().await
    }

    /// Upstream's `crash()`: make QEMU quit at once (a power failure) and wait for it.
    pub async fn crash(&self) -> Result<()> {
        if !self.is_booted() {
            return Ok(());
        }
        self.log("forced crash");
        let running = self.qemu.running()?;
        let sent = running.monitor.lock().await.send("quit").await;
        if let Err(source) = sent {
            log::debug(Some(self.name()), &format!("cannot send quit: {source}"));
        }
        self.wait_for_shutdown().await
    }
}
