//! What [`SinkLayer`] owns for every sink: which lines reach it, and the blocks' bookkeeping.

use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::log::testing::{self, all_sinks};
use crate::log::{self as ntd_log, LogLevel};

/// A sink that writes down each call, numbering blocks to check their state comes back.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Sink for Recorder {
    type BlockState = usize;

    fn line(&self, line: &Line<'_>) {
        let call = format!("line {:?} {:?} {}", line.kind, line.machine, line.message);
        crate::log::lock(&self.calls).push(call);
    }

    fn block_opened(&self, block: &Block) -> usize {
        let mut calls = crate::log::lock(&self.calls);
        calls.push(format!("open {block:?}"));
        calls.len()
    }

    fn block_closed(&self, block: &Block, state: usize, end: BlockEnd) {
        let call = format!("close #{state} {} failed={}", block.message, end.failed);
        crate::log::lock(&self.calls).push(call);
    }
}

fn record(f: impl FnOnce()) -> Vec<String> {
    let recorder = Arc::new(Recorder::default());
    let subscriber = tracing_subscriber::registry().with(SinkLayer::new(Arc::clone(&recorder)));
    tracing::subscriber::with_default(subscriber, f);
    std::mem::take(&mut *crate::log::lock(&recorder.calls))
}

#[test]
fn a_sink_sees_upstreams_calls_and_nothing_else() {
    let _settings = testing::defaults();
    let calls = record(|| {
        tracing::info!("not ntd's");
        let _run = ntd_log::run_span("t").entered();
        ntd_log::log(Some("m"), "hello");
        let subtest = ntd_log::subtest_block("one");
        let _in_subtest = subtest.enter();
        {
            let _block = ntd_log::block(Some("m"), "wait", &[("b", "2"), ("a", "1")]).entered();
            ntd_log::serial("m", "console");
        }
        ntd_log::test_error("boom");
        ntd_log::mark_failed(&subtest);
    });
    let block = Block {
        message: "wait".to_owned(),
        machine: Some("m".to_owned()),
        attributes: vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())],
        subtest: None,
        limit: None,
    };
    let subtest = Block {
        message: "subtest: one".to_owned(),
        machine: None,
        attributes: Vec::new(),
        subtest: Some("one".to_owned()),
        limit: None,
    };
    assert_eq!(
        calls,
        [
            "line Log Some(\"m\") hello".to_owned(),
            format!("open {subtest:?}"),
            format!("open {block:?}"),
            "line Serial Some(\"m\") console".to_owned(),
            "close #3 wait failed=false".to_owned(),
            "line TestError None boom".to_owned(),
            "close #2 subtest: one failed=true".to_owned(),
        ]
    );
}

#[test]
fn leveled_lines_reach_a_sink_from_the_current_level_up() {
    let _settings = testing::defaults();
    let levels = [LogLevel::Debug, LogLevel::Info, LogLevel::Warning, LogLevel::Error];
    for current in levels {
        ntd_log::set_level(current);
        let calls = record(|| {
            ntd_log::debug(None, "d");
            ntd_log::info(None, "i");
            ntd_log::warning(None, "w");
            ntd_log::error(None, "e");
            // Neither the log nor a test error is leveled.
            ntd_log::log(None, "l");
            ntd_log::test_error("t");
        });
        let mut expected: Vec<String> = levels
            .iter()
            .filter(|&&level| level >= current)
            .map(|level| format!("line Leveled({level:?}) None {}", &level.to_string()[..1]))
            .collect();
        expected.extend(["line Log None l".to_owned(), "line TestError None t".to_owned()]);
        assert_eq!(calls, expected, "at {current}");
    }
}

#[test]
fn an_ntd_event_without_a_kind_is_leveled_at_its_own_level() {
    let _settings = testing::defaults();
    let calls = record(|| {
        tracing::debug!(target: crate::log::TARGET, "quiet");
        tracing::warn!(target: crate::log::TARGET, machine = "m", "loud");
    });
    assert_eq!(calls, ["line Leveled(Warning) Some(\"m\") loud"]);
}

#[test]
fn serial_lines_are_hidden_in_every_sink_while_serial_is_off() {
    let _settings = testing::settings(LogLevel::Info, false);
    let out = all_sinks(|| {
        ntd_log::serial("m", "hidden");
        ntd_log::set_print_serial(true);
        ntd_log::serial("m", "shown");
    });
    for text in [&out.terminal, &out.xml, &out.junit] {
        assert!(!text.contains("hidden"), "{text}");
        assert!(text.contains("m # shown") || text.contains("type=\"serial\">shown<"), "{text}");
    }
}

#[test]
fn a_failed_block_has_no_finished_line_in_any_sink() {
    let _settings = testing::defaults();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let out = all_sinks(|| {
        let doomed = ntd_log::block(Some("m"), "doomed", &[]);
        ntd_log::mark_failed(&doomed);
        drop(doomed);
        let failed_subtest = ntd_log::subtest_block("failing");
        ntd_log::mark_failed(&failed_subtest);
        drop(failed_subtest);
        let result = runtime.block_on(ntd_log::nested(None, "erring", async { Err::<(), _>("boom") }));
        assert_eq!(result, Err("boom"));
        // Interrupted: the future is dropped before its body ends, as Ctrl-C or a stopped run
        // drops a command's.
        let interrupted = ntd_log::nested(None, "interrupted", std::future::pending::<Result<(), ()>>());
        let polled = runtime.block_on(async { tokio::time::timeout(std::time::Duration::ZERO, interrupted).await });
        assert!(polled.is_err(), "the body never ends");
        drop(ntd_log::block(None, "fine", &[]));
    });
    for message in ["doomed", "subtest: failing", "erring", "interrupted"] {
        let finished = format!("(finished: {message},");
        assert!(!out.terminal.contains(&finished), "{}", out.terminal);
        assert!(!out.xml.contains(&finished), "{}", out.xml);
        // A failed block still closes its <nest>, so the file stays well-formed.
        assert!(out.xml.contains(&format!(">{message}</head></nest>")), "{}", out.xml);
    }
    assert!(out.terminal.contains("(finished: fine, in "), "{}", out.terminal);
    assert!(out.xml.contains("<line>(finished: fine, in "), "{}", out.xml);
    // Upstream's JUnit logger writes no finished lines, failed or not.
    assert!(!out.junit.contains("finished"), "{}", out.junit);
}
