//! QMP, QEMU's JSON machine protocol, on the `qmp` socket QEMU creates.
//!
//! Mirrors upstream's `machine/qmp.py` (`QMPSession`): read the greeting (an object with a
//! `QMP` member), negotiate with `qmp_capabilities`, then send commands. Unlike upstream, every
//! request carries an `id` (QEMU echoes it in the reply), replies are routed to their caller
//! by that id, and every call has a deadline: a call abandoned by a timeout or an interruption
//! leaves nothing behind that the next call could take for its own reply. Everything with
//! `event` is queued for `wait_for_qmp_event`. A reader task owns the socket's read half, so
//! events are collected even while nobody asks; a writer task owns the write half, so a
//! request is written whole even when its caller gives up half-way.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::log;
use crate::machine::lock;

/// At most this many unread events are kept; older ones are dropped.
const MAX_QUEUED_EVENTS: usize = 1024;
/// How long a command may take before its caller gets [`Error::NoReply`]. QEMU answers the
/// commands ntd sends (status, screendump, send-key) in milliseconds, seconds under load.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// QEMU did not answer a command in time.
    #[error("QEMU did not answer `{command}` within {} seconds", waited.as_secs_f64())]
    NoReply {
        /// The command.
        command: String,
        /// How long the caller waited.
        waited: Duration,
    },
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
    parse_with_id(line).map(|(message, _)| message)
}

/// Classify one line of QMP output, with the `id` a reply carries.
pub fn parse_with_id(line: &str) -> Result<(Message, Option<Value>), Error> {
    let protocol = |reason: &str| Error::Protocol { line: line.to_owned(), reason: reason.to_owned() };
    let value: Value = serde_json::from_str(line).map_err(|e| protocol(&e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(protocol("not a JSON object"));
    };
    if let Some(greeting) = object.remove("QMP") {
        return Ok((Message::Greeting(greeting), None));
    }
    if let Some(result) = object.remove("return") {
        return Ok((Message::Return(result), object.remove("id")));
    }
    if let Some(error) = object.get("error") {
        let field = |name: &str| error.get(name).and_then(Value::as_str).map(str::to_owned);
        return match (field("class"), field("desc")) {
            (Some(class), Some(desc)) => Ok((Message::Error { class, desc }, object.remove("id"))),
            _ => Err(protocol("malformed error reply")),
        };
    }
    if object.contains_key("event") {
        return Ok((Message::Event(Value::Object(object)), None));
    }
    Err(protocol("neither a reply nor an event"))
}

/// The command line QMP expects: one JSON object and a newline, without an id.
pub fn encode_command(command: &str, arguments: Option<&Map<String, Value>>) -> String {
    encode_request(command, arguments, None)
}

/// The command line QMP expects, with the `id` QEMU is to echo in the reply.
pub fn encode_request(command: &str, arguments: Option<&Map<String, Value>>, id: Option<u64>) -> String {
    let mut object = json!({ "execute": command });
    if let Some(arguments) = arguments.filter(|a| !a.is_empty()) {
        object["arguments"] = Value::Object(arguments.clone());
    }
    if let Some(id) = id {
        object["id"] = Value::from(id);
    }
    let mut line = object.to_string();
    line.push('\n');
    line
}

type Reply = Result<Value, Error>;

/// What the reader, the writer and the callers share.
#[derive(Debug, Default)]
struct Shared {
    /// Callers waiting for a reply, by request id. `None` once the connection closed.
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>,
    events: Mutex<VecDeque<Value>>,
    arrived: Notify,
}

/// Removes a call's entry from the pending map when the call ends, however it ends, so that
/// a reply arriving after its caller gave up is dropped instead of kept.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(pending) = lock(&self.shared.pending).as_mut() {
            pending.remove(&self.id);
        }
    }
}

/// A negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    requests: mpsc::UnboundedSender<String>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl Qmp {
    /// Connect to QEMU's QMP socket, read the greeting and negotiate capabilities.
    pub async fn connect(path: &Path) -> Result<Qmp, Error> {
        Qmp::handshake(UnixStream::connect(path).await?).await
    }

    /// Negotiate on an established connection.
    pub async fn handshake(stream: UnixStream) -> Result<Qmp, Error> {
        let (read, write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let greeting = read_line(&mut reader).await?.ok_or(Error::Closed)?;
        match parse_message(&greeting)? {
            Message::Greeting(_) => {}
            _ => return Err(Error::Protocol { line: greeting, reason: "expected the QMP greeting".into() }),
        }
        let shared = Arc::new(Shared { pending: Mutex::new(Some(HashMap::new())), ..Shared::default() });
        let (requests, outgoing) = mpsc::unbounded_channel();
        tokio::spawn(write_requests(write, outgoing));
        tokio::spawn(read_messages(reader, Arc::clone(&shared)));
        let qmp = Qmp { requests, shared, next_id: AtomicU64::new(1) };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Run one command and return the value of its `return` member, within [`REPLY_TIMEOUT`].
    pub async fn execute(&self, command: &str, arguments: Option<&Map<String, Value>>) -> Result<Value, Error> {
        self.execute_within(command, arguments, REPLY_TIMEOUT).await
    }

    /// Run one command and return the value of its `return` member, within `timeout`. If the
    /// call ends early (a timeout, the caller's future dropped), its reply is dropped on
    /// arrival.
    pub async fn execute_within(
        &self,
        command: &str,
        arguments: Option<&Map<String, Value>>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_to, reply) = oneshot::channel();
        match lock(&self.shared.pending).as_mut() {
            Some(pending) => pending.insert(id, reply_to),
            None => return Err(Error::Closed),
        };
        let _guard = PendingGuard { shared: &self.shared, id };
        self.requests.send(encode_request(command, arguments, Some(id))).map_err(|_| Error::Closed)?;
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(reply)) => reply,
            // The reader dropped every waiter: the connection closed.
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::NoReply { command: command.to_owned(), waited: timeout }),
        }
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
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            loop {
                let next = lock(&self.shared.events).pop_front();
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

/// Read one line, without its line ending; `None` at the end of the stream. Bytes that are
/// not UTF-8 are replaced: such a line is not QMP, and says so when parsed.
async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&line);
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
}

/// The writer task: writes each request line whole, in order, until the session is dropped
/// or the socket fails.
async fn write_requests(mut write: OwnedWriteHalf, mut outgoing: mpsc::UnboundedReceiver<String>) {
    while let Some(line) = outgoing.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() {
            // The reader sees the socket close and fails every waiter.
            break;
        }
    }
}

/// The reader task: routes replies to their callers by id and queues events, until the
/// socket closes; then every waiter, present and future, gets [`Error::Closed`].
async fn read_messages(mut reader: BufReader<OwnedReadHalf>, shared: Arc<Shared>) {
    loop {
        let line = match read_line(&mut reader).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                log::debug(None, &format!("QMP connection failed: {e}"));
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, id) = match parse_with_id(&line) {
            Ok((Message::Event(event), _)) => {
                let mut events = lock(&shared.events);
                if events.len() == MAX_QUEUED_EVENTS {
                    events.pop_front();
                }
                events.push_back(event);
                drop(events);
                shared.arrived.notify_waiters();
                continue;
            }
            Ok((Message::Greeting(_), _)) => continue,
            Ok((Message::Return(value), id)) => (Ok(value), id),
            Ok((Message::Error { class, desc }, id)) => (Err(Error::Api { class, desc }), id),
            Err(e) => {
                log::warning(None, &format!("ignoring {e}"));
                continue;
            }
        };
        let waiter = lock(&shared.pending).as_mut().and_then(|pending| match &id {
            Some(id) => id.as_u64().and_then(|id| pending.remove(&id)),
            // QEMU answers a request it cannot parse with an error without an id: with one
            // call waiting, it is that call's; with several, nobody can tell whose. A return
            // without an id answers nothing ntd sent.
            None if reply.is_err() && pending.len() == 1 => {
                let only = pending.keys().next().copied();
                only.and_then(|only| pending.remove(&only))
            }
            None => None,
        });
        match waiter {
            // The caller may have given up in the meantime; then nobody wants the reply.
            Some(waiter) => drop(waiter.send(reply)),
            None => log::debug(None, &format!("dropping a QMP reply nobody waits for: {line}")),
        }
    }
    // Dropping the senders wakes every waiter with a closed channel.
    lock(&shared.pending).take();
    shared.arrived.notify_waiters();
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
            parse_with_id(r#"{"id": 3, "error": {"class": "GenericError", "desc": "no such device"}}"#).expect("error"),
            (Message::Error { class: "GenericError".into(), desc: "no such device".into() }, Some(json!(3)))
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
            encode_request("screendump", Some(&args), Some(7)),
            "{\"arguments\":{\"filename\":\"/tmp/x.ppm\"},\"execute\":\"screendump\",\"id\":7}\n"
        );
    }

    /// Read one request line from the client side and return it as JSON.
    async fn request(server: &mut UnixStream) -> Value {
        let mut line = Vec::new();
        let mut byte = [0u8];
        while server.read(&mut byte).await.expect("read") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        serde_json::from_slice(&line).expect("a JSON request")
    }

    async fn greet(server: &mut UnixStream) {
        server.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n").await.expect("greeting");
        let negotiate = request(server).await;
        assert_eq!(negotiate["execute"], "qmp_capabilities");
        let id = &negotiate["id"];
        server.write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\r\n").as_bytes()).await.expect("reply");
    }

    /// A scripted QMP server: greets, answers capabilities, then queries with events and
    /// errors in between.
    #[tokio::test]
    async fn session_against_a_scripted_server() {
        let (client, mut server) = UnixStream::pair().expect("socketpair");
        let server_task = tokio::spawn(async move {
            greet(&mut server).await;
            let query = request(&mut server).await;
            assert_eq!(query["execute"], "query-status");
            let reply = json!({"return": {"status": "running"}, "id": query["id"]});
            server.write_all(format!("{{\"event\": \"STOP\", \"data\": {{}}}}\r\n{reply}\r\n").as_bytes()).await?;
            let nope = request(&mut server).await;
            let error = json!({"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": nope["id"]});
            server.write_all(format!("{error}\r\n").as_bytes()).await?;
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
        assert!(matches!(qmp.execute("query-status", None).await, Err(Error::Closed)));
    }

    /// A call that times out leaves its late reply behind; the next call must get its own
    /// reply, not that one (with replies matched by order, it would get the stale one).
    #[tokio::test]
    async fn an_abandoned_call_does_not_desynchronise_the_next() {
        let (client, mut server) = UnixStream::pair().expect("socketpair");
        let server_task = tokio::spawn(async move {
            greet(&mut server).await;
            let slow = request(&mut server).await;
            let fast = request(&mut server).await;
            // Late, after its caller gave up; then garbage and a reply without an id; then
            // the answer to the second call.
            let late = json!({"return": {"answer": "slow"}, "id": slow["id"]});
            let own = json!({"return": {"answer": "fast"}, "id": fast["id"]});
            let lines = format!("{late}\r\nnot json at all\r\n{{\"return\": {{\"answer\": \"no id\"}}}}\r\n{own}\r\n");
            server.write_all(lines.as_bytes()).await?;
            io::Result::Ok(server)
        });
        let qmp = Qmp::handshake(client).await.expect("handshake");
        let slow = qmp.execute_within("query-status", None, Duration::from_millis(100)).await;
        assert!(matches!(slow, Err(Error::NoReply { .. })), "{slow:?}");
        let fast = qmp.execute("query-status", None).await.expect("the second call's own reply");
        assert_eq!(fast["answer"], "fast");
        let _server = server_task.await.expect("server").expect("server io");
    }

    /// QEMU's answer to a request it cannot parse has no id; with one call in flight, it is
    /// that call's, which fails at once instead of waiting for its deadline.
    #[tokio::test]
    async fn an_error_without_an_id_fails_the_one_call_in_flight() {
        let (client, mut server) = UnixStream::pair().expect("socketpair");
        let server_task = tokio::spawn(async move {
            greet(&mut server).await;
            let _unparsable = request(&mut server).await;
            server
                .write_all(
                    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword\"}}\r\n",
                )
                .await?;
            io::Result::Ok(server)
        });
        let qmp = Qmp::handshake(client).await.expect("handshake");
        let error = qmp.execute_within("query-status", None, Duration::from_secs(30)).await;
        assert!(
            matches!(&error, Err(Error::Api { desc, .. }) if desc == "JSON parse error, invalid keyword"),
            "{error:?}"
        );
        let _server = server_task.await.expect("server").expect("server io");
    }

    /// A caller whose future is dropped (Ctrl-C in Python) while its request is in flight.
    #[tokio::test]
    async fn a_dropped_call_does_not_desynchronise_the_next() {
        let (client, mut server) = UnixStream::pair().expect("socketpair");
        let qmp_server = tokio::spawn(async move {
            greet(&mut server).await;
            let first = request(&mut server).await;
            let second = request(&mut server).await;
            for (id, answer) in [(&first["id"], "first"), (&second["id"], "second")] {
                let reply = json!({"return": {"answer": answer}, "id": id});
                server.write_all(format!("{reply}\r\n").as_bytes()).await?;
            }
            io::Result::Ok(server)
        });
        let qmp = Qmp::handshake(client).await.expect("handshake");
        let dropped = tokio::time::timeout(Duration::from_millis(50), qmp.execute("query-status", None)).await;
        assert!(dropped.is_err(), "the first call is cut short");
        let second = qmp.execute("query-status", None).await.expect("reply");
        assert_eq!(second["answer"], "second");
        let _server = qmp_server.await.expect("server").expect("server io");
    }
}
