//! Logging as the upstream driver shows it (`test_driver/logger.py`), built on `tracing`.
//!
//! ntd-core never prints. It emits `tracing` events and spans with target [`TARGET`] and a few
//! well-known fields; sinks ([`terminal`], [`xml`], [`junit`], and OpenTelemetry in the CLI) turn
//! them into output. The vocabulary is upstream's:
//!
//! - a *line* ([`log`]): upstream's `log(message, {"machine": name})`, shown as `name: message`;
//! - a *leveled* line ([`info`], [`warning`], [`error`], [`debug`]), filtered by `--log-level`;
//! - a *serial* line ([`serial`]): one line of a machine's console, `name # line`;
//! - a *test error* line ([`test_error`]): the `!!! ` lines of a failed test;
//! - a *nested block* ([`block`], [`nested`]): upstream's `nested(message)`, a span whose start
//!   prints the message and whose successful end prints `(finished: message, in X.XX seconds)`.
//!
//! Because blocks are spans, the nesting follows the code (async tasks included) and an
//! OpenTelemetry layer sees the same tree.
//!
//! The files split upstream's `logger.py` by concept: this one holds the shared vocabulary
//! (field and span names, the level and the serial switch), `emit` what core calls,
//! `telemetry` the hooks of the OpenTelemetry sink, `repr` Python's `repr()`, [`sink`] the
//! `tracing` plumbing the three sinks share.

mod emit;
#[cfg(test)]
mod golden;
pub mod junit;
pub mod progress;
pub(crate) mod repr;
pub mod sink;
pub mod status;
mod telemetry;
pub mod terminal;
#[cfg(test)]
pub(crate) mod testing;
pub mod xml;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use emit::{
    artifact, block, boot_span, debug, error, info, log, mark_failed, method_span, nested, record_error, run_span,
    serial, subtest_block, test_error, warning,
};
pub use repr::{bytes_repr, str_repr};
pub use telemetry::{
    TelemetryHooks, Tracked, current_traceparent, end_open_spans, set_telemetry_hooks, traceparent_of, track,
    with_traceparent,
};

/// The `tracing` target of every ntd event and span.
pub const TARGET: &str = "ntd";

/// Field names shared by the emitters and the sinks.
pub mod field {
    /// The machine a line or block belongs to (upstream's `machine` attribute).
    pub const MACHINE: &str = "machine";
    /// The kind of an event: one of the `KIND_*` constants.
    pub const KIND: &str = "ntd.kind";
    /// The message of a nested block; spans without it are not log blocks.
    pub const BLOCK: &str = "ntd.block";
    /// Extra attributes of a block (upstream's `attributes` dict), as a JSON object.
    pub const ATTRS: &str = "ntd.attrs";
    /// The name of a subtest (upstream's `subtest(name)`), on subtest spans only.
    pub const SUBTEST: &str = "ntd.subtest";
    /// A method call's timeout in seconds (on `ntd.method` spans).
    pub const TIMEOUT: &str = "timeout_s";
    /// Recorded as `true` on a block whose body failed: it ends without a `finished` line.
    pub const FAILED: &str = "ntd.failed";
    /// Event kind: an unfiltered line.
    pub const KIND_LOG: &str = "log";
    /// Event kind: a line filtered by the log level.
    pub const KIND_LEVELED: &str = "leveled";
    /// Event kind: a serial console line.
    pub const KIND_SERIAL: &str = "serial";
    /// Event kind: a line of a failed test's report.
    pub const KIND_TEST_ERROR: &str = "test_error";
    /// Event kind: a file written to explain a failure (the message is its path).
    pub const KIND_ARTIFACT: &str = "artifact";
}

/// Upstream's `LogLevel`: which leveled lines are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything, including debug lines.
    Debug = 1,
    /// The default.
    Info = 2,
    /// Warnings and errors.
    Warning = 3,
    /// Errors only.
    Error = 4,
}

impl LogLevel {
    /// The level named as on upstream's command line (`debug`, `info`, `warning`, `error`).
    pub fn from_name(name: &str) -> Option<LogLevel> {
        match name.to_ascii_lowercase().as_str() {
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warning" => Some(LogLevel::Warning),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }

    fn from_u8(value: u8) -> LogLevel {
        match value {
            1 => LogLevel::Debug,
            3 => LogLevel::Warning,
            4 => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        })
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static PRINT_SERIAL: AtomicBool = AtomicBool::new(true);

/// Set the level below which leveled lines are hidden, in every sink (upstream's
/// `set_log_level`, `--log-level`).
pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The current log level.
pub fn level() -> LogLevel {
    LogLevel::from_u8(LEVEL.load(Ordering::Relaxed))
}

/// Show or hide serial console lines in every sink (upstream's `serial_stdout_on/off`).
pub fn set_print_serial(enable: bool) {
    PRINT_SERIAL.store(enable, Ordering::Relaxed);
}

/// Whether serial console lines are shown.
pub fn print_serial() -> bool {
    PRINT_SERIAL.load(Ordering::Relaxed)
}

/// The names of the spans telemetry exports (see [`EXPORTED_SPANS`]).
pub mod span_name {
    /// The whole test run.
    pub const RUN: &str = "ntd.run";
    /// A `subtest` (also a nested log block).
    pub const SUBTEST: &str = "ntd.subtest";
    /// A phase of a machine's boot: process spawned, QMP ready, shell connected.
    pub const BOOT: &str = "ntd.boot";
    /// One call of a machine method (`machine.succeed`, …).
    pub const METHOD: &str = "ntd.method";
}

/// The spans an OpenTelemetry sink should export; the others (log blocks such as
/// `must succeed: …`) are for the log only.
pub const EXPORTED_SPANS: [&str; 4] = [span_name::RUN, span_name::SUBTEST, span_name::BOOT, span_name::METHOD];

/// Whether a span with `metadata` is one telemetry exports (see [`EXPORTED_SPANS`]).
fn is_exported(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target() == TARGET && EXPORTED_SPANS.contains(&metadata.name())
}

/// Lock `mutex` even if a thread panicked holding it: the sinks and the open-span list stay
/// usable, as the log is most wanted after a failure.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_round_trip() {
        for name in ["debug", "info", "warning", "error"] {
            assert_eq!(LogLevel::from_name(name).expect("known level").to_string(), name);
        }
        assert_eq!(LogLevel::from_name("verbose"), None);
    }
}
