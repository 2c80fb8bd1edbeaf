//! The JUnit report (`--junit-xml`) and the XML log (`LOGFILE`), parsed: the report has the
//! whole run in its suite and one test case per subtest, with the failure where it happened; the log nests blocks
//! as upstream's `XMLLogger` does, each closed by its `(finished: …)` line. Both files are
//! well-formed however the run ends, after a machine error too.

use roxmltree::{Document, Node};

use crate::harness::{Run, Scenario, parse_xml, read_output};

/// A script with nested subtests, commands, serial lines and a failing command at the end.
const SUBTESTS: &str = r#"
log.info("before the subtests")
start_all()
with subtest("outer"):
    alpha.succeed("echo in outer")
    with subtest("inner"):
        alpha.succeed("echo 'inner <serial> & more' >&2")
        alpha.wait_for_console_text("inner <serial>")
    log.info("back in outer")
with subtest("broken"):
    alpha.succeed("echo bad output; exit 3")
"#;

/// Run `script` on one fake machine with both reports; returns the run, the JUnit report and
/// the XML log.
fn run_with_reports(script: &str, options: &[&str]) -> (Run, String, String) {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", options);
    let logfile = scenario.path().join("log.xml");
    let mut command = scenario.command(&["--junit-xml", "report.xml"]);
    command.env("LOGFILE", &logfile);
    let run = scenario.run_with(command, &scenario.script(script), crate::harness::LIMIT);
    let junit = read_output(&scenario.out_dir().join("report.xml"), &run);
    let xml = read_output(&logfile, &run);
    (run, junit, xml)
}

/// The text of `case`'s child element `tag` (`system-out`, `system-err`).
fn child_text(case: Node<'_, '_>, tag: &str) -> String {
    case.children().find(|n| n.has_tag_name(tag)).and_then(|n| n.text()).unwrap_or_default().to_owned()
}

fn has_failure(case: Node<'_, '_>) -> bool {
    case.children().any(|n| n.has_tag_name("failure"))
}

#[test]
fn the_junit_report_has_the_run_in_the_suite_and_a_case_per_subtest() {
    let (run, junit, _) = run_with_reports(SUBTESTS, &[]);
    run.assert_status(1);
    let doc = parse_xml("JUnit report", &junit);
    let suites = doc.root_element();
    assert!(suites.has_tag_name("testsuites"), "{junit}");
    let suite = suites.children().find(|n| n.has_tag_name("testsuite")).expect("a testsuite");
    assert_eq!(suite.attribute("name"), Some("NixOS integration test"));
    let cases: Vec<Node> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
    let names: Vec<&str> = cases.iter().filter_map(|c| c.attribute("name")).collect();
    // As upstream's JunitXMLLogger: no `main` case when there are subtests.
    assert_eq!(names, ["outer", "inner", "broken"], "{junit}");
    assert_eq!(suite.attribute("tests"), Some("3"), "{junit}");
    assert_eq!(suite.attribute("failures"), Some("1"), "{junit}");
    let [outer, inner, broken] = cases[..] else { unreachable!() };
    assert!(!has_failure(outer) && !has_failure(inner), "{junit}");
    assert!(has_failure(broken), "{junit}");
    // Each case has the lines logged while it was the current subtest: the inner subtest's
    // lines are not the outer one's.
    let outer_out = child_text(outer, "system-out");
    assert!(outer_out.contains("must succeed: echo in outer\n"), "{junit}");
    assert!(outer_out.contains("back in outer\n"), "{junit}");
    assert!(!outer_out.contains("inner <serial>"), "{junit}");
    assert!(child_text(inner, "system-out").contains("alpha # inner <serial> & more\n"), "{junit}");
    assert!(child_text(broken, "system-out").contains("output: bad output\n"), "{junit}");
    assert!(
        child_text(broken, "system-err")
            .contains("Test \"broken\" failed with error: \"command `echo bad output; exit 3` failed (exit code 3)\""),
        "{junit}"
    );
    // The suite's own output has the whole run: lines before the subtests, the subtests'
    // lines, and the traceback reported after them.
    let suite_out = child_text(suite, "system-out");
    assert!(suite_out.contains("before the subtests\n"), "{junit}");
    assert!(suite_out.contains("alpha # inner <serial> & more\n"), "{junit}");
    assert!(
        child_text(suite, "system-err").contains("RequestedAssertionFailed: command `echo bad output; exit 3`"),
        "{junit}"
    );
    for case in cases {
        // junit_xml leaves out a zero time.
        let time: f64 = case.attribute("time").map_or(Some(0.0), |t| t.parse().ok()).expect("a time");
        assert!((0.0..60.0).contains(&time), "{junit}");
    }
}

/// The `<nest>` whose `<head>` is `head`.
fn nest<'a, 'i>(doc: &'a Document<'i>, head: &str) -> Node<'a, 'i> {
    doc.descendants()
        .find(|n| n.has_tag_name("nest") && n.first_element_child().and_then(|h| h.text()) == Some(head))
        .unwrap_or_else(|| panic!("no <nest> with head {head:?}"))
}

/// The text of the last `<line>` directly in `nest`.
fn last_line<'a>(nest: Node<'a, '_>) -> &'a str {
    nest.children().rfind(|n| n.has_tag_name("line")).and_then(|n| n.text()).unwrap_or_default()
}

#[test]
fn the_xml_log_nests_blocks_as_upstreams() {
    let (run, _, xml) = run_with_reports(SUBTESTS, &[]);
    run.assert_status(1);
    let doc = parse_xml("XML log", &xml);
    assert!(doc.root_element().has_tag_name("logfile"), "{xml}");
    // Blocks nest as the code does: the script, its subtests, their commands.
    let script = nest(&doc, "run the VM test script");
    let outer = nest(&doc, "subtest: outer");
    let inner = nest(&doc, "subtest: inner");
    assert_eq!(outer.parent_element(), Some(script), "{xml}");
    assert_eq!(inner.parent_element(), Some(outer), "{xml}");
    let command_head = "must succeed: echo 'inner <serial> & more' >&2";
    let command = nest(&doc, command_head);
    assert_eq!(command.parent_element(), Some(inner), "{xml}");
    assert_eq!(command.first_element_child().and_then(|h| h.attribute("machine")), Some("alpha"), "{xml}");
    // Each finished block ends with upstream's line.
    for (block, head) in [(inner, "subtest: inner"), (outer, "subtest: outer"), (command, command_head)] {
        let end = last_line(block);
        assert!(end.starts_with(&format!("(finished: {head}, in ")) && end.ends_with(" seconds)"), "{end:?} in {xml}");
    }
    // Serial lines are lines of their machine, typed.
    let serial = doc
        .descendants()
        .find(|n| n.has_tag_name("line") && n.text() == Some("inner <serial> & more"))
        .unwrap_or_else(|| panic!("no serial line in {xml}"));
    assert_eq!(serial.attribute("machine"), Some("alpha"));
    assert_eq!(serial.attribute("type"), Some("serial"));
    // The failed command and subtest close their nests without a finished line; the error is
    // in the subtest's nest.
    let broken = nest(&doc, "subtest: broken");
    assert!(!last_line(broken).starts_with("(finished:"), "{xml}");
    assert!(
        broken.children().any(|n| n.text().is_some_and(|t| t.starts_with("Test \"broken\" failed with error: "))),
        "{xml}"
    );
    let failed = nest(&doc, "must succeed: echo bad output; exit 3");
    assert!(!last_line(failed).starts_with("(finished:"), "{xml}");
    // Cleanup comes last, after the script's nest.
    let cleanup = nest(&doc, "cleanup");
    assert_eq!(cleanup.parent_element(), Some(doc.root_element()), "{xml}");
    assert!(last_line(cleanup).starts_with("(finished: cleanup, in "), "{xml}");
}

#[test]
fn both_reports_are_well_formed_after_a_machine_error() {
    let script = "start_all()\nwith subtest(\"panics\"):\n    alpha.succeed('true')\n    alpha.succeed('fake-panic')\n";
    let (run, junit, xml) = run_with_reports(script, &[]);
    run.assert_status(1);
    let doc = parse_xml("JUnit report", &junit);
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("panics"))
        .unwrap_or_else(|| panic!("no case for the subtest:\n{junit}"));
    assert!(has_failure(case), "{junit}");
    assert!(
        child_text(case, "system-err").contains("the backdoor shell disconnected while running `fake-panic`"),
        "{junit}"
    );
    let doc = parse_xml("XML log", &xml);
    let panics = nest(&doc, "subtest: panics");
    assert!(panics.descendants().any(|n| n.text().is_some_and(|t| t.contains("Kernel panic - not syncing"))), "{xml}");
    assert!(
        doc.descendants().any(|n| n.text().is_some_and(|t| t.contains("ntd.errors.MachineError: alpha: "))),
        "{xml}"
    );
}
