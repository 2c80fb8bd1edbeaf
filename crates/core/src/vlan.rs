//! A virtual LAN: one `vde_switch` in hub mode (upstream's `test_driver/vlan.py`).
//!
//! Start scripts attach NICs to it through `QEMU_VDE_SOCKET_<nr>`, the switch's socket
//! directory. The switch's own chatter is logged at debug level only (upstream hid it too).
//!
//! When the run has containers, the switch is also plugged into the host as the tap device
//! `vde-tap<nr>` ([`VLan::plug_tap`], upstream's `vde_plug2tap`): a container's start script
//! puts it on the bridge `br<nr>` with the container's veth, so containers and VMs share the
//! VLAN. Upstream plugs every VLAN; ntd only when a container may use it, because the tap's
//! name (like the bridge's) is one per host, so a VM-only run needs neither root nor a name
//! no other run on the host uses.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;

use crate::log;
use crate::process::{self, describe_status};

/// How long the switch gets to answer `showinfo` (upstream: 5 s).
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A VLAN switch failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `vde_switch` cannot be run.
    #[error("vlan {nr}: cannot run vde_switch (is vde2 installed?)")]
    Spawn {
        /// The VLAN number.
        nr: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The switch did not become ready.
    #[error("vlan {nr}: vde_switch did not become ready: {reason}")]
    NotReady {
        /// The VLAN number.
        nr: u32,
        /// What happened instead.
        reason: String,
    },
    /// The switch could not be plugged into the host as a tap device.
    #[error("vlan {nr}: cannot plug the switch into the host as {tap}: {reason}")]
    Tap {
        /// The VLAN number.
        nr: u32,
        /// The tap device's name.
        tap: String,
        /// Why.
        reason: String,
    },
}

/// How long `vde_plug2tap` gets to create its tap device.
const TAP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running VLAN switch.
#[derive(Debug)]
pub struct VLan {
    nr: u32,
    socket_dir: PathBuf,
    child: process::Child,
    /// Kept open: vde_switch exits at end of file on its stdin.
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    /// Set before ntd stops the switch, so that its exit is not reported as a failure.
    stopping: std::sync::atomic::AtomicBool,
    /// `vde_plug2tap`, once the switch is plugged into the host.
    plug: std::sync::Mutex<Option<process::Child>>,
}

impl VLan {
    /// Start the switch for VLAN `nr` with its sockets in `<tmp_dir>/vde<nr>.ctl`, and wait
    /// until it answers.
    pub async fn start(nr: u32, tmp_dir: &Path) -> Result<VLan, Error> {
        let socket_dir = tmp_dir.join(format!("vde{nr}.ctl"));
        log::info(None, "start vlan");
        let mut command = Command::new("vde_switch");
        command
            .arg("--sock")
            .arg(&socket_dir)
            .args(["--dirmode", "0700", "--hub"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = process::Child::spawn(command).await.map_err(|source| Error::Spawn { nr, source })?;
        let not_ready = |reason: String| Error::NotReady { nr, reason };
        let mut stdin = child.stdin.take().ok_or_else(|| not_ready("no stdin pipe".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| not_ready("no stdout pipe".into()))?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log::debug(None, &format!("vde_switch {nr}: {line}"));
                }
            });
        }
        stdin.write_all(b"showinfo\n").await.map_err(|e| not_ready(format!("cannot write to it: {e}")))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                log::debug(None, &format!("vde_switch {nr}: {line}"));
                if line.contains("1000 Success") {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        };
        match tokio::time::timeout(READY_TIMEOUT, ready).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => {
                let status = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                let reason = match status {
                    Ok(status) => format!("it exited with {}", describe_status(status)),
                    Err(_) => "its output ended".to_owned(),
                };
                return Err(not_ready(reason));
            }
            Err(_) => return Err(not_ready(format!("no answer within {} seconds", READY_TIMEOUT.as_secs()))),
        }
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log::debug(None, &format!("vde_switch {nr}: {line}"));
            }
        });
        if !socket_dir.join("ctl").exists() {
            return Err(not_ready(format!("{} has no ctl socket", socket_dir.display())));
        }
        log::info(None, &format!("running vlan (pid {}; ctl {})", child.pid(), socket_dir.display()));
        Ok(VLan {
            nr,
            socket_dir,
            child,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            stopping: std::sync::atomic::AtomicBool::new(false),
            plug: std::sync::Mutex::new(None),
        })
    }

    /// The tap device the switch is plugged into the host as: `vde-tap<nr>`.
    pub fn tap_name(&self) -> String {
        format!("vde-tap{}", self.nr)
    }

    /// Plug the switch into the host as the tap device `vde-tap<nr>` (upstream's
    /// `vde_plug2tap`), and wait until the device exists: a container's start script looks
    /// for it once, when it starts. Needs root (`/dev/net/tun`). A no-op once plugged.
    pub async fn plug_tap(&self) -> Result<(), Error> {
        if crate::machine::lock(&self.plug).is_some() {
            return Ok(());
        }
        let tap = self.tap_name();
        let device = Path::new("/sys/class/net").join(&tap);
        let failed = |reason: String| Error::Tap { nr: self.nr, tap: tap.clone(), reason };
        if device.exists() {
            return Err(failed(
                "a device of that name exists already; tap and bridge names are one per host, so another run (or \
                 what one left behind) uses this VLAN number"
                    .into(),
            ));
        }
        log::info(None, &format!("creating tap interface {tap}"));
        let mut command = Command::new("vde_plug2tap");
        command
            .arg("-s")
            .arg(&self.socket_dir)
            .arg(&tap)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child =
            process::Child::spawn(command).await.map_err(|e| failed(format!("cannot run vde_plug2tap: {e}")))?;
        let stderr = child.stderr.take();
        let appeared = async {
            while !device.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            _ = appeared => {}
            status = child.wait() => {
                let mut said = String::new();
                if let Some(mut stderr) = stderr {
                    use tokio::io::AsyncReadExt;
                    let _ = tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut said)).await;
                }
                let said = said.trim();
                return Err(failed(format!(
                    "vde_plug2tap exited with {}{}",
                    describe_status(status),
                    if said.is_empty() { String::new() } else { format!(": {said}") }
                )));
            }
            _ = tokio::time::sleep(TAP_TIMEOUT) => {
                child.stop(Duration::from_secs(1)).await;
                return Err(failed(format!("no device after {} seconds", TAP_TIMEOUT.as_secs())));
            }
        }
        if let Some(stderr) = stderr {
            let nr = self.nr;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log::debug(None, &format!("vde_plug2tap {nr}: {line}"));
                }
            });
        }
        *crate::machine::lock(&self.plug) = Some(child);
        Ok(())
    }

    /// The VLAN number.
    pub fn nr(&self) -> u32 {
        self.nr
    }

    /// The switch's socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The switch's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether the switch is still running.
    pub fn is_running(&self) -> bool {
        self.child.exit_status().is_none()
    }

    /// The environment variable start scripts read: `QEMU_VDE_SOCKET_<nr>`.
    pub fn environment(&self) -> (String, String) {
        (format!("QEMU_VDE_SOCKET_{}", self.nr), self.socket_dir.display().to_string())
    }

    /// Resolve if the switch exits without ntd stopping it (killed, crashed), with a message
    /// saying so; never resolves for a switch that ntd stops.
    pub async fn unexpected_exit(&self) -> String {
        let status = self.child.wait().await;
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return std::future::pending().await;
        }
        format!(
            "vlan {}: vde_switch exited unexpectedly with {}; the machines on this VLAN lost their network",
            self.nr,
            describe_status(status)
        )
    }

    /// Stop the switch (upstream's `stop()`: close its stdin, terminate it).
    pub async fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        log::info(None, &format!("kill vlan (pid {})", self.child.pid()));
        drop(self.stdin.lock().await.take());
        let plug = crate::machine::lock(&self.plug).take();
        if let Some(plug) = plug {
            // Its tap device goes with it.
            plug.stop(Duration::from_secs(2)).await;
        }
        self.child.stop(Duration::from_secs(2)).await;
        // vde_switch removes its sockets when it ends cleanly, not when it is killed.
        if let Err(e) = std::fs::remove_dir_all(&self.socket_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warning(None, &format!("cannot remove {}: {e}", self.socket_dir.display()));
        }
    }

    /// Kill the switch now, without waiting.
    pub fn kill_now(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(plug) = crate::machine::lock(&self.plug).as_ref() {
            plug.signal_group(nix::sys::signal::Signal::SIGKILL);
        }
        self.child.signal_group(nix::sys::signal::Signal::SIGKILL);
    }
}
