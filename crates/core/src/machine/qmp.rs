//! QMP, QEMU's JSON machine protocol, on the `qmp` socket QEMU creates.
//!
//! Mirrors upstream's `machine/qmp.py` (`QMPSession`): read the greeting (an object with a
//! `QMP` member), negotiate with `qmp_capabilities`, then send commands one at a time. Replies
//! carry `return` or `error`; everything with `event` is queued for `wait_for_qmp_event`. A
//! reader task owns the socket's read half, so events are collected even while nobody asks.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc};

/// At most this many unread events are kept; older ones are dropped.
const MAX_QUEUED_EVENTS: usize = 1024;

/// A QMP failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed.
    #[error("QMP connection failed")]
    Io(#[from] io::Error),
    /// QEMU sent something that is not a QMP message.
    #[error("invalid QMP message {line:?}: {reason}")]
    Protocol {
        /// The offending line.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// QEMU answered a command with an error (upstream's `QMPAPIError`).
    #[error("QMP error {class}: {desc}")]
    Api {
        /// The error class, e.g. `GenericError`.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// The connection closed (QEMU exited).
    #[error("QMP connection closed")]
    Closed,
    /// No matching event arrived in time.
    #[error("no matching QMP event within {0:?}")]
    Timeout(Duration),
}

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The greeting: the value of its `QMP` member.
    Greeting(Value),
    /// A successful reply: the value of `return`.
    Return(Value),
    /// An error reply.
    Error {
        /// The error class.
        class: String,
        /// The description.
        desc: String,
    },
    /// An asynchronous event: the whole object (`event`, `data`, `timestamp`).
    Event(Value),
}

/// Classify one line of QMP output.
pub fn parse_message(line: &str) -> Result<Message, Error> {
    let protocol = |reason: &str| Error::Protocol { line: line.to_owned(), reason: reason.to_owned() };
    let value: Value = serde_json::from_str(line).map_err(|e| protocol(&e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(protocol("not a JSON object"));
    };
    if let Some(greeting) = object.remove("QMP") {
        return Ok(Message::Greeting(greeting));
    }
    if let Some(result) = object.remove("return") {
        return Ok(Message::Return(result));
    }
    if let Some(error) = object.get("error") {
        let field = |name: &str| error.get(name).and_then(Value::as_str).map(str::to_owned);
        return match (field("class"), field("desc")) {
            (Some(class), Some(desc)) => Ok(Message::Error { class, desc }),
            _ => Err(protocol("malformed error reply")),
        };
    }
    if object.contains_key("event") {
        return Ok(Message::Event(Value::Object(object)));
    }
    Err(protocol("neither a reply nor an event"))
}

/// The command line QMP expects: one JSON object and a newline.
pub fn encode_command(command: &str, arguments: Option<&Map<String, Value>>) -> String {
    let mut object = json!({ "execute": command });
    if let Some(arguments) = arguments.filter(|a| !a.is_empty()) {
        object["arguments"] = Value::Object(arguments.clone());
    }
    let mut line = object.to_string();
    line.push('\n');
    line
}

#[derive(Debug, Default)]
struct Events {
    queue: Mutex<VecDeque<Value>>,
    arrived: Notify,
}

/// A negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    writer: tokio::sync::Mutex<(OwnedWriteHalf, mpsc::UnboundedReceiver<Result<Value, Error>>)>,
    events: Arc<Events>,
}

impl Qmp {
    /// Connect to QEMU's QMP socket, read the greeting and negotiate capabilities.
    pub async fn connect(path: &Path) -> Result<Qmp, Error> {
        Qmp::handshake(UnixStream::connect(path).await?).await
    }

    /// Negotiate on an established connection.
    pub async fn handshake(stream: UnixStream) -> Result<Qmp, Error> {
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = lines.next_line().await?.ok_or(Error::Closed)?;
        match parse_message(&greeting)? {
            Message::Greeting(_) => {}
            _ => {
                return Err(Error::Protocol { line: greeting, reason: "expected the QMP greeting".into() });
            }
        }
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let events = Arc::new(Events::default());
        let reader_events = Arc::clone(&events);
        tokio::spawn(async move {
            loop {
                let line = match lines.next_line().await {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = results_tx.send(Err(Error::Io(e)));
                        break;
                    }
                };
                if line.trim().is_empty() {
                    continue;
                }
                match parse_message(&line) {
                    Ok(Message::Event(event)) => {
                        let mut queue = match reader_events.queue.lock() {
                            Ok(q) => q,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        if queue.len() == MAX_QUEUED_EVENTS {
                            queue.pop_front();
                        }
                        queue.push_back(event);
                        drop(queue);
                        reader_events.arrived.notify_waiters();
                    }
                    Ok(Message::Return(value)) => {
                        let _ = results_tx.send(Ok(value));
                    }
                    Ok(Message::Error { class, desc }) => {
                        let _ = results_tx.send(Err(Error::Api { class, desc }));
                    }
                    Ok(Message::Greeting(_)) => {}
                    Err(e) => {
                        let _ = results_tx.send(Err(e));
                    }
                }
            }
            // Wake event waiters so they see the closed connection.
            reader_events.arrived.notify_waiters();
        });
        let qmp = Qmp { writer: tokio::sync::Mutex::new((write, results_rx)), events };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Run one command and return the value of its `return` member.
    pub async fn execute(&self, command: &str, arguments: Option<&Map<String, Value>>) -> Result<Value, Error> {
        let mut guard = self.writer.lock().await;
        let (writer, results) = &mut *guard;
        writer.write_all(encode_command(command, arguments).as_bytes()).await?;
        results.recv().await.unwrap_or(Err(Error::Closed))
    }

    /// Take queued events until `filter` accepts one, waiting up to `timeout` for more. Events
    /// the filter rejects are dropped, as upstream's `wait_for_qmp_event` does.
    pub async fn wait_for_event(
        &self,
        mut filter: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.events.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            loop {
                let next = {
                    let mut queue = match self.events.queue.lock() {
                        Ok(q) => q,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    queue.pop_front()
                };
                match next {
                    Some(event) if filter(&event) => return Ok(event),
                    Some(_) => continue,
                    None => break,
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(Error::Timeout(timeout));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn classifies_messages() {
        let greeting =
            r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}}, "capabilities": ["oob"]}}"#;
        assert!(matches!(parse_message(greeting).expect("greeting"), Message::Greeting(_)));
        assert_eq!(parse_message(r#"{"return": {}}"#).expect("return"), Message::Return(json!({})));
        assert_eq!(
            parse_message(r#"{"id": 3, "error": {"class": "GenericError", "desc": "no such device"}}"#).expect("error"),
            Message::Error { class: "GenericError".into(), desc: "no such device".into() }
        );
        let event = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#;
        let Message::Event(value) = parse_message(event).expect("event") else { panic!("not an event") };
        assert_eq!(value["data"]["reason"], "guest-shutdown");
        assert!(parse_message("[]").is_err());
        assert!(parse_message("{\"x\": 1}").is_err());
        assert!(parse_message("not json").is_err());
        assert!(parse_message(r#"{"error": {"class": 1}}"#).is_err());
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(encode_command("query-status", None), "{\"execute\":\"query-status\"}\n");
        let mut args = Map::new();
        args.insert("filename".into(), json!("/tmp/x.ppm"));
        assert_eq!(
            encode_command("screendump", Some(&args)),
            "{\"arguments\":{\"filename\":\"/tmp/x.ppm\"},\"execute\":\"screendump\"}\n"
        );
    }

    /// A scripted QMP server: greets, answers capabilities, then a query with an event first.
    #[tokio::test]
    async fn session_against_a_scripted_server() {
        let (client, mut server) = UnixStream::pair().expect("socketpair");
        let server_task = tokio::spawn(async move {
            server.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n").await?;
            let mut buf = vec![0u8; 256];
            let n = server.read(&mut buf).await?;
            assert_eq!(&buf[..n], b"{\"execute\":\"qmp_capabilities\"}\n");
            server.write_all(b"{\"return\": {}}\r\n").await?;
            let n = server.read(&mut buf).await?;
            assert_eq!(&buf[..n], b"{\"execute\":\"query-status\"}\n");
            server
                .write_all(b"{\"event\": \"STOP\", \"data\": {}}\r\n{\"return\": {\"status\": \"running\"}}\r\n")
                .await?;
            let n = server.read(&mut buf).await?;
            assert_eq!(&buf[..n], b"{\"execute\":\"nope\"}\n");
            server.write_all(b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}}\r\n").await?;
            server.write_all(b"{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": false}}\r\n").await?;
            io::Result::Ok(())
        });
        let qmp = Qmp::handshake(client).await.expect("handshake");
        let status = qmp.execute("query-status", None).await.expect("query-status");
        assert_eq!(status["status"], "running");
        let err = qmp.execute("nope", None).await.expect_err("unknown command");
        assert_eq!(err.to_string(), "QMP error CommandNotFound: The command nope has not been found");
        let event =
            qmp.wait_for_event(|e| e["event"] == "SHUTDOWN", Duration::from_secs(5)).await.expect("SHUTDOWN event");
        assert_eq!(event["data"]["guest"], false);
        server_task.await.expect("server").expect("server io");
        // The STOP event was skipped by the filter and dropped; nothing else arrives.
        let timeout = qmp.wait_for_event(|_| true, Duration::from_millis(50)).await;
        assert!(matches!(timeout, Err(Error::Timeout(_))));
        assert!(matches!(qmp.execute("query-status", None).await, Err(Error::Closed | Error::Io(_))));
    }
}
