//! The native driver behind a test run, for Python: [`ntd_core::Driver`] with its machines and
//! VLANs as Python objects (the script-facing half is `ntd/driver.py`).
//!
//! The run's policy — the global timeout, SIGTERM, a dying switch — is the core's
//! ([`ntd_core::driver::watchdog`]); this module only tells it how to interrupt a Python test
//! script (`KeyboardInterrupt` in the script's thread) and, for the embedding command line,
//! what to do with a script that does not stop ([`set_abandon_hook`]). The library never
//! exits its user's process.

use std::path::PathBuf;
use std::sync::OnceLock;

use ntd_core::config::MachineSpec;
use ntd_core::driver::artifacts::{Artifact, FailedCommand, Failure, FailureKind};
use ntd_core::driver::{DriverOptions, Stop, StopHooks};
use ntd_core::machine::nspawn::NspawnMachine as CoreNspawn;
use ntd_core::machine::qemu::QemuMachine as CoreQemu;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::duration::PyDuration;
use crate::errors::{machine_error, to_pyerr};
use crate::machine::nspawn::NspawnMachine;
use crate::machine::qemu::QemuMachine;
use crate::runtime::{block_on, block_on_uninterrupted, main_thread, runtime};

/// A VLAN switch, as the script's `vlans` and `vlan<N>` see it.
#[pyclass(frozen, module = "ntd._native")]
pub struct VLan {
    #[pyo3(get)]
    nr: u32,
    #[pyo3(get)]
    socket_dir: std::path::PathBuf,
    #[pyo3(get)]
    pid: u32,
    /// The run the switch belongs to, and its place in the run's VLANs.
    driver: ntd_core::Driver,
    index: usize,
}

#[pymethods]
impl VLan {
    fn __repr__(&self) -> String {
        format!("<Vlan Nr. {}>", self.nr)
    }

    /// Stop the switch (upstream's `stop()`): the machines on it lose the link. The run does
    /// not count it as a switch that died.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        match self.driver.vlans().get(self.index) {
            Some(vlan) => block_on(py, vlan.stop()),
            None => Ok(()),
        }
    }
}

/// What the embedding program does with a script that did not stop after the watchdog
/// stopped the run (see [`StopHooks::abandon`]).
static ABANDON: OnceLock<fn(&Stop)> = OnceLock::new();

/// Set what happens to a script that does not stop after the global timeout or SIGTERM: the
/// `nixos-test-driver` binary writes its reports and exits. Without it (the wheel), the
/// machines are stopped and the script is left to finish.
pub fn set_abandon_hook(hook: fn(&Stop)) {
    let _ = ABANDON.set(hook);
}

/// Send SIGINT to Python's main thread: its handler raises `KeyboardInterrupt` there, also
/// inside `time.sleep` and inside a blocked machine call.
pub fn interrupt_main_thread() {
    if let Some(main) = main_thread() {
        // The main thread lives as long as the process; a failure means there is nothing left
        // to interrupt.
        let _ = nix::sys::pthread::pthread_kill(main, nix::sys::signal::Signal::SIGINT);
    }
}

/// The machines and VLANs of a test run.
#[pyclass(frozen, module = "ntd._native")]
pub struct Driver {
    core: ntd_core::Driver,
    machines: Py<PyList>,
    vlans: Py<PyList>,
}

impl Driver {
    /// Start the driver (VLAN switches, machine state directories) for a test run.
    pub fn start(py: Python<'_>, options: DriverOptions) -> PyResult<Py<Driver>> {
        let core = block_on_uninterrupted(py, ntd_core::Driver::start(options))?.map_err(|e| to_pyerr(py, e.into()))?;
        core.set_stop_hooks(StopHooks {
            interrupt: Box::new(|_| interrupt_main_thread()),
            abandon: ABANDON.get().map(|hook| Box::new(*hook) as ntd_core::driver::StopHook),
        });
        let machines = PyList::empty(py);
        for machine in core.machines() {
            if let Some(qemu) = CoreQemu::from_machine(machine) {
                machines.append(QemuMachine::wrap(py, qemu)?)?;
            } else if let Some(container) = CoreNspawn::from_machine(machine) {
                machines.append(NspawnMachine::wrap(py, container)?)?;
            } else {
                return Err(machine_error(py, format!("{machine:?} is of a kind Python cannot use yet")));
            }
        }
        let vlans = PyList::empty(py);
        for (index, vlan) in core.vlans().iter().enumerate() {
            vlans.append(Py::new(
                py,
                VLan {
                    nr: vlan.nr(),
                    socket_dir: vlan.socket_dir().to_owned(),
                    pid: vlan.pid(),
                    driver: core.clone(),
                    index,
                },
            )?)?;
        }
        Py::new(py, Driver { core, machines: machines.unbind(), vlans: vlans.unbind() })
    }

    /// The core driver.
    pub fn core(&self) -> &ntd_core::Driver {
        &self.core
    }

    /// Make SIGTERM stop the run (see [`ntd_core::Driver::terminate_on_sigterm`]). For the
    /// `nixos-test-driver` binary; a library user owns their signals.
    pub fn terminate_on_sigterm(&self, interactive: bool) -> PyResult<()> {
        let _runtime = runtime()?.enter();
        self.core
            .terminate_on_sigterm(interactive)
            .map_err(|e| PyRuntimeError::new_err(format!("cannot handle SIGTERM: {e}")))
    }
}

#[pymethods]
impl Driver {
    /// Start a driver for library use: VLAN switches up, machines created (not booted).
    /// `machines` (VMs) and `containers` pair an optional name with a start command, as
    /// `driverConfiguration.json` and `--start-scripts` give them.
    #[staticmethod]
    #[pyo3(signature = (machines, vlans=Vec::new(), out_dir=None, keep_machine_state=false, global_timeout=None, connect_timeout=None, containers=Vec::new(), enable_ssh_backdoor=false, ssh_proxy=None, failure_artifacts=false, vnc=false))]
    #[allow(clippy::too_many_arguments)] // the Python keyword arguments
    fn create(
        py: Python<'_>,
        machines: Vec<(Option<String>, String)>,
        vlans: Vec<u32>,
        out_dir: Option<std::path::PathBuf>,
        keep_machine_state: bool,
        global_timeout: Option<PyDuration>,
        connect_timeout: Option<PyDuration>,
        containers: Vec<(Option<String>, String)>,
        enable_ssh_backdoor: bool,
        ssh_proxy: Option<Vec<String>>,
        failure_artifacts: bool,
        vnc: bool,
    ) -> PyResult<Py<Driver>> {
        let out_dir = match out_dir {
            Some(dir) => dir,
            None => std::env::current_dir().map_err(|e| machine_error(py, format!("no current directory: {e}")))?,
        };
        let specs = machines.into_iter().map(|(name, start_command)| MachineSpec { name, start_command }).collect();
        let mut options = DriverOptions::new(specs, out_dir);
        options.containers =
            containers.into_iter().map(|(name, start_command)| MachineSpec { name, start_command }).collect();
        options.vlans = vlans;
        options.keep_machine_state = keep_machine_state;
        if let Some(timeout) = connect_timeout {
            options.connect_timeout = timeout.0;
        }
        if let Some(timeout) = global_timeout {
            options.global_timeout = timeout.0;
        }
        options.ssh_backdoor = enable_ssh_backdoor;
        options.ssh_proxy = ssh_proxy;
        options.failure_artifacts = failure_artifacts;
        options.vnc = vnc;
        Driver::start(py, options)
    }

    /// The machines, sorted by name.
    #[getter]
    fn machines(&self, py: Python<'_>) -> Py<PyList> {
        self.machines.clone_ref(py)
    }

    /// The VLAN switches.
    #[getter]
    fn vlans(&self, py: Python<'_>) -> Py<PyList> {
        self.vlans.clone_ref(py)
    }

    /// The output directory (`-o`): where screenshots and copied files go.
    #[getter]
    fn out_dir(&self) -> std::path::PathBuf {
        self.core.out_dir().to_owned()
    }

    /// The global timeout in seconds.
    #[getter]
    fn global_timeout(&self) -> f64 {
        self.core.global_timeout().as_secs_f64()
    }

    /// Whether the run has the SSH backdoor (upstream's `config.enable_ssh_backdoor`).
    #[getter]
    fn enable_ssh_backdoor(&self) -> bool {
        self.core.ssh_backdoor()
    }

    /// The SSH backdoor's vhost-device-vsock (upstream's `driver.vhost_vsock`): its pid, its
    /// socket directory and each VM's `(name, guest socket, host socket, cid)`; `None` without
    /// the backdoor or without VMs.
    #[getter]
    #[allow(clippy::type_complexity)] // the plain tuples Python gets
    fn vhost_vsock(&self) -> Option<(u32, PathBuf, Vec<(String, PathBuf, PathBuf, u32)>)> {
        let device = self.core.vsock_device()?;
        let sockets = device
            .sockets()
            .iter()
            .map(|(name, pair)| (name.clone(), pair.guest.clone(), pair.host.clone(), pair.cid))
            .collect();
        Some((device.pid(), device.dir().to_owned(), sockets))
    }

    /// ntd's ssh configuration for the backdoor (`ssh -F <it>`), if one was written.
    #[getter]
    fn ssh_config(&self) -> Option<PathBuf> {
        self.core.ssh_config().map(Into::into)
    }

    /// Upstream's `dump_machine_ssh()` text, or `None` without the backdoor; `styled`: with
    /// upstream's bold (terminal escapes).
    #[pyo3(signature = (styled=true))]
    fn ssh_backdoor_listing(&self, styled: bool) -> Option<String> {
        self.core.ssh_backdoor_listing(styled)
    }

    /// The `--dump-vsocks <offset>` listing of older nixpkgs (kernel vsock devices).
    #[pyo3(signature = (offset, styled=true))]
    fn legacy_ssh_listing(&self, offset: u32, styled: bool) -> String {
        self.core.legacy_ssh_listing(offset, styled)
    }

    /// Why the run was stopped from outside the script (the global timeout, SIGTERM, a dead
    /// switch), as the test report says it; `None` while it was not.
    #[getter]
    fn stop_reason(&self) -> Option<String> {
        self.core.stop_reason().map(|stop| stop.message())
    }

    /// Start every machine at once; raise `MachineError` naming each that failed.
    fn start_all(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.start_all())?.map_err(|e| to_pyerr(py, e.into()))
    }

    /// Wait for every machine to shut down.
    fn join_all(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.join_all())?.map_err(|e| to_pyerr(py, e.into()))
    }

    /// A machine from any start command, outside `machines`; the driver stops it at cleanup.
    #[pyo3(signature = (start_command, name=None, keep_machine_state=false))]
    fn create_machine(
        &self,
        py: Python<'_>,
        start_command: &str,
        name: Option<String>,
        keep_machine_state: bool,
    ) -> PyResult<Py<QemuMachine>> {
        let machine =
            self.core.create_machine(start_command, name, keep_machine_state).map_err(|e| to_pyerr(py, e.into()))?;
        QemuMachine::wrap(py, machine)
    }

    /// Arm the global timeout (once): when it fires, every machine and switch is killed and
    /// the test script is interrupted.
    fn arm_global_timeout(&self) -> PyResult<()> {
        let _runtime = runtime()?.enter();
        self.core.arm_global_timeout();
        Ok(())
    }

    /// The test script is over: the global timeout and the other watches stop.
    fn finish(&self) {
        self.core.finish();
    }

    /// Release every machine (created ones too) and stop every switch. Not interruptible.
    fn cleanup(&self, py: Python<'_>) -> PyResult<()> {
        block_on_uninterrupted(py, self.core.cleanup())
    }

    /// The test failed with `kind` (`command-failed`, `wait-failed`, `assertion-failed`,
    /// `global-timeout`, `error`): write its failure artifacts into the output directory, if the
    /// driver was started with `failure_artifacts`, and return them as `(machine, what, path)`.
    /// `machine`, `command` and `output` name the failed command, for a failed command. A run
    /// collects once; later calls return what the first wrote.
    #[pyo3(signature = (kind, machine=None, command=None, output=None))]
    fn collect_failure_artifacts(
        &self,
        py: Python<'_>,
        kind: &str,
        machine: Option<String>,
        command: Option<String>,
        output: Option<&Bound<'_, PyBytes>>,
    ) -> PyResult<Vec<(String, String, PathBuf)>> {
        let kind = FailureKind::from_slug(kind)
            .ok_or_else(|| PyValueError::new_err(format!("unknown failure kind {kind:?}")))?;
        let command = match (machine, command) {
            (Some(machine), Some(command)) => Some(FailedCommand {
                machine,
                command,
                output: output.map(|o| o.as_bytes().to_vec()).unwrap_or_default(),
            }),
            _ => None,
        };
        let failure = Failure { kind, command };
        let artifacts = block_on_uninterrupted(py, self.core.collect_failure_artifacts(&failure))?;
        Ok(artifacts.into_iter().map(artifact_tuple).collect())
    }

    /// The failure artifacts written so far, as `(machine, what, path)`.
    #[getter]
    fn failure_artifacts(&self) -> Vec<(String, String, PathBuf)> {
        self.core.failure_artifacts().into_iter().map(artifact_tuple).collect()
    }

    /// Kill every machine and switch now, without waiting.
    fn kill_now(&self) {
        self.core.kill_now();
    }
}

fn artifact_tuple(artifact: Artifact) -> (String, String, PathBuf) {
    (artifact.machine, artifact.what.to_owned(), artifact.path)
}
