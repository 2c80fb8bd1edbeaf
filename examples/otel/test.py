# A test whose run shows up as one trace in Jaeger, Tempo or Grafana. Nothing in the script
# is about telemetry: set OTEL_EXPORTER_OTLP_ENDPOINT (and OTEL_EXPORTER_OTLP_PROTOCOL=grpc
# for a gRPC port) and every subtest, boot phase and machine method becomes a span.
start_all()
machine.wait_for_unit("multi-user.target")

with subtest("the hello service answers"):
    machine.wait_for_unit("hello.service")
    machine.succeed("systemctl is-active hello.service")

with subtest("guest commands know their span"):
    # Each command runs with TRACEPARENT set to its own span, so a traced program in the
    # guest joins the test's trace. (Without an endpoint nothing is exported or set.)
    traceparent = machine.succeed("echo ${TRACEPARENT:-nothing: no OTLP endpoint}").strip()
    machine.log(f"the guest ran under {traceparent}")
