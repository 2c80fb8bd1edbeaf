//! The JUnit report of `--junit-xml`, in the shape of upstream's `test_reporter.py`.
//!
//! One test case per `subtest` (its log lines in `system-out`, its error lines in
//! `system-err`, a `failure` when it failed) and a last case `main` for the whole script and
//! what was logged outside any subtest; all in one suite, "NixOS integration test". A case's
//! time excludes the subtests nested in it, as upstream's does.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::xml::escape;
use super::{Fields, TARGET, field, span_name};

#[derive(Debug)]
struct Case {
    name: String,
    started: Instant,
    seconds: f64,
    nested_seconds: f64,
    stdout: String,
    stderr: String,
    failed: bool,
}

impl Case {
    fn new(name: &str) -> Case {
        Case {
            name: name.to_owned(),
            started: Instant::now(),
            seconds: 0.0,
            nested_seconds: 0.0,
            stdout: String::new(),
            stderr: String::new(),
            failed: false,
        }
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
        match self.open.last() {
            Some(&index) => &mut self.cases[index],
            None => &mut self.main,
        }
    }
}

/// A JUnit report being collected; write it with [`JunitReport::write`].
#[derive(Debug)]
pub struct JunitReport {
    report: Mutex<Report>,
}

/// Case `id`'s subtest index, kept in the span's extensions.
struct SubtestIndex(usize);

impl JunitReport {
    /// An empty report; its `main` case starts now.
    pub fn new() -> Arc<JunitReport> {
        Arc::new(JunitReport {
            report: Mutex::new(Report { main: Case::new("main"), cases: Vec::new(), open: Vec::new() }),
        })
    }

    /// The layer that collects into this report.
    pub fn layer(self: &Arc<Self>) -> JunitLayer {
        JunitLayer { report: Arc::clone(self) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Report> {
        match self.report.lock() {
            Ok(report) => report,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Render the report as upstream's JUnit XML.
    pub fn render(&self) -> String {
        let report = self.lock();
        let main_seconds = report.main.started.elapsed().as_secs_f64();
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

/// The `tracing` layer of a [`JunitReport`].
pub struct JunitLayer {
    report: Arc<JunitReport>,
}

impl<S> Layer<S> for JunitLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let mut report = self.report.lock();
        if attrs.metadata().name() == span_name::SUBTEST {
            let index = report.cases.len();
            report.cases.push(Case::new(fields.subtest.as_deref().unwrap_or("subtest")));
            report.open.push(index);
            drop(report);
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(SubtestIndex(index));
            }
        } else if let Some(message) = fields.block {
            // Upstream's JUnit logger logs a nested block's message as a line.
            let case = report.current();
            case.stdout.push_str(&message);
            case.stdout.push('\n');
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(index) = span.extensions().get::<SubtestIndex>().map(|i| i.0) else { return };
        let mut report = self.report.lock();
        let seconds = report.cases[index].started.elapsed().as_secs_f64();
        report.cases[index].seconds = seconds;
        report.open.retain(|&open| open != index);
        report.current().nested_seconds += seconds;
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = event.metadata().level();
        let passes_level = fields.passes_level(level);
        let message = fields.message.unwrap_or_default();
        let mut report = self.report.lock();
        match fields.kind.as_deref() {
            Some(field::KIND_TEST_ERROR) => {
                let case = report.current();
                case.stderr.push_str(&message);
                case.stderr.push('\n');
                case.failed = true;
            }
            Some(field::KIND_SERIAL) if super::print_serial() => {
                let machine = fields.machine.as_deref().unwrap_or("?");
                report.current().stdout.push_str(&format!("{machine} # {message}\n"));
            }
            Some(field::KIND_SERIAL) => {}
            Some(field::KIND_LEVELED) if *level == tracing::Level::ERROR => {
                let case = report.current();
                case.stderr.push_str(&message);
                case.stderr.push('\n');
                case.failed = true;
            }
            _ if passes_level => {
                let case = report.current();
                case.stdout.push_str(&message);
                case.stdout.push('\n');
            }
            _ => {}
        }
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
}
