//! The driver: the machines and VLANs of one test run (upstream's `test_driver/driver.py`).
//!
//! [`Driver::start`] does what upstream's `Driver.__enter__` does: find the temporary
//! directory, start one switch per VLAN, and create one machine per start script (which
//! prepares its state directory). [`Driver::create_machine`] adds machines later; the driver
//! keeps them too, so [`Driver::cleanup`] (upstream's `__exit__`) stops every machine it ever
//! made, then every switch. The policy of the run — the global timeout, termination on
//! signals, the switches' health — is the [`watchdog`]'s, the same for every program that
//! drives a run: the command line, the REPL, the Python library and a Rust program.
//! Running the test script is the caller's business.

pub mod artifacts;
pub mod nspawn_host;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::MachineSpec;
use crate::errors::ErrorKind;
use crate::log;
use crate::machine::nspawn::{NspawnConfig, NspawnMachine};
use crate::machine::qemu::{QemuConfig, QemuMachine};
use crate::machine::{self, Machine, lock};
use crate::ssh_backdoor::{self, VHostDeviceVsock};
use crate::vlan::{self, VLan};
pub use watchdog::{Stop, StopHook, StopHooks};

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
    /// A VLAN switch did not start.
    #[error(transparent)]
    Vlan(#[from] vlan::Error),
    /// The Nix build sandbox cannot run containers.
    #[error(transparent)]
    NspawnHost(#[from] nspawn_host::Error),
    /// A machine cannot be created.
    #[error(transparent)]
    Machine(#[from] machine::Error),
    /// The SSH backdoor's vhost-device-vsock did not start.
    #[error(transparent)]
    Vsock(#[from] ssh_backdoor::vsock::Error),
    /// Some machines failed to start (upstream's message, then one line per machine).
    #[error("Failed to start the following machines:\n{}", failures.iter().map(|(_, e)| crate::full_message(e)).collect::<Vec<_>>().join("\n"))]
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
            Error::Vlan(_) | Error::NspawnHost(_) | Error::Vsock(_) => ErrorKind::Machine,
            Error::Machine(e) => e.kind(),
            Error::StartFailed { failures } => match failures.as_slice() {
                [(_, only)] => only.kind(),
                _ => ErrorKind::Machine,
            },
        }
    }
}

/// What the driver is started with. [`DriverOptions::new`] gives upstream's defaults.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// The QEMU machines.
    pub machines: Vec<MachineSpec>,
    /// The systemd-nspawn containers.
    pub containers: Vec<MachineSpec>,
    /// VLAN numbers (duplicates are ignored).
    pub vlans: Vec<u32>,
    /// Where screenshots and copied files go.
    pub out_dir: PathBuf,
    /// Keep machine state directories from earlier runs.
    pub keep_machine_state: bool,
    /// How long each machine may take to connect its backdoor shell.
    pub connect_timeout: Duration,
    /// How long the whole test may take (see [`Driver::arm_global_timeout`]).
    pub global_timeout: Duration,
    /// How long a stopped test script gets to wind down before it is abandoned (see
    /// [`watchdog`]).
    pub stop_grace: Duration,
    /// Where state directories, sockets and the shared directory go; `None` takes upstream's
    /// choice from the environment ([`tmp_dir`]).
    pub tmp_dir: Option<PathBuf>,
    /// Upstream's `enable_ssh_backdoor`: serve every VM's vsock device with
    /// `vhost-device-vsock` ([`ssh_backdoor`]).
    pub ssh_backdoor: bool,
    /// ntd's ssh proxy (`ntd-ssh-proxy`, or a command doing the same), as the program and its
    /// first arguments: with the backdoor, an ssh configuration using it is written beside the
    /// sockets, for hosts without systemd-ssh-proxy's `vsock-mux/`. `None` writes none.
    pub ssh_proxy: Option<Vec<String>>,
    /// Write failure artifacts into `out_dir` when the test fails ([`artifacts`]). The
    /// command line asks for them when it is given an output directory.
    pub failure_artifacts: bool,
    /// Give every QEMU machine, those made later by `create_machine` too, a VNC server on a
    /// unix socket in its state directory ([`QemuConfig::vnc`]).
    pub vnc: bool,
}

impl DriverOptions {
    /// The machines `machines`, with outputs in `out_dir` and upstream's defaults otherwise: no
    /// VLAN, fresh state, a 5-minute connect timeout, a 7-day global timeout.
    pub fn new(machines: Vec<MachineSpec>, out_dir: impl Into<PathBuf>) -> DriverOptions {
        DriverOptions {
            machines,
            containers: Vec::new(),
            vlans: Vec::new(),
            out_dir: out_dir.into(),
            keep_machine_state: false,
            connect_timeout: crate::machine::qemu::DEFAULT_CONNECT_TIMEOUT,
            global_timeout: crate::config::DEFAULT_GLOBAL_TIMEOUT,
            stop_grace: watchdog::GRACE,
            tmp_dir: None,
            ssh_backdoor: false,
            ssh_proxy: None,
            failure_artifacts: false,
            vnc: false,
        }
    }
}

struct Inner {
    /// The machines of the configuration (VMs and containers), sorted by name.
    machines: Vec<Machine>,
    /// Machines made later by `create_machine`, in the order made.
    created: Mutex<Vec<Machine>>,
    vlans: Vec<VLan>,
    tmp_dir: PathBuf,
    out_dir: PathBuf,
    connect_timeout: Duration,
    global_timeout: Duration,
    stop_grace: Duration,
    watchdog: watchdog::Watchdog,
    /// The SSH backdoor, if the run has it.
    backdoor: Option<Backdoor>,
    /// Whether a failure writes artifacts, and what it wrote.
    failure_artifacts: bool,
    artifacts: artifacts::Collected,
    /// Whether QEMU machines get a VNC server.
    vnc: bool,
}

/// The driver's side of the SSH backdoor.
#[derive(Debug)]
struct Backdoor {
    /// Upstream's `vhost_vsock`: only when the run has VMs.
    device: Option<VHostDeviceVsock>,
    /// ntd's ssh configuration beside the sockets, if a proxy was given.
    ssh_config: Option<PathBuf>,
    /// Why upstream's commands cannot work here, if they cannot: then the listing gives
    /// ntd's through `ssh_config` too.
    why_own_proxy: Option<ssh_backdoor::WhyOwnProxy>,
}

/// The machines and VLANs of one test run. Cloning gives another handle to the same run.
#[derive(Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("machines", &self.inner.machines).field("vlans", &self.inner.vlans).finish()
    }
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
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

impl Driver {
    /// Start VLAN switches and create the machines (nothing is booted yet), and start
    /// watching the switches (see [`watchdog`]). Must run within a tokio runtime.
    pub async fn start(options: DriverOptions) -> Result<Driver, Error> {
        let tmp_dir = match options.tmp_dir.clone() {
            Some(dir) => dir,
            None => tmp_dir()?,
        };
        let mut vlan_numbers = options.vlans.clone();
        vlan_numbers.sort_unstable();
        vlan_numbers.dedup();
        let mut vlans = Vec::new();
        let has_containers = !options.containers.is_empty();
        let prepared: Result<(), Error> = if has_containers { Ok(nspawn_host::prepare()?) } else { Ok(()) };
        let started: Result<(), Error> = match prepared {
            Err(e) => Err(e),
            Ok(()) => {
                log::nested(None, "start all VLans", async {
                    for nr in vlan_numbers {
                        let vlan = VLan::start(nr, &tmp_dir).await?;
                        // As upstream: a VLAN without its host tap still runs; its containers
                        // and VMs then cannot reach each other, which the warning says.
                        if has_containers && let Err(e) = vlan.plug_tap().await {
                            log::warning(
                                None,
                                &format!(
                                    "{}; the containers on VLAN {nr} cannot reach its VMs",
                                    crate::full_message(&e)
                                ),
                            );
                        }
                        vlans.push(vlan);
                    }
                    Ok(())
                })
                .await
            }
        };
        // As upstream: the backdoor's device starts after the VLANs, and only for VMs.
        let mut backdoor = None;
        let started = match started {
            Ok(()) if options.ssh_backdoor => match Backdoor::start(&tmp_dir, &options).await {
                Ok(started) => {
                    backdoor = Some(started);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            other => other,
        };
        let env: Vec<(String, String)> = vlans.iter().map(VLan::environment).collect();
        let vsock_of = |spec: &MachineSpec| {
            let device = backdoor.as_ref()?.device.as_ref()?;
            device.pair(&spec_name(spec)).cloned()
        };
        let mut machines: Vec<Machine> = Vec::new();
        let created = started.and_then(|()| {
            for spec in &options.machines {
                let mut config = QemuConfig::new(spec.start_command.clone(), tmp_dir.clone(), options.out_dir.clone());
                config.name = spec.name.clone();
                config.keep_machine_state = options.keep_machine_state;
                config.env = env.clone();
                config.connect_timeout = options.connect_timeout;
                config.vsock = vsock_of(spec);
                config.vnc = options.vnc;
                let machine = QemuMachine::new(config)?;
                if machines.iter().any(|m| m.name() == machine.name()) {
                    return Err(Error::DuplicateName(machine.name().to_owned()));
                }
                machines.push(machine.machine().clone());
            }
            for spec in &options.containers {
                let mut config =
                    NspawnConfig::new(spec.start_command.clone(), tmp_dir.clone(), options.out_dir.clone());
                config.name = spec.name.clone();
                config.keep_machine_state = options.keep_machine_state;
                config.ready_timeout = options.connect_timeout;
                let machine = NspawnMachine::new(config)?;
                if machines.iter().any(|m| m.name() == machine.name()) {
                    return Err(Error::DuplicateName(machine.name().to_owned()));
                }
                machines.push(machine.machine().clone());
            }
            Ok(())
        });
        if let Err(e) = created {
            for vlan in &vlans {
                vlan.stop().await;
            }
            if let Some(device) = backdoor.as_ref().and_then(|b| b.device.as_ref()) {
                device.stop().await;
            }
            return Err(e);
        }
        // Upstream sorts machines by name (as network.nix numbers nodes).
        machines.sort_by(|a, b| a.name().cmp(b.name()));
        let driver = Driver {
            inner: Arc::new(Inner {
                machines,
                created: Mutex::new(Vec::new()),
                vlans,
                tmp_dir,
                out_dir: options.out_dir,
                connect_timeout: options.connect_timeout,
                global_timeout: options.global_timeout,
                stop_grace: options.stop_grace,
                watchdog: watchdog::Watchdog::default(),
                backdoor,
                failure_artifacts: options.failure_artifacts,
                artifacts: artifacts::Collected::default(),
                vnc: options.vnc,
            }),
        };
        driver.watch_switches();
        driver.watch_vsock_device();
        Ok(driver)
    }

    /// The machines of the configuration (VMs and containers), sorted by name.
    pub fn machines(&self) -> &[Machine] {
        &self.inner.machines
    }

    /// Every machine of the run: the configuration's, then those `create_machine` made.
    pub fn all_machines(&self) -> Vec<Machine> {
        let mut all = self.inner.machines.clone();
        all.extend(lock(&self.inner.created).iter().cloned());
        all
    }

    /// The VLAN switches.
    pub fn vlans(&self) -> &[VLan] {
        &self.inner.vlans
    }

    /// The temporary directory holding state directories, sockets and `shared-xchg`.
    pub fn tmp_dir(&self) -> &Path {
        &self.inner.tmp_dir
    }

    /// Where screenshots and copied files go.
    pub fn out_dir(&self) -> &Path {
        &self.inner.out_dir
    }

    /// How long the whole test may take.
    pub fn global_timeout(&self) -> Duration {
        self.inner.global_timeout
    }

    /// Whether the run has the SSH backdoor (upstream's `enable_ssh_backdoor`).
    pub fn ssh_backdoor(&self) -> bool {
        self.inner.backdoor.is_some()
    }

    /// The SSH backdoor's `vhost-device-vsock` (upstream's `driver.vhost_vsock`): only with the
    /// backdoor and VMs.
    pub fn vsock_device(&self) -> Option<&VHostDeviceVsock> {
        self.inner.backdoor.as_ref()?.device.as_ref()
    }

    /// ntd's ssh configuration for the backdoor ([`ssh_backdoor::ssh_config`]), if written.
    pub fn ssh_config(&self) -> Option<&Path> {
        self.inner.backdoor.as_ref()?.ssh_config.as_deref()
    }

    /// Upstream's `dump_machine_ssh()` text: how to reach each machine of the configuration
    /// over the SSH backdoor, or `None` when the run has no backdoor. `styled`: with upstream's
    /// bold.
    pub fn ssh_backdoor_listing(&self, styled: bool) -> Option<String> {
        let backdoor = self.inner.backdoor.as_ref()?;
        let access: Vec<ssh_backdoor::Access> = self
            .inner
            .machines
            .iter()
            .filter_map(|machine| {
                if let Some(container) = NspawnMachine::from_machine(machine) {
                    return Some(ssh_backdoor::Access {
                        name: machine.name().to_owned(),
                        command: container.ssh_backdoor_command(),
                        via_ntd_proxy: None,
                    });
                }
                let vm = QemuMachine::from_machine(machine)?;
                let pair = vm.vsock()?;
                Some(ssh_backdoor::Access {
                    name: machine.name().to_owned(),
                    command: ssh_backdoor::vm_command(&pair.host),
                    via_ntd_proxy: backdoor
                        .ssh_config
                        .as_deref()
                        .map(|config| ssh_backdoor::vm_command_with_config(config, &pair.host)),
                })
            })
            .collect();
        Some(ssh_backdoor::listing(&access, backdoor.why_own_proxy, styled))
    }

    /// The listing of older nixpkgs' `--dump-vsocks <offset>`, whose VMs had kernel vsock
    /// devices numbered from the offset ([`ssh_backdoor::legacy_listing`]).
    pub fn legacy_ssh_listing(&self, offset: u32, styled: bool) -> String {
        let machines: Vec<(String, Option<String>)> = self
            .inner
            .machines
            .iter()
            .map(|m| (m.name().to_owned(), NspawnMachine::from_machine(m).map(|c| c.ssh_backdoor_command())))
            .collect();
        ssh_backdoor::legacy_listing(offset, &machines, styled)
    }

    /// Upstream's `create_machine(start_command, name=None, keep_machine_state=False)`: a
    /// QEMU machine outside the configuration's list, on the driver's VLANs. The driver keeps
    /// it: it is stopped at cleanup, and killed by the global timeout, like the others. As
    /// upstream, it gets no SSH backdoor (with one warning when the run has one).
    pub fn create_machine(
        &self,
        start_command: &str,
        name: Option<String>,
        keep_machine_state: bool,
    ) -> Result<QemuMachine, Error> {
        if self.ssh_backdoor() {
            // Upstream's words, its `None` included.
            log::warning(
                None,
                &format!(
                    "create_machine({}): not enabling SSH backdoor, this is not supported for VMs created with \
                     create_machine!",
                    name.as_deref().unwrap_or("None")
                ),
            );
        }
        let mut config = QemuConfig::new(start_command, self.inner.tmp_dir.clone(), self.inner.out_dir.clone());
        config.name = name;
        config.keep_machine_state = keep_machine_state;
        config.env = self.inner.vlans.iter().map(VLan::environment).collect();
        config.connect_timeout = self.inner.connect_timeout;
        config.vnc = self.inner.vnc;
        let machine = QemuMachine::new(config)?;
        lock(&self.inner.created).push(machine.machine().clone());
        Ok(machine)
    }

    /// Upstream's `start_all()`: start every machine, all at once, and report every failure.
    pub async fn start_all(&self) -> Result<(), Error> {
        log::nested(None, "start all VMs", async {
            let mut starts = JoinSet::new();
            for machine in &self.inner.machines {
                let machine = machine.clone();
                starts.spawn(
                    async move {
                        let result = machine.start().await;
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
                Err(Error::StartFailed { failures })
            }
        })
        .await
    }

    /// Upstream's `join_all()`: wait until every machine has shut down.
    pub async fn join_all(&self) -> Result<(), Error> {
        log::nested(None, "wait for all VMs to finish", async {
            for machine in &self.inner.machines {
                machine.wait_for_shutdown().await?;
            }
            Ok(())
        })
        .await
    }

    /// Upstream's `__exit__`: release every machine (the created ones too, which upstream
    /// leaves running) and stop every switch, then remove the state that is not to be kept.
    /// The run is over: the watchdog stops watching.
    pub async fn cleanup(&self) {
        self.finish();
        let span = log::block(None, "cleanup", &[]);
        async {
            let machines = self.all_machines();
            for machine in &machines {
                machine.release().await;
            }
            for vlan in &self.inner.vlans {
                vlan.stop().await;
            }
            if let Some(device) = self.vsock_device() {
                device.stop().await;
            }
            for machine in &machines {
                machine.discard_state();
            }
            // The directory all machines share (`/tmp/shared`) goes if it is empty: another
            // run with the same TMPDIR (XDG_RUNTIME_DIR is the same for all of a user's runs)
            // may still use it, as may files a test left there on purpose.
            if !machines.iter().any(Machine::keep_machine_state) {
                let shared: std::collections::BTreeSet<&Path> = machines.iter().map(Machine::shared_dir).collect();
                for dir in shared {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Kill every machine and switch now, without waiting (global timeout, signals).
    pub fn kill_now(&self) {
        for machine in self.all_machines() {
            machine.kill_now();
        }
        for vlan in &self.inner.vlans {
            vlan.kill_now();
        }
        if let Some(device) = self.vsock_device() {
            device.kill_now();
        }
    }
}

/// The name a machine of the configuration will have: its own, or its start script's.
fn spec_name(spec: &MachineSpec) -> String {
    spec.name.clone().unwrap_or_else(|| crate::config::machine_name_from_command(&spec.start_command))
}

impl Backdoor {
    /// Start the backdoor's side of the run: `vhost-device-vsock` for the VMs (none without
    /// VMs, as upstream), and ntd's ssh configuration beside its sockets.
    async fn start(tmp_dir: &Path, options: &DriverOptions) -> Result<Backdoor, Error> {
        if options.machines.is_empty() {
            return Ok(Backdoor { device: None, ssh_config: None, why_own_proxy: None });
        }
        let names: Vec<String> = options.machines.iter().map(spec_name).collect();
        // Two VMs of one name would share sockets: say what the machines would have said.
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(Error::DuplicateName(name.clone()));
            }
        }
        let device = log::nested(None, "start vhost-device-vsock", VHostDeviceVsock::start(tmp_dir, &names)).await?;
        let ssh_config = match &options.ssh_proxy {
            Some(proxy) => match ssh_backdoor::write_ssh_config(device.dir(), proxy) {
                Ok(path) => Some(path),
                Err(e) => {
                    log::warning(None, &format!("cannot write ntd's ssh configuration for the backdoor: {e}"));
                    None
                }
            },
            None => None,
        };
        // Upstream's commands need the host's systemd-ssh-proxy, and paths it sees as typed.
        // Only worth asking when ntd has commands of its own to offer instead.
        let why_own_proxy = match &ssh_config {
            None => None,
            Some(_) if !ssh_backdoor::host_ssh_proxies_vsock_mux().await => {
                Some(ssh_backdoor::WhyOwnProxy::NoHostProxy)
            }
            Some(_) => device
                .sockets()
                .iter()
                .any(|(_, pair)| pair.host.to_string_lossy().chars().any(char::is_uppercase))
                .then_some(ssh_backdoor::WhyOwnProxy::CapitalsInPath),
        };
        Ok(Backdoor { device: Some(device), ssh_config, why_own_proxy })
    }
}
