//! The terminal sink: upstream's `TerminalLogger` (`logger.py`).
//!
//! Writes to stderr, one whole line per write: `machine: message` lines, nested block headers
//! (bright green) and their `(finished: …, in X.XX seconds)` lines, dim `machine # line` serial
//! lines and debug lines, and red `!!! ` test errors. Colours only when stderr is a terminal
//! and `NO_COLOR` is unset (upstream always writes them, which litters build logs).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use super::LogLevel;
use super::sink::{Block, BlockEnd, Line, LineKind, Sink, SinkLayer};

const BRIGHT_GREEN: &str = "\x1b[1m\x1b[32m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// Where the log goes; stderr in production, a buffer in tests.
type Writer = Box<dyn Write + Send>;

/// Upstream's terminal log.
pub struct TerminalLog {
    out: Mutex<Writer>,
    color: bool,
}

/// Upstream's terminal log as a `tracing` layer.
pub type TerminalLayer = SinkLayer<TerminalLog>;

impl TerminalLayer {
    /// A layer writing to stderr, coloured when stderr is a terminal and `NO_COLOR` is unset.
    pub fn stderr() -> TerminalLayer {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        TerminalLog::layer(Box::new(std::io::stderr()), color)
    }

    /// A layer writing to `out`, without colours.
    pub fn to_writer(out: impl Write + Send + 'static) -> TerminalLayer {
        TerminalLog::layer(Box::new(out), false)
    }

    /// A layer writing to `out` with colours, to test them.
    #[cfg(test)]
    pub(crate) fn coloured(out: impl Write + Send + 'static) -> TerminalLayer {
        TerminalLog::layer(Box::new(out), true)
    }
}

impl TerminalLog {
    fn layer(out: Writer, color: bool) -> TerminalLayer {
        SinkLayer::new(TerminalLog { out: Mutex::new(out), color })
    }

    fn write_line(&self, line: &str) {
        let mut out = super::lock(&self.out);
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

/// Upstream's `maybe_prefix`: `machine: message` for a line or block of a machine.
fn prefixed(machine: Option<&str>, message: &str) -> String {
    match machine {
        Some(machine) => format!("{machine}: {message}"),
        None => message.to_owned(),
    }
}

impl Sink for TerminalLog {
    type BlockState = ();

    fn line(&self, line: &Line<'_>) {
        let text = match line.kind {
            LineKind::Serial => self.styled(DIM, &line.serial_text()),
            LineKind::TestError => format!("{}{}", self.styled(RED, "!!! "), line.message),
            LineKind::Leveled(LogLevel::Debug) => self.styled(DIM, &prefixed(line.machine, line.message)),
            LineKind::Log | LineKind::Leveled(_) => prefixed(line.machine, line.message),
        };
        self.write_line(&text);
    }

    fn block_opened(&self, block: &Block) {
        self.write_line(&prefixed(block.machine.as_deref(), &self.styled(BRIGHT_GREEN, &block.message)));
    }

    fn block_closed(&self, block: &Block, (): (), end: BlockEnd) {
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
