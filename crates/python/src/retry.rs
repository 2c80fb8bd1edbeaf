//! Upstream's `retry` for checks written in Python: the core's schedule
//! ([`ntd_core::retry::Retry`]) driven on the script's thread, where Python code must run, with
//! the pauses interruptible by Ctrl-C and the global timeout.

use std::time::Duration;

use ntd_core::retry::{INTERVAL, Retry};
use pyo3::prelude::*;

use crate::duration::PyDuration;
use crate::errors::assertion_failed;
use crate::runtime::block_on;

/// Call `check(py, last_try)` on the [`Retry`] schedule of `timeout` until it returns true;
/// raise upstream's `RequestedAssertionFailed` when it never does. An exception from the check
/// ends the retrying and is raised.
pub fn retry_python(
    py: Python<'_>,
    timeout: Duration,
    mut check: impl FnMut(Python<'_>, bool) -> PyResult<bool>,
) -> PyResult<()> {
    let mut schedule = Retry::new(timeout);
    while let Some(last_try) = schedule.next_attempt() {
        if check(py, last_try)? {
            return Ok(());
        }
        if !last_try {
            // The timer must be made inside the runtime, hence the async block.
            block_on(py, async { tokio::time::sleep(INTERVAL).await })?;
        }
    }
    Err(assertion_failed(py, schedule.timed_out().to_string()))
}

/// The test script's `retry(fn, timeout)`: call `fn(last_try)` once a second until it
/// returns something true, for `timeout`, then once more with `last_try=True`.
#[pyfunction]
#[pyo3(name = "retry")]
pub fn retry(py: Python<'_>, function: &Bound<'_, PyAny>, timeout: PyDuration) -> PyResult<()> {
    retry_python(py, timeout.0, |_, last_try| function.call1((last_try,))?.is_truthy())
}
