//! An OTLP receiver in the test process (`mock-collector`, gRPC or HTTP/protobuf) and the
//! received spans reduced to what the tests look at: names, parents, attributes, status.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use mock_collector::{MockServer, Protocol, ServerHandle};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// An OTLP receiver in this process, on its own runtime.
pub struct Collector {
    runtime: tokio::runtime::Runtime,
    server: ServerHandle,
}

impl Collector {
    /// A receiver for `protocol`, listening on a free local port.
    pub fn start(protocol: Protocol) -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("collector runtime");
        let server =
            runtime.block_on(MockServer::builder().protocol(protocol).build().start()).expect("start the collector");
        Collector { runtime, server }
    }

    /// The OTLP endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Everything received so far.
    pub fn trace(&self) -> Trace {
        let spans = self
            .runtime
            .block_on(self.server.with_collector(|collector| collector.spans().iter().map(Exported::from).collect()));
        Trace(spans)
    }

    /// Wait until a span named `name` arrived (through a collector that forwards in batches).
    pub fn wait_for_span(&self, name: &str, limit: Duration) -> Trace {
        let deadline = Instant::now() + limit;
        loop {
            let trace = self.trace();
            if trace.0.iter().any(|span| span.name == name) {
                return trace;
            }
            assert!(Instant::now() < deadline, "no span {name:?} arrived within {limit:?}; got {trace:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One received span, reduced to what the tests look at.
#[derive(Debug, Clone)]
pub struct Exported {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    pub status: StatusCode,
    pub status_message: String,
    pub events: Vec<String>,
    pub resource: BTreeMap<String, String>,
}

/// Bytes as lowercase hex, as trace and span ids are written in `TRACEPARENT`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attribute values as text, whatever their type.
fn attributes(list: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

impl From<&mock_collector::TestSpan> for Exported {
    fn from(test_span: &mock_collector::TestSpan) -> Exported {
        let span = test_span.span();
        let status = span.status.clone().unwrap_or_default();
        Exported {
            name: span.name.clone(),
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: hex(&span.parent_span_id),
            attributes: attributes(&span.attributes),
            status: StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset),
            status_message: status.message,
            events: span
                .events
                .iter()
                .map(|event| {
                    let attrs = attributes(&event.attributes);
                    attrs.get("message").cloned().unwrap_or_else(|| event.name.clone())
                })
                .collect(),
            resource: attributes(test_span.resource_attrs()),
        }
    }
}

/// The spans of one run.
#[derive(Debug)]
pub struct Trace(pub Vec<Exported>);

impl Trace {
    /// The one span named `name`.
    pub fn one(&self, name: &str) -> &Exported {
        let found: Vec<&Exported> = self.0.iter().filter(|span| span.name == name).collect();
        assert_eq!(found.len(), 1, "expected one span {name:?} in {:#?}", self.names());
        found[0]
    }

    /// The one span named `name` with attribute `key` = `value`.
    pub fn one_with(&self, name: &str, key: &str, value: &str) -> &Exported {
        let found: Vec<&Exported> = self
            .0
            .iter()
            .filter(|span| span.name == name && span.attributes.get(key).is_some_and(|v| v == value))
            .collect();
        assert_eq!(found.len(), 1, "expected one span {name:?} with {key}={value:?} in {:#?}", self.0);
        found[0]
    }

    /// The name of `span`'s parent, or `None` for a root.
    pub fn parent_name(&self, span: &Exported) -> Option<&str> {
        if span.parent_span_id.is_empty() {
            return None;
        }
        let parent = self.0.iter().find(|s| s.span_id == span.parent_span_id);
        Some(parent.map_or("<parent not exported>", |p| p.name.as_str()))
    }

    /// Assert `child`'s parent is the one span named `parent`.
    pub fn assert_parent(&self, child: &Exported, parent: &str) {
        assert_eq!(self.parent_name(child), Some(parent), "parent of {:?}; all spans: {:#?}", child.name, self.names());
        assert_eq!(child.parent_span_id, self.one(parent).span_id);
    }

    /// Each span's name and its parent's, for failure messages.
    pub fn names(&self) -> Vec<(String, Option<String>)> {
        self.0.iter().map(|s| (s.name.clone(), self.parent_name(s).map(str::to_owned))).collect()
    }

    /// Assert every span belongs to the same trace.
    pub fn assert_one_trace(&self) {
        let first = &self.0[0].trace_id;
        assert!(self.0.iter().all(|s| &s.trace_id == first), "spans in several traces: {:#?}", self.0);
    }
}

/// A local port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
