//! Logging as the upstream driver shows it (`test_driver/logger.py`), built on `tracing`.
//!
//! ntd-core never prints. It emits `tracing` events and spans with target [`TARGET`] and a few
//! well-known fields; sinks ([`terminal`] now; XML, JUnit and OpenTelemetry later) turn them into
//! output. The vocabulary is upstream's:
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

#[cfg(test)]
mod golden;
pub mod junit;
pub mod terminal;
#[cfg(test)]
pub(crate) mod testing;
pub mod xml;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use tracing::Instrument;

/// The `tracing` target of every ntd event and span.
pub const TARGET: &str = "ntd";

/// Field names shared by the emitters here and the sinks.
pub mod field {
    /// The machine a line or block belongs to (upstream's `machine` attribute).
    pub const MACHINE: &str = "machine";
    /// The kind of an event: one of the `KIND_*` constants.
    pub const KIND: &str = "ntd.kind";
    /// The message of a nested block; spans without it are not log blocks.
    pub const BLOCK: &str = "ntd.block";
    /// Extra attributes of a block (upstream's `attributes` dict), as a JSON object.
    pub const ATTRS: &str = "ntd.attrs";
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

/// A line, always shown: upstream's `logger.log(message, {"machine": machine})`.
pub fn log(machine: Option<&str>, message: &str) {
    tracing::info!(target: TARGET, machine, "ntd.kind" = field::KIND_LOG, "{message}");
}

/// A leveled line at info level.
pub fn info(machine: Option<&str>, message: &str) {
    tracing::info!(target: TARGET, machine, "ntd.kind" = field::KIND_LEVELED, "{message}");
}

/// A leveled line at warning level.
pub fn warning(machine: Option<&str>, message: &str) {
    tracing::warn!(target: TARGET, machine, "ntd.kind" = field::KIND_LEVELED, "{message}");
}

/// A leveled line at error level (always shown).
pub fn error(machine: Option<&str>, message: &str) {
    tracing::error!(target: TARGET, machine, "ntd.kind" = field::KIND_LEVELED, "{message}");
}

/// A leveled line at debug level.
pub fn debug(machine: Option<&str>, message: &str) {
    tracing::debug!(target: TARGET, machine, "ntd.kind" = field::KIND_LEVELED, "{message}");
}

/// One line of a machine's serial console.
pub fn serial(machine: &str, line: &str) {
    tracing::info!(target: TARGET, machine, "ntd.kind" = field::KIND_SERIAL, "{line}");
}

/// One line of a failed test's report (upstream's `log_test_error`, the `!!! ` lines).
pub fn test_error(line: &str) {
    tracing::error!(target: TARGET, machine = None::<&str>, "ntd.kind" = field::KIND_TEST_ERROR, "{line}");
}

/// Open a nested block: a span that sinks show as upstream's `nested(message, attributes)`.
/// It is a child of the current span. Drop it to end the block; call [`mark_failed`] first if
/// its body failed, so it ends without a `finished` line as upstream's does.
///
/// The span's name is `name` (for tracing and telemetry, e.g. `machine.succeed`); the block's
/// text is `message`.
pub fn block(machine: Option<&str>, message: &str, attrs: &[(&str, &str)]) -> tracing::Span {
    let attrs = if attrs.is_empty() {
        None
    } else {
        let map: serde_json::Map<String, serde_json::Value> =
            attrs.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect();
        Some(serde_json::Value::Object(map).to_string())
    };
    tracing::info_span!(
        target: TARGET,
        "nested",
        machine,
        "ntd.block" = message,
        "ntd.attrs" = attrs,
        "ntd.failed" = tracing::field::Empty,
    )
}

/// Mark a block as failed: it ends without a `finished` line.
pub fn mark_failed(span: &tracing::Span) {
    span.record(field::FAILED, true);
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

/// The innermost exported span (see [`EXPORTED_SPANS`]) around the current one, to be the
/// explicit parent of a new exported span. Spans are often made on a tokio worker, where only
/// the task's own span is entered, so a telemetry sink looking for the nearest exported span
/// on the thread's stack would find none; the parent chain in the registry has it.
fn exported_parent() -> Option<tracing::Id> {
    let current = tracing::Span::current().id()?;
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = tracing_subscriber::registry::LookupSpan::span(registry, &current)?;
        span.scope()
            .find(|span| span.metadata().target() == TARGET && EXPORTED_SPANS.contains(&span.name()))
            .map(|span| span.id())
    })
}

/// The span of a whole test run; its telemetry name is `nixos-test <name>`.
pub fn run_span(test_name: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "ntd.run",
        "otel.name" = %format!("nixos-test {test_name}"),
        "test.name" = test_name,
        "test.outcome" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    )
}

/// A subtest: a nested block titled `subtest: <name>` for the log and a span of its own for
/// telemetry and the JUnit report. Mark it failed as any block.
pub fn subtest_block(name: &str) -> tracing::Span {
    let title = format!("subtest: {name}");
    tracing::info_span!(
        target: TARGET,
        parent: exported_parent(),
        "ntd.subtest",
        "otel.name" = %title,
        machine = tracing::field::Empty,
        "ntd.block" = %title,
        "ntd.subtest" = name,
        "ntd.attrs" = tracing::field::Empty,
        "ntd.failed" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    )
}

/// A phase of `machine`'s boot (`spawn`, `qmp`, `shell`), named `machine.boot.<phase>`.
pub fn boot_span(machine: &str, phase: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        parent: exported_parent(),
        "ntd.boot",
        "otel.name" = %format!("machine.boot.{phase}"),
        machine,
        "boot.duration_s" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    )
}

/// One call of a machine method, named `machine.<method>`, with the fields the bindings fill
/// in: the command, the argument it acts on (a unit, file, port, pattern, key), exit code,
/// output size, timeout, and the status.
pub fn method_span(machine: &str, method: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        parent: exported_parent(),
        "ntd.method",
        "otel.name" = %format!("machine.{method}"),
        machine,
        command = tracing::field::Empty,
        argument = tracing::field::Empty,
        "exit_code" = tracing::field::Empty,
        "output.bytes" = tracing::field::Empty,
        "timeout_s" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    )
}

/// Record on `span` that what it covers failed, with `message` (telemetry status ERROR).
pub fn record_error(span: &tracing::Span, message: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message);
}

/// What the telemetry sink does for ntd-core, which knows no trace ids.
pub struct TelemetryHooks {
    /// A span's W3C `traceparent`, for the `TRACEPARENT` of guest commands.
    pub traceparent: fn(&tracing::Span) -> Option<String>,
    /// Export a span now, as it stands, though it is still open (see [`end_open_spans`]).
    pub end: fn(&tracing::Span),
}

static TELEMETRY: std::sync::OnceLock<TelemetryHooks> = std::sync::OnceLock::new();

tokio::task_local! {
    static TRACEPARENT: Option<String>;
}

/// Install the telemetry sink's hooks. Without them guest commands get no `TRACEPARENT` and
/// [`track`] keeps nothing.
pub fn set_telemetry_hooks(hooks: TelemetryHooks) {
    let _ = TELEMETRY.set(hooks);
}

/// The `traceparent` of `span`, when telemetry is on.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    TELEMETRY.get().and_then(|hooks| (hooks.traceparent)(span))
}

/// Exported spans now open, outermost first, each with the token of its [`Tracked`] guard.
static OPEN_SPANS: std::sync::Mutex<Vec<(u64, tracing::Span)>> = std::sync::Mutex::new(Vec::new());
static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn open_spans() -> std::sync::MutexGuard<'static, Vec<(u64, tracing::Span)>> {
    OPEN_SPANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps an exported span on the list [`end_open_spans`] ends, until dropped.
#[must_use = "the span counts as open only while the guard lives"]
pub struct Tracked(Option<u64>);

/// Count `span` as open until the returned guard drops (only when telemetry is on). A span
/// normally ends when its last handle drops; a process that exits without unwinding (the
/// global timeout giving up on a stubborn script) ends the tracked ones with
/// [`end_open_spans`] instead, so its trace still has its run and subtests.
pub fn track(span: &tracing::Span) -> Tracked {
    let exported = span.metadata().is_some_and(|m| m.target() == TARGET && EXPORTED_SPANS.contains(&m.name()));
    if TELEMETRY.get().is_none() || !exported {
        return Tracked(None);
    }
    let token = NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    open_spans().push((token, span.clone()));
    Tracked(Some(token))
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let Some(token) = self.0 else { return };
        let removed = {
            let mut open = open_spans();
            open.iter().position(|(t, _)| *t == token).map(|index| open.remove(index))
        };
        // The span's handle drops here, outside the lock: closing it runs the sinks.
        drop(removed);
    }
}

/// End every tracked span now, innermost first, as failed with `reason` (the run span also
/// gets `test.outcome` = `outcome`), for a process about to exit without unwinding.
pub fn end_open_spans(reason: &str, outcome: &str) {
    let Some(hooks) = TELEMETRY.get() else { return };
    let open: Vec<(u64, tracing::Span)> = std::mem::take(&mut *open_spans());
    for (_, span) in open.iter().rev() {
        span.record("test.outcome", outcome);
        record_error(span, reason);
        (hooks.end)(span);
    }
}

/// Run `future` with `traceparent` as the `TRACEPARENT` its guest commands get.
pub async fn with_traceparent<F: Future>(traceparent: Option<String>, future: F) -> F::Output {
    TRACEPARENT.scope(traceparent, future).await
}

/// The `TRACEPARENT` for guest commands run now, if any.
pub fn current_traceparent() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok().flatten()
}

/// Run `body` inside a nested block, ending it as failed if `body` returns an error.
pub async fn nested<T, E, F>(machine: Option<&str>, message: &str, body: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let span = block(machine, message, &[]);
    let result = body.instrument(span.clone()).await;
    if result.is_err() {
        mark_failed(&span);
    }
    result
}

/// The fields of an ntd event or span that the sinks need.
#[derive(Default)]
pub(crate) struct Fields {
    pub(crate) message: Option<String>,
    pub(crate) machine: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) block: Option<String>,
    pub(crate) subtest: Option<String>,
    pub(crate) attrs: Option<String>,
    pub(crate) failed: bool,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let slot = match field.name() {
            "message" => &mut self.message,
            field::MACHINE => &mut self.machine,
            field::KIND => &mut self.kind,
            field::BLOCK => &mut self.block,
            field::ATTRS => &mut self.attrs,
            "ntd.subtest" => &mut self.subtest,
            _ => return,
        };
        *slot = Some(value.to_owned());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == field::FAILED {
            self.failed = value;
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        // `message` arrives as fmt::Arguments, whose Debug is its Display.
        self.record_str(field, &format!("{value:?}"));
    }
}

impl Fields {
    /// The sink's view of a leveled event's level, or `None` if the line is always shown.
    pub(crate) fn shown_at(&self, level: &tracing::Level) -> Option<LogLevel> {
        match self.kind.as_deref() {
            Some(field::KIND_LEVELED) => Some(match *level {
                tracing::Level::ERROR => LogLevel::Error,
                tracing::Level::WARN => LogLevel::Warning,
                tracing::Level::INFO => LogLevel::Info,
                _ => LogLevel::Debug,
            }),
            _ => None,
        }
    }

    /// Whether a leveled line passes the current level (errors always do).
    pub(crate) fn passes_level(&self, level: &tracing::Level) -> bool {
        match self.shown_at(level) {
            Some(shown) => shown >= self::level() || shown == LogLevel::Error,
            None => true,
        }
    }

    /// The extra attributes of a block, parsed back from JSON.
    pub(crate) fn attributes(&self) -> Vec<(String, String)> {
        let Some(attrs) = &self.attrs else { return Vec::new() };
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(attrs) {
            Ok(map) => map
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Python's `repr()` of a bytes object, as upstream logs guest output (`b'...\n'`).
pub fn bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') { '"' } else { '\'' };
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push('b');
    out.push(quote);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b if b as char == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a str, as upstream logs keys and characters (`'ret'`, `"it's"`).
pub fn str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                let code = c as u32;
                if code < 0x100 {
                    out.push_str(&format!("\\x{code:02x}"));
                } else {
                    out.push_str(&format!("\\u{code:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_repr_matches_python() {
        assert_eq!(str_repr("ret"), "'ret'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("a\nb\t\\"), "'a\\nb\\t\\\\'");
        assert_eq!(str_repr("ünï\x01"), "'ünï\\x01'");
        assert_eq!(str_repr("'\""), "'\\'\"'");
    }

    #[test]
    fn bytes_repr_matches_python() {
        assert_eq!(bytes_repr(b"Spawning backdoor root shell...\n"), r"b'Spawning backdoor root shell...\n'");
        assert_eq!(bytes_repr(b"it's"), r#"b"it's""#);
        assert_eq!(bytes_repr(b"'\""), r#"b'\'"'"#);
        assert_eq!(bytes_repr(&[0, 0x1b, 0xff, b'\\']), r"b'\x00\x1b\xff\\'");
    }

    #[test]
    fn level_names_round_trip() {
        for name in ["debug", "info", "warning", "error"] {
            assert_eq!(LogLevel::from_name(name).expect("known level").to_string(), name);
        }
        assert_eq!(LogLevel::from_name("verbose"), None);
    }
}
