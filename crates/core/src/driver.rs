//! The driver: the machines and VLANs of one test run (upstream's `test_driver/driver.py`).
//!
//! [`Driver::start`] does what upstream's `Driver.__enter__` does: find the temporary
//! directory, start one switch per VLAN, and create one [`Machine`] per start script (which
//! prepares its state directory). [`Driver::cleanup`] is `__exit__`: release every machine and
//! stop every switch. Running the test script is the caller's business (the Python layer).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::MachineSpec;
use crate::error::ErrorKind;
use crate::log;
use crate::machine::{self, Machine, MachineConfig};
use crate::vlan::VLan;

/// A driver failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The temporary directory is unusable.
    #[error("the temporary directory {path} (from XDG_RUNTIME_DIR, TMPDIR, TEMP or TMP) {problem}")]
    TmpDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Two machines have the same name.
    #[error("two machines are named {0:?}")]
    DuplicateName(String),
    /// Some machines failed to start (upstream's message, then one line per machine).
    #[error("Failed to start the following machines:\n{}", failures.iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>().join("\n"))]
    StartFailed {
        /// Each machine that failed and why.
        failures: Vec<(String, machine::Error)>,
    },
}

impl Error {
    /// The upstream error class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TmpDir { .. } | Error::DuplicateName(_) => ErrorKind::Config,
            Error::StartFailed { failures } => match failures.as_slice() {
                [(_, only)] => only.kind(),
                _ => ErrorKind::Machine,
            },
        }
    }
}

/// What the driver is started with.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// The machines.
    pub machines: Vec<MachineSpec>,
    /// VLAN numbers (duplicates are ignored).
    pub vlans: Vec<u32>,
    /// Where screenshots and copied files go.
    pub out_dir: PathBuf,
    /// Keep machine state directories from earlier runs.
    pub keep_machine_state: bool,
    /// How long each machine may take to connect its backdoor shell.
    pub connect_timeout: Duration,
}

/// The machines and VLANs of one test run.
#[derive(Debug)]
pub struct Driver {
    machines: Vec<Machine>,
    vlans: Vec<VLan>,
    tmp_dir: PathBuf,
    out_dir: PathBuf,
    connect_timeout: Duration,
}

/// Upstream's `get_tmp_dir`: `XDG_RUNTIME_DIR`, else Python's `tempfile.gettempdir()` (`TMPDIR`,
/// `TEMP`, `TMP`, then `/tmp`), created 0700 if missing and checked to be a writable directory.
pub fn tmp_dir() -> Result<PathBuf, Error> {
    let from_env = ["XDG_RUNTIME_DIR", "TMPDIR", "TEMP", "TMP"]
        .iter()
        .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()));
    let path = from_env.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    let bad = |problem: &str| Error::TmpDir { path: path.clone(), problem: problem.to_owned() };
    if !path.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&path)
            .map_err(|e| bad(&format!("cannot be created: {e}")))?;
    }
    if !path.is_dir() {
        return Err(bad("is not a directory"));
    }
    if !is_writable(&path) {
        return Err(bad("is not writable"));
    }
    Ok(path)
}

/// Whether the current user may write into `path` (access(2), as Python's `os.access`).
pub fn is_writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: c_path is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

impl Driver {
    /// Start VLAN switches and create the machines (nothing is booted yet).
    pub async fn start(options: DriverOptions) -> Result<Driver, crate::Error> {
        let tmp_dir = tmp_dir()?;
        let mut vlan_numbers = options.vlans.clone();
        vlan_numbers.sort_unstable();
        vlan_numbers.dedup();
        let mut vlans = Vec::new();
        let started: Result<(), crate::Error> = log::nested(None, "start all VLans", async {
            for nr in vlan_numbers {
                vlans.push(VLan::start(nr, &tmp_dir).await?);
            }
            Ok(())
        })
        .await;
        let env: Vec<(String, String)> = vlans.iter().map(VLan::environment).collect();
        let mut machines = Vec::new();
        let created = started.and_then(|()| {
            for spec in &options.machines {
                let mut config =
                    MachineConfig::new(spec.start_command.clone(), tmp_dir.clone(), options.out_dir.clone());
                config.name = spec.name.clone();
                config.keep_machine_state = options.keep_machine_state;
                config.env = env.clone();
                config.connect_timeout = options.connect_timeout;
                let machine = Machine::new(config)?;
                if machines.iter().any(|m: &Machine| m.name() == machine.name()) {
                    return Err(Error::DuplicateName(machine.name().to_owned()).into());
                }
                machines.push(machine);
            }
            Ok(())
        });
        if let Err(e) = created {
            for vlan in &vlans {
                vlan.stop().await;
            }
            return Err(e);
        }
        // Upstream sorts machines by name (as network.nix numbers nodes).
        machines.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(Driver { machines, vlans, tmp_dir, out_dir: options.out_dir, connect_timeout: options.connect_timeout })
    }

    /// The machines, sorted by name.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// The VLAN switches.
    pub fn vlans(&self) -> &[VLan] {
        &self.vlans
    }

    /// The temporary directory holding state directories, sockets and `shared-xchg`.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp_dir
    }

    /// Where screenshots and copied files go.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Upstream's `create_machine(start_command, name=None, keep_machine_state=False)`: a
    /// machine outside the driver's list, on the driver's VLANs.
    pub fn create_machine(
        &self,
        start_command: &str,
        name: Option<String>,
        keep_machine_state: bool,
    ) -> Result<Machine, crate::Error> {
        let mut config = MachineConfig::new(start_command, tmp_dir()?, self.out_dir.clone());
        config.name = name;
        config.keep_machine_state = keep_machine_state;
        config.env = self.vlans.iter().map(VLan::environment).collect();
        config.connect_timeout = self.connect_timeout;
        Ok(Machine::new(config)?)
    }

    /// Upstream's `start_all()`: start every machine, all at once, and report every failure.
    pub async fn start_all(&self) -> Result<(), crate::Error> {
        log::nested(None, "start all VMs", async {
            let mut starts = JoinSet::new();
            for machine in &self.machines {
                let machine = machine.clone();
                starts.spawn(
                    async move {
                        let result = machine.start(false).await;
                        (machine.name().to_owned(), result)
                    }
                    .in_current_span(),
                );
            }
            let mut failures = Vec::new();
            while let Some(joined) = starts.join_next().await {
                if let Ok((name, Err(e))) = joined {
                    failures.push((name, e));
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                failures.sort_by(|a, b| a.0.cmp(&b.0));
                Err(Error::StartFailed { failures }.into())
            }
        })
        .await
    }

    /// Upstream's `join_all()`: wait until every machine has shut down.
    pub async fn join_all(&self) -> Result<(), crate::Error> {
        log::nested(None, "wait for all VMs to finish", async {
            for machine in &self.machines {
                machine.wait_for_shutdown().await?;
            }
            Ok(())
        })
        .await
    }

    /// Upstream's `__exit__`: release every machine and stop every switch. `extra` are
    /// machines made with `create_machine`, which upstream leaves running; ntd stops them too.
    pub async fn cleanup(&self, extra: &[Machine]) {
        let span = log::block(None, "cleanup", &[]);
        async {
            for machine in self.machines.iter().chain(extra) {
                machine.release().await;
            }
            for vlan in &self.vlans {
                vlan.stop().await;
            }
            for machine in self.machines.iter().chain(extra) {
                machine.discard_state();
            }
            // The directory all machines share (`/tmp/shared`) goes if it is empty: another
            // run with the same TMPDIR (XDG_RUNTIME_DIR is the same for all of a user's runs)
            // may still use it, as may files a test left there on purpose.
            let machines = || self.machines.iter().chain(extra);
            if !machines().any(Machine::keep_machine_state) {
                for shared in machines().map(Machine::shared_dir).collect::<std::collections::BTreeSet<_>>() {
                    let _ = std::fs::remove_dir(shared);
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Resolve when a VLAN switch exits without being stopped, with a message naming it;
    /// never resolves when there is none or none fails.
    pub async fn switch_failure(&self) -> String {
        let watches: Vec<_> = self.vlans.iter().map(|vlan| Box::pin(vlan.unexpected_exit())).collect();
        if watches.is_empty() {
            return std::future::pending().await;
        }
        first_of(watches).await
    }

    /// Kill every machine and switch now, without waiting (global timeout, signals).
    pub fn kill_now(&self) {
        for machine in &self.machines {
            machine.kill_now();
        }
        for vlan in &self.vlans {
            vlan.kill_now();
        }
    }
}

/// The output of whichever future finishes first.
async fn first_of<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> F::Output {
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
