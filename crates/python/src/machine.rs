//! `QemuMachine` for Python: upstream's machine methods over `ntd_core::Machine`.
//!
//! Each method only extracts its arguments, releases the GIL around the core call
//! ([`crate::runtime::block_on`]) and converts the result; output bytes become `str` here,
//! with undecodable bytes replaced, as upstream decodes them.

use std::path::PathBuf;
use std::sync::Arc;

use ntd_core::machine::{ExecuteOptions, Machine, MachineConfig};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::duration::PyDuration;
use crate::errors::{machine_to_pyerr, to_pyerr};
use crate::logger::{LogBlock, attributes};
use crate::runtime::block_on;

fn text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The base class of every machine (upstream's `BaseMachine`), for typing and `isinstance`.
#[pyclass(subclass, frozen, module = "ntd._native")]
pub struct BaseMachine;

/// A QEMU virtual machine (upstream's `QemuMachine`).
#[pyclass(extends = BaseMachine, frozen, module = "ntd._native")]
pub struct QemuMachine {
    core: Machine,
    /// Upstream's `callbacks`: called before every command (the driver's polling conditions).
    callbacks: Py<PyList>,
}

impl QemuMachine {
    /// The Python side of a core machine: the core runs this object's `callbacks` list.
    fn from_core(py: Python<'_>, core: Machine) -> QemuMachine {
        let callbacks = PyList::empty(py).unbind();
        let list = callbacks.clone_ref(py);
        core.set_callbacks(vec![Arc::new(move || {
            Python::attach(|py| {
                for callback in list.bind(py).iter() {
                    callback.call0()?;
                }
                Ok::<_, PyErr>(())
            })
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })]);
        QemuMachine { core, callbacks }
    }

    /// Wrap a core machine as a Python object.
    pub fn wrap(py: Python<'_>, core: Machine) -> PyResult<Py<QemuMachine>> {
        Py::new(py, PyClassInitializer::from(BaseMachine).add_subclass(QemuMachine::from_core(py, core)))
    }

    /// The core machine.
    pub fn core(&self) -> &Machine {
        &self.core
    }
}

#[pymethods]
impl QemuMachine {
    /// `QemuMachine(out_dir, tmp_dir, start_command, logger=None, name=None,
    /// keep_machine_state=False, callbacks=None)`, as upstream's constructor.
    #[new]
    #[pyo3(signature = (out_dir, tmp_dir, start_command, logger=None, name=None, keep_machine_state=false, callbacks=None))]
    #[allow(clippy::too_many_arguments)] // upstream's constructor signature
    fn new(
        py: Python<'_>,
        out_dir: PathBuf,
        tmp_dir: PathBuf,
        start_command: String,
        logger: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        keep_machine_state: bool,
        callbacks: Option<&Bound<'_, PyList>>,
    ) -> PyResult<PyClassInitializer<QemuMachine>> {
        let _ = logger; // ntd has one logger; upstream's argument is accepted for compatibility.
        let mut config = MachineConfig::new(start_command, tmp_dir, out_dir);
        config.name = name;
        config.keep_machine_state = keep_machine_state;
        let core = Machine::new(config).map_err(|e| machine_to_pyerr(py, e))?;
        let this = QemuMachine::from_core(py, core);
        if let Some(callbacks) = callbacks {
            for callback in callbacks.iter() {
                this.callbacks.bind(py).append(callback)?;
            }
        }
        Ok(PyClassInitializer::from(BaseMachine).add_subclass(this))
    }

    fn __repr__(&self) -> String {
        format!("<QemuMachine '{}'>", self.core.name())
    }

    #[getter]
    fn name(&self) -> &str {
        self.core.name()
    }

    #[getter]
    fn out_dir(&self) -> PathBuf {
        self.core.out_dir().to_owned()
    }

    #[getter]
    fn state_dir(&self) -> PathBuf {
        self.core.state_dir().to_owned()
    }

    #[getter]
    fn shared_dir(&self) -> PathBuf {
        self.core.shared_dir().to_owned()
    }

    #[getter]
    fn tmp_dir(&self) -> PathBuf {
        self.core.shared_dir().parent().map(PathBuf::from).unwrap_or_default()
    }

    #[getter]
    fn monitor_path(&self) -> PathBuf {
        self.core.monitor_path().to_owned()
    }

    #[getter]
    fn qmp_path(&self) -> PathBuf {
        self.core.qmp_path().to_owned()
    }

    #[getter]
    fn shell_path(&self) -> PathBuf {
        self.core.shell_path().to_owned()
    }

    #[getter]
    fn keep_machine_state(&self) -> bool {
        self.core.keep_machine_state()
    }

    /// Upstream's era-A name of `keep_machine_state`.
    #[getter]
    fn keep_vm_state(&self) -> bool {
        self.core.keep_machine_state()
    }

    #[getter]
    fn booted(&self) -> bool {
        self.core.is_booted()
    }

    #[getter]
    fn connected(&self) -> bool {
        self.core.is_connected()
    }

    #[getter]
    fn pid(&self) -> Option<u32> {
        self.core.pid()
    }

    #[getter]
    fn start_command(&self) -> &str {
        self.core.start_command()
    }

    #[getter]
    fn callbacks(&self, py: Python<'_>) -> Py<PyList> {
        self.callbacks.clone_ref(py)
    }

    /// Log a line tagged with this machine.
    fn log(&self, msg: &str) {
        self.core.log(msg);
    }

    /// Log a serial console line of this machine.
    fn log_serial(&self, msg: &str) {
        ntd_core::log::serial(self.core.name(), msg);
    }

    /// A nested log block tagged with this machine.
    #[pyo3(signature = (msg, attrs=None))]
    fn nested(&self, msg: String, attrs: Option<&Bound<'_, PyDict>>) -> PyResult<LogBlock> {
        let (_, attrs) = attributes(attrs)?;
        Ok(LogBlock::new(Some(self.core.name().to_owned()), msg, attrs))
    }

    /// Booted and connected.
    fn is_up(&self) -> bool {
        self.core.is_up()
    }

    /// Run the callbacks (polling conditions).
    fn run_callbacks(&self, py: Python<'_>) -> PyResult<()> {
        self.core.run_callbacks().map_err(|e| machine_to_pyerr(py, e))
    }

    /// Start the VM; does not wait for it to boot.
    #[pyo3(signature = (allow_reboot=false))]
    fn start(&self, py: Python<'_>, allow_reboot: bool) -> PyResult<()> {
        block_on(py, self.core.start(allow_reboot))?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Wait for the guest's backdoor shell, starting the VM if needed.
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.connect())?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Run a shell command; return `(status, stdout)`.
    #[pyo3(signature = (command, check_return=true, check_output=true, timeout=Some(PyDuration::secs(900))))]
    fn execute(
        &self,
        py: Python<'_>,
        command: &str,
        check_return: bool,
        check_output: bool,
        timeout: Option<PyDuration>,
    ) -> PyResult<(i32, String)> {
        let options = ExecuteOptions { check_return, check_output, timeout: timeout.map(|t| t.0) };
        let (status, output) =
            block_on(py, self.core.execute(command, options))?.map_err(|e| machine_to_pyerr(py, e))?;
        Ok((status, text(output)))
    }

    /// Run each command; raise if one fails; return the concatenated output.
    #[pyo3(signature = (*commands, timeout=None))]
    fn succeed(&self, py: Python<'_>, commands: &Bound<'_, PyTuple>, timeout: Option<PyDuration>) -> PyResult<String> {
        let commands: Vec<String> = commands.extract()?;
        let output =
            block_on(py, self.core.succeed(&commands, timeout.map(|t| t.0)))?.map_err(|e| machine_to_pyerr(py, e))?;
        Ok(text(output))
    }

    /// Run each command; raise if one succeeds; return the concatenated output.
    #[pyo3(signature = (*commands, timeout=None))]
    fn fail(&self, py: Python<'_>, commands: &Bound<'_, PyTuple>, timeout: Option<PyDuration>) -> PyResult<String> {
        let commands: Vec<String> = commands.extract()?;
        let output =
            block_on(py, self.core.fail(&commands, timeout.map(|t| t.0)))?.map_err(|e| machine_to_pyerr(py, e))?;
        Ok(text(output))
    }

    /// Run `systemctl <q>` (as `user` with `--user`); return `(status, output)`.
    #[pyo3(signature = (q, user=None))]
    fn systemctl(&self, py: Python<'_>, q: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        let (status, output) = block_on(py, self.core.systemctl(q, user))?.map_err(|e| machine_to_pyerr(py, e))?;
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
        block_on(py, self.core.get_unit_info(unit, user))?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// One property of a unit.
    #[pyo3(signature = (unit, property, user=None))]
    fn get_unit_property(&self, py: Python<'_>, unit: &str, property: &str, user: Option<&str>) -> PyResult<String> {
        block_on(py, self.core.get_unit_property(unit, property, user))?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Wait until a unit is active; raise if it fails or is inactive with nothing pending.
    #[pyo3(signature = (unit, user=None, timeout=PyDuration::secs(900)))]
    fn wait_for_unit(&self, py: Python<'_>, unit: &str, user: Option<&str>, timeout: PyDuration) -> PyResult<()> {
        block_on(py, self.core.wait_for_unit(unit, user, timeout.0))?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Retry a command once a second until it succeeds; return its output.
    #[pyo3(signature = (command, timeout=PyDuration::secs(900)))]
    fn wait_until_succeeds(&self, py: Python<'_>, command: &str, timeout: PyDuration) -> PyResult<String> {
        let output =
            block_on(py, self.core.wait_until_succeeds(command, timeout.0))?.map_err(|e| machine_to_pyerr(py, e))?;
        Ok(text(output))
    }

    /// Retry a command once a second until it fails; return its output.
    #[pyo3(signature = (command, timeout=PyDuration::secs(900)))]
    fn wait_until_fails(&self, py: Python<'_>, command: &str, timeout: PyDuration) -> PyResult<String> {
        let output =
            block_on(py, self.core.wait_until_fails(command, timeout.0))?.map_err(|e| machine_to_pyerr(py, e))?;
        Ok(text(output))
    }

    /// Power the guest off through its shell and wait for QEMU to exit.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.shutdown())?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Make QEMU quit at once (a simulated power failure) and wait for it.
    fn crash(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.crash())?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Wait until QEMU exits (does not cause it).
    fn wait_for_shutdown(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.wait_for_shutdown())?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Stop QEMU and close everything (used by the driver's cleanup).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.release())
    }

    /// Send a command to QEMU's human monitor; return its reply.
    fn send_monitor_command(&self, py: Python<'_>, command: &str) -> PyResult<String> {
        block_on(py, self.core.send_monitor_command(command))?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Wait for a QMP event for which `event_filter(event)` is true; raise `TimeoutError` after
    /// `timeout`.
    #[pyo3(signature = (event_filter, timeout=PyDuration::secs(600)))]
    fn wait_for_qmp_event(&self, py: Python<'_>, event_filter: Py<PyAny>, timeout: PyDuration) -> PyResult<Py<PyAny>> {
        if !self.core.is_booted() {
            return Err(PyRuntimeError::new_err("QMP API is not ready yet, is the VM ready?"));
        }
        let mut filter_error: Option<PyErr> = None;
        let result = block_on(py, async {
            let filter = |event: &serde_json::Value| {
                if filter_error.is_some() {
                    return true;
                }
                Python::attach(|py| {
                    let event = json_to_py(py, event)?;
                    event_filter.bind(py).call1((event,))?.is_truthy()
                })
                .unwrap_or_else(|e| {
                    filter_error = Some(e);
                    true
                })
            };
            self.core.wait_for_qmp_event(filter, timeout.0).await
        })?;
        if let Some(error) = filter_error {
            return Err(error);
        }
        let event = result.map_err(|e| machine_to_pyerr(py, e))?;
        json_to_py(py, &event).map(Bound::unbind)
    }

    /// Everything the serial console printed since the last start.
    fn get_console_log(&self) -> String {
        self.core.console_log()
    }

    /// Type on the serial console (QEMU's stdin).
    fn send_console(&self, py: Python<'_>, chars: &str) -> PyResult<()> {
        block_on(py, self.core.send_console(chars.as_bytes()))?.map_err(|e| machine_to_pyerr(py, e))
    }
}

/// A JSON value as the Python object `json.loads` would give.
pub fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let text = value.to_string();
    py.import("json")?.call_method1("loads", (text,))
}

/// Convert a driver-level error (used by the driver bindings).
pub fn driver_error(py: Python<'_>, error: ntd_core::Error) -> PyErr {
    to_pyerr(py, error)
}
