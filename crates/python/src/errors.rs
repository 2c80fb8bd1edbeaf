//! ntd-core errors as Python exceptions of upstream's classes (`ntd.errors`).
//!
//! The classes are defined in Python (so they can inherit from both `TestScriptError` and
//! `AssertionError`, as upstream's do) and looked up once.

use ntd_core::ErrorKind;
use ntd_core::driver::artifacts::FailureKind;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};

fn class(py: Python<'_>, cell: &'static PyOnceLock<Py<PyType>>, name: &str) -> PyResult<Py<PyType>> {
    cell.get_or_try_init(py, || {
        let class = py.import("ntd.errors")?.getattr(name)?;
        Ok(class.cast_into::<PyType>()?.unbind())
    })
    .map(|class| class.clone_ref(py))
}

/// A `RequestedAssertionFailed` with `message`.
pub fn assertion_failed(py: Python<'_>, message: String) -> PyErr {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match class(py, &CLASS, "RequestedAssertionFailed") {
        Ok(class) => PyErr::from_type(class.into_bound(py), message),
        Err(e) => e,
    }
}

/// A `MachineError` with `message`.
pub fn machine_error(py: Python<'_>, message: String) -> PyErr {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match class(py, &CLASS, "MachineError") {
        Ok(class) => PyErr::from_type(class.into_bound(py), message),
        Err(e) => e,
    }
}

/// Convert an ntd-core error into the exception upstream raises in its place.
pub fn to_pyerr(py: Python<'_>, error: ntd_core::Error) -> PyErr {
    // A failing callback (a Python polling condition) passes its own exception through.
    if let ntd_core::Error::Machine(ntd_core::machine::Error::Callback(source)) = error {
        return match source.downcast::<PyErr>() {
            Ok(pyerr) => *pyerr,
            Err(other) => PyRuntimeError::new_err(other.to_string()),
        };
    }
    let message = ntd_core::full_message(&error);
    let (failure, command) = match &error {
        ntd_core::Error::Machine(error) => (error.failure_kind(), error.command_output()),
        _ => (FailureKind::Error, None),
    };
    let exception = match error.kind() {
        ErrorKind::AssertionFailed => assertion_failed(py, message),
        ErrorKind::Timeout => PyTimeoutError::new_err(message),
        ErrorKind::Machine | ErrorKind::Config => machine_error(py, message),
    };
    annotate(py, &exception, failure, command);
    exception
}

/// Say on the exception what failed, for the failure artifacts should it end the test:
/// `ntd_failure` (the kind's name), and for a failed command `ntd_command` and `ntd_output`
/// (its stdout). The machine (`ntd_machine`) is added by the method call that raised it.
fn annotate(py: Python<'_>, exception: &PyErr, failure: FailureKind, command: Option<(&str, &[u8])>) {
    let value = exception.value(py);
    // Setting attributes on a fresh exception object cannot fail; if it did, the exception
    // would still be right, only the artifacts poorer.
    let _ = value.setattr("ntd_failure", failure.slug());
    if let Some((command, output)) = command {
        let _ = value.setattr("ntd_command", command);
        let _ = value.setattr("ntd_output", PyBytes::new(py, output));
    }
}

/// Name the machine on an exception a method call of `machine` raised (see [`annotate`]);
/// the innermost call's name stays.
pub fn annotate_machine(py: Python<'_>, exception: &PyErr, machine: &str) {
    let value = exception.value(py);
    if !value.hasattr("ntd_machine").unwrap_or(true) {
        let _ = value.setattr("ntd_machine", machine);
    }
}

/// Convert a machine error.
pub fn machine_to_pyerr(py: Python<'_>, error: ntd_core::machine::Error) -> PyErr {
    to_pyerr(py, error.into())
}
