//! One machine method call as Python sees it: its `machine.<method>` span, the core future
//! driven with the GIL released and the span's trace context in guest commands, and the
//! error converted to upstream's exception.

use std::future::Future;
use std::time::Duration;

use ntd_core::log;
use pyo3::prelude::*;

use crate::errors::machine_to_pyerr;
use crate::runtime::block_on;

/// Output bytes as upstream decodes them: UTF-8, undecodable bytes replaced.
pub fn text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// What a method call's span (`machine.<method>`) says about the call up front.
#[derive(Clone)]
pub struct Traced<'a> {
    method: &'static str,
    command: Option<&'a str>,
    argument: Option<String>,
    timeout: Option<Duration>,
}

impl<'a> Traced<'a> {
    pub fn new(method: &'static str) -> Traced<'a> {
        Traced { method, command: None, argument: None, timeout: None }
    }

    /// What the method acts on, for a trace reader: a unit, file, port, pattern or key.
    pub fn argument(mut self, argument: impl std::fmt::Display) -> Traced<'a> {
        self.argument = Some(argument.to_string());
        self
    }

    pub fn command(mut self, command: &'a str) -> Traced<'a> {
        self.command = Some(command);
        self
    }

    pub fn timeout(mut self, timeout: Option<Duration>) -> Traced<'a> {
        self.timeout = timeout;
        self
    }

    /// Run `body` as one method call of `machine`: inside its span, which records the
    /// command, timeout and, on an exception, the status ERROR with its message.
    pub fn run<T>(self, machine: &str, body: impl FnOnce(&tracing::Span) -> PyResult<T>) -> PyResult<T> {
        let span = log::method_span(machine, self.method);
        let _tracked = log::track(&span);
        if let Some(command) = self.command {
            span.record("command", command);
        }
        if let Some(argument) = &self.argument {
            span.record("argument", argument.as_str());
        }
        if let Some(timeout) = self.timeout {
            span.record("timeout_s", timeout.as_secs_f64());
        }
        let result = span.in_scope(|| body(&span));
        if let Err(error) = &result {
            log::record_error(&span, &error.to_string());
            Python::attach(|py| crate::errors::annotate_machine(py, error, machine));
        }
        result
    }
}

/// Drive a core call with the GIL released, its guest commands carrying the span's trace
/// context, and convert its error (recording a failed command's exit status).
pub fn drive<T: Send>(
    py: Python<'_>,
    span: &tracing::Span,
    future: impl Future<Output = Result<T, ntd_core::machine::Error>> + Send,
) -> PyResult<T> {
    let traceparent = log::traceparent_of(span);
    match block_on(py, log::with_traceparent(traceparent, future))? {
        Ok(value) => Ok(value),
        Err(error) => {
            if let ntd_core::machine::Error::CommandFailed { status, .. } = &error {
                span.record("exit_code", status);
            }
            Err(machine_to_pyerr(py, error))
        }
    }
}

/// Run `body` inside a nested log block of `machine`, ending it as failed on an error.
pub fn nested<T>(machine: &str, message: &str, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    let span = log::block(Some(machine), message, &[]);
    let result = {
        let _entered = span.enter();
        body()
    };
    if result.is_err() {
        log::mark_failed(&span);
    }
    result
}
