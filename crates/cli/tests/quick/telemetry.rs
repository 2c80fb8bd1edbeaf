//! OpenTelemetry export of runs on fake machines, received by an OTLP server in the test
//! (`mock-collector`, both protocols): the run span, subtest spans, the boot phases, one span
//! per machine method with its command, exit code and output size, status ERROR where a
//! command failed, spans flushed when SIGTERM stops the run, and `TRACEPARENT` in the guest
//! naming the method span its command runs under.

use std::process::Command;

use mock_collector::Protocol;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use crate::common::otlp::{Collector, Trace};
use crate::harness::{LIMIT, Run, Scenario};

/// Run `script` on one fake machine, exporting to `collector` as test `name`.
fn run_exporting(collector: &Collector, protocol: &str, name: &str, script: &str) -> Run {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &["--fake-unit-later", "app.service=active@0.2"]);
    let command = exporting(&scenario, collector, protocol, name);
    scenario.run_with(command, &scenario.script(script), LIMIT)
}

/// The driver command exporting to `collector`, with Nix's `$name` for the test's name.
fn exporting(scenario: &Scenario, collector: &Collector, protocol: &str, name: &str) -> Command {
    let mut command = scenario.command(&[]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("name", format!("vm-test-run-{name}"))
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("TRACEPARENT");
    command
}

const TRACED: &str = r#"
start_all()
alpha.wait_for_unit("app.service")
with subtest("commands"):
    alpha.succeed("printf hello")
    print("the guest ran under " + alpha.succeed("echo $TRACEPARENT").strip())
"#;

#[test]
fn a_run_on_a_fake_machine_is_one_trace_over_grpc() {
    let collector = Collector::start(Protocol::Grpc);
    let run = run_exporting(&collector, "grpc", "traced", TRACED);
    run.assert_status(0);
    // The driver flushes before it exits: everything is there now.
    let trace = collector.trace();
    trace.assert_one_trace();

    let root = trace.one("nixos-test traced");
    assert_eq!(trace.parent_name(root), None);
    assert_eq!(root.attributes["test.name"], "traced");
    assert_eq!(root.attributes["test.outcome"], "passed");
    assert_eq!(root.status, StatusCode::Unset);
    assert_eq!(root.resource["service.name"], "nixos-test-driver");

    // The boot phases: spawn and QMP under start_all, the shell under the first method that
    // needed it.
    for phase in ["machine.boot.spawn", "machine.boot.qmp"] {
        let span = trace.one(phase);
        trace.assert_parent(span, "nixos-test traced");
        assert_eq!(span.attributes["machine"], "alpha", "{span:#?}");
    }
    let first = trace.one_with("machine.wait_for_unit", "argument", "app.service");
    assert_eq!(trace.parent_name(first), Some("nixos-test traced"));
    let shell = trace.one("machine.boot.shell");
    assert_eq!(shell.parent_span_id, first.span_id, "{:#?}", trace.names());
    let boot: f64 = shell.attributes["boot.duration_s"].parse().expect("a duration");
    assert!((0.0..30.0).contains(&boot), "{shell:#?}");

    // Method spans under the subtest, with what the command did.
    trace.assert_parent(trace.one("subtest: commands"), "nixos-test traced");
    let hello = trace.one_with("machine.succeed", "command", "printf hello");
    trace.assert_parent(hello, "subtest: commands");
    assert_eq!(hello.attributes["machine"], "alpha");
    assert_eq!(hello.attributes["exit_code"], "0");
    assert_eq!(hello.attributes["output.bytes"], "5");
    assert_eq!(hello.status, StatusCode::Unset);

    // The guest command saw its own span as TRACEPARENT.
    let echo = trace.one_with("machine.succeed", "command", "echo $TRACEPARENT");
    let expected = format!("the guest ran under 00-{}-{}-01\n", echo.trace_id, echo.span_id);
    assert!(run.stdout.contains(&expected), "expected {expected:?} in stdout:\n{}", run.stdout);
}

#[test]
fn a_failing_command_is_an_error_span_over_http() {
    let collector = Collector::start(Protocol::HttpBinary);
    let script = "with subtest(\"failing\"):\n    alpha.succeed(\"echo some output; exit 3\")\n";
    let run = run_exporting(&collector, "http/protobuf", "exit-three", script);
    run.assert_status(1);
    let trace = collector.trace();
    trace.assert_one_trace();

    let root = trace.one("nixos-test exit-three");
    assert_eq!(root.attributes["test.outcome"], "failed");
    assert_eq!(root.status, StatusCode::Error);
    let subtest = trace.one("subtest: failing");
    assert_eq!(subtest.status, StatusCode::Error);
    assert!(subtest.status_message.contains("exit code 3"), "{subtest:#?}");
    let failed = trace.one("machine.succeed");
    trace.assert_parent(failed, "subtest: failing");
    assert_eq!(failed.attributes["command"], "echo some output; exit 3");
    assert_eq!(failed.attributes["exit_code"], "3");
    assert_eq!(failed.status, StatusCode::Error);
    assert_eq!(
        failed.status_message,
        "RequestedAssertionFailed: command `echo some output; exit 3` failed (exit code 3)"
    );
}

#[test]
fn spans_are_flushed_when_sigterm_stops_a_command() {
    let collector = Collector::start(Protocol::Grpc);
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let mut command = exporting(&scenario, &collector, "grpc", "terminated");
    scenario.add_machines(&mut command, &scenario.script("alpha.succeed('true')\nalpha.succeed('sleep 30')\n"));
    let run = scenario.run_signalled(command, "alpha: must succeed: sleep 30", Some("sleep"), libc::SIGTERM, LIMIT);
    run.assert_status(143);

    let trace: Trace = collector.trace();
    let root = trace.one("nixos-test terminated");
    assert_eq!(root.attributes["test.outcome"], "terminated");
    assert_eq!(root.status, StatusCode::Error);
    let interrupted = trace.one_with("machine.succeed", "command", "sleep 30");
    trace.assert_parent(interrupted, "nixos-test terminated");
    assert_eq!(interrupted.status, StatusCode::Error);
    assert!(!interrupted.attributes.contains_key("exit_code"), "{interrupted:#?}");
}
