//! `NspawnMachine` for Python: upstream's systemd-nspawn container machine, in its place in the
//! class hierarchy so that test scripts and type stubs naming it work. ntd does not run
//! containers yet: creating one is a clear error.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::BaseMachine;
use crate::errors::machine_error;

/// A systemd-nspawn container (upstream's `NspawnMachine`).
#[pyclass(extends = BaseMachine, subclass, frozen, module = "ntd._native")]
pub struct NspawnMachine;

#[pymethods]
impl NspawnMachine {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyClassInitializer<NspawnMachine> {
        PyClassInitializer::from(BaseMachine::empty(py)).add_subclass(NspawnMachine)
    }

    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(
        &self,
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        Err(machine_error(py, "systemd-nspawn containers are not supported by ntd yet; use QEMU nodes".to_owned()))
    }
}
