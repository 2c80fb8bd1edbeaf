//! Durations as test scripts pass them: seconds (`int` or `float`) or `datetime.timedelta`,
//! like upstream's newest `Duration = timedelta | int | float`.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDelta, PyDeltaAccess};

/// A duration argument.
#[derive(Debug, Clone, Copy)]
pub struct PyDuration(pub Duration);

impl PyDuration {
    /// A whole number of seconds (for argument defaults).
    pub const fn secs(secs: u64) -> PyDuration {
        PyDuration(Duration::from_secs(secs))
    }
}

fn from_seconds(secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!("invalid duration {secs}: must be a finite number of seconds, not negative"))
    })
}

impl<'a, 'py> FromPyObject<'a, 'py> for PyDuration {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(delta) = obj.cast::<PyDelta>() {
            let secs = f64::from(delta.get_days()) * 86_400.0
                + f64::from(delta.get_seconds())
                + f64::from(delta.get_microseconds()) / 1e6;
            return from_seconds(secs).map(PyDuration);
        }
        // bool is an int in Python, but `timeout=True` is a mistake worth reporting.
        if obj.is_instance_of::<pyo3::types::PyBool>() {
            return Err(PyTypeError::new_err(format!("expected a duration, got bool: {}", obj.repr()?)));
        }
        match obj.extract::<f64>() {
            Ok(secs) => from_seconds(secs).map(PyDuration),
            // Upstream's words (`as_timedelta`).
            Err(_) => Err(PyTypeError::new_err(format!(
                "expected a timedelta, int, or float duration, got {}",
                obj.get_type().name()?
            ))),
        }
    }
}
