//! The monitor and QMP connections: the protocols of [`crate::hmp`] and [`crate::qmp`] served
//! on sockets, wired to the machine, with the QMP faults applied.
//!
//! Events go to every QMP client in command mode ([`Events`]). As QEMU's socket chardevs do,
//! QMP serves one client at a time: a second client connects and
//! waits in the listen backlog until the first one leaves, then gets its greeting.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::hmp;
use crate::json::Splitter;
use crate::qmp::{self, Gate, Session};
use crate::vm::{Action, Vm};

/// QMP connections in command mode, which get events.
#[derive(Default)]
pub struct Events {
    writers: std::sync::Mutex<Vec<Arc<Mutex<OwnedWriteHalf>>>>,
}

impl Events {
    fn writers(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Mutex<OwnedWriteHalf>>>> {
        match self.writers.lock() {
            Ok(writers) => writers,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Send events to this connection from now on.
    pub fn subscribe(&self, writer: &Arc<Mutex<OwnedWriteHalf>>) {
        self.writers().push(Arc::clone(writer));
    }

    /// Whether this connection gets events.
    pub fn has(&self, writer: &Arc<Mutex<OwnedWriteHalf>>) -> bool {
        self.writers().iter().any(|w| Arc::ptr_eq(w, writer))
    }

    /// The connection closed.
    pub fn unsubscribe(&self, writer: &Arc<Mutex<OwnedWriteHalf>>) {
        self.writers().retain(|w| !Arc::ptr_eq(w, writer));
    }

    /// Write an event to every connection (a client that stops reading is skipped after a
    /// second, so it cannot stall the machine).
    pub async fn emit(&self, event: &str, data: Option<Value>) {
        let line = qmp::encode_event(event, data.as_ref(), SystemTime::now());
        let writers = self.writers().clone();
        for writer in writers {
            let write = async { writer.lock().await.write_all(line.as_bytes()).await };
            let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
        }
    }
}

/// The line `--fake-qmp-garbage` writes before every reply.
pub const GARBAGE: &str = "ntd-fake-qemu: this line is not JSON\r\n";

/// Serve the HMP monitor on a connected socket until it closes.
pub async fn serve_hmp(stream: UnixStream, vm: Arc<Vm>) {
    let (mut read, mut write) = stream.into_split();
    if write.write_all(format!("{}{}", hmp::GREETING, hmp::PROMPT).as_bytes()).await.is_err() {
        return;
    }
    let mut lines = hmp::LineReader::default();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for line in lines.push(&buf[..n]) {
            let (output, action) = vm.hmp(&hmp::parse(&line)).await;
            if let Some(quit @ Action::Quit(_)) = action {
                // readline has echoed the line; QEMU exits before any prompt.
                let _ = write.write_all(format!("{line}\r\n").as_bytes()).await;
                vm.perform(quit).await;
                return;
            }
            if write.write_all(hmp::reply(&line, &output).as_bytes()).await.is_err() {
                return;
            }
            if let Some(action) = action {
                let vm = Arc::clone(&vm);
                tokio::spawn(async move { vm.perform(action).await });
            }
        }
    }
}

/// Accept QMP clients one after the other for the machine's lifetime.
pub async fn serve_qmp_listener(listener: UnixListener, vm: Arc<Vm>) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            serve_qmp(stream, Arc::clone(&vm)).await;
        }
    }
}

/// Serve one QMP client until it disconnects.
pub async fn serve_qmp(stream: UnixStream, vm: Arc<Vm>) {
    let (mut read, write) = stream.into_split();
    let writer = Arc::new(Mutex::new(write));
    if writer.lock().await.write_all(qmp::GREETING.as_bytes()).await.is_err() {
        return;
    }
    let mut session = Session::default();
    let mut splitter = Splitter::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for text in splitter.push(&buf[..n]) {
            let (reply, id, command, action) = match qmp::parse_request(&text) {
                Err((error, id)) => (Err(error), id, None, None),
                Ok(request) => match session.gate(&request) {
                    Gate::Reply(reply) => (reply, request.id, Some(request.command), None),
                    Gate::Run(run) => {
                        let (reply, action) = vm.qmp(run).await;
                        (reply, request.id, Some(request.command), action)
                    }
                },
            };
            if session.negotiated() && !vm.events.has(&writer) {
                vm.events.subscribe(&writer);
            }
            let faults = &vm.config().qmp_faults;
            let answered = !command.as_ref().is_some_and(|c| faults.no_reply.contains(c));
            if answered && !reply_with_faults(&vm, &writer, &reply, id.as_ref()).await {
                break;
            }
            match action {
                // QEMU answers `quit`, then sends SHUTDOWN on this connection and exits.
                Some(quit @ Action::Quit(_)) => vm.perform(quit).await,
                Some(action) => {
                    let vm = Arc::clone(&vm);
                    tokio::spawn(async move { vm.perform(action).await });
                }
                None => {}
            }
        }
    }
    vm.events.unsubscribe(&writer);
}

/// Write one reply, preceded by what the QMP faults ask for. False if the client is gone.
async fn reply_with_faults(
    vm: &Vm,
    writer: &Mutex<OwnedWriteHalf>,
    reply: &Result<serde_json::Value, qmp::QmpError>,
    id: Option<&serde_json::Value>,
) -> bool {
    let faults = &vm.config().qmp_faults;
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    let id = if faults.no_id { None } else { id };
    let mut out = String::new();
    if faults.event_before_reply {
        let data = json!({"offset": 0, "qom-path": "/machine/unattached/device[8]"});
        out.push_str(&qmp::encode_event("RTC_CHANGE", Some(&data), SystemTime::now()));
    }
    if faults.garbage {
        out.push_str(GARBAGE);
    }
    out.push_str(&match reply {
        Ok(value) => qmp::encode_return(value, id),
        Err(error) => qmp::encode_error(error, id),
    });
    writer.lock().await.write_all(out.as_bytes()).await.is_ok()
}
