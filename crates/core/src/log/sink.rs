//! The sink side: one `tracing` layer that feeds upstream's log calls to any [`Sink`].
//!
//! Upstream's `logger.py` has one interface, `AbstractLogger` (`log`, `info`…, `log_serial`,
//! `log_test_error`, `nested`, `subtest`), which `TerminalLogger`, `XMLLogger` and the JUnit
//! logger implement, and a `CompositeLogger` that hands every call to each of them. ntd-core
//! makes those calls as `tracing` events and spans instead ([`log`](super::log),
//! [`block`](super::block), …), so something has to turn them back: [`SinkLayer`] does it once
//! for every sink. It reads the fields, keeps each open block's message, machine, attributes,
//! start time and failed flag in the span's extensions, and applies the level and the serial
//! switch, so that a sink only says how it writes a [`Line`] and a [`Block`]. The `tracing`
//! registry plays `CompositeLogger`: each sink is one more layer on it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{LogLevel, TARGET, field, span_name};

/// What a line is, in upstream's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Upstream's `log`: always shown.
    Log,
    /// Upstream's `debug`, `info`, `warning` or `error`, at that level. Lines below the
    /// current [`level`](super::level) never reach a sink.
    Leveled(LogLevel),
    /// Upstream's `log_serial`: a line of a machine's console. None reach a sink while
    /// [`print_serial`](super::print_serial) is off.
    Serial,
    /// Upstream's `log_test_error`: a line of a failed test's report.
    TestError,
    /// A file the run wrote to explain its failure (ntd's failure artifacts); the message is
    /// its path. Always shown.
    Artifact,
}

/// A line for a sink to write.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// What the line is.
    pub kind: LineKind,
    /// The machine it belongs to (upstream's `machine` attribute), if any.
    pub machine: Option<&'a str>,
    /// The text.
    pub message: &'a str,
}

impl Line<'_> {
    /// A serial line as upstream writes it: `machine # line`.
    pub fn serial_text(&self) -> String {
        // Serial lines always have a machine; `?` only guards events made by hand.
        format!("{} # {}", self.machine.unwrap_or("?"), self.message)
    }
}

/// A nested block for a sink: upstream's `nested(message, attributes)`, or a `subtest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block's text (`subtest: name` for a subtest).
    pub message: String,
    /// The machine it belongs to, if any.
    pub machine: Option<String>,
    /// Upstream's `attributes`, other than the machine.
    pub attributes: Vec<(String, String)>,
    /// The subtest's name, if the block is a subtest.
    pub subtest: Option<String>,
    /// The time limit of what the block waits for: the timeout of the machine method call it
    /// belongs to, if that has one (for the terminal's status line).
    pub limit: Option<Duration>,
}

/// How a block ended.
#[derive(Debug, Clone, Copy)]
pub struct BlockEnd {
    /// How long it was open.
    pub elapsed: Duration,
    /// Whether its body failed ([`mark_failed`](super::mark_failed)).
    pub failed: bool,
}

impl BlockEnd {
    /// Upstream's `(finished: message, in X.XX seconds)` line for `block`, or `None` if the
    /// block failed: upstream's `nested` prints it after its `yield`, which an exception skips.
    pub fn finished_line(&self, block: &Block) -> Option<String> {
        let seconds = self.elapsed.as_secs_f64();
        (!self.failed).then(|| format!("(finished: {}, in {seconds:.2} seconds)", block.message))
    }
}

/// What a sink does with upstream's log calls; [`SinkLayer`] makes the calls.
///
/// A sink sees only what passes the level and the serial switch, and every block it is told
/// opened is also closed, innermost first as far as the code nests them.
pub trait Sink: Send + Sync + 'static {
    /// What the sink keeps for a block while it is open, handed back when it closes (the
    /// JUnit report's case of a subtest; `()` for a sink that needs nothing).
    type BlockState: Send + Sync + 'static;

    /// Write a line.
    fn line(&self, line: &Line<'_>);

    /// A block opened.
    fn block_opened(&self, block: &Block) -> Self::BlockState;

    /// A block closed, with what [`Sink::block_opened`] returned for it.
    fn block_closed(&self, block: &Block, state: Self::BlockState, end: BlockEnd);
}

/// A sink shared with its owner, such as a report written at the end of the run.
impl<K: Sink> Sink for Arc<K> {
    type BlockState = K::BlockState;

    fn line(&self, line: &Line<'_>) {
        K::line(self, line);
    }

    fn block_opened(&self, block: &Block) -> K::BlockState {
        K::block_opened(self, block)
    }

    fn block_closed(&self, block: &Block, state: K::BlockState, end: BlockEnd) {
        K::block_closed(self, block, state, end);
    }
}

/// The `tracing` layer of a [`Sink`].
///
/// A registry takes at most one layer per sink type: open blocks are kept in the spans'
/// extensions, which are keyed by type (`tracing_subscriber` panics on a second one).
pub struct SinkLayer<K> {
    sink: K,
}

impl<K: Sink> SinkLayer<K> {
    /// A layer that hands ntd's lines and blocks to `sink`.
    pub fn new(sink: K) -> SinkLayer<K> {
        SinkLayer { sink }
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }
}

/// What the layer keeps in an open block's span extensions. Extensions are keyed by type, so it
/// is generic over the sink: each sink on the registry keeps its own.
struct OpenBlock<K: Sink> {
    block: Block,
    start: Instant,
    failed: bool,
    state: K::BlockState,
}

/// A method call's timeout, kept in its span's extensions (one per sink, as [`OpenBlock`]) for
/// the blocks opened inside it.
struct Limit<K> {
    limit: Duration,
    sink: std::marker::PhantomData<fn() -> K>,
}

impl<S, K> Layer<S> for SinkLayer<K>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    K: Sink,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let failed = fields.failed;
        let Some(mut block) = fields.into_block(attrs.metadata().name()) else { return };
        block.limit = ctx.span_scope(id).and_then(|scope| {
            scope.into_iter().find_map(|span| span.extensions().get::<Limit<K>>().map(|limit| limit.limit))
        });
        let state = self.sink.block_opened(&block);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(OpenBlock::<K> { block, start: Instant::now(), failed, state });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(limit) = fields.limit
            && let Some(span) = ctx.span(id)
        {
            let mut extensions = span.extensions_mut();
            match extensions.get_mut::<Limit<K>>() {
                Some(kept) => kept.limit = limit,
                None => extensions.insert(Limit::<K> { limit, sink: std::marker::PhantomData }),
            }
        }
        if fields.failed
            && let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<OpenBlock<K>>()
        {
            open.failed = true;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        // Taken out, so that the sink writes without the span's extensions locked.
        let Some(open) = span.extensions_mut().remove::<OpenBlock<K>>() else { return };
        let end = BlockEnd { elapsed: open.start.elapsed(), failed: open.failed };
        self.sink.block_closed(&open.block, open.state, end);
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let kind = fields.line_kind(event.metadata().level());
        if !shown(kind) {
            return;
        }
        let message = fields.message.as_deref().unwrap_or_default();
        self.sink.line(&Line { kind, machine: fields.machine.as_deref(), message });
    }
}

/// Whether a line of `kind` passes the level and the serial switch, in every sink as upstream's
/// `CompositeLogger` does.
fn shown(kind: LineKind) -> bool {
    match kind {
        // Errors always pass: no level is above theirs.
        LineKind::Leveled(level) => level >= super::level(),
        LineKind::Serial => super::print_serial(),
        LineKind::Log | LineKind::TestError | LineKind::Artifact => true,
    }
}

/// The fields of an ntd event or span that the layer reads.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    machine: Option<String>,
    kind: Option<String>,
    block: Option<String>,
    subtest: Option<String>,
    attrs: Option<String>,
    failed: bool,
    /// A method call's `timeout_s`.
    limit: Option<Duration>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let slot = match field.name() {
            "message" => &mut self.message,
            field::MACHINE => &mut self.machine,
            field::KIND => &mut self.kind,
            field::BLOCK => &mut self.block,
            field::ATTRS => &mut self.attrs,
            field::SUBTEST => &mut self.subtest,
            _ => return,
        };
        *slot = Some(value.to_owned());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == field::FAILED {
            self.failed = value;
        }
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == field::TIMEOUT {
            self.limit = Duration::try_from_secs_f64(value).ok();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        // `message` arrives as fmt::Arguments, whose Debug is its Display.
        self.record_str(field, &format!("{value:?}"));
    }
}

impl Fields {
    /// The kind of an event's line. An ntd event without a known kind (one made by hand with
    /// target `ntd`) counts as leveled, at its `tracing` level.
    fn line_kind(&self, level: &tracing::Level) -> LineKind {
        match self.kind.as_deref() {
            Some(field::KIND_LOG) => LineKind::Log,
            Some(field::KIND_SERIAL) => LineKind::Serial,
            Some(field::KIND_TEST_ERROR) => LineKind::TestError,
            Some(field::KIND_ARTIFACT) => LineKind::Artifact,
            _ => LineKind::Leveled(match *level {
                tracing::Level::ERROR => LogLevel::Error,
                tracing::Level::WARN => LogLevel::Warning,
                tracing::Level::INFO => LogLevel::Info,
                _ => LogLevel::Debug,
            }),
        }
    }

    /// The block a span named `span` stands for, if it is one: a span with a block message.
    /// Subtests are blocks too ([`subtest_block`](super::subtest_block) gives them their
    /// `subtest: name` message).
    fn into_block(self, span: &str) -> Option<Block> {
        let message = self.block?;
        let subtest = (span == span_name::SUBTEST).then(|| self.subtest.unwrap_or_else(|| "subtest".to_owned()));
        Some(Block {
            message,
            machine: self.machine,
            attributes: parse_attributes(self.attrs.as_deref()),
            subtest,
            limit: None,
        })
    }
}

/// A block's extra attributes, parsed back from the JSON object [`block`](super::block) makes.
fn parse_attributes(attrs: Option<&str>) -> Vec<(String, String)> {
    let Some(attrs) = attrs else { return Vec::new() };
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(attrs) {
        Ok(map) => {
            map.into_iter().map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
