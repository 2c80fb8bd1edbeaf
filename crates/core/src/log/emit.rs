//! The emitters: what ntd-core calls to log, in the words of upstream's `logger.py`.
//!
//! Upstream's `AbstractLogger` has `log`, `info`/`warning`/`error`/`debug`, `log_serial`,
//! `log_test_error`, `nested` and `subtest`; here each is a `tracing` event or span with
//! target [`TARGET`] and the fields in [`field`], so that every sink (and telemetry) sees the
//! same tree without core knowing which sinks run. The span constructors for telemetry
//! ([`run_span`], [`boot_span`], [`method_span`]) are here too, as they are made where the
//! log lines are.

use std::future::Future;

use tracing::Instrument;

use super::{TARGET, field, is_exported};

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

/// A file written to explain a failure (a failure artifact): the terminal and the XML log show
/// its path, the JUnit report attaches it to the failed cases, telemetry records it as an
/// event of the current span.
pub fn artifact(machine: Option<&str>, path: &std::path::Path) {
    let path = path.display();
    tracing::error!(target: TARGET, machine, "ntd.kind" = field::KIND_ARTIFACT, "{path}");
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

/// The innermost exported span (see [`EXPORTED_SPANS`](super::EXPORTED_SPANS)) around the current one, to be the
/// explicit parent of a new exported span. Spans are often made on a tokio worker, where only
/// the task's own span is entered, so a telemetry sink looking for the nearest exported span
/// on the thread's stack would find none; the parent chain in the registry has it.
fn exported_parent() -> Option<tracing::Id> {
    let current = tracing::Span::current().id()?;
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = tracing_subscriber::registry::LookupSpan::span(registry, &current)?;
        span.scope().find(|span| is_exported(span.metadata())).map(|span| span.id())
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
        "ntd.failure.artifacts" = tracing::field::Empty,
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

/// Run `body` inside a nested block, ending it as failed if `body` returns an error or never
/// ends: a future dropped half-way (Ctrl-C, a timeout, a stopped run) is upstream's exception
/// leaving `nested`, which prints no `finished` line.
pub async fn nested<T, E, F>(machine: Option<&str>, message: &str, body: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    /// Marks the block failed when dropped before it is disarmed.
    struct Unfinished(Option<tracing::Span>);
    impl Drop for Unfinished {
        fn drop(&mut self) {
            if let Some(span) = self.0.take() {
                mark_failed(&span);
            }
        }
    }
    let span = block(machine, message, &[]);
    let mut unfinished = Unfinished(Some(span.clone()));
    let result = body.instrument(span).await;
    if result.is_ok() {
        unfinished.0 = None;
    }
    result
}
