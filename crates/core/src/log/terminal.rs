//! The terminal sink: upstream's `TerminalLogger` (`logger.py`).
//!
//! Writes to stderr, one whole line per write: `machine: message` lines, nested block headers
//! (bright green) and their `(finished: …, in X.XX seconds)` lines, dim `machine # line` serial
//! lines and debug lines, and red `!!! ` test errors. Colours only when stderr is a terminal
//! and `NO_COLOR` is unset (upstream always writes them, which litters build logs). On such a
//! terminal (and `TERM` not `dumb`), a live status line under the log says what the machines
//! wait for ([`super::status`]).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::LogLevel;
use super::sink::{Block, BlockEnd, Line, LineKind, Sink, SinkLayer};
use super::status::{self, Status};

const BRIGHT_GREEN: &str = "\x1b[1m\x1b[32m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// Where the log goes; stderr in production, a buffer in tests.
type Writer = Box<dyn Write + Send>;

/// Upstream's terminal log.
pub struct TerminalLog {
    out: Arc<Mutex<Out>>,
    color: bool,
}

/// The writer, and the status line drawn on it (if this terminal gets one).
struct Out {
    writer: Writer,
    status: Option<Status>,
    /// The terminal's width, for the status line.
    width: fn() -> usize,
}

impl Out {
    /// Write `bytes` (a closed stderr must not take the test down).
    fn write(&mut self, bytes: &str) {
        let _ = self.writer.write_all(bytes.as_bytes());
        let _ = self.writer.flush();
    }

    /// Bring the status line up to date for `now`.
    fn refresh_status(&mut self, now: Instant) {
        let width = (self.width)();
        let Some(status) = self.status.as_mut() else { return };
        let next = status.text(now, width);
        let bytes = status.redraw(next);
        if !bytes.is_empty() {
            self.write(&bytes);
        }
    }
}

/// Upstream's terminal log as a `tracing` layer.
pub type TerminalLayer = SinkLayer<TerminalLog>;

impl TerminalLayer {
    /// A layer writing to stderr, coloured when stderr is a terminal and `NO_COLOR` is unset.
    pub fn stderr() -> TerminalLayer {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let layer = TerminalLog::layer(Box::new(std::io::stderr()), color, status::wanted());
        if status::wanted() {
            start_ticker(Arc::downgrade(&layer.sink().out));
        }
        layer
    }

    /// A layer writing to `out`, without colours.
    pub fn to_writer(out: impl Write + Send + 'static) -> TerminalLayer {
        TerminalLog::layer(Box::new(out), false, false)
    }

    /// A layer writing to `out` with colours, to test them.
    #[cfg(test)]
    pub(crate) fn coloured(out: impl Write + Send + 'static) -> TerminalLayer {
        TerminalLog::layer(Box::new(out), true, false)
    }

    /// A layer writing to `out` with the status line, to test it (its clock is the test's).
    #[cfg(test)]
    pub(crate) fn with_status(out: impl Write + Send + 'static) -> TerminalLayer {
        TerminalLog::layer(Box::new(out), false, true)
    }
}

/// Redraw the status line every [`status::TICK`] while the log lives.
fn start_ticker(out: Weak<Mutex<Out>>) {
    let spawned = std::thread::Builder::new().name("ntd-status".into()).spawn(move || {
        loop {
            std::thread::sleep(status::TICK);
            let Some(out) = out.upgrade() else { return };
            super::lock(&out).refresh_status(Instant::now());
        }
    });
    // Without the thread the line is still redrawn with every log line.
    drop(spawned);
}

impl TerminalLog {
    fn layer(writer: Writer, color: bool, with_status: bool) -> TerminalLayer {
        let status = with_status.then(Status::default);
        let out = Out { writer, status, width: status::terminal_width };
        SinkLayer::new(TerminalLog { out: Arc::new(Mutex::new(out)), color })
    }

    /// Write one line of the log, the status line erased first.
    fn write_line(&self, line: &str) {
        let mut out = super::lock(&self.out);
        let mut buf = String::with_capacity(line.len() + 8);
        if let Some(status) = out.status.as_mut()
            && status.is_drawn()
        {
            buf.push_str(status::ERASE);
            status.erased();
        }
        buf.push_str(line);
        buf.push('\n');
        out.write(&buf);
        // The ticker draws it again: a burst of lines (a boot's console) is not interleaved
        // with a line redrawn after each of them.
    }

    /// Bring the status line up to date for `now` (the ticker does it with the clock).
    #[cfg(test)]
    pub(crate) fn tick(&self, now: Instant) {
        super::lock(&self.out).refresh_status(now);
    }

    fn styled(&self, style: &str, text: &str) -> String {
        if self.color { format!("{style}{text}{RESET}") } else { text.to_owned() }
    }
}

/// Upstream's `maybe_prefix`: `machine: message` for a line or block of a machine.
pub(super) fn prefixed(machine: Option<&str>, message: &str) -> String {
    match machine {
        Some(machine) => format!("{machine}: {message}"),
        None => message.to_owned(),
    }
}

impl Sink for TerminalLog {
    /// The block's id in the status line, where there is one.
    type BlockState = Option<u64>;

    fn line(&self, line: &Line<'_>) {
        let text = match line.kind {
            LineKind::Serial => self.styled(DIM, &line.serial_text()),
            LineKind::TestError => format!("{}{}", self.styled(RED, "!!! "), line.message),
            LineKind::Artifact => prefixed(line.machine, &format!("failure artifact: {}", line.message)),
            LineKind::Leveled(LogLevel::Debug) => self.styled(DIM, &prefixed(line.machine, line.message)),
            LineKind::Log | LineKind::Leveled(_) => prefixed(line.machine, line.message),
        };
        self.write_line(&text);
    }

    fn block_opened(&self, block: &Block) -> Option<u64> {
        self.write_line(&prefixed(block.machine.as_deref(), &self.styled(BRIGHT_GREEN, &block.message)));
        super::lock(&self.out).status.as_mut().map(|status| status.open(block, Instant::now()))
    }

    fn block_closed(&self, block: &Block, id: Option<u64>, end: BlockEnd) {
        if let Some(id) = id {
            let mut out = super::lock(&self.out);
            if let Some(status) = out.status.as_mut() {
                status.close(id);
            }
            out.refresh_status(Instant::now());
        }
        if let Some(finished) = end.finished_line(block) {
            self.write_line(&prefixed(block.machine.as_deref(), &finished));
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

    /// The status line is drawn under the log and erased before each line; the ticker draws it
    /// again (here, the test's ticks).
    #[test]
    fn the_status_line_stays_under_the_log() {
        let _settings = testing::defaults();
        let buffer = Buffer::default();
        let layer = TerminalLayer::with_status(buffer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let call = crate::log::method_span("machine", "wait_for_unit");
            call.record("timeout_s", 900.0);
            let _call = call.enter();
            let block = crate::log::block(Some("machine"), "waiting for unit x.service", &[]);
            let entered = block.enter();
            tracing::dispatcher::get_default(|dispatch| {
                let layer = dispatch.downcast_ref::<TerminalLayer>().expect("the terminal layer");
                layer.sink().tick(Instant::now() + std::time::Duration::from_secs(3));
            });
            crate::log::serial("machine", "booted");
            drop(entered);
            drop(block);
        });
        let out = buffer.text();
        assert_eq!(
            out,
            "machine: waiting for unit x.service\n\
             \r\x1b[Kmachine: waiting for unit x.service (3 s of 900 s)\
             \r\x1b[Kmachine # booted\n\
             machine: (finished: waiting for unit x.service, in 0.00 seconds)\n",
        );
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
