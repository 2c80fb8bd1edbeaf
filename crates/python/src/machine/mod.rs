//! The machine classes of the Python API, over ntd-core's machines: `BaseMachine` (what every
//! machine has), `QemuMachine` ([`qemu`]) and `NspawnMachine` ([`nspawn`]), in upstream's
//! hierarchy, so `isinstance` checks and type annotations of test scripts mean what they mean
//! upstream.
//!
//! Each method only extracts its arguments, releases the GIL around the core call and
//! converts the result ([`traced`]); output bytes become `str` here, with undecodable bytes
//! replaced, as upstream decodes them. Python subclasses are allowed, as downstream drivers
//! subclass `QemuMachine`: the native part is set up by `__init__`, so a subclass's own
//! `__init__` with other arguments works as long as it calls `super().__init__(...)`.

pub mod nspawn;
pub mod qemu;
pub mod traced;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ntd_core::log;
use ntd_core::machine::{ExecuteOptions, Machine};
use pyo3::exceptions::{PyDeprecationWarning, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::duration::PyDuration;
use crate::errors::{machine_error, machine_to_pyerr};
use crate::logger::{LogBlock, attributes};
use crate::runtime::block_on;
use traced::{Traced, drive, text};

/// Upstream's default timeout of waits and `execute`.
pub const DEFAULT_TIMEOUT: PyDuration = PyDuration::secs(900);

/// What every machine has (upstream's `BaseMachine`): commands, waits, systemd, files and
/// logging. Not made directly: create a `QemuMachine` or an `NspawnMachine`.
#[pyclass(subclass, frozen, module = "ntd._native")]
pub struct BaseMachine {
    /// Set once by the subclass's `__init__` (or when the driver wraps a machine).
    core: OnceLock<Machine>,
    /// Upstream's `callbacks`: called before every command (the driver's polling conditions).
    callbacks: Py<PyList>,
}

impl BaseMachine {
    /// A machine whose native part is not set up yet.
    pub(crate) fn empty(py: Python<'_>) -> BaseMachine {
        BaseMachine { core: OnceLock::new(), callbacks: PyList::empty(py).unbind() }
    }

    /// Set up the native part: `core` runs this object's `callbacks` before every command.
    pub(crate) fn init(&self, py: Python<'_>, core: Machine) -> PyResult<()> {
        let list = self.callbacks.clone_ref(py);
        core.set_callbacks(vec![Arc::new(move || {
            Python::attach(|py| {
                for callback in list.bind(py).iter() {
                    callback.call0()?;
                }
                Ok::<_, PyErr>(())
            })
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })]);
        self.core.set(core).map_err(|_| machine_error(py, "the machine is already initialized".to_owned()))
    }

    /// The core machine; an error until `__init__` ran.
    pub fn core(&self) -> PyResult<&Machine> {
        self.core.get().ok_or_else(|| {
            Python::attach(|py| {
                machine_error(py, "the machine is not initialized: its __init__ was not called".to_owned())
            })
        })
    }

    /// Run `body` as one method call: inside its span (see [`Traced::run`]).
    pub(crate) fn traced<T>(
        &self,
        traced: Traced<'_>,
        body: impl FnOnce(&tracing::Span) -> PyResult<T>,
    ) -> PyResult<T> {
        traced.run(self.core()?.name(), body)
    }

    /// One core call as one method call.
    pub(crate) fn call<T: Send>(
        &self,
        py: Python<'_>,
        traced: Traced<'_>,
        future: impl Future<Output = Result<T, ntd_core::machine::Error>> + Send,
    ) -> PyResult<T> {
        self.traced(traced, |span| drive(py, span, future))
    }
}

#[pymethods]
impl BaseMachine {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(py: Python<'_>, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> BaseMachine {
        BaseMachine::empty(py)
    }

    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        Err(PyTypeError::new_err("BaseMachine is abstract: create a QemuMachine or an NspawnMachine"))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let class = slf.get_type().name()?;
        let name = slf.get().core.get().map(Machine::name).unwrap_or("?");
        Ok(format!("<{class} '{name}'>"))
    }

    // --- attributes -------------------------------------------------------------------

    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.core()?.name().to_owned())
    }

    #[getter]
    fn out_dir(&self) -> PyResult<PathBuf> {
        Ok(self.core()?.out_dir().to_owned())
    }

    #[getter]
    fn tmp_dir(&self) -> PyResult<PathBuf> {
        Ok(self.core()?.tmp_dir().to_owned())
    }

    #[getter]
    fn state_dir(&self) -> PyResult<PathBuf> {
        Ok(self.core()?.state_dir().to_owned())
    }

    #[getter]
    fn shared_dir(&self) -> PyResult<PathBuf> {
        Ok(self.core()?.shared_dir().to_owned())
    }

    #[getter]
    fn keep_machine_state(&self) -> PyResult<bool> {
        Ok(self.core()?.keep_machine_state())
    }

    /// Upstream's era-A name of `keep_machine_state`.
    #[getter]
    fn keep_vm_state(&self) -> PyResult<bool> {
        self.keep_machine_state()
    }

    #[getter]
    fn callbacks(&self, py: Python<'_>) -> Py<PyList> {
        self.callbacks.clone_ref(py)
    }

    // --- logging ----------------------------------------------------------------------

    /// Log a line tagged with this machine.
    fn log(&self, msg: &str) -> PyResult<()> {
        self.core()?.log(msg);
        Ok(())
    }

    /// Log a console line of this machine.
    fn log_serial(&self, msg: &str) -> PyResult<()> {
        log::serial(self.core()?.name(), msg);
        Ok(())
    }

    /// A nested log block tagged with this machine.
    #[pyo3(signature = (msg, attrs=None))]
    fn nested(&self, msg: String, attrs: Option<&Bound<'_, PyDict>>) -> PyResult<LogBlock> {
        let (_, attrs) = attributes(attrs)?;
        Ok(LogBlock::new(Some(self.core()?.name().to_owned()), msg, attrs))
    }

    /// Run the callbacks (polling conditions).
    fn run_callbacks(&self, py: Python<'_>) -> PyResult<()> {
        self.core()?.run_callbacks().map_err(|e| machine_to_pyerr(py, e))
    }

    /// Waits poll from the host while a polling condition is active (set by the driver).
    fn _set_host_side_waits(&self, enable: bool) -> PyResult<()> {
        self.core()?.set_host_side_waits(enable);
        Ok(())
    }

    // --- lifecycle --------------------------------------------------------------------

    /// Running and ready for commands.
    fn is_up(&self) -> PyResult<bool> {
        Ok(self.core()?.is_up())
    }

    /// Whether commands run at once: the machine runs and is ready (a VM's `is_up()`; a
    /// container may be up and still booting). The driver syncs only such machines at the end.
    fn _ready_for_commands(&self) -> PyResult<bool> {
        Ok(self.core()?.is_up())
    }

    /// Start the machine; does not wait for it to boot.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("start"), self.core()?.start())
    }

    /// Wait until the machine's process exits (does not cause it).
    fn wait_for_shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("wait_for_shutdown"), self.core()?.wait_for_shutdown())
    }

    /// Stop the machine's process and close everything (used by the driver's cleanup).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core()?.release())
    }

    /// Remove the machine's state directory.
    fn cleanup_statedir(&self) -> PyResult<()> {
        self.core()?.cleanup_statedir();
        Ok(())
    }

    // --- commands ---------------------------------------------------------------------

    /// Run a shell command; return `(status, stdout)`.
    #[pyo3(signature = (command, check_return=true, check_output=true, timeout=Some(DEFAULT_TIMEOUT)))]
    fn execute(
        &self,
        py: Python<'_>,
        command: &str,
        check_return: bool,
        check_output: bool,
        timeout: Option<PyDuration>,
    ) -> PyResult<(i32, String)> {
        let timeout = timeout.map(|t| t.0);
        let options = ExecuteOptions { check_return, check_output, timeout };
        let traced = Traced::new("execute").command(command).timeout(timeout);
        self.traced(traced, |span| {
            let (status, output) = drive(py, span, self.core()?.execute(command, options))?;
            span.record("exit_code", status);
            span.record("output.bytes", output.len() as u64);
            Ok((status, text(output)))
        })
    }

    /// Run each command; raise if one fails; return the concatenated output.
    #[pyo3(signature = (*commands, timeout=None))]
    fn succeed(&self, py: Python<'_>, commands: &Bound<'_, PyTuple>, timeout: Option<PyDuration>) -> PyResult<String> {
        let commands: Vec<String> = commands.extract()?;
        let joined = commands.join("\n");
        let timeout = timeout.map(|t| t.0);
        self.traced(Traced::new("succeed").command(&joined).timeout(timeout), |span| {
            let output = drive(py, span, self.core()?.succeed(&commands, timeout))?;
            span.record("exit_code", 0);
            span.record("output.bytes", output.len() as u64);
            Ok(text(output))
        })
    }

    /// Run each command; raise if one succeeds; return the concatenated output.
    #[pyo3(signature = (*commands, timeout=None))]
    fn fail(&self, py: Python<'_>, commands: &Bound<'_, PyTuple>, timeout: Option<PyDuration>) -> PyResult<String> {
        let commands: Vec<String> = commands.extract()?;
        let joined = commands.join("\n");
        let timeout = timeout.map(|t| t.0);
        self.traced(Traced::new("fail").command(&joined).timeout(timeout), |span| {
            let output = drive(py, span, self.core()?.fail(&commands, timeout))?;
            span.record("output.bytes", output.len() as u64);
            Ok(text(output))
        })
    }

    /// Retry a command once a second until it succeeds; return its output. Each attempt is
    /// bounded by `attempt_timeout` (default: `timeout`).
    #[pyo3(signature = (command, timeout=DEFAULT_TIMEOUT, attempt_timeout=None))]
    fn wait_until_succeeds(
        &self,
        py: Python<'_>,
        command: &str,
        timeout: PyDuration,
        attempt_timeout: Option<PyDuration>,
    ) -> PyResult<String> {
        let traced = Traced::new("wait_until_succeeds").command(command).timeout(Some(timeout.0));
        let output =
            self.call(py, traced, self.core()?.wait_until_succeeds(command, timeout.0, attempt_timeout.map(|t| t.0)))?;
        Ok(text(output))
    }

    /// Retry a command once a second until it fails; return its output.
    #[pyo3(signature = (command, timeout=DEFAULT_TIMEOUT, attempt_timeout=None))]
    fn wait_until_fails(
        &self,
        py: Python<'_>,
        command: &str,
        timeout: PyDuration,
        attempt_timeout: Option<PyDuration>,
    ) -> PyResult<String> {
        let traced = Traced::new("wait_until_fails").command(command).timeout(Some(timeout.0));
        let output =
            self.call(py, traced, self.core()?.wait_until_fails(command, timeout.0, attempt_timeout.map(|t| t.0)))?;
        Ok(text(output))
    }

    /// Sleep in guest time (`sleep N` in the guest).
    #[pyo3(signature = (secs=None, duration=None))]
    fn sleep(&self, py: Python<'_>, secs: Option<PyDuration>, duration: Option<PyDuration>) -> PyResult<()> {
        // Upstream's newest rules and words.
        let duration = match (secs, duration) {
            (Some(_), Some(_)) => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "sleep() got both 'duration' and 'secs'. Pass only 'duration'",
                ));
            }
            (None, None) => {
                return Err(pyo3::exceptions::PyTypeError::new_err("sleep() missing required argument 'duration'"));
            }
            (Some(duration), None) | (None, Some(duration)) => duration,
        };
        self.call(py, Traced::new("sleep"), self.core()?.sleep(duration.0))
    }

    // --- systemd ----------------------------------------------------------------------

    /// Run `systemctl <q>` (as `user` with `--user`); return `(status, output)`.
    #[pyo3(signature = (q, user=None))]
    fn systemctl(&self, py: Python<'_>, q: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        let (status, output) = self.call(py, Traced::new("systemctl").argument(q), self.core()?.systemctl(q, user))?;
        Ok((status, text(output)))
    }

    /// `systemctl start <job>`.
    #[pyo3(signature = (jobname, user=None))]
    fn start_job(&self, py: Python<'_>, jobname: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        let (status, output) =
            self.call(py, Traced::new("start_job").argument(jobname), self.core()?.start_job(jobname, user))?;
        Ok((status, text(output)))
    }

    /// `systemctl stop <job>`.
    #[pyo3(signature = (jobname, user=None))]
    fn stop_job(&self, py: Python<'_>, jobname: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        let (status, output) =
            self.call(py, Traced::new("stop_job").argument(jobname), self.core()?.stop_job(jobname, user))?;
        Ok((status, text(output)))
    }

    /// Every property of a unit, from `systemctl show`.
    #[pyo3(signature = (unit, user=None))]
    fn get_unit_info(
        &self,
        py: Python<'_>,
        unit: &str,
        user: Option<&str>,
    ) -> PyResult<std::collections::BTreeMap<String, String>> {
        self.call(py, Traced::new("get_unit_info").argument(unit), self.core()?.get_unit_info(unit, user))
    }

    /// One property of a unit.
    #[pyo3(signature = (unit, property, user=None))]
    fn get_unit_property(&self, py: Python<'_>, unit: &str, property: &str, user: Option<&str>) -> PyResult<String> {
        self.call(
            py,
            Traced::new("get_unit_property").argument(format_args!("{unit} {property}")),
            self.core()?.get_unit_property(unit, property, user),
        )
    }

    /// Raise unless the unit is in `require_state` now.
    #[pyo3(signature = (unit, require_state="active"))]
    fn require_unit_state(&self, py: Python<'_>, unit: &str, require_state: &str) -> PyResult<()> {
        self.call(
            py,
            Traced::new("require_unit_state").argument(unit),
            self.core()?.require_unit_state(unit, require_state),
        )
    }

    /// Wait until a unit is active; raise if it fails or is inactive with nothing pending.
    #[pyo3(signature = (unit, user=None, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_unit(&self, py: Python<'_>, unit: &str, user: Option<&str>, timeout: PyDuration) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_unit").argument(unit).timeout(Some(timeout.0)),
            self.core()?.wait_for_unit(unit, user, timeout.0),
        )
    }

    /// The old name of `wait_for_unit` (deprecated upstream long ago; older nixpkgs scripts
    /// still call it).
    #[pyo3(signature = (jobname, user=None, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_job(&self, py: Python<'_>, jobname: &str, user: Option<&str>, timeout: PyDuration) -> PyResult<()> {
        PyErr::warn(py, &py.get_type::<PyDeprecationWarning>(), c"Use wait_for_unit() instead", 1)?;
        self.wait_for_unit(py, jobname, user, timeout)
    }

    /// Wait until a unit's ActiveState is `state` (e.g. `failed`, `activating`).
    #[pyo3(signature = (unit, state, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_unit_active_state(&self, py: Python<'_>, unit: &str, state: &str, timeout: PyDuration) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_unit_active_state").argument(unit).timeout(Some(timeout.0)),
            self.core()?.wait_for_unit_active_state(unit, state, timeout.0),
        )
    }

    // --- waits ------------------------------------------------------------------------

    /// Wait until a file exists in the guest.
    #[pyo3(signature = (filename, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_file(&self, py: Python<'_>, filename: &str, timeout: PyDuration) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_file").argument(filename).timeout(Some(timeout.0)),
            self.core()?.wait_for_file(filename, timeout.0),
        )
    }

    /// Wait until something listens on a TCP port.
    #[pyo3(signature = (port, addr="localhost", timeout=DEFAULT_TIMEOUT))]
    fn wait_for_open_port(&self, py: Python<'_>, port: u16, addr: &str, timeout: PyDuration) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_open_port").argument(format_args!("{addr}:{port}")).timeout(Some(timeout.0)),
            self.core()?.wait_for_open_port(port, addr, timeout.0),
        )
    }

    /// Wait until nothing listens on a TCP port.
    #[pyo3(signature = (port, addr="localhost", timeout=DEFAULT_TIMEOUT))]
    fn wait_for_closed_port(&self, py: Python<'_>, port: u16, addr: &str, timeout: PyDuration) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_closed_port").argument(format_args!("{addr}:{port}")).timeout(Some(timeout.0)),
            self.core()?.wait_for_closed_port(port, addr, timeout.0),
        )
    }

    /// Wait until something listens on a UNIX-domain socket.
    #[pyo3(signature = (addr, is_datagram=false, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_open_unix_socket(
        &self,
        py: Python<'_>,
        addr: &str,
        is_datagram: bool,
        timeout: PyDuration,
    ) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_open_unix_socket").argument(addr).timeout(Some(timeout.0)),
            self.core()?.wait_for_open_unix_socket(addr, is_datagram, timeout.0),
        )
    }

    // --- files ------------------------------------------------------------------------

    /// Copy a host file or directory into the guest (through the shared directory).
    fn copy_from_host(&self, py: Python<'_>, source: PathBuf, target: &str) -> PyResult<()> {
        self.call(
            py,
            Traced::new("copy_from_host").argument(source.display()),
            self.core()?.copy_from_host(&source, target),
        )
    }

    /// Copy a host file into the guest inside a shell command (no shared directory needed).
    fn copy_from_host_via_shell(&self, py: Python<'_>, source: PathBuf, target: &str) -> PyResult<()> {
        self.call(
            py,
            Traced::new("copy_from_host_via_shell").argument(source.display()),
            self.core()?.copy_from_host_via_shell(&source, target),
        )
    }

    /// Copy a guest file or directory to `<out_dir>/<target_dir>/`.
    #[pyo3(signature = (source, target_dir=""))]
    fn copy_from_machine(&self, py: Python<'_>, source: &str, target_dir: &str) -> PyResult<()> {
        self.call(
            py,
            Traced::new("copy_from_machine").argument(source),
            self.core()?.copy_from_machine(source, target_dir),
        )
        .map(drop)
    }

    /// Deprecated name of `copy_from_machine`.
    #[pyo3(signature = (source, target_dir=""))]
    fn copy_from_vm(&self, py: Python<'_>, source: &str, target_dir: &str) -> PyResult<()> {
        PyErr::warn(py, &py.get_type::<PyDeprecationWarning>(), c"Use copy_from_machine() instead", 1)?;
        self.copy_from_machine(py, source, target_dir)
    }
}
