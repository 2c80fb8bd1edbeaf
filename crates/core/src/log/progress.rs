//! The test's progress for a watcher other than the terminal (the web view): what each machine
//! is doing now, the current subtest, and the last lines of the log.
//!
//! It is one more [`Sink`]: it keeps the open blocks as the terminal's status line does
//! ([`Status`]) and a bounded tail of the log, and answers [`Progress::snapshot`] at any time
//! from any thread. Serial lines are left out: the watcher sees the screens themselves.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::sink::{Block, BlockEnd, Line, LineKind, Sink, SinkLayer};
use super::status::{Busy, Status};

/// How many log lines the tail keeps.
pub const TAIL_LINES: usize = 200;

/// How many characters of a line the tail keeps (a block's message can be a whole script).
pub const LINE_CHARS: usize = 500;

/// The progress, kept by its sink layer and read by whoever watches.
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    status: Status,
    tail: VecDeque<String>,
    /// How many lines were ever logged (the tail's last line is number `lines`).
    lines: u64,
}

/// The progress at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The innermost open subtest.
    pub subtest: Option<String>,
    /// Per busy machine, its innermost block.
    pub busy: Vec<Busy>,
    /// The last lines of the log, oldest first.
    pub tail: Vec<String>,
    /// How many lines were ever logged (a watcher can tell new lines from old).
    pub lines: u64,
}

impl Progress {
    /// A shared progress and the `tracing` layer that keeps it.
    pub fn new() -> (Arc<Progress>, SinkLayer<Arc<Progress>>) {
        let progress = Arc::new(Progress::default());
        let layer = SinkLayer::new(Arc::clone(&progress));
        (progress, layer)
    }

    /// The progress at `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let state = super::lock(&self.state);
        Snapshot {
            subtest: state.status.subtest().map(str::to_owned),
            busy: state.status.busy(now),
            tail: state.tail.iter().cloned().collect(),
            lines: state.lines,
        }
    }
}

impl State {
    /// Add a line to the tail, as the terminal shows it (`machine: text`), cut to
    /// [`LINE_CHARS`].
    fn push(&mut self, machine: Option<&str>, text: &str) {
        let mut line = super::terminal::prefixed(machine, text);
        if let Some((cut, _)) = line.char_indices().nth(LINE_CHARS) {
            line.truncate(cut);
            line.push('…');
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
        self.lines += 1;
    }
}

impl Sink for Progress {
    /// The block's id in the status.
    type BlockState = u64;

    fn line(&self, line: &Line<'_>) {
        let text = match line.kind {
            LineKind::Serial => return,
            LineKind::TestError => format!("!!! {}", line.message),
            LineKind::Artifact => format!("failure artifact: {}", line.message),
            LineKind::Log | LineKind::Leveled(_) => line.message.to_owned(),
        };
        super::lock(&self.state).push(line.machine, &text);
    }

    fn block_opened(&self, block: &Block) -> u64 {
        let mut state = super::lock(&self.state);
        state.push(block.machine.as_deref(), &block.message);
        state.status.open(block, Instant::now())
    }

    fn block_closed(&self, block: &Block, id: u64, end: BlockEnd) {
        let mut state = super::lock(&self.state);
        state.status.close(id);
        if let Some(finished) = end.finished_line(block) {
            state.push(block.machine.as_deref(), &finished);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn follows_the_blocks_and_keeps_the_logs_tail() {
        let _settings = testing::defaults();
        let (progress, layer) = Progress::new();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            crate::log::log(Some("server"), "starting vm");
            crate::log::serial("server", "a console line");
            let _subtest = crate::log::subtest_block("boot").entered();
            let _wait = crate::log::block(Some("server"), "waiting for unit nginx.service", &[]).entered();
            let now = progress.snapshot(Instant::now());
            assert_eq!(now.subtest.as_deref(), Some("boot"));
            assert_eq!(now.busy.len(), 1);
            assert_eq!(now.busy[0].machine, "server");
            assert_eq!(now.busy[0].what, "waiting for unit nginx.service");
            let later = progress.snapshot(Instant::now() + std::time::Duration::from_secs(3));
            assert_eq!(later.busy[0].time(), "3 s");
            assert_eq!(
                now.tail,
                ["server: starting vm", "subtest: boot", "server: waiting for unit nginx.service"],
                "no serial line"
            );
        });
        let after = progress.snapshot(Instant::now());
        assert!(after.busy.is_empty() && after.subtest.is_none());
        assert!(after.tail.last().is_some_and(|line| line.starts_with("(finished: subtest: boot, in ")), "{after:?}");
        for i in 0..TAIL_LINES + 5 {
            let subscriber = tracing_subscriber::registry().with(SinkLayer::new(Arc::clone(&progress)));
            tracing::subscriber::with_default(subscriber, || crate::log::log(None, &format!("line {i}")));
        }
        let full = progress.snapshot(Instant::now());
        assert_eq!(full.tail.len(), TAIL_LINES);
        assert_eq!(full.tail.last().map(String::as_str), Some(format!("line {}", TAIL_LINES + 4).as_str()));
        let subscriber = tracing_subscriber::registry().with(SinkLayer::new(Arc::clone(&progress)));
        tracing::subscriber::with_default(subscriber, || crate::log::log(None, &"x".repeat(2 * LINE_CHARS)));
        let long = progress.snapshot(Instant::now()).tail.pop().expect("the long line");
        assert_eq!(long.chars().count(), LINE_CHARS + 1, "cut, with …");
    }
}
