//! A systemd-nspawn container: upstream's `NspawnMachine` (`test_driver/machine/__init__.py`).
//!
//! A [`NspawnMachine`] is a [`Machine`] (every shared method works on it, through `Deref`)
//! whose backend ([`lifecycle`]) runs nixpkgs' container start script (`run-<name>-nspawn`,
//! from `system.build.nspawn`): the script is given the machine's state directory as the
//! container's root (`RUN_NSPAWN_ROOT_DIR`), the shared directory (`RUN_NSPAWN_SHARED_DIR`,
//! the container's `/tmp/shared`) and a `NOTIFY_SOCKET` ([`notify`]), and nothing else.
//! The container is ready when systemd-nspawn reports `READY=1` and its init's pid there;
//! commands then run through `nsenter` into that init's namespaces ([`transport`]), and the
//! container's journal is the machine's console log ([`journal`]). What only a VM has (QMP,
//! the monitor, the screen, keys, the serial console) a container does not have, as
//! upstream's does not.

mod journal;
mod leader;
mod lifecycle;
pub mod notify;
pub mod transport;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use lifecycle::Nspawn;

use super::{Base, Console, Error, Machine, Result};

/// How long a container may take from its start script to `READY=1`. A container boots in
/// seconds; the margin is for a loaded CI machine.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How many console lines go into error messages.
const TAIL_LINES: usize = 12;

/// Everything needed to create a container (upstream's `NspawnMachine` constructor).
#[derive(Debug, Clone)]
pub struct NspawnConfig {
    /// The name; `None` derives it from the start script (`run-<name>-nspawn`).
    pub name: Option<String>,
    /// The start script (a path: upstream runs it without a shell).
    pub start_command: String,
    /// Where state directories and the shared directory live (upstream's `tmp_dir`).
    pub tmp_dir: PathBuf,
    /// Where copied files go.
    pub out_dir: PathBuf,
    /// Keep the state directory (the container's root) from an earlier run.
    pub keep_machine_state: bool,
    /// How long to wait for the container to be ready.
    pub ready_timeout: Duration,
}

impl NspawnConfig {
    /// A configuration with upstream's defaults.
    pub fn new(start_command: impl Into<String>, tmp_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        NspawnConfig {
            name: None,
            start_command: start_command.into(),
            tmp_dir: tmp_dir.into(),
            out_dir: out_dir.into(),
            keep_machine_state: false,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

/// Upstream's `NspawnMachine.machine_name_from_start_command`: `<name>` of a
/// `run-<name>-nspawn` script's file name.
pub fn machine_name_from_start_command(start_command: &str) -> Option<String> {
    let base = Path::new(start_command).file_name()?.to_str()?;
    let rest = &base[base.find("run-")? + "run-".len()..];
    // Greedy, as upstream's `run-(.+)-nspawn`: up to the last `-nspawn`.
    let end = rest.rfind("-nspawn")?;
    (end > 0).then(|| rest[..end].to_owned())
}

/// A systemd-nspawn container. Cloning gives another handle to the same machine; every
/// shared [`Machine`] method is available through `Deref`.
#[derive(Clone)]
pub struct NspawnMachine {
    machine: Machine,
    nspawn: Arc<Nspawn>,
}

impl std::fmt::Debug for NspawnMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.machine.fmt(f)
    }
}

impl Deref for NspawnMachine {
    type Target = Machine;

    fn deref(&self) -> &Machine {
        &self.machine
    }
}

impl NspawnMachine {
    /// Create a container: prepare its state directory (its root, wiped unless
    /// `keep_machine_state`) and the shared directory, as upstream's constructor does.
    /// Nothing is started.
    pub fn new(config: NspawnConfig) -> Result<NspawnMachine> {
        let name = match config.name.clone() {
            Some(name) => name,
            None => machine_name_from_start_command(&config.start_command)
                .ok_or_else(|| Error::NoMachineName { start_command: config.start_command.clone() })?,
        };
        // Upstream runs the script with the state directory as its working directory: a
        // relative path means one under this process's directory.
        let script = PathBuf::from(&config.start_command);
        let script = match std::env::current_dir() {
            Ok(cwd) if script.is_relative() => cwd.join(script),
            _ => script,
        };
        let base = Arc::new(Base::prepare(
            name,
            config.tmp_dir.clone(),
            config.out_dir.clone(),
            config.keep_machine_state,
            Console::new(None),
        )?);
        let nspawn = Arc::new(Nspawn::new(Arc::clone(&base), &config, script));
        let machine = Machine::new(base, nspawn.clone());
        Ok(NspawnMachine { machine, nspawn })
    }

    /// The container behind `machine`, if it is one.
    pub fn from_machine(machine: &Machine) -> Option<NspawnMachine> {
        let nspawn = machine.backend_as::<Nspawn>()?;
        Some(NspawnMachine { machine: machine.clone(), nspawn })
    }

    /// The machine as any machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The start script.
    pub fn start_command(&self) -> &Path {
        &self.nspawn.start_script
    }

    /// The `NOTIFY_SOCKET` the start script is given (upstream's `machine_sock_path`).
    pub fn notify_socket_path(&self) -> &Path {
        &self.nspawn.notify_path
    }

    /// Upstream's `get_systemd_process`: the pid (on the host) of the container's init,
    /// waiting until the container is ready (starting it if needed).
    pub async fn systemd_process(&self) -> Result<u32> {
        self.connect().await?;
        self.nspawn.leader_pid().ok_or_else(|| Error::NotRunning { machine: self.name().to_owned() })
    }

    /// Upstream's `shutdown()`: `systemctl poweroff` in the container, then wait until the
    /// start script exits. The command ends with the container, which is not an error here.
    pub async fn shutdown(&self) -> Result<()> {
        if !self.is_booted() {
            return Ok(());
        }
        match self.execute("systemctl poweroff", super::ExecuteOptions::default()).await {
            Ok(_) | Err(Error::ContainerExited { .. }) => {}
            Err(e) => return Err(e),
        }
        self.wait_for_shutdown().await
    }

    /// Upstream's `ssh_backdoor_command()`: how to reach the container's SSH server through
    /// systemd-nspawn's unix-export directory.
    pub fn ssh_backdoor_command(&self) -> String {
        format!(
            "ssh -o User=root -o ProxyCommand=\"socat - UNIX-CLIENT:/run/systemd/nspawn/unix-export/{}/ssh\" bash",
            self.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::machine_name_from_start_command as name;

    #[test]
    fn names_come_from_the_script_as_upstream_reads_them() {
        assert_eq!(name("/nix/store/abc-nixos/bin/run-server-nspawn").as_deref(), Some("server"));
        assert_eq!(name("run-my-box-nspawn").as_deref(), Some("my-box"));
        // `run-(.+)-nspawn` is searched in the file name only, and is greedy.
        assert_eq!(name("/x/run-a-nspawn-b-nspawn").as_deref(), Some("a-nspawn-b"));
        assert_eq!(name("/run-x-nspawn/bin/start"), None);
        assert_eq!(name("run--nspawn"), None);
        assert_eq!(name("run-vm"), None);
    }
}
