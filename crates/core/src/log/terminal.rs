//! The terminal sink: upstream's `TerminalLogger`, as a `tracing_subscriber` layer.
//!
//! Writes to stderr, one whole line per write: `machine: message` lines, nested block headers
//! (bright green) and their `(finished: …, in X.XX seconds)` lines, dim `machine # line` serial
//! lines and red `!!! ` test errors. Colours only when stderr is a terminal and `NO_COLOR` is
//! unset (upstream always writes them, which litters build logs).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{Fields, LogLevel, TARGET, field};

const BRIGHT_GREEN: &str = "\x1b[1m\x1b[32m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// Where the layer writes; stderr in production, a buffer in tests.
type Sink = Box<dyn Write + Send>;

/// Upstream's terminal log as a `tracing` layer.
pub struct TerminalLayer {
    out: Mutex<Sink>,
    color: bool,
}

impl TerminalLayer {
    /// A layer writing to stderr, coloured when stderr is a terminal and `NO_COLOR` is unset.
    pub fn stderr() -> TerminalLayer {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        TerminalLayer { out: Mutex::new(Box::new(std::io::stderr())), color }
    }

    /// A layer writing to `out`, without colours.
    pub fn to_writer(out: impl Write + Send + 'static) -> TerminalLayer {
        TerminalLayer { out: Mutex::new(Box::new(out)), color: false }
    }

    /// A layer writing to `out` with colours, to test them.
    #[cfg(test)]
    pub(crate) fn coloured(out: impl Write + Send + 'static) -> TerminalLayer {
        TerminalLayer { out: Mutex::new(Box::new(out)), color: true }
    }

    fn write_line(&self, line: &str) {
        let mut out = match self.out.lock() {
            Ok(out) => out,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(line);
        buf.push('\n');
        // A closed stderr must not take the test down.
        let _ = out.write_all(buf.as_bytes());
        let _ = out.flush();
    }

    fn styled(&self, style: &str, text: &str) -> String {
        if self.color { format!("{style}{text}{RESET}") } else { text.to_owned() }
    }
}

fn prefixed(machine: Option<&str>, message: &str) -> String {
    match machine {
        Some(machine) => format!("{machine}: {message}"),
        None => message.to_owned(),
    }
}

/// What the layer keeps for an open nested block.
struct Block {
    message: String,
    machine: Option<String>,
    start: Instant,
    failed: bool,
}

impl<S> Layer<S> for TerminalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let Some(message) = fields.block else { return };
        self.write_line(&prefixed(fields.machine.as_deref(), &self.styled(BRIGHT_GREEN, &message)));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Block {
                message,
                machine: fields.machine,
                start: Instant::now(),
                failed: fields.failed,
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if fields.failed
            && let Some(span) = ctx.span(id)
            && let Some(block) = span.extensions_mut().get_mut::<Block>()
        {
            block.failed = true;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(block) = extensions.get::<Block>() else { return };
        if block.failed {
            return;
        }
        let elapsed = block.start.elapsed().as_secs_f64();
        let line = format!("(finished: {}, in {elapsed:.2} seconds)", block.message);
        self.write_line(&prefixed(block.machine.as_deref(), &line));
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.message.unwrap_or_default();
        let machine = fields.machine.as_deref();
        match fields.kind.as_deref() {
            Some(field::KIND_SERIAL) => {
                if super::print_serial() {
                    let line = format!("{} # {message}", machine.unwrap_or("?"));
                    self.write_line(&self.styled(DIM, &line));
                }
            }
            Some(field::KIND_TEST_ERROR) => {
                self.write_line(&format!("{}{message}", self.styled(RED, "!!! ")));
            }
            Some(field::KIND_LOG) => self.write_line(&prefixed(machine, &message)),
            _ => {
                let level = match *event.metadata().level() {
                    Level::ERROR => LogLevel::Error,
                    Level::WARN => LogLevel::Warning,
                    Level::INFO => LogLevel::Info,
                    _ => LogLevel::Debug,
                };
                if level < super::level() && level != LogLevel::Error {
                    return;
                }
                let line = prefixed(machine, &message);
                if level == LogLevel::Debug {
                    self.write_line(&self.styled(DIM, &line));
                } else {
                    self.write_line(&line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing::{self, Buffer};
    use tracing_subscriber::layer::SubscriberExt;

    fn capture(f: impl FnOnce()) -> String {
        let _settings = testing::defaults();
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(TerminalLayer::to_writer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, f);
        buffer.text()
    }

    #[test]
    fn lines_blocks_and_serial_look_like_upstream() {
        let out = capture(|| {
            crate::log::log(Some("machine"), "starting vm");
            {
                let _block = crate::log::block(Some("machine"), "must succeed: true", &[]).entered();
                crate::log::serial("machine", "[    1.23] booted");
            }
            let failed = crate::log::block(None, "subtest: broken", &[]);
            crate::log::mark_failed(&failed);
            drop(failed);
            crate::log::test_error("Traceback (most recent call last):");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "machine: starting vm");
        assert_eq!(lines[1], "machine: must succeed: true");
        assert_eq!(lines[2], "machine # [    1.23] booted");
        assert!(lines[3].starts_with("machine: (finished: must succeed: true, in "), "{}", lines[3]);
        assert!(lines[3].ends_with(" seconds)"));
        assert_eq!(lines[4], "subtest: broken");
        assert_eq!(lines[5], "!!! Traceback (most recent call last):");
        assert_eq!(lines.len(), 6, "a failed block prints no finished line: {out}");
    }

    #[test]
    fn leveled_lines_follow_the_level() {
        let out = capture(|| {
            crate::log::debug(None, "hidden at info");
            crate::log::info(None, "shown at info");
            crate::log::error(None, "always shown");
        });
        assert_eq!(out, "shown at info\nalways shown\n");
    }
}
