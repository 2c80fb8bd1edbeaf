//! OpenTelemetry export, JUnit report and XML log: what a run leaves for other tools.
//!
//! The spans are received by real OTLP servers: an in-process collector (`mock-collector`,
//! gRPC or HTTP/protobuf) the tests read back, and for the runs with VMs, rotel, a standalone
//! collector process, in front of it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mock_collector::Protocol;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use crate::common::otlp::{Collector, Trace, free_port};
use crate::harness::{DEBIAN_LIMIT, Run, SMOKE_LIMIT, Scenario, Tier, repo};

/// A hang guard for runs without machines.
const NO_VM_LIMIT: Duration = Duration::from_secs(60);

/// The driver command for a script without machines, exporting to `collector`.
fn exporting(scenario: &Scenario, collector: &Collector, protocol: &str, test_name: &str) -> Command {
    let mut command = scenario.command(&[]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("name", format!("vm-test-run-{test_name}"))
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SDK_DISABLED");
    command
}

fn run_script(scenario: &Scenario, mut command: Command, script: &str) -> Run {
    command.arg(scenario.write("test.py", script));
    scenario.run_command(command, NO_VM_LIMIT)
}

const NESTED_SUBTESTS: &str = r#"
with subtest("outer"):
    with log.nested("a log block, not a span"):
        with subtest("inner"):
            log.info("inside")
with subtest("second"):
    pass
"#;

#[test]
fn subtests_are_nested_spans_of_the_run_over_grpc() {
    let collector = Collector::start(Protocol::Grpc);
    let scenario = Scenario::new();
    let run = run_script(&scenario, exporting(&scenario, &collector, "grpc", "nesting"), NESTED_SUBTESTS);
    run.assert_status(0);

    // The driver flushes before it exits: everything is there now.
    let trace = collector.trace();
    let names: Vec<&str> = trace.0.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    trace.assert_one_trace();
    let root = trace.one("nixos-test nesting");
    assert_eq!(trace.parent_name(root), None);
    assert_eq!(root.attributes["test.name"], "nesting");
    assert_eq!(root.attributes["test.outcome"], "passed");
    assert_eq!(root.status, StatusCode::Unset);
    assert_eq!(root.resource["service.name"], "nixos-test-driver");
    assert_eq!(root.resource["service.version"], env!("CARGO_PKG_VERSION"));
    trace.assert_parent(trace.one("subtest: outer"), "nixos-test nesting");
    // The log block between them is not exported; the inner subtest hangs off the outer one.
    trace.assert_parent(trace.one("subtest: inner"), "subtest: outer");
    trace.assert_parent(trace.one("subtest: second"), "nixos-test nesting");
    assert_eq!(trace.one("subtest: inner").attributes["ntd.subtest"], "inner");
}

#[test]
fn a_failing_subtest_is_an_error_span_over_http() {
    let collector = Collector::start(Protocol::HttpBinary);
    let scenario = Scenario::new();
    let mut command = exporting(&scenario, &collector, "http/protobuf", "failing");
    command.env("OTEL_SERVICE_NAME", "nightly-tests").env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci");
    let script = "with subtest(\"fine\"):\n    pass\nwith subtest(\"broken\"):\n    raise Exception(\"boom\")\n";
    let run = run_script(&scenario, command, script);
    run.assert_status(1);

    let trace = collector.trace();
    trace.assert_one_trace();
    let root = trace.one("nixos-test failing");
    assert_eq!(root.attributes["test.outcome"], "failed");
    assert_eq!(root.status, StatusCode::Error);
    assert_eq!(root.resource["service.name"], "nightly-tests");
    assert_eq!(root.resource["deployment.environment"], "ci");
    assert_eq!(trace.one("subtest: fine").status, StatusCode::Unset);
    let broken = trace.one("subtest: broken");
    assert_eq!(broken.status, StatusCode::Error);
    assert!(broken.status_message.contains("boom"), "{broken:#?}");
    // The error line the log shows is an event on the span it happened in.
    assert!(
        broken.events.iter().any(|event| event.contains("Test \"broken\" failed with error: \"boom\"")),
        "{broken:#?}"
    );
}

#[test]
fn spans_are_flushed_when_the_global_timeout_stops_a_stubborn_script() {
    let collector = Collector::start(Protocol::HttpBinary);
    let scenario = Scenario::new();
    let mut command = exporting(&scenario, &collector, "http/protobuf", "stubborn");
    command.args(["--global-timeout", "2"]);
    // A script that swallows the interruption, so the driver has to end the process itself.
    let script = "import time\nwith subtest(\"never ends\"):\n    while True:\n        try:\n            time.sleep(30)\n        except BaseException:\n            pass\n";
    let run = run_script(&scenario, command, script);
    run.assert_status(143);
    run.assert_stderr_contains("the test script did not stop after the global timeout; exiting");

    // The run and the subtest were still open when the process ended; they are exported anyway.
    let trace = collector.trace();
    let root = trace.one("nixos-test stubborn");
    assert_eq!(root.attributes["test.outcome"], "timed out");
    assert_eq!(root.status, StatusCode::Error);
    let subtest = trace.one("subtest: never ends");
    trace.assert_parent(subtest, "nixos-test stubborn");
    assert_eq!(subtest.status, StatusCode::Error);
    assert_eq!(subtest.status_message, "the test script did not stop after the global timeout");
}

#[test]
fn sdk_disabled_exports_nothing() {
    let collector = Collector::start(Protocol::HttpBinary);
    let scenario = Scenario::new();
    let mut command = exporting(&scenario, &collector, "http/protobuf", "disabled");
    command.env("OTEL_SDK_DISABLED", "true");
    let run = run_script(&scenario, command, NESTED_SUBTESTS);
    run.assert_status(0);
    assert!(collector.trace().0.is_empty(), "{:#?}", collector.trace());
}

#[test]
fn an_unreachable_collector_does_not_fail_the_test() {
    // A port nothing listens on: bound, then released.
    let port = free_port();
    let scenario = Scenario::new();
    for protocol in ["grpc", "http/protobuf"] {
        let mut command = scenario.command(&[]);
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "2000");
        let run = run_script(&scenario, command, NESTED_SUBTESTS);
        run.assert_status(0);
        run.assert_stderr_contains("test script finished in ");
        run.assert_stderr_contains("nixos-test-driver: OpenTelemetry export failed (the test goes on): ");
    }
}

#[test]
fn an_unknown_protocol_is_one_clear_error() {
    let scenario = Scenario::new();
    let mut command = scenario.command(&[]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon");
    let run = run_script(&scenario, command, "pass\n");
    run.assert_status(2);
    run.assert_stderr_contains(
        "nixos-test-driver: error: cannot set up OpenTelemetry export: OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon \
         is not supported (use grpc or http/protobuf)",
    );
}

#[test]
fn junit_report_and_xml_log_follow_the_subtests() {
    let scenario = Scenario::new();
    let mut command = scenario.command(&["--junit-xml", "report.xml"]);
    let logfile = scenario.path().join("log.xml");
    command.env("LOGFILE", &logfile);
    let script = "log.info(\"before the subtests\")\n\
                  with subtest(\"fine\"):\n    log.info(\"all good & <fine>\")\n\
                  with subtest(\"broken\"):\n    raise Exception(\"boom\")\n";
    let run = run_script(&scenario, command, script);
    run.assert_status(1);

    let junit = read(&scenario.out_dir().join("report.xml"));
    let doc = roxmltree::Document::parse(&junit).unwrap_or_else(|e| panic!("JUnit report: {e}\n{junit}"));
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).expect("a testsuite");
    assert_eq!(suite.attribute("name"), Some("NixOS integration test"));
    let cases: Vec<roxmltree::Node> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
    let names: Vec<&str> = cases.iter().filter_map(|c| c.attribute("name")).collect();
    assert_eq!(names, ["fine", "broken"], "{junit}");
    let child_text = |case: &roxmltree::Node, tag: &str| {
        case.children().find(|n| n.has_tag_name(tag)).and_then(|n| n.text()).unwrap_or_default().to_owned()
    };
    let has_failure = |case: &roxmltree::Node| case.children().any(|n| n.has_tag_name("failure"));
    assert!(!has_failure(&cases[0]), "{junit}");
    assert!(child_text(&cases[0], "system-out").contains("all good & <fine>"), "{junit}");
    assert!(has_failure(&cases[1]), "{junit}");
    assert!(child_text(&cases[1], "system-err").contains("Test \"broken\" failed with error: \"boom\""), "{junit}");
    assert!(child_text(&suite, "system-out").contains("before the subtests"), "{junit}");

    let xml = read(&logfile);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("XML log: {e}\n{xml}"));
    assert!(doc.root_element().has_tag_name("logfile"), "{xml}");
    let heads: Vec<&str> = doc.descendants().filter(|n| n.has_tag_name("head")).filter_map(|n| n.text()).collect();
    assert!(heads.contains(&"subtest: fine") && heads.contains(&"subtest: broken"), "{xml}");
    let fine = doc
        .descendants()
        .find(|n| n.has_tag_name("nest") && n.first_element_child().and_then(|h| h.text()) == Some("subtest: fine"))
        .expect("the nest of subtest fine");
    assert!(fine.descendants().any(|n| n.has_tag_name("line") && n.text() == Some("all good & <fine>")), "{xml}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// rotel's collector binary: `NTD_ROTEL`, or installed by scripts/install-rotel.
fn rotel_agent() -> &'static Path {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT.get_or_init(|| {
        if let Some(path) = std::env::var_os("NTD_ROTEL") {
            return PathBuf::from(path);
        }
        let output = Command::new(repo().join("scripts/install-rotel"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/install-rotel");
        assert!(output.status.success(), "scripts/install-rotel failed: the telemetry tests need rotel from PyPI");
        PathBuf::from(String::from_utf8(output.stdout).expect("utf-8 path").trim())
    })
}

/// A rotel collector process receiving OTLP on both protocols and forwarding it, over gRPC,
/// to `upstream`.
struct Rotel {
    child: Child,
    /// Its log; outside the scenario, whose directory no process may hold after a run.
    _dir: tempfile::TempDir,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Rotel {
    fn start(upstream: &Collector) -> Rotel {
        let dir = tempfile::Builder::new().prefix("ntd-rotel.").tempdir().expect("rotel's directory");
        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = Command::new(rotel_agent())
            .arg("start")
            .args(["--otlp-grpc-endpoint", &grpc.to_string()])
            .args(["--otlp-http-endpoint", &http.to_string()])
            .args(["--exporter", "otlp", "--otlp-exporter-protocol", "grpc"])
            .args(["--otlp-exporter-endpoint", &upstream.endpoint()])
            .arg("--log-file")
            .arg(dir.path().join("rotel.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel");
        let rotel = Rotel { child, _dir: dir, grpc, http };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(rotel.grpc).is_err() || TcpStream::connect(rotel.http).is_err() {
            assert!(Instant::now() < deadline, "rotel did not listen on {grpc} and {http} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        rotel
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own live child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

#[test]
fn the_otel_example_is_one_trace_in_a_real_collector_over_grpc() {
    let collector = Collector::start(Protocol::Grpc);
    let scenario = Scenario::new();
    let rotel = Rotel::start(&collector);
    let mut command = Command::new(repo().join("scripts/run-example"));
    command
        .arg("otel")
        .env("NTD_DRIVER", env!("CARGO_BIN_EXE_nixos-test-driver"))
        .env("NTD_GUEST_DIR", crate::harness::guest())
        .env("TMPDIR", scenario.tmp_dir())
        .env("NO_COLOR", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", rotel.grpc))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let run = scenario.run_command(command, DEBIAN_LIMIT);
    run.assert_status(0);
    let trace = collector.wait_for_span("nixos-test otel", Duration::from_secs(30));
    drop(rotel);
    let trace = Trace(trace.0);
    trace.assert_one_trace();

    let root = trace.one("nixos-test otel");
    assert_eq!(trace.parent_name(root), None);
    assert_eq!(root.attributes["test.outcome"], "passed");
    // The boot phases: spawn and QMP while start_all starts the machine, the shell when the
    // first command needs it.
    trace.assert_parent(trace.one("machine.boot.spawn"), "nixos-test otel");
    trace.assert_parent(trace.one("machine.boot.qmp"), "nixos-test otel");
    let first_wait = trace.one_with("machine.wait_for_unit", "argument", "multi-user.target");
    assert_eq!(trace.parent_name(first_wait), Some("nixos-test otel"));
    let shell = trace.one("machine.boot.shell");
    assert_eq!(shell.parent_span_id, first_wait.span_id, "{:#?}", trace.names());
    assert!(shell.attributes["boot.duration_s"].parse::<f64>().expect("a duration") > 0.0, "{shell:#?}");

    trace.assert_parent(trace.one("subtest: the hello service answers"), "nixos-test otel");
    let check = trace.one_with("machine.succeed", "command", "systemctl is-active hello.service");
    trace.assert_parent(check, "subtest: the hello service answers");
    assert_eq!(check.attributes["machine"], "machine");
    assert_eq!(check.attributes["exit_code"], "0");
    assert_eq!(check.attributes["output.bytes"], "7", "`active\\n`: {check:#?}");
    assert_eq!(check.status, StatusCode::Unset);

    // The guest command saw its own span as TRACEPARENT.
    let echo = trace.one_with("machine.succeed", "command", "echo ${TRACEPARENT:-nothing: no OTLP endpoint}");
    trace.assert_parent(echo, "subtest: guest commands know their span");
    let expected = format!("the guest ran under 00-{}-{}-01", echo.trace_id, echo.span_id);
    run.assert_stderr_contains(&expected);
}

#[test]
fn a_failing_command_is_an_error_span_in_a_real_collector_over_http() {
    let collector = Collector::start(Protocol::Grpc);
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let rotel = Rotel::start(&collector);
    let script = scenario.write("test.py", "machine.succeed(\"echo some output; exit 3\")\n");
    let mut command = scenario.command(&[]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", rotel.http))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("name", "vm-test-run-exit-three");
    let run = scenario.run_with(command, &script, SMOKE_LIMIT);
    run.assert_status(1);
    let trace = collector.wait_for_span("nixos-test exit-three", Duration::from_secs(30));
    drop(rotel);

    let root = trace.one("nixos-test exit-three");
    assert_eq!(root.status, StatusCode::Error);
    let failed = trace.one("machine.succeed");
    trace.assert_parent(failed, "nixos-test exit-three");
    assert_eq!(failed.attributes["command"], "echo some output; exit 3");
    assert_eq!(failed.attributes["exit_code"], "3");
    assert_eq!(failed.status, StatusCode::Error);
    assert!(failed.status_message.contains("exit code 3"), "{failed:#?}");
}

#[test]
fn spans_are_flushed_when_sigterm_stops_a_command() {
    let collector = Collector::start(Protocol::Grpc);
    let mut scenario = Scenario::new();
    let script = scenario.machine("machine", Tier::Smoke, &[]);
    let mut command = exporting(&scenario, &collector, "grpc", "terminated");
    let test = scenario.write("test.py", "machine.succeed('true')\nmachine.succeed('sleep 60')\n");
    command.arg(&test).arg("--start-scripts").arg(&script);
    let run = scenario.run_signalled(command, "must succeed: sleep 60", None, libc::SIGTERM, SMOKE_LIMIT);
    run.assert_status(143);

    let trace = collector.wait_for_span("nixos-test terminated", Duration::from_secs(30));
    let root = trace.one("nixos-test terminated");
    assert_eq!(root.attributes["test.outcome"], "terminated");
    assert_eq!(root.status, StatusCode::Error);
    let interrupted = trace.one_with("machine.succeed", "command", "sleep 60");
    trace.assert_parent(interrupted, "nixos-test terminated");
    assert_eq!(interrupted.status, StatusCode::Error);
}
