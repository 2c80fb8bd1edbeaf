//! The telemetry hooks and the spans still open, for the OpenTelemetry sink.
//!
//! Upstream has no telemetry; this is ntd's own. ntd-core knows no trace ids, so the sink (in
//! the CLI) installs [`TelemetryHooks`]: the `traceparent` that guest commands get as
//! `TRACEPARENT`, and a way to export a span before it ends. The latter is for a process that
//! exits without unwinding (the global timeout giving up): [`end_open_spans`] ends the spans
//! [`track`] counted as open, so the trace still has its run and subtests.

use std::future::Future;

use super::emit::record_error;
use super::is_exported;

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
    super::lock(&OPEN_SPANS)
}

/// Keeps an exported span on the list [`end_open_spans`] ends, until dropped.
#[must_use = "the span counts as open only while the guard lives"]
pub struct Tracked(Option<u64>);

/// Count `span` as open until the returned guard drops (only when telemetry is on). A span
/// normally ends when its last handle drops; a process that exits without unwinding (the
/// global timeout giving up on a stubborn script) ends the tracked ones with
/// [`end_open_spans`] instead, so its trace still has its run and subtests.
pub fn track(span: &tracing::Span) -> Tracked {
    if TELEMETRY.get().is_none() || !span.metadata().is_some_and(is_exported) {
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
