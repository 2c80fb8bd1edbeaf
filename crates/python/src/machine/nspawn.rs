//! `NspawnMachine` for Python: upstream's systemd-nspawn container machine, over
//! [`ntd_core::machine::nspawn::NspawnMachine`]; the shared methods are inherited from
//! [`BaseMachine`]. What only a VM has (QMP, the monitor, the screen, keys, the serial
//! console) a container does not have: asking for it is Python's own `AttributeError`, as
//! upstream's.

use std::path::PathBuf;
use std::sync::OnceLock;

use ntd_core::machine::nspawn::{NspawnConfig, NspawnMachine as CoreNspawn};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::BaseMachine;
use super::traced::{Traced, drive};
use crate::errors::{machine_error, machine_to_pyerr};

/// A systemd-nspawn container (upstream's `NspawnMachine`).
#[pyclass(extends = BaseMachine, subclass, frozen, module = "ntd._native")]
pub struct NspawnMachine {
    /// Set once by `__init__` (or when the driver wraps a machine).
    nspawn: OnceLock<CoreNspawn>,
}

impl NspawnMachine {
    /// Wrap a core container as a Python object.
    pub fn wrap(py: Python<'_>, core: CoreNspawn) -> PyResult<Py<NspawnMachine>> {
        let base = BaseMachine::empty(py);
        base.init(py, core.machine().clone())?;
        Py::new(py, PyClassInitializer::from(base).add_subclass(NspawnMachine { nspawn: OnceLock::from(core) }))
    }

    /// The core container; an error until `__init__` ran.
    pub fn nspawn(&self) -> PyResult<&CoreNspawn> {
        self.nspawn.get().ok_or_else(|| {
            Python::attach(|py| {
                machine_error(py, "the machine is not initialized: its __init__ was not called".to_owned())
            })
        })
    }
}

#[pymethods]
impl NspawnMachine {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyClassInitializer<NspawnMachine> {
        PyClassInitializer::from(BaseMachine::empty(py)).add_subclass(NspawnMachine { nspawn: OnceLock::new() })
    }

    /// `NspawnMachine(out_dir, name, start_command, tmp_dir, logger=None, callbacks=None,
    /// keep_machine_state=False)`, as upstream's constructor.
    #[pyo3(signature = (out_dir, name, start_command, tmp_dir, logger=None, callbacks=None, keep_machine_state=false))]
    #[allow(clippy::too_many_arguments)] // upstream's constructor signature
    fn __init__(
        slf: &Bound<'_, Self>,
        out_dir: PathBuf,
        name: Option<String>,
        start_command: String,
        tmp_dir: PathBuf,
        logger: Option<&Bound<'_, PyAny>>,
        callbacks: Option<&Bound<'_, PyList>>,
        keep_machine_state: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let _ = logger; // ntd has one logger; upstream's argument is accepted for compatibility.
        let mut config = NspawnConfig::new(start_command, tmp_dir, out_dir);
        config.name = name;
        config.keep_machine_state = keep_machine_state;
        let core = CoreNspawn::new(config).map_err(|e| machine_to_pyerr(py, e))?;
        let base = slf.as_super().get();
        base.init(py, core.machine().clone())?;
        if let Some(callbacks) = callbacks {
            for callback in callbacks.iter() {
                base.callbacks.bind(py).append(callback)?;
            }
        }
        slf.get().nspawn.set(core).map_err(|_| machine_error(py, "the machine is already initialized".to_owned()))
    }

    /// Upstream's `machine_name_from_start_command`: `<name>` of `run-<name>-nspawn`.
    #[staticmethod]
    fn machine_name_from_start_command(start_command: &str) -> PyResult<String> {
        ntd_core::machine::nspawn::machine_name_from_start_command(start_command).ok_or_else(|| {
            pyo3::exceptions::PyAssertionError::new_err(format!("Could not extract node name from {start_command}"))
        })
    }

    // --- attributes -------------------------------------------------------------------

    /// The start script.
    #[getter]
    fn start_command(&self) -> PyResult<String> {
        Ok(self.nspawn()?.start_command().display().to_string())
    }

    /// The `NOTIFY_SOCKET` the start script is given.
    #[getter]
    fn machine_sock_path(&self) -> PyResult<PathBuf> {
        Ok(self.nspawn()?.notify_socket_path().to_owned())
    }

    /// The start script's pid while it runs.
    #[getter]
    fn pid(&self) -> PyResult<Option<u32>> {
        Ok(self.nspawn()?.pid())
    }

    /// Upstream's `get_systemd_process`: the host pid of the container's init, once the
    /// container is ready (waiting for it, and starting it if needed).
    #[getter(get_systemd_process)]
    fn get_systemd_process(&self, py: Python<'_>) -> PyResult<u32> {
        let nspawn = self.nspawn()?;
        Traced::new("get_systemd_process").run(nspawn.name(), |span| drive(py, span, nspawn.systemd_process()))
    }

    /// The test's logger (ntd has one: the script's `log`).
    #[getter]
    fn logger(&self) -> crate::logger::Logger {
        crate::logger::Logger
    }

    // --- lifecycle --------------------------------------------------------------------

    /// Upstream's `is_up()` for a container: its start script runs (it may still be
    /// booting).
    fn is_up(&self) -> PyResult<bool> {
        Ok(self.nspawn()?.is_booted())
    }

    /// `systemctl poweroff` in the container, then wait for its start script to exit.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let nspawn = self.nspawn()?;
        Traced::new("shutdown").run(nspawn.name(), |span| drive(py, span, nspawn.shutdown()))
    }

    /// How to reach the container's SSH server through systemd-nspawn's unix-export socket.
    fn ssh_backdoor_command(&self) -> PyResult<String> {
        Ok(self.nspawn()?.ssh_backdoor_command())
    }
}
