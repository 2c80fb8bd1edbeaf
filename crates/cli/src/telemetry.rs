//! OpenTelemetry export, configured only by the standard environment variables.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set (and `OTEL_SDK_DISABLED` is not `true`, `OTEL_TRACES_EXPORTER` not `none`); otherwise no
//! layer is installed and nothing costs anything. `OTEL_EXPORTER_OTLP_PROTOCOL` picks `grpc`
//! or `http/protobuf` (the default); headers, timeouts, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` are read by the OpenTelemetry crates themselves.
//!
//! Spans are the ones `ntd_core::log::EXPORTED_SPANS` names (the run, subtests, boot phases,
//! machine methods) and error lines as span events; log blocks stay in the log. The batch
//! processor exports from its own thread: the HTTP exporter uses reqwest's blocking client
//! (built here, before any runtime), the gRPC exporter runs on a small runtime of its own,
//! since tonic needs tokio and the processor's thread is not a tokio thread.
//!
//! Telemetry never fails a test: an unreachable collector costs at most the export timeout
//! (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default) at the end and one line on stderr.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ntd_core::log;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// Export is configured but cannot be set up.
#[derive(Debug)]
pub struct TelemetryError(pub String);

impl std::fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot set up OpenTelemetry export: {}", self.0)
    }
}

/// The exporter, wrapped: exports run on a tokio runtime of its own when the exporter needs
/// one (gRPC), and a failed export is reported on stderr (once) instead of vanishing: the test
/// goes on either way.
#[derive(Debug)]
struct Reporting<E> {
    inner: E,
    runtime: Option<tokio::runtime::Runtime>,
    failures: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = match &self.runtime {
            Some(runtime) => runtime.block_on(self.inner.export(batch)),
            None => self.inner.export(batch).await,
        };
        if let Err(e) = &result
            && self.failures.fetch_add(1, Ordering::Relaxed) == 0
        {
            eprintln!("nixos-test-driver: OpenTelemetry export failed (the test goes on): {e}");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
}

/// Whether the environment asks for export.
pub fn requested() -> bool {
    let endpoint = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()));
    endpoint && !env_is("OTEL_SDK_DISABLED", "true") && !env_is("OTEL_TRACES_EXPORTER", "none")
}

/// The W3C `traceparent` of a span: what guest commands get as `TRACEPARENT`.
fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context.is_valid().then(|| {
        format!("00-{}-{}-{:02x}", span_context.trace_id(), span_context.span_id(), span_context.trace_flags().to_u8())
    })
}

/// Export `span` now, as it stands: its OpenTelemetry span is started if it was not, and
/// ended. When the tracing span closes later, ending it again does nothing.
fn end(span: &tracing::Span) {
    span.context().span().end();
}

/// OpenTelemetry export for one run.
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// How many batches of spans could not be exported.
    failures: Arc<AtomicUsize>,
}

impl Telemetry {
    /// Set up export as the environment asks, or `None` when it asks for none.
    pub fn from_env() -> Result<Option<Telemetry>, TelemetryError> {
        if !requested() {
            return Ok(None);
        }
        let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|_| "http/protobuf".to_owned());
        let failures = Arc::new(AtomicUsize::new(0));
        let mut builder = SdkTracerProvider::builder();
        builder = match protocol.trim().to_ascii_lowercase().as_str() {
            "grpc" => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("ntd-otlp")
                    .enable_all()
                    .build()
                    .map_err(|e| TelemetryError(format!("cannot start its runtime: {e}")))?;
                let inner = {
                    let _guard = runtime.enter();
                    opentelemetry_otlp::SpanExporter::builder().with_tonic().build()
                }
                .map_err(|e| TelemetryError(e.to_string()))?;
                builder.with_batch_exporter(Reporting { inner, runtime: Some(runtime), failures: failures.clone() })
            }
            "http/protobuf" => {
                let inner = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()
                    .map_err(|e| TelemetryError(e.to_string()))?;
                builder.with_batch_exporter(Reporting { inner, runtime: None, failures: failures.clone() })
            }
            other => {
                return Err(TelemetryError(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported (use grpc or http/protobuf)"
                )));
            }
        };
        let mut resource = Resource::builder();
        let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attrs| attrs.contains("service.name="));
        if !named {
            resource = resource.with_service_name("nixos-test-driver");
        }
        let resource =
            resource.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
        let provider = builder.with_resource(resource).build();
        log::set_telemetry_hooks(log::TelemetryHooks { traceparent, end });
        Ok(Some(Telemetry { provider, failures }))
    }

    /// The layer that turns ntd's exported spans (and error lines, as span events) into
    /// OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("ntd");
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter_fn(|metadata| {
            metadata.target() == log::TARGET
                && if metadata.is_span() {
                    log::EXPORTED_SPANS.contains(&metadata.name())
                } else {
                    *metadata.level() == tracing::Level::ERROR
                }
        }))
    }

    /// Export everything still queued and stop.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("nixos-test-driver: OpenTelemetry export did not finish: {e}");
        }
        let failures = self.failures.load(Ordering::Relaxed);
        if failures > 0 {
            eprintln!("nixos-test-driver: {failures} batch(es) of spans were not exported");
        }
    }
}
