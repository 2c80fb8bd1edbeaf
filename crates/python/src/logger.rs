//! The test script's `log` global: upstream's `AbstractLogger` API over ntd's logging.
//!
//! Lines and blocks go through `ntd_core::log`, so they reach every sink (terminal now;
//! XML, JUnit and OpenTelemetry later) with the same nesting as the Rust side's own blocks.

use std::collections::BTreeMap;

use ntd_core::log::{self, LogLevel};
use pyo3::exceptions::{PySystemExit, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// A nested log block as a context manager (upstream's `nested()` / `subtest()`).
///
/// Entering opens a span on the current thread, so everything logged until `__exit__` —
/// machine calls included — is inside it; an exception ends it without a `finished` line.
#[pyclass(unsendable, module = "ntd._native")]
pub struct LogBlock {
    machine: Option<String>,
    message: String,
    attrs: Vec<(String, String)>,
    /// A subtest's name: its block is also a telemetry span and a JUnit test case.
    subtest: Option<String>,
    entered: Option<tracing::span::EnteredSpan>,
    tracked: Option<log::Tracked>,
}

impl LogBlock {
    /// A block to be entered.
    pub fn new(machine: Option<String>, message: String, attrs: Vec<(String, String)>) -> LogBlock {
        LogBlock { machine, message, attrs, subtest: None, entered: None, tracked: None }
    }

    /// A subtest's block, titled `subtest: <name>`.
    pub fn subtest(name: &str) -> LogBlock {
        LogBlock {
            machine: None,
            message: format!("subtest: {name}"),
            attrs: Vec::new(),
            subtest: Some(name.to_owned()),
            entered: None,
            tracked: None,
        }
    }
}

#[pymethods]
impl LogBlock {
    fn __enter__(mut slf: PyRefMut<'_, Self>) -> PyRefMut<'_, Self> {
        let span = match &slf.subtest {
            Some(name) => log::subtest_block(name),
            None => {
                let attrs: Vec<(&str, &str)> = slf.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                log::block(slf.machine.as_deref(), &slf.message, &attrs)
            }
        };
        slf.tracked = Some(log::track(&span));
        slf.entered = Some(span.entered());
        slf
    }

    #[pyo3(signature = (exc_type=None, exc_value=None, _traceback=None))]
    fn __exit__(
        &mut self,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        if let Some(entered) = self.entered.take() {
            if exc_type.is_some_and(|t| !t.is_none()) {
                log::mark_failed(&entered);
                let message = exc_value.and_then(|e| e.str().ok()).map(|s| s.to_string()).unwrap_or_default();
                log::record_error(&entered, &message);
            }
            drop(entered);
        }
        self.tracked = None;
        false
    }
}

/// Log attributes split as the sinks use them: the `machine` and the others.
pub type Attributes = (Option<String>, Vec<(String, String)>);

/// Attributes as a test script passes them: a dict of strings.
pub fn attributes(attrs: Option<&Bound<'_, PyDict>>) -> PyResult<Attributes> {
    let Some(attrs) = attrs else { return Ok((None, Vec::new())) };
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in attrs.iter() {
        map.insert(key.str()?.to_string(), value.str()?.to_string());
    }
    let machine = map.remove("machine");
    Ok((machine, map.into_iter().collect()))
}

/// The first positional argument as a message, as upstream's `info(*args)` uses `args[0]`.
fn first_message(args: &Bound<'_, PyTuple>) -> PyResult<String> {
    Ok(args.get_item(0)?.str()?.to_string())
}

/// The attributes of a leveled call: a second positional dict, or keyword arguments.
fn leveled_machine(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Option<String>> {
    if let Ok(second) = args.get_item(1)
        && let Ok(dict) = second.cast::<PyDict>()
    {
        return Ok(attributes(Some(dict))?.0);
    }
    Ok(attributes(kwargs)?.0)
}

/// Upstream's `CompositeLogger`, as the test script's `log`.
#[pyclass(frozen, module = "ntd._native")]
pub struct Logger;

#[pymethods]
impl Logger {
    #[new]
    fn new() -> Logger {
        Logger
    }

    /// Log a line; a `machine` attribute prefixes it with the machine's name.
    #[pyo3(signature = (message, attributes=None))]
    fn log(&self, message: &str, attributes: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let (machine, _) = self::attributes(attributes)?;
        log::log(machine.as_deref(), message);
        Ok(())
    }

    /// A nested block: `with log.nested("message"):`.
    #[pyo3(signature = (message, attributes=None))]
    fn nested(&self, message: String, attributes: Option<&Bound<'_, PyDict>>) -> PyResult<LogBlock> {
        let (machine, attrs) = self::attributes(attributes)?;
        Ok(LogBlock::new(machine, message, attrs))
    }

    /// A subtest block, titled `subtest: <name>`.
    #[pyo3(signature = (name, attributes=None))]
    fn subtest(&self, name: &str, attributes: Option<&Bound<'_, PyDict>>) -> PyResult<LogBlock> {
        let _ = attributes; // upstream's loggers ignore them too
        Ok(LogBlock::subtest(name))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn debug(&self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        log::debug(leveled_machine(args, kwargs)?.as_deref(), &first_message(args)?);
        Ok(())
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn info(&self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        log::info(leveled_machine(args, kwargs)?.as_deref(), &first_message(args)?);
        Ok(())
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn warning(&self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        log::warning(leveled_machine(args, kwargs)?.as_deref(), &first_message(args)?);
        Ok(())
    }

    /// Log an error and end the test with exit status 1, as upstream's `CompositeLogger.error`.
    #[pyo3(signature = (*args, **kwargs))]
    fn error(&self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        log::error(leveled_machine(args, kwargs)?.as_deref(), &first_message(args)?);
        Err(PySystemExit::new_err(1))
    }

    /// One line of a failed test's report (`!!! ` on the terminal).
    #[pyo3(signature = (*args, **_kwargs))]
    fn log_test_error(&self, args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        log::test_error(&first_message(args)?);
        Ok(())
    }

    /// A serial console line of `machine`.
    fn log_serial(&self, message: &str, machine: &str) {
        log::serial(machine, message);
    }

    /// Show or hide serial console lines.
    fn print_serial_logs(&self, enable: bool) {
        log::set_print_serial(enable);
    }

    /// Set the level: 1-4 as upstream's `LogLevel`, or its name.
    fn set_log_level(&self, level: &Bound<'_, PyAny>) -> PyResult<()> {
        let parsed = if let Ok(number) = level.extract::<u8>() {
            match number {
                1 => Some(LogLevel::Debug),
                2 => Some(LogLevel::Info),
                3 => Some(LogLevel::Warning),
                4 => Some(LogLevel::Error),
                _ => None,
            }
        } else {
            LogLevel::from_name(&level.str()?.to_string())
        };
        let level = parsed.ok_or_else(|| PyValueError::new_err(format!("unknown log level {level}")))?;
        log::set_level(level);
        Ok(())
    }
}
