//! QMP's reader (`ntd_core::machine::qemu::qmp`): `parse_message`, and the session that splits
//! QEMU's byte stream into lines, routes replies to their callers by `id` and queues events.
//!
//! - Any line: `parse_message` never panics and classifies it by the JSON object's members
//!   (`QMP`, then `return`, then `error` with string `class` and `desc`, then `event`), keeping
//!   the members' values as they are; anything else is a protocol error naming the line.
//! - Any byte stream from QEMU's side, split into reads anywhere: the handshake and a command
//!   end (no panic, no hang once the socket closes), and a handshake only succeeds on a stream
//!   whose first line is a greeting.
//! - A conversation built from arbitrary values and strings (greeting, replies, errors, events,
//!   blank lines, garbage, replies that no caller waits for, `\n` or `\r\n`), in which QEMU's
//!   side answers each request with the request's `id`, split into reads anywhere: every
//!   command gets its own reply or error, and every event arrives, unchanged and in order.
//! - `encode_command` writes one line that parses back to the command and its arguments.
#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use ntd_core::machine::qemu::qmp::{self, Message, Qmp, encode_command};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Long enough for a reader task that is working, short enough that a lost event fails fast.
const EVENT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Arbitrary)]
enum Input {
    Line(String),
    Stream { bytes: Vec<u8>, cuts: Vec<u16> },
    Conversation { greeting: Json, lines: Vec<(Line, Ending)>, cuts: Vec<u16> },
    Command { name: String, arguments: Vec<(String, Json)> },
}

#[derive(Debug, Arbitrary)]
enum Line {
    Return(Json),
    Error {
        class: String,
        desc: String,
    },
    /// A reply nobody waits for: without an id, or with one no request had.
    Unrouted {
        value: Json,
        id: Option<u32>,
    },
    /// A line that is not QMP at all, which the reader skips.
    Garbage(String),
    Event {
        name: String,
        data: Json,
        seconds: u32,
        microseconds: u32,
    },
    /// Another greeting, which the reader ignores.
    Greeting(Json),
    /// Spaces and tabs only, which the reader skips.
    Blank(u8),
}

#[derive(Debug, Arbitrary)]
enum Ending {
    Lf,
    CrLf,
}

/// A JSON value of limited depth. Numbers are integers: QMP carries none of the floats
/// serde_json reads to the nearest value only with its `float_roundtrip` feature.
#[derive(Debug)]
struct Json(Value);

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Json> {
        Ok(Json(value(u, 3)?))
    }
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let kinds = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => Value::String(u.arbitrary()?),
        5 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array((0..len).map(|_| value(u, depth - 1)).collect::<arbitrary::Result<_>>()?)
        }
        _ => {
            let len = u.int_in_range(0..=4)?;
            let mut object = Map::new();
            for _ in 0..len {
                object.insert(u.arbitrary()?, value(u, depth - 1)?);
            }
            Value::Object(object)
        }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// Play QEMU: write `stream` to `server` in the chunks the cuts give, yielding between them so
/// the reader sees them as separate reads, then shut down the writing side. The stream is
/// returned, open for reading, so that the client's commands are not refused with EPIPE.
async fn serve(mut server: UnixStream, stream: Vec<u8>, cuts: Vec<u16>) -> UnixStream {
    let mut ends: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (stream.len() + 1)).collect();
    ends.sort_unstable();
    ends.push(stream.len());
    let mut start = 0;
    for end in ends {
        // The client may have given up (a failed handshake); that is its business.
        if server.write_all(&stream[start..end]).await.is_err() {
            return server;
        }
        tokio::task::yield_now().await;
        start = end;
    }
    let _ = server.shutdown().await;
    server
}

fn check_line(line: &str) {
    let parsed = qmp::parse_message(line);
    let object = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    };
    let string = |value: &Value, name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    match parsed {
        Ok(message) => {
            let object = object.expect("a message is a JSON object");
            match message {
                Message::Greeting(greeting) => assert_eq!(object.get("QMP"), Some(&greeting)),
                Message::Return(result) => {
                    assert!(!object.contains_key("QMP"));
                    assert_eq!(object.get("return"), Some(&result));
                }
                Message::Error { class, desc } => {
                    assert!(!object.contains_key("QMP") && !object.contains_key("return"));
                    let error = &object["error"];
                    assert_eq!(string(error, "class").as_ref(), Some(&class));
                    assert_eq!(string(error, "desc").as_ref(), Some(&desc));
                }
                Message::Event(event) => {
                    assert!(["QMP", "return", "error"].iter().all(|k| !object.contains_key(*k)));
                    assert!(object.contains_key("event"));
                    assert_eq!(event, Value::Object(object));
                }
            }
        }
        Err(qmp::Error::Protocol { line: offending, .. }) => {
            assert_eq!(offending, line, "the error names the line");
            if let Some(object) = object {
                let good_error =
                    object.get("error").is_some_and(|e| string(e, "class").is_some() && string(e, "desc").is_some());
                assert!(!object.contains_key("QMP") && !object.contains_key("return"));
                let has = |key| object.contains_key(key);
                assert!((has("error") && !good_error) || (!has("error") && !has("event")));
            }
        }
        Err(other) => panic!("parse_message returned {other:?}"),
    }
}

fn check_stream(bytes: Vec<u8>, cuts: Vec<u16>) {
    // What a handshake may accept: the first line, as a line reader gives it.
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let first_is_greeting =
        std::str::from_utf8(first).is_ok_and(|line| matches!(qmp::parse_message(line), Ok(Message::Greeting(_))));
    runtime().block_on(async {
        let (client, server) = UnixStream::pair().expect("socketpair");
        let _server = tokio::spawn(serve(server, bytes, cuts));
        let Ok(qmp) = Qmp::handshake(client).await else { return };
        assert!(first_is_greeting, "a handshake succeeded without a greeting");
        let _ = qmp.execute("query-status", None).await;
        // Drain the queued events without waiting for more.
        while qmp.wait_for_event(|_| true, Duration::ZERO).await.is_ok() {}
    });
}

/// What QEMU's side writes in a conversation: bytes as they are, or the answer to the next
/// request, which needs that request's id.
enum Segment {
    Raw(Vec<u8>),
    Answer { body: Value, ending: &'static [u8] },
}

/// Play QEMU in a conversation: write the segments in the chunks the cuts give, reading one
/// request before each answer and answering with its id; then shut down the writing side.
async fn converse(server: UnixStream, segments: Vec<Segment>, cuts: Vec<u16>) -> UnixStream {
    let (read, mut write) = server.into_split();
    let mut requests = BufReader::new(read).lines();
    let total: usize = segments.iter().map(|s| if let Segment::Raw(raw) = s { raw.len() } else { 1 }).sum();
    let mut ends: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (total + 1)).collect();
    ends.sort_unstable();
    let mut written = 0;
    for segment in segments {
        let bytes = match segment {
            Segment::Raw(raw) => raw,
            Segment::Answer { mut body, ending } => {
                let Ok(Some(request)) = requests.next_line().await else { break };
                let id = serde_json::from_str::<Value>(&request).ok().and_then(|r| r.get("id").cloned());
                body["id"] = id.unwrap_or(Value::Null);
                let mut bytes = body.to_string().into_bytes();
                bytes.extend_from_slice(ending);
                bytes
            }
        };
        // Split this segment at the cuts that fall into it.
        let mut start = 0;
        for &end in ends.iter().filter(|&&end| end > written && end < written + bytes.len()) {
            if write.write_all(&bytes[start..end - written]).await.is_err() {
                return write.reunite(requests.into_inner().into_inner()).expect("the halves of one socket");
            }
            tokio::task::yield_now().await;
            start = end - written;
        }
        if write.write_all(&bytes[start..]).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
        written += bytes.len();
    }
    let _ = write.shutdown().await;
    write.reunite(requests.into_inner().into_inner()).expect("the halves of one socket")
}

fn check_conversation(greeting: Value, lines: Vec<(Line, Ending)>, cuts: Vec<u16>) {
    let mut segments = vec![Segment::Raw(format!("{}\n", json!({ "QMP": greeting })).into_bytes())];
    let mut replies = Vec::new();
    let mut events = Vec::new();
    for (line, ending) in lines {
        let ending: &'static [u8] = match ending {
            Ending::Lf => b"\n",
            Ending::CrLf => b"\r\n",
        };
        let raw = |text: String| {
            let mut bytes = text.into_bytes();
            bytes.extend_from_slice(ending);
            Segment::Raw(bytes)
        };
        segments.push(match line {
            Line::Return(Json(value)) => {
                replies.push(Ok(value.clone()));
                Segment::Answer { body: json!({ "return": value }), ending }
            }
            Line::Error { class, desc } => {
                replies.push(Err((class.clone(), desc.clone())));
                Segment::Answer { body: json!({ "error": { "class": class, "desc": desc } }), ending }
            }
            Line::Unrouted { value: Json(value), id } => {
                let mut reply = json!({ "return": value });
                if let Some(id) = id {
                    // Ids of requests start at 1 and count the commands sent; this one is far
                    // beyond any conversation's.
                    reply["id"] = json!(u64::from(id) + 1_000_000);
                }
                raw(reply.to_string())
            }
            Line::Event { name, data: Json(data), seconds, microseconds } => {
                let event = json!({
                    "event": name,
                    "data": data,
                    "timestamp": { "seconds": seconds, "microseconds": microseconds },
                });
                events.push(event.clone());
                raw(event.to_string())
            }
            Line::Greeting(Json(value)) => raw(json!({ "QMP": value }).to_string()),
            Line::Blank(n) => raw((0..n % 4).map(|i| if i % 2 == 0 { ' ' } else { '\t' }).collect()),
            // A line break inside would make two lines, one of which might parse.
            Line::Garbage(text) => raw(format!("not json {}", text.replace(['\n', '\r'], " "))),
        });
    }
    runtime().block_on(async {
        let (client, server) = UnixStream::pair().expect("socketpair");
        // Held to the end: the finished task keeps the server's end of the socket open.
        let _server = tokio::spawn(converse(server, segments, cuts));
        let mut replies = replies.into_iter();
        let handshake = Qmp::handshake(client).await;
        let qmp = match (replies.next(), handshake) {
            (Some(Ok(_)), Ok(qmp)) => qmp,
            (Some(Err((class, desc))), Err(qmp::Error::Api { class: c, desc: d })) => {
                assert_eq!((c, d), (class, desc), "the capabilities error");
                return;
            }
            (None, Err(qmp::Error::Closed)) => return,
            (expected, Err(e)) => panic!("handshake failed with {e:?}, expected {expected:?}"),
            (expected, Ok(_)) => panic!("handshake succeeded, expected {expected:?}"),
        };
        for expected in replies {
            let got = qmp.execute("query-status", None).await;
            match (expected, got) {
                (Ok(value), Ok(got)) => assert_eq!(got, value),
                (Err((class, desc)), Err(qmp::Error::Api { class: c, desc: d })) => assert_eq!((c, d), (class, desc)),
                (expected, got) => panic!("got {got:?}, expected {expected:?}"),
            }
        }
        assert!(matches!(qmp.execute("query-status", None).await, Err(qmp::Error::Closed)), "no reply is left");
        for expected in events {
            let got = qmp.wait_for_event(|_| true, EVENT_WAIT).await.expect("every event arrives");
            assert_eq!(got, expected);
        }
    });
}

fn check_command(name: &str, arguments: Vec<(String, Json)>) {
    let arguments: Map<String, Value> = arguments.into_iter().map(|(k, Json(v))| (k, v)).collect();
    let line = encode_command(name, Some(&arguments));
    let body = line.strip_suffix('\n').expect("a command ends its line");
    assert!(!body.contains('\n'), "a command is one line");
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(body) else {
        panic!("a command is a JSON object: {body}");
    };
    assert_eq!(object.remove("execute"), Some(Value::String(name.to_owned())));
    match object.remove("arguments") {
        Some(Value::Object(got)) => assert_eq!(got, arguments),
        Some(other) => panic!("arguments are an object, not {other}"),
        None => assert!(arguments.is_empty(), "non-empty arguments are sent"),
    }
    assert!(object.is_empty(), "nothing else in {body}");
}

fuzz_target!(
    init: {
        // As in a Rust program's main: a write to a closed socket is an error, not a signal.
        // SAFETY: SIG_IGN runs no handler code, and nothing in this process handles SIGPIPE.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    },
    |input: Input| match input {
        Input::Line(line) => check_line(&line),
        Input::Stream { bytes, cuts } => check_stream(bytes, cuts),
        Input::Conversation { greeting: Json(greeting), lines, cuts } => check_conversation(greeting, lines, cuts),
        Input::Command { name, arguments } => check_command(&name, arguments),
    }
);
