//! The host end of the backdoor shell: a root shell in the guest reading commands from
//! `/dev/hvc0`, and ntd's two ports beside it ([`super::channel`]).
//!
//! Guest side (NixOS's `test-instrumentation.nix`, reproduced by the test guest): bash started
//! as `bash --norc /dev/hvc0` with the console in raw mode (`stty raw -echo`), stdout on hvc0,
//! stderr on the serial port, after printing the marker `Spawning backdoor root shell...`. The
//! driver then sets up its channel ([`Shell::set_up`]), sends one framed command at a time
//! ([`super::frame`]) and reads its reply here: from the output port, or from the console when
//! the guest has no port.
//!
//! The console is read by a task of its own from the moment QEMU connects, whatever the test
//! script is doing: QEMU drops console bytes it cannot write, so a reader that pauses while
//! the script computes (or while the driver is not scheduled) would lose them. The output port
//! is read only while a reply is awaited: it is flow-controlled, so an unread port stops the
//! guest's writer instead of losing anything.
//!
//! On the console, the end of a reply may be dropped too. The driver finds out with probes
//! ([`super::probe`]): lines that make the shell print a fresh nonce once the command before
//! them has ended. A console reply silent for [`PROBE_AFTER_SILENCE`] gets one: its answer
//! before the reply's end proves the end lost, at once, where waiting would last until the
//! command's timeout (15 minutes by default) and beyond. A reply that no caller will read
//! (its caller gave up, or did not wait) is settled before the next exchange, on the console
//! by a probe too: everything before its answer is skipped, instead of waiting for an end that
//! may never come.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::channel::{self, Found, Mode};
use super::frame::{self, Frame, Framing, Reply, ReplyDecoder, ReplyError};
use super::probe::{ANSWER_LEN, Probes};

/// The line the guest prints when the backdoor shell is ready.
pub const MARKER: &[u8] = b"Spawning backdoor root shell...";

/// How long the kill helper gets to answer a kill request (it reads its port at once; the
/// scan of `/proc` takes tens of milliseconds under emulation).
const KILL_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed command's end marker may take after the helper answered (the marker
/// loop retries every 0.1 s until the killed processes have released the port).
const MARKER_AFTER_KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the kill helper gets to announce itself at connect.
const HELPER_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the console may be silent while an answer is due before the driver sends a
/// probe (harmless when the command is only slow: its answer then follows the reply).
const PROBE_AFTER_SILENCE: Duration = Duration::from_secs(2);
/// How long the probes' answers may take after the reply they followed has ended (the shell
/// prints them at once; longer means the console dropped them, and the next exchange
/// resyncs).
const PROBE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The size of one read from a socket.
const READ_SIZE: usize = 64 * 1024;

/// Why a shell exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// Reading or writing the socket failed.
    #[error("backdoor shell I/O failed")]
    Io(#[from] io::Error),
    /// The guest side closed the connection (QEMU exited, or the shell exited).
    #[error("the backdoor shell disconnected")]
    Disconnected {
        /// What the current command had printed before the disconnect.
        partial_output: Vec<u8>,
    },
    /// The reply is not what the framing allows.
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// The guest did not answer in time something that it answers at once when it runs.
    #[error("the guest did not answer {what} within {} seconds", waited.as_secs())]
    Unanswered {
        /// What was asked.
        what: &'static str,
        /// How long the driver waited.
        waited: Duration,
    },
}

/// A command sent whose reply has not been read yet.
#[derive(Debug)]
struct Pending {
    decoder: ReplyDecoder,
    framing: Framing,
    /// The console line saying the command exited with its stdout still open.
    lingering_notice: Vec<u8>,
    /// The command, to be killed if it is still running when the next exchange needs the
    /// shell: its caller gave up on it (an interruption). Commands sent without waiting for
    /// them are left to end on their own (`None`).
    kill_if_abandoned: Option<String>,
}

impl Pending {
    /// The error for this command's shell gone, with what it had printed.
    fn disconnected(&self) -> ShellError {
        ShellError::Disconnected { partial_output: self.decoder.partial_output().to_vec() }
    }
}

/// A command whose caller gave up on it, settled when the shell was next needed.
#[derive(Debug)]
pub struct Abandoned {
    /// The command as the caller gave it.
    pub command: String,
    /// What became of it.
    pub settled: Settled,
}

/// How a command whose caller gave up on it was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The kill helper killed this many processes (0: it had ended on its own).
    Killed {
        /// How many.
        processes: u32,
    },
    /// Its reply was skipped once the command had ended: on the console by a resync, with
    /// about this many bytes arriving after the caller gave up; with the output port, read to
    /// its end, this many bytes of output in all.
    Skipped {
        /// How many.
        bytes: u64,
    },
}

/// How many bytes the guest has sent on the console and the output port, and when the last
/// arrived: readable without the shell's lock, so that whoever waits for a reply can tell
/// one still arriving (a big output on a slow console) from a guest that went silent.
#[derive(Debug, Clone)]
pub struct Received(Arc<Counts>);

#[derive(Debug)]
struct Counts {
    bytes: AtomicU64,
    /// When the last byte arrived, in milliseconds after `start`.
    last_ms: AtomicU64,
    start: Instant,
}

impl Default for Received {
    fn default() -> Received {
        Received(Arc::new(Counts { bytes: AtomicU64::new(0), last_ms: AtomicU64::new(0), start: Instant::now() }))
    }
}

impl Received {
    /// The bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// When the last byte arrived (when counting began, before any).
    pub fn last_at(&self) -> Instant {
        self.0.start + Duration::from_millis(self.0.last_ms.load(Ordering::Relaxed))
    }

    /// Count `n` more bytes, arriving now.
    pub(super) fn add(&self, n: usize) {
        let now = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ms.fetch_max(now, Ordering::Relaxed);
        self.0.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The control port and the kill helper behind it.
#[derive(Debug)]
struct Control {
    stream: UnixStream,
    /// Bytes received and not consumed yet.
    buf: Vec<u8>,
    /// This connection's epoch, which the helper checks in every request.
    epoch: String,
    /// The number of the last kill request.
    seq: u64,
}

impl Control {
    /// Read until a whole line for which `wanted` says something, skipping the others.
    async fn read_until<T>(&mut self, mut wanted: impl FnMut(&str) -> Option<T>) -> Result<T, ShellError> {
        let mut chunk = [0u8; 256];
        loop {
            while let Some(newline) = memchr::memchr(b'\n', &self.buf) {
                let line: Vec<u8> = self.buf.drain(..=newline).collect();
                if let Some(found) = wanted(&String::from_utf8_lossy(&line)) {
                    return Ok(found);
                }
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ShellError::Disconnected { partial_output: Vec::new() });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The console pump's task, stopped with the shell.
#[derive(Debug)]
struct PumpTask(tokio::task::JoinHandle<()>);

impl Drop for PumpTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What an interrupted command left behind.
#[derive(Debug)]
pub struct Killed {
    /// The command's reply: what it printed before it was killed, and its status.
    pub reply: Reply,
    /// How many processes the helper killed (0: the command had ended on its own).
    pub processes: u32,
}

/// The host end of the backdoor shell (see the module documentation).
#[derive(Debug)]
pub struct Shell {
    /// Writes to the guest's hvc0.
    hvc0: OwnedWriteHalf,
    /// What the guest wrote to hvc0, chunk by chunk, from the console pump.
    hvc0_chunks: mpsc::UnboundedReceiver<Vec<u8>>,
    _hvc0_pump: PumpTask,
    /// hvc0 bytes received and not consumed yet.
    hvc0_buf: Vec<u8>,
    /// The output port's connection, if QEMU made one.
    out: Option<UnixStream>,
    /// Output-port bytes received after the last reply ended.
    out_buf: Vec<u8>,
    /// The control port's connection, if QEMU made one.
    control: Option<Control>,
    mode: Mode,
    pending: Option<Pending>,
    /// Probes whose answers are still due on the console. With no reply pending, the next
    /// exchange resyncs first.
    probes: Probes,
    received: Received,
}

impl Shell {
    /// Wrap the connections QEMU made: the backdoor console and, when QEMU has them, ntd's
    /// output and control ports. Starts the console pump; must run inside the runtime.
    pub fn new(hvc0: UnixStream, out: Option<UnixStream>, ctl: Option<UnixStream>) -> Shell {
        let (mut reader, writer) = hvc0.into_split();
        let (sender, hvc0_chunks) = mpsc::unbounded_channel();
        let received = Received::default();
        let counter = received.clone();
        let pump = tokio::spawn(async move {
            let mut chunk = vec![0u8; READ_SIZE];
            // An error or the end of the stream drops the sender: the shell sees it as a disconnect.
            while let Ok(n @ 1..) = reader.read(&mut chunk).await {
                counter.add(n);
                if sender.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Shell {
            hvc0: writer,
            hvc0_chunks,
            _hvc0_pump: PumpTask(pump),
            hvc0_buf: Vec::new(),
            out,
            out_buf: Vec::new(),
            control: ctl.map(|stream| Control { stream, buf: Vec::new(), epoch: String::new(), seq: 0 }),
            mode: Mode::Console,
            pending: None,
            probes: Probes::default(),
            received,
        }
    }

    /// The count of bytes received from the guest (see [`Received`]).
    pub fn received(&self) -> Received {
        self.received.clone()
    }

    /// How commands travel since the last [`Shell::set_up`].
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Wait for the next chunk from hvc0, append it to the buffer and return it.
    async fn more_hvc0(&mut self) -> Result<Vec<u8>, ShellError> {
        match self.hvc0_chunks.recv().await {
            Some(chunk) => {
                self.hvc0_buf.extend_from_slice(&chunk);
                Ok(chunk)
            }
            None => Err(ShellError::Disconnected { partial_output: Vec::new() }),
        }
    }

    /// Read until the guest has printed the marker line. `on_chunk` sees every chunk as it
    /// arrives (upstream logs each as `Guest shell says: b'…'`).
    pub async fn wait_for_marker(&mut self, mut on_chunk: impl FnMut(&[u8])) -> Result<(), ShellError> {
        // A reboot or a switch to stage 2 abandons whatever reply the old shell owed. Its
        // unread probe lines may reach the new shell: `set_up` strips their answers.
        self.pending = None;
        self.mode = Mode::Console;
        loop {
            if let Some(at) = memmem::find(&self.hvc0_buf, MARKER) {
                let after = at + MARKER.len();
                if let Some(newline) = memchr::memchr(b'\n', &self.hvc0_buf[after..]) {
                    self.hvc0_buf.drain(..after + newline + 1);
                    return Ok(());
                }
            }
            match self.more_hvc0().await {
                Ok(chunk) => on_chunk(&chunk),
                Err(_) => {
                    return Err(ShellError::Disconnected { partial_output: std::mem::take(&mut self.hvc0_buf) });
                }
            }
        }
    }

    /// Set up ntd's channel in a freshly connected backdoor shell (see [`channel`]) and
    /// return how commands will travel.
    pub async fn set_up(&mut self) -> Result<Mode, ShellError> {
        // What an earlier boot left in the ports' sockets belongs to no command of this one.
        self.out_buf.clear();
        if let Some(out) = &self.out {
            drain_now(out);
        }
        if let Some(control) = &mut self.control {
            drain_now(&control.stream);
            control.buf.clear();
            control.epoch = frame::new_token();
        }
        let nonce = frame::new_token();
        let epoch = self.control.as_ref().map(|control| control.epoch.clone()).unwrap_or_default();
        let script = channel::setup_script(self.out.is_some(), &nonce, &epoch);
        self.hvc0.write_all(script.as_bytes()).await?;
        let terminator = format!("\n{nonce} ");
        let found = loop {
            if let Some(at) = memmem::find(&self.hvc0_buf, terminator.as_bytes()) {
                let start = at + terminator.len();
                if let Some(newline) = memchr::memchr(b'\n', &self.hvc0_buf[start..]) {
                    let line = String::from_utf8_lossy(&self.hvc0_buf[start..start + newline]).into_owned();
                    // Anything the guest printed before the reply stays for the stray check,
                    // but for answers to the old shell's probes.
                    self.hvc0_buf.drain(at..start + newline + 1);
                    self.probes.strip_from(&mut self.hvc0_buf);
                    break Found::parse(&line).ok_or(ReplyError::Malformed(line))?;
                }
            }
            self.more_hvc0().await?;
        };
        self.mode = match (&found.out, &self.out) {
            (Some(_), Some(_)) => {
                let killable = match (&found.ctl, &mut self.control) {
                    (Some(_), Some(control)) => {
                        let epoch = control.epoch.clone();
                        let ready = control.read_until(|line| channel::is_ready_line(line, &epoch).then_some(()));
                        matches!(tokio::time::timeout(HELPER_READY_TIMEOUT, ready).await, Ok(Ok(())))
                    }
                    _ => false,
                };
                Mode::Port { killable }
            }
            _ => Mode::Console,
        };
        Ok(self.mode)
    }

    /// Take what the guest wrote since the last reply ended, without waiting: output of a
    /// background job started by an earlier command, which would otherwise be taken for the
    /// next command's output.
    pub fn take_stray_output(&mut self) -> Vec<u8> {
        // Output before a due answer is skipped by the resync instead.
        if self.pending.is_some() || !self.probes.is_empty() {
            return Vec::new();
        }
        while let Ok(chunk) = self.hvc0_chunks.try_recv() {
            self.hvc0_buf.extend_from_slice(&chunk);
        }
        let mut stray = std::mem::take(&mut self.hvc0_buf);
        if let Some(out) = &self.out {
            stray.append(&mut self.out_buf);
            stray.extend(read_now(out));
        }
        stray
    }

    /// Send `frame`, after settling what an earlier command owes (returned when that meant
    /// killing it). Its reply must be read with [`Shell::receive`]; otherwise it is settled
    /// before the next exchange: read to its end, or, when `kill_if_abandoned` names the
    /// command (its caller waits for it) and the guest has a kill helper, killed and then read.
    pub async fn send(
        &mut self,
        frame: &Frame,
        kill_if_abandoned: Option<String>,
    ) -> Result<Option<Abandoned>, ShellError> {
        let abandoned = self.settle().await?;
        self.hvc0.write_all(&frame.bytes).await?;
        self.pending = Some(Pending {
            decoder: frame.decoder(),
            framing: frame.framing(),
            lingering_notice: frame.lingering_notice(),
            kill_if_abandoned,
        });
        Ok(abandoned)
    }

    /// A command is sent and its reply not read yet.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Settle the reply still owed by an earlier command, if any: kill the command if its
    /// caller abandoned it and the guest can kill, then read the reply to its end; on the
    /// console, resynchronise instead (see the module documentation). Returns what became of
    /// a command whose caller had waited for it.
    pub async fn settle(&mut self) -> Result<Option<Abandoned>, ShellError> {
        let Some(pending) = &self.pending else {
            if !self.probes.is_empty() {
                self.resync().await?;
            }
            return Ok(None);
        };
        let abandoned = pending.kill_if_abandoned.clone();
        let settled = match (pending.framing, &abandoned) {
            (_, Some(_)) if self.mode.killable() => {
                let killed = self.kill().await?;
                Settled::Killed { processes: killed.processes }
            }
            (Framing::Console, _) => Settled::Skipped { bytes: self.resync().await? },
            (Framing::Port, _) => Settled::Skipped { bytes: self.receive(|| {}).await?.output.len() as u64 },
        };
        Ok(abandoned.map(|command| Abandoned { command, settled }))
    }

    /// Skip the console's output up to a fresh probe's answer (see the module documentation):
    /// the pending reply, if any, and the answers of earlier probes. Returns about how many
    /// bytes were skipped (answers to lost probes are among them).
    async fn resync(&mut self) -> Result<u64, ShellError> {
        // Where the bound is reached (commands interrupted again and again while one hangs),
        // the answers due will do.
        if self.probes.has_room() {
            self.send_probe().await?;
        }
        // `hvc0_buf` may have been searched already.
        self.probes.forget_tails();
        let mut skipped = 0u64;
        let mut data = std::mem::take(&mut self.hvc0_buf);
        loop {
            while let Some(after) = self.probes.find_in(&data) {
                // The answer may have begun in the bytes already counted.
                skipped = (skipped + after as u64).saturating_sub(ANSWER_LEN as u64);
                data.drain(..after);
                if self.probes.is_empty() {
                    self.hvc0_buf = data;
                    self.pending = None;
                    return Ok(skipped);
                }
            }
            skipped += data.len() as u64;
            data = match self.next_console_chunk().await {
                Ok(Some(more)) => more,
                Ok(None) => Vec::new(),
                Err(ShellError::Disconnected { .. }) => return Err(self.abandon_pending(Pending::disconnected)),
                Err(e) => return Err(e),
            };
        }
    }

    /// Write a probe to the shell.
    async fn send_probe(&mut self) -> Result<(), ShellError> {
        let line = self.probes.send(self.received.bytes());
        self.hvc0.write_all(&line).await?;
        Ok(())
    }

    /// Wait for the next chunk from the console, with probes due: after
    /// [`PROBE_AFTER_SILENCE`] of silence, send another probe where one may go and return
    /// `None`.
    async fn next_console_chunk(&mut self) -> Result<Option<Vec<u8>>, ShellError> {
        let more = if self.probes.may_send(self.received.bytes()) {
            match tokio::time::timeout(PROBE_AFTER_SILENCE, self.hvc0_chunks.recv()).await {
                Ok(more) => more,
                Err(_) => {
                    self.send_probe().await?;
                    return Ok(None);
                }
            }
        } else {
            self.hvc0_chunks.recv().await
        };
        more.map(Some).ok_or(ShellError::Disconnected { partial_output: Vec::new() })
    }

    /// Read the reply of the last command sent. `on_lingering` is called when the guest says
    /// that the command exited but its stdout is still open after 10 s. Cancel-safe: if the
    /// future is dropped, the reply is still owed and is settled before the next exchange
    /// (or, once it has arrived, the answers of its probes are).
    pub async fn receive(&mut self, mut on_lingering: impl FnMut()) -> Result<Reply, ShellError> {
        let mut chunk = vec![0u8; READ_SIZE];
        loop {
            let Some(pending) = self.pending.as_mut() else {
                return Err(ShellError::Io(io::Error::other("no command is waiting for a reply")));
            };
            match (pending.framing, self.out.as_mut()) {
                (Framing::Port, Some(out)) => {
                    if let Some(at) = memmem::find(&self.hvc0_buf, &pending.lingering_notice) {
                        self.hvc0_buf.drain(at..at + pending.lingering_notice.len());
                        on_lingering();
                    }
                    let data = if self.out_buf.is_empty() {
                        tokio::select! {
                            read = out.read(&mut chunk) => match read? {
                                0 => return Err(self.abandon_pending(Pending::disconnected)),
                                n => {
                                    self.received.add(n);
                                    chunk[..n].to_vec()
                                }
                            },
                            // The console is watched for the notice meanwhile.
                            more = self.hvc0_chunks.recv() => {
                                match more {
                                    Some(more) => self.hvc0_buf.extend_from_slice(&more),
                                    None => return Err(self.abandon_pending(Pending::disconnected)),
                                }
                                continue;
                            }
                        }
                    } else {
                        std::mem::take(&mut self.out_buf)
                    };
                    if let Some((reply, rest)) = self.push_reply(&data)? {
                        self.out_buf = rest;
                        return Ok(reply);
                    }
                }
                (Framing::Console, _) | (Framing::Port, None) => {
                    if self.hvc0_buf.is_empty() {
                        match self.next_console_chunk().await {
                            Ok(Some(more)) => self.hvc0_buf = more,
                            // A probe went out.
                            Ok(None) => continue,
                            Err(ShellError::Disconnected { .. }) => {
                                return Err(self.abandon_pending(Pending::disconnected));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    let mut data = std::mem::take(&mut self.hvc0_buf);
                    if let Some(after) = self.probes.find_in(&data) {
                        // The shell has read a line sent after the command: the reply has
                        // ended, in these bytes, or its end was lost.
                        let rest = data.split_off(after);
                        return match self.push_reply(&data)? {
                            Some((reply, _answer)) => Ok(self.after_probed_reply(reply, rest).await),
                            None => {
                                self.hvc0_buf = rest;
                                Err(self.abandon_pending(|_| ShellError::Reply(ReplyError::EndLost)))
                            }
                        };
                    }
                    // An error ends the command; answers still due make the next exchange
                    // resync.
                    if let Some((reply, rest)) = self.push_reply(&data)? {
                        return Ok(self.after_probed_reply(reply, rest).await);
                    }
                }
            }
        }
    }

    /// Feed the pending decoder; a complete reply or an error ends the pending command.
    fn push_reply(&mut self, data: &[u8]) -> Result<Option<(Reply, Vec<u8>)>, ShellError> {
        let Some(pending) = self.pending.as_mut() else { return Ok(None) };
        match pending.decoder.push(data) {
            Ok(None) => Ok(None),
            Ok(Some(done)) => {
                self.pending = None;
                Ok(Some(done))
            }
            Err(e) => {
                self.pending = None;
                Err(e.into())
            }
        }
    }

    /// A reply has ended with probes' answers still due: read up to the last, which the shell
    /// prints at once, so that none is taken for stray output (`rest`: what followed the
    /// reply). Where they do not come in time, or this future is dropped meanwhile, the next
    /// exchange resyncs.
    async fn after_probed_reply(&mut self, reply: Reply, rest: Vec<u8>) -> Reply {
        self.hvc0_buf = rest;
        // What follows the reply was searched with it; no answer starts before it.
        self.probes.forget_tails();
        let answered = async {
            loop {
                while let Some(after) = self.probes.find_in(&self.hvc0_buf) {
                    self.hvc0_buf.drain(..after);
                }
                if self.probes.is_empty() {
                    return;
                }
                match self.hvc0_chunks.recv().await {
                    Some(more) => self.hvc0_buf = more,
                    None => return,
                }
            }
        };
        let _in_time = tokio::time::timeout(PROBE_ANSWER_TIMEOUT, answered).await;
        reply
    }

    /// Forget the pending command (its shell is gone) and return the error made from it.
    fn abandon_pending(&mut self, error: impl FnOnce(&Pending) -> ShellError) -> ShellError {
        match self.pending.take() {
            Some(pending) => error(&pending),
            None => ShellError::Disconnected { partial_output: Vec::new() },
        }
    }

    /// Kill the pending command in the guest (its process tree and whatever holds the output
    /// port), then read its reply. Needs a kill helper ([`Mode::killable`]).
    pub async fn kill(&mut self) -> Result<Killed, ShellError> {
        let Some(control) = self.control.as_mut().filter(|_| self.mode.killable()) else {
            return Err(ShellError::Io(io::Error::other("this guest has no kill helper")));
        };
        control.seq += 1;
        let seq = control.seq;
        control.stream.write_all(channel::kill_request(&control.epoch, seq).as_bytes()).await?;
        let answer = control.read_until(|line| channel::parse_kill_ack(line, seq));
        let processes = tokio::time::timeout(KILL_ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| ShellError::Unanswered { what: "a kill request", waited: KILL_ANSWER_TIMEOUT })??;
        let reply = tokio::time::timeout(MARKER_AFTER_KILL_TIMEOUT, self.receive(|| {})).await.map_err(|_| {
            ShellError::Unanswered { what: "with the end of a killed command", waited: MARKER_AFTER_KILL_TIMEOUT }
        })??;
        Ok(Killed { reply, processes })
    }

    /// What the command in flight has printed so far (its reply has not ended yet).
    pub fn partial_output(&self) -> Vec<u8> {
        self.pending.as_ref().map(|pending| pending.decoder.partial_output().to_vec()).unwrap_or_default()
    }

    /// Write one line unframed on the console and read back the first line the shell prints
    /// there (without its newline). The line must make the shell print exactly one line, or
    /// later replies are misread: this is for measuring the channel and upstream's framing, not
    /// for commands.
    pub async fn exchange_line(&mut self, line: &[u8]) -> Result<Vec<u8>, ShellError> {
        self.settle().await?;
        self.hvc0.write_all(line).await?;
        let mut searched = 0;
        loop {
            // Only the bytes not searched yet: a long line arrives in many reads.
            if let Some(at) = memchr::memchr(b'\n', &self.hvc0_buf[searched..]) {
                let newline = searched + at;
                let mut received: Vec<u8> = self.hvc0_buf.drain(..=newline).collect();
                received.pop();
                return Ok(received);
            }
            searched = self.hvc0_buf.len();
            if self.more_hvc0().await.is_err() {
                return Err(ShellError::Disconnected { partial_output: std::mem::take(&mut self.hvc0_buf) });
            }
        }
    }

    /// Write bytes to the shell as they are, unframed (upstream's `shutdown()` writes
    /// `poweroff\n` this way).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ShellError> {
        self.hvc0.write_all(bytes).await?;
        Ok(())
    }

    /// Connect `peer` to the console until `peer` closes: what it writes goes to the shell,
    /// what the shell prints goes to it (upstream's `shell_interact`, through a socket pair
    /// so that the console pump keeps reading).
    pub async fn relay(&mut self, peer: UnixStream) -> Result<(), ShellError> {
        // (The caller of an abandoned command was told when it gave up; see `transport`.)
        self.settle().await?;
        let (mut peer_reader, mut peer_writer) = peer.into_split();
        peer_writer.write_all(&std::mem::take(&mut self.hvc0_buf)).await?;
        let mut chunk = vec![0u8; READ_SIZE];
        loop {
            tokio::select! {
                read = peer_reader.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(n) => self.hvc0.write_all(&chunk[..n]).await?,
                },
                more = self.hvc0_chunks.recv() => match more {
                    Some(more) => {
                        if peer_writer.write_all(&more).await.is_err() {
                            return Ok(());
                        }
                    }
                    None => return Err(ShellError::Disconnected { partial_output: Vec::new() }),
                },
            }
        }
    }
}

/// Read whatever is in the socket now, without waiting.
fn read_now(stream: &UnixStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut chunk = vec![0u8; READ_SIZE];
    while let Ok(n @ 1..) = stream.try_read(&mut chunk) {
        data.extend_from_slice(&chunk[..n]);
    }
    data
}

/// Discard whatever is in the socket now.
fn drain_now(stream: &UnixStream) {
    drop(read_now(stream));
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::process::{Command, Stdio};

    use super::*;

    /// A real bash as the backdoor, on one end of a socket pair (no ports: the console
    /// framing), through the marker and the setup.
    async fn console_shell() -> (Shell, Backdoor) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let theirs: OwnedFd = theirs.into();
        let backdoor = Command::new("bash")
            .args(["--norc", "-c", "echo 'Spawning backdoor root shell...'; exec bash --norc"])
            .stdin(theirs.try_clone().expect("dup"))
            .stdout(theirs)
            .stderr(Stdio::null())
            .spawn()
            .expect("bash");
        ours.set_nonblocking(true).expect("non-blocking");
        let mut shell = Shell::new(UnixStream::from_std(ours).expect("tokio stream"), None, None);
        shell.wait_for_marker(|_| {}).await.expect("marker");
        assert_eq!(shell.set_up().await.expect("setup"), Mode::Console);
        (shell, Backdoor(backdoor))
    }

    /// The backdoor's bash, killed and reaped when the test ends.
    struct Backdoor(std::process::Child);

    impl Drop for Backdoor {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Send `command` and read its reply, within 10 s.
    async fn exchange(shell: &mut Shell, command: &str) -> Reply {
        let frame = Frame::new(command, Framing::Console, None, None).expect("frame");
        let exchange = async {
            shell.send(&frame, Some(command.to_owned())).await.expect("send");
            shell.receive(|| {}).await.expect("reply")
        };
        tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("the reply within 10 s")
    }

    /// A real bash driven through a few commands and unframed lines.
    #[tokio::test]
    async fn a_real_shell_on_the_console_framing() {
        let (mut shell, _backdoor) = console_shell().await;
        let mut run = async |command: &str, timeout: Option<Duration>| {
            let frame = Frame::new(command, Framing::Console, timeout, None).expect("frame");
            shell.send(&frame, None).await.expect("send");
            let reply = shell.receive(|| {}).await.expect("reply");
            (reply.status, reply.output)
        };
        assert_eq!(run(r"printf 'a\000b\377'; exit 3", None).await, (3, b"a\0b\xff".to_vec()));
        assert_eq!(run(r"printf 'a\nb'", None).await, (0, b"a\nb".to_vec()));
        assert_eq!(run("echo hi; false; echo no", None).await, (1, b"hi\n".to_vec()));
        assert_eq!(run("exit 7", None).await, (7, Vec::new()));
        assert_eq!(run("cd /; X=1", None).await, (0, Vec::new()));
        // `cd` and variables stay in the command's subshell.
        let mut expected = std::env::current_dir().expect("cwd").into_os_string().into_encoded_bytes();
        expected.extend_from_slice(b"\nunset\n");
        assert_eq!(run("pwd; echo ${X:-unset}", None).await, (0, expected));
        assert_eq!(run("echo 'unbalanced", None).await.0, 2);
        // Output ends at the end of stdout: a background job's output is part of it.
        assert_eq!(run("(echo ONE; sleep 0.5; echo TWO) &", None).await, (0, b"ONE\nTWO\n".to_vec()));
        assert_eq!(run("sleep 10", Some(Duration::from_millis(300))).await.0, 124);
        // Unframed lines (the benchmarks' channel floor and upstream's framing): the first line
        // comes back, a second one printed at once is kept for the next exchange, and framed
        // commands work after them.
        assert_eq!(shell.exchange_line(b"echo one; echo two\n").await.expect("line"), b"one");
        assert_eq!(shell.exchange_line(b"echo three\n").await.expect("line"), b"two");
        assert_eq!(shell.exchange_line(b"true\n").await.expect("line"), b"three");
        let long = "x".repeat(300_000);
        let echoed = shell.exchange_line(format!("echo {long}\n").as_bytes()).await.expect("line");
        assert_eq!(echoed, long.as_bytes(), "a line longer than one read");
        let frame = Frame::new("echo framed", Framing::Console, None, None).expect("frame");
        shell.send(&frame, None).await.expect("send");
        assert_eq!(shell.receive(|| {}).await.expect("reply").output, b"framed\n");
    }

    /// A reply nobody reads (its caller gave up while the command ran) is skipped once the
    /// command has ended, and the next command gets its own reply.
    #[tokio::test]
    async fn a_reply_given_up_on_is_skipped_on_the_console() {
        let (mut shell, _backdoor) = console_shell().await;
        let frame = Frame::new("sleep 0.5; echo old", Framing::Console, None, None).expect("frame");
        shell.send(&frame, Some("sleep 0.5; echo old".to_owned())).await.expect("send");
        // The caller gives up at once, before a byte of the reply arrived.
        assert!(tokio::time::timeout(Duration::from_millis(50), shell.receive(|| {})).await.is_err());
        let next = Frame::new("echo new", Framing::Console, None, None).expect("frame");
        let abandoned = shell.send(&next, None).await.expect("send").expect("the old command is reported");
        assert_eq!(abandoned.command, "sleep 0.5; echo old");
        // `old\n`, the line break before the status line and the status line itself.
        let Settled::Skipped { bytes } = abandoned.settled else { panic!("{abandoned:?}") };
        assert!(bytes > 4, "{bytes}");
        assert_eq!(shell.receive(|| {}).await.expect("reply").output, b"new\n");
        assert_eq!(exchange(&mut shell, "echo after").await.output, b"after\n");
    }

    /// Send `command` as a frame whose reply's end the console drops: played here by
    /// waiting for another frame's end, which the guest never prints.
    async fn send_with_its_end_dropped(shell: &mut Shell, command: &str) {
        let sent = Frame::new(command, Framing::Console, None, None).expect("frame");
        let awaited = Frame::new(command, Framing::Console, None, None).expect("frame");
        shell.send_raw(&sent.bytes).await.expect("send");
        shell.pending = Some(Pending {
            decoder: awaited.decoder(),
            framing: Framing::Console,
            lingering_notice: awaited.lingering_notice(),
            kill_if_abandoned: Some(command.to_owned()),
        });
    }

    /// A reply silent for a while gets a probe; its answer, which follows the reply, is not
    /// taken for stray output, and the shell stays in step.
    #[tokio::test]
    async fn a_slow_reply_is_probed_and_the_answer_consumed() {
        let (mut shell, _backdoor) = console_shell().await;
        let reply = exchange(&mut shell, "sleep 3; echo late").await;
        assert_eq!(reply.output, b"late\n");
        assert_eq!(shell.probes.sent(), 1, "one probe for the silence");
        assert!(shell.probes.is_empty(), "the probe's answer was read");
        assert_eq!(shell.take_stray_output(), b"");
        assert_eq!(exchange(&mut shell, "echo next").await.output, b"next\n");
    }

    /// A reply whose end the console dropped is an error as soon as the probe's answer
    /// arrives, not at the command's timeout; the next command gets its own reply.
    #[tokio::test]
    async fn a_dropped_end_is_found_by_the_probe() {
        let (mut shell, _backdoor) = console_shell().await;
        send_with_its_end_dropped(&mut shell, "echo old").await;
        let error = tokio::time::timeout(Duration::from_secs(5), shell.receive(|| {}))
            .await
            .expect("an answer within the probe's silence and a round trip")
            .expect_err("the end was lost");
        assert!(matches!(error, ShellError::Reply(ReplyError::EndLost)), "{error}");
        assert_eq!(exchange(&mut shell, "echo new").await.output, b"new\n");
    }

    /// A probe whose answer the console dropped (played by one never sent) is made up for by
    /// another: the dropped end is still found, and the shell stays in step.
    #[tokio::test]
    async fn a_lost_answer_is_made_up_for_by_another_probe() {
        let (mut shell, _backdoor) = console_shell().await;
        let _never_sent = shell.probes.send(shell.received.bytes());
        send_with_its_end_dropped(&mut shell, "echo old").await;
        let error = tokio::time::timeout(Duration::from_secs(8), shell.receive(|| {}))
            .await
            .expect("another probe's answer within 8 s")
            .expect_err("the end was lost");
        assert!(matches!(error, ShellError::Reply(ReplyError::EndLost)), "{error}");
        assert_eq!(exchange(&mut shell, "echo new").await.output, b"new\n");
        assert!(shell.probes.is_empty());
    }

    /// A reply that ends while an answer is due, which then does not come, leaves the answer
    /// to the next exchange: its resync settles it, output meanwhile is not taken for stray,
    /// and the next command gets its own reply.
    #[tokio::test]
    async fn an_answer_still_due_after_a_reply_is_settled_by_the_next_exchange() {
        let (mut shell, _backdoor) = console_shell().await;
        let frame = Frame::new("echo first", Framing::Console, None, None).expect("frame");
        shell.send(&frame, None).await.expect("send");
        let _never_sent = shell.probes.send(shell.received.bytes());
        assert_eq!(shell.receive(|| {}).await.expect("reply").output, b"first\n");
        assert!(!shell.probes.is_empty(), "the answer never came");
        assert_eq!(exchange(&mut shell, "echo second").await.output, b"second\n");
        assert!(shell.probes.is_empty());
    }

    /// Where the caller gave up on a reply whose end the console dropped, the next command
    /// still gets its own reply: waiting for the lost end would wait forever.
    #[tokio::test]
    async fn a_reply_whose_end_was_dropped_does_not_stop_the_next_command() {
        let (mut shell, _backdoor) = console_shell().await;
        send_with_its_end_dropped(&mut shell, "echo old").await;
        assert!(tokio::time::timeout(Duration::from_millis(500), shell.receive(|| {})).await.is_err());
        assert_eq!(exchange(&mut shell, "echo new").await.output, b"new\n");
        // Nothing of the old reply is left to be taken for stray output.
        assert_eq!(shell.take_stray_output(), b"");
    }
}
