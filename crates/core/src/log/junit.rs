//! The JUnit report of `--junit-xml`, in the shape upstream's `JunitXMLLogger` (`logger.py`)
//! writes through the `junit_xml` library.
//!
//! One suite, "NixOS integration test". Its own `system-out` holds every line of the run and
//! its `system-err` every error; then one test case per subtest (in the order they first
//! started; a name used twice is one case), holding the lines logged while it was the
//! innermost subtest, and a `failure` when an error was logged there. Only a run without
//! subtests gets a case `main`, for the whole script. A case's time excludes the subtests
//! nested in it. What goes into a case is what upstream's logger logs: a nested block adds
//! only its message, with no `finished` line, and machines appear only in serial lines.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::LogLevel;
use super::sink::{Block, BlockEnd, Line, LineKind, Sink, SinkLayer};
use super::xml::escape;

#[derive(Debug, Default)]
struct Case {
    name: String,
    /// Seconds from the subtest's start to its end (the last run's, for a repeated name).
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

    /// Upstream's `log`: a line of `system-out`.
    fn out(&mut self, line: &str) {
        self.stdout.push_str(line);
        self.stdout.push('\n');
    }

    /// Upstream's `error`: a line of `system-err`, which fails the case.
    fn err(&mut self, line: &str) {
        self.stderr.push_str(line);
        self.stderr.push('\n');
        self.failed = true;
    }

    /// The case's own time: its subtests' time excluded.
    fn own_seconds(&self) -> f64 {
        (self.seconds - self.nested_seconds).max(0.0)
    }
}

#[derive(Debug)]
struct Report {
    /// The whole run: the suite's `system-out`/`system-err`, and `main`'s failure.
    suite: Case,
    cases: Vec<Case>,
    /// Open subtests, innermost last (indexes into `cases`).
    open: Vec<usize>,
    /// The failure artifacts' paths, attached to every failed case.
    artifacts: Vec<String>,
}

impl Report {
    /// The innermost open subtest's case.
    fn current(&mut self) -> Option<&mut Case> {
        self.open.last().and_then(|&index| self.cases.get_mut(index))
    }

    /// A line of the run: the suite's, and the current subtest's (`error`: its `system-err`,
    /// failing both).
    fn record(&mut self, text: &str, error: bool) {
        let add = |case: &mut Case| if error { case.err(text) } else { case.out(text) };
        add(&mut self.suite);
        if let Some(case) = self.current() {
            add(case);
        }
    }
}

/// A JUnit report being collected; write it with [`JunitReport::write`].
#[derive(Debug)]
pub struct JunitReport {
    /// When the run started (`main`'s time).
    started: Instant,
    report: Mutex<Report>,
}

/// The `tracing` layer of a [`JunitReport`].
pub type JunitLayer = SinkLayer<Arc<JunitReport>>;

impl JunitReport {
    /// An empty report; the run starts now.
    pub fn new() -> Arc<JunitReport> {
        Arc::new(JunitReport {
            started: Instant::now(),
            report: Mutex::new(Report {
                suite: Case::new("main"),
                cases: Vec::new(),
                open: Vec::new(),
                artifacts: Vec::new(),
            }),
        })
    }

    /// The layer that collects into this report.
    pub fn layer(self: &Arc<Self>) -> JunitLayer {
        SinkLayer::new(Arc::clone(self))
    }

    /// Render the report as upstream's JUnit XML.
    pub fn render(&self) -> String {
        let report = super::lock(&self.report);
        // (name, seconds, failed, stdout, stderr) of each case.
        let cases: Vec<(&str, f64, bool, &str, &str)> = if report.cases.is_empty() {
            let main = &report.suite;
            vec![("main", self.started.elapsed().as_secs_f64(), main.failed, "", "")]
        } else {
            report.cases.iter().map(|c| (c.name.as_str(), c.own_seconds(), c.failed, &*c.stdout, &*c.stderr)).collect()
        };
        let failures = cases.iter().filter(|case| case.2).count();
        let tests = cases.len();
        let total: f64 = cases.iter().map(|case| case.1).sum();
        let total = crate::config::python_float(total);
        let mut xml = String::from("<?xml version=\"1.0\" ?>\n");
        xml.push_str(&format!(
            "<testsuites disabled=\"0\" errors=\"0\" failures=\"{failures}\" tests=\"{tests}\" time=\"{total}\">\n"
        ));
        xml.push_str(&format!(
            "\t<testsuite disabled=\"0\" errors=\"0\" failures=\"{failures}\" name=\"NixOS integration test\" skipped=\"0\" tests=\"{tests}\" time=\"{total}\">\n"
        ));
        if !report.suite.stdout.is_empty() {
            xml.push_str(&format!("\t\t<system-out>{}</system-out>\n", escape(&report.suite.stdout)));
        }
        if !report.suite.stderr.is_empty() {
            xml.push_str(&format!("\t\t<system-err>{}</system-err>\n", escape(&report.suite.stderr)));
        }
        for (name, seconds, failed, stdout, stderr) in cases {
            // junit_xml leaves out a zero time.
            let time = if seconds > 0.0 { format!(" time=\"{seconds:.6}\"") } else { String::new() };
            let open = format!("\t\t<testcase name=\"{}\"{time}", escape(name));
            if !failed && stdout.is_empty() && stderr.is_empty() {
                xml.push_str(&format!("{open}/>\n"));
                continue;
            }
            xml.push_str(&format!("{open}>\n"));
            let artifacts = if failed { report.artifacts.as_slice() } else { &[] };
            if failed && artifacts.is_empty() {
                xml.push_str("\t\t\t<failure type=\"failure\" message=\"test case failed\"/>\n");
            } else if failed {
                // The failure names the files; `[[ATTACHMENT|path]]` lines in the case's output
                // are how GitLab and Jenkins find a case's attachments.
                let listing: String = artifacts.iter().map(|path| format!("\n{path}")).collect();
                xml.push_str(&format!(
                    "\t\t\t<failure type=\"failure\" message=\"test case failed\">failure artifacts:{}</failure>\n",
                    escape(&listing)
                ));
            }
            let attachments: String = artifacts.iter().map(|path| format!("[[ATTACHMENT|{path}]]\n")).collect();
            if !stdout.is_empty() || !attachments.is_empty() {
                xml.push_str(&format!("\t\t\t<system-out>{}{}</system-out>\n", escape(stdout), escape(&attachments)));
            }
            if !stderr.is_empty() {
                xml.push_str(&format!("\t\t\t<system-err>{}</system-err>\n", escape(stderr)));
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
        if line.kind == LineKind::Artifact {
            report.artifacts.push(line.message.to_owned());
            return;
        }
        // Upstream's JUnit logger ignores the machine, except in serial lines.
        let (text, error) = match line.kind {
            LineKind::Log | LineKind::Leveled(LogLevel::Debug | LogLevel::Info | LogLevel::Warning) => {
                (line.message.to_owned(), false)
            }
            LineKind::Serial => (line.serial_text(), false),
            LineKind::Leveled(LogLevel::Error) | LineKind::TestError => (line.message.to_owned(), true),
            // Taken above.
            LineKind::Artifact => return,
        };
        report.record(&text, error);
    }

    fn block_opened(&self, block: &Block) -> Option<usize> {
        let mut report = super::lock(&self.report);
        let Some(name) = &block.subtest else {
            // Upstream's JUnit logger logs a nested block's message as a line.
            report.record(&block.message, false);
            return None;
        };
        // A name used again is the same case (upstream keys its cases by name).
        let index = match report.cases.iter().position(|case| case.name == *name) {
            Some(index) => index,
            None => {
                report.cases.push(Case::new(name));
                report.cases.len() - 1
            }
        };
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
        // By position from the end, not by popping: async code may end subtests out of order.
        if let Some(at) = report.open.iter().rposition(|&open| open == index) {
            report.open.remove(at);
        }
        if let Some(parent) = report.current() {
            parent.nested_seconds += seconds;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn subtests_become_cases_after_the_suites_own_output() {
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
        assert!(
            xml.starts_with(
                "<?xml version=\"1.0\" ?>\n<testsuites disabled=\"0\" errors=\"0\" failures=\"1\" tests=\"2\" time=\""
            ),
            "{xml}"
        );
        assert!(xml.contains("\t<testsuite disabled=\"0\" errors=\"0\" failures=\"1\" name=\"NixOS integration test\" skipped=\"0\" tests=\"2\" time=\""), "{xml}");
        // The suite's own output: every line, subtests' included, before the cases.
        assert!(xml.contains("\t\t<system-out>before any subtest\nSubtest log\nSome output\n</system-out>\n\t\t<system-err>Error occurred\n</system-err>\n\t\t<testcase name=\"my subtest\""), "{xml}");
        assert!(xml.contains("\t\t\t<system-out>Subtest log\n</system-out>\n"), "{xml}");
        assert!(xml.contains("\t\t<testcase name=\"failing &lt;subtest&gt;\""), "{xml}");
        assert!(xml.contains("\t\t\t<failure type=\"failure\" message=\"test case failed\"/>\n\t\t\t<system-out>Some output\n</system-out>\n\t\t\t<system-err>Error occurred\n</system-err>\n"), "{xml}");
        // With subtests there is no `main` case (nixpkgs' junit check counts 2 cases here).
        assert!(!xml.contains("name=\"main\""), "{xml}");
        assert!(xml.ends_with("\t</testsuite>\n</testsuites>\n"), "{xml}");
    }

    #[test]
    fn a_run_without_subtests_is_one_case_main_failed_by_its_errors() {
        let _settings = crate::log::testing::defaults();
        let report = JunitReport::new();
        let subscriber = tracing_subscriber::registry().with(report.layer());
        tracing::subscriber::with_default(subscriber, || {
            crate::log::log(None, "a line");
            crate::log::test_error("it broke");
        });
        let xml = report.render();
        assert!(xml.contains("tests=\"1\""), "{xml}");
        assert!(
            xml.contains("\t\t<system-out>a line\n</system-out>\n\t\t<system-err>it broke\n</system-err>\n"),
            "{xml}"
        );
        assert!(xml.contains("\t\t<testcase name=\"main\" time=\""), "{xml}");
        assert!(
            xml.contains("\t\t\t<failure type=\"failure\" message=\"test case failed\"/>\n\t\t</testcase>\n"),
            "{xml}"
        );
    }

    #[test]
    fn a_repeated_subtest_name_is_one_case() {
        let _settings = crate::log::testing::defaults();
        let report = JunitReport::new();
        let subscriber = tracing_subscriber::registry().with(report.layer());
        tracing::subscriber::with_default(subscriber, || {
            for round in ["first", "second"] {
                let _block = crate::log::subtest_block("again").entered();
                crate::log::log(None, round);
            }
        });
        let xml = report.render();
        assert_eq!(xml.matches("<testcase name=\"again\"").count(), 1, "{xml}");
        assert!(xml.contains("\t\t\t<system-out>first\nsecond\n</system-out>\n"), "{xml}");
        assert!(xml.contains(" tests=\"1\" "), "{xml}");
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
        let (inner, outer) = (case_time(&xml, "inner"), case_time(&xml, "outer"));
        assert!(inner >= 0.2, "{xml}");
        // Counting the inner subtest would give the outer one at least 0.22 s.
        assert!((0.02..0.2).contains(&outer), "{xml}");
    }
}
