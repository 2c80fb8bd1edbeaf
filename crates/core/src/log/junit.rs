//! The JUnit report of `--junit-xml`, in the shape of upstream's `test_reporter.py`.
//!
//! One test case per `subtest` (its log lines in `system-out`, its error lines in
//! `system-err`, a `failure` when it failed) and a last case `main` for the whole script and
//! what was logged outside any subtest; all in one suite, "NixOS integration test". A case's
//! time excludes the subtests nested in it, as upstream's does. What goes into a case is what
//! upstream's `JunitXMLLogger` (`logger.py`) logged: a nested block adds only its message,
//! with no `finished` line, and machines appear only in serial lines.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::LogLevel;
use super::sink::{Block, BlockEnd, Line, LineKind, Sink, SinkLayer};
use super::xml::escape;

#[derive(Debug, Default)]
struct Case {
    name: String,
    /// Seconds from the subtest's start to its end (`main`'s are taken when rendering).
    seconds: f64,
    /// Seconds spent in the subtests nested in this case, which its own time excludes.
    nested_seconds: f64,
    stdout: String,
    stderr: String,
    failed: bool,
}

impl Case {
    fn new(name: &str) -> Case {
        Case { name: name.to_owned(), ..Case::default() }
    }

    /// Upstream's `log`: a line of the case's `system-out`.
    fn out(&mut self, line: &str) {
        self.stdout.push_str(line);
        self.stdout.push('\n');
    }

    /// Upstream's `error`: a line of the case's `system-err`, which fails the case.
    fn err(&mut self, line: &str) {
        self.stderr.push_str(line);
        self.stderr.push('\n');
        self.failed = true;
    }
}

#[derive(Debug)]
struct Report {
    main: Case,
    cases: Vec<Case>,
    /// Open subtests, innermost last (indexes into `cases`).
    open: Vec<usize>,
}

impl Report {
    fn current(&mut self) -> &mut Case {
        match self.open.last().and_then(|&index| self.cases.get_mut(index)) {
            Some(case) => case,
            None => &mut self.main,
        }
    }
}

/// A JUnit report being collected; write it with [`JunitReport::write`].
#[derive(Debug)]
pub struct JunitReport {
    /// When the `main` case started.
    started: Instant,
    report: Mutex<Report>,
}

/// The `tracing` layer of a [`JunitReport`].
pub type JunitLayer = SinkLayer<Arc<JunitReport>>;

impl JunitReport {
    /// An empty report; its `main` case starts now.
    pub fn new() -> Arc<JunitReport> {
        Arc::new(JunitReport {
            started: Instant::now(),
            report: Mutex::new(Report { main: Case::new("main"), cases: Vec::new(), open: Vec::new() }),
        })
    }

    /// The layer that collects into this report.
    pub fn layer(self: &Arc<Self>) -> JunitLayer {
        SinkLayer::new(Arc::clone(self))
    }

    /// Render the report as upstream's JUnit XML.
    pub fn render(&self) -> String {
        let report = super::lock(&self.report);
        let main_seconds = self.started.elapsed().as_secs_f64();
        let cases: Vec<(&Case, f64)> = report
            .cases
            .iter()
            .map(|c| (c, (c.seconds - c.nested_seconds).max(0.0)))
            .chain(std::iter::once((&report.main, (main_seconds - report.main.nested_seconds).max(0.0))))
            .collect();
        let failures = cases.iter().filter(|(c, _)| c.failed).count();
        let total: f64 = cases.iter().map(|(_, t)| t).sum();
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
        xml.push_str(&format!(
            "<testsuites tests=\"{n}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{total:.3}\">\n",
            n = cases.len()
        ));
        xml.push_str(&format!(
            "\t<testsuite name=\"NixOS integration test\" tests=\"{n}\" errors=\"0\" failures=\"{failures}\" skipped=\"0\" time=\"{total:.3}\">\n",
            n = cases.len()
        ));
        for (case, seconds) in cases {
            let name = escape(&case.name);
            if !case.failed && case.stdout.is_empty() && case.stderr.is_empty() {
                xml.push_str(&format!("\t\t<testcase name=\"{name}\" time=\"{seconds:.3}\"/>\n"));
                continue;
            }
            xml.push_str(&format!("\t\t<testcase name=\"{name}\" time=\"{seconds:.3}\">\n"));
            if case.failed {
                xml.push_str("\t\t\t<failure message=\"test case failed\"/>\n");
            }
            if !case.stdout.is_empty() {
                xml.push_str(&format!("\t\t\t<system-out>{}</system-out>\n", escape(&case.stdout)));
            }
            if !case.stderr.is_empty() {
                xml.push_str(&format!("\t\t\t<system-err>{}</system-err>\n", escape(&case.stderr)));
            }
            xml.push_str("\t\t</testcase>\n");
        }
        xml.push_str("\t</testsuite>\n</testsuites>\n");
        xml
    }

    /// Write the report to `path`, creating its directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, self.render())
    }
}

impl Sink for JunitReport {
    /// The index of a subtest's case; `None` for other blocks.
    type BlockState = Option<usize>;

    fn line(&self, line: &Line<'_>) {
        let mut report = super::lock(&self.report);
        let case = report.current();
        match line.kind {
            // Upstream's JUnit logger ignores the machine, except in serial lines.
            LineKind::Log | LineKind::Leveled(LogLevel::Debug | LogLevel::Info | LogLevel::Warning) => {
                case.out(line.message);
            }
            LineKind::Serial => case.out(&line.serial_text()),
            LineKind::Leveled(LogLevel::Error) | LineKind::TestError => case.err(line.message),
        }
    }

    fn block_opened(&self, block: &Block) -> Option<usize> {
        let mut report = super::lock(&self.report);
        let Some(name) = &block.subtest else {
            // Upstream's JUnit logger logs a nested block's message as a line.
            report.current().out(&block.message);
            return None;
        };
        let index = report.cases.len();
        report.cases.push(Case::new(name));
        report.open.push(index);
        Some(index)
    }

    fn block_closed(&self, _block: &Block, subtest: Option<usize>, end: BlockEnd) {
        let Some(index) = subtest else { return };
        let seconds = end.elapsed.as_secs_f64();
        let mut report = super::lock(&self.report);
        if let Some(case) = report.cases.get_mut(index) {
            case.seconds = seconds;
        }
        // By index, not by popping: async code may end subtests out of order.
        report.open.retain(|&open| open != index);
        report.current().nested_seconds += seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn subtests_become_cases_and_main_comes_last() {
        let _settings = crate::log::testing::defaults();
        let report = JunitReport::new();
        let subscriber = tracing_subscriber::registry().with(report.layer());
        tracing::subscriber::with_default(subscriber, || {
            crate::log::log(None, "before any subtest");
            {
                let _ok = crate::log::subtest_block("my subtest").entered();
                crate::log::log(Some("machine"), "Subtest log");
            }
            {
                let failing = crate::log::subtest_block("failing <subtest>");
                let _entered = failing.enter();
                crate::log::log(None, "Some output");
                crate::log::test_error("Error occurred");
            }
        });
        let xml = report.render();
        let expected_start = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<testsuites tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"";
        assert!(xml.starts_with(expected_start), "{xml}");
        assert!(xml.contains("\t<testsuite name=\"NixOS integration test\" tests=\"3\" errors=\"0\" failures=\"1\" skipped=\"0\" time=\""), "{xml}");
        assert!(xml.contains("\t\t<testcase name=\"my subtest\" time=\""), "{xml}");
        assert!(xml.contains("\t\t\t<system-out>Subtest log\n</system-out>\n"), "{xml}");
        assert!(xml.contains("\t\t<testcase name=\"failing &lt;subtest&gt;\" time=\""), "{xml}");
        assert!(xml.contains("\t\t\t<failure message=\"test case failed\"/>\n\t\t\t<system-out>Some output\n</system-out>\n\t\t\t<system-err>Error occurred\n</system-err>\n"), "{xml}");
        assert!(xml.contains("\t\t<testcase name=\"main\" time=\""), "{xml}");
        assert!(xml.contains("<system-out>before any subtest\n</system-out>"), "{xml}");
        assert!(xml.ends_with("\t</testsuite>\n</testsuites>\n"), "{xml}");
        let main_at = xml.find("name=\"main\"").expect("main case");
        assert!(main_at > xml.find("name=\"my subtest\"").expect("subtest case"));
    }

    /// The `time` of case `name` in `xml`.
    fn case_time(xml: &str, name: &str) -> f64 {
        let start = format!("<testcase name=\"{name}\" time=\"");
        let at = xml.find(&start).expect("the case") + start.len();
        let len = xml[at..].find('"').expect("the time's end");
        xml[at..at + len].parse().expect("a number")
    }

    #[test]
    fn a_case_does_not_count_the_subtests_nested_in_it() {
        let _settings = crate::log::testing::defaults();
        let report = JunitReport::new();
        let subscriber = tracing_subscriber::registry().with(report.layer());
        tracing::subscriber::with_default(subscriber, || {
            let _outer = crate::log::subtest_block("outer").entered();
            std::thread::sleep(std::time::Duration::from_millis(20));
            let _inner = crate::log::subtest_block("inner").entered();
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        let xml = report.render();
        let (inner, outer, main) = (case_time(&xml, "inner"), case_time(&xml, "outer"), case_time(&xml, "main"));
        assert!(inner >= 0.2, "{xml}");
        // Counting the inner subtest would give the outer one at least 0.22 s, and main as much.
        assert!((0.02..0.2).contains(&outer), "{xml}");
        assert!(main < 0.2, "{xml}");
    }
}
