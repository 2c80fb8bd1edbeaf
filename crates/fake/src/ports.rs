//! The virtio-serial ports (`-device virtserialport,chardev=ID,name=NAME`): each chardev's
//! socket, connected at start as QEMU connects it, and the FUSE file system that shows the
//! ports to the guest as `/dev/virtio-ports/NAME` with the semantics of Linux's
//! `virtio_console`:
//!
//! - a port is open once at a time: a second `open` fails with `EBUSY` until the kernel
//!   releases the first (when its last descriptor, inherited or duplicated, is closed);
//! - reads and writes go straight to the socket (`direct_io`, a stream without a position): a
//!   read waits for the driver's bytes, a write waits until the socket has taken every byte,
//!   so a driver that does not read stops the guest's writer instead of losing its bytes.
//!   Nothing is read from the socket while the guest does not read the port, as with QEMU;
//! - every node has a fixed inode, so `[ /proc/PID/fd/N -ef /dev/virtio-ports/NAME ]` holds.
//!
//! One thread per boot reads the kernel's requests and answers the quick ones itself. A read or
//! a write, which may wait for the driver for any time, gets a thread of its own, and each
//! direction of a port serves one request at a time, so bytes keep their order.
//!
//! A waiting request gives up only when its caller is dying or the guest is gone. The kernel
//! sends `FUSE_INTERRUPT` on any signal, but a real port's read or write is restarted after a
//! handled signal (`SA_RESTART`, bash's `SIGCHLD`), which a FUSE reply cannot ask for: so an
//! interrupted request goes on waiting unless its caller has a fatal signal pending. That
//! check matters: a caller killed while its request is in the fake's hands cannot die before
//! the reply (the kernel waits for it), and neither can the guest's pid namespace.
//!
//! The mount lives in the guest's mount namespace: when the guest's last process ends the
//! kernel unmounts it and aborts the connection, and the boot's thread ends; when the fake
//! exits, its descriptor closes, which aborts the connection too.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::fuse::{self, Attr, EntryType, Header, InitReply, Request};

/// How often a waiting request checks whether to give up.
const TICK_MS: u16 = 50;
/// The largest write the file system takes in one request (the kernel's default page limit).
const MAX_WRITE: u32 = 128 * 1024;
/// Room for one request: a largest write and its headers.
const REQUEST_BUFFER: usize = MAX_WRITE as usize + 4096;
/// The node of the first port; the others follow.
const FIRST_PORT: u64 = 2;

/// The ports cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    /// `/dev/fuse` cannot be opened (no FUSE in the kernel, not root, a sandbox).
    #[error("cannot open /dev/fuse for the guest's virtio ports")]
    Device(#[source] io::Error),
    /// A port's socket cannot be set up.
    #[error("cannot set up the socket of port {name}")]
    Socket {
        /// The port.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server thread cannot be started.
    #[error("cannot start the virtio ports' server thread")]
    Thread(#[source] io::Error),
}

/// A port as the command line defines it, its chardev connected.
#[derive(Debug)]
pub struct PortSpec {
    /// The name the guest sees.
    pub name: String,
    /// The chardev's socket.
    pub socket: UnixStream,
    /// `--fake-port-stall`: after this many bytes of guest writes, stop taking them for a while.
    pub stall: Option<(u64, Duration)>,
}

/// The machine's virtio ports. The sockets outlive the guest, as QEMU's chardevs do: each
/// boot serves them to a new guest.
#[derive(Debug)]
pub struct Ports {
    ports: Vec<Port>,
    /// The nodes' times: the fake's start.
    time: u64,
}

#[derive(Debug)]
struct Port {
    name: String,
    socket: UnixStream,
    stall: Option<(u64, Duration)>,
    stalled: AtomicBool,
    /// Bytes of guest writes taken so far (for the stall).
    written: AtomicU64,
    writing: Gate,
    reading: Gate,
}

impl Ports {
    /// The ports on their connected sockets.
    pub fn new(specs: Vec<PortSpec>) -> Result<Arc<Ports>, PortsError> {
        let mut ports = Vec::with_capacity(specs.len());
        for PortSpec { name, socket, stall } in specs {
            // Waits are polls, so that a waiting request can give up.
            if let Err(source) = socket.set_nonblocking(true) {
                return Err(PortsError::Socket { name, source });
            }
            ports.push(Port {
                name,
                socket,
                stall,
                stalled: AtomicBool::new(false),
                written: AtomicU64::new(0),
                writing: Gate::default(),
                reading: Gate::default(),
            });
        }
        let time = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Arc::new(Ports { ports, time }))
    }

    /// The ports' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.ports.iter().map(|p| p.name.as_str())
    }

    /// A FUSE device for the next boot's mount (`O_CLOEXEC`: the guest does not keep it).
    pub fn open_device() -> Result<File, PortsError> {
        File::options().read(true).write(true).open("/dev/fuse").map_err(PortsError::Device)
    }

    /// Serve the file system mounted from `device` until the mount goes.
    pub fn serve(self: &Arc<Self>, device: File) -> Result<(), PortsError> {
        let connection = Arc::new(Connection {
            ports: Arc::clone(self),
            device,
            open: Mutex::new(vec![false; self.ports.len()]),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        std::thread::Builder::new()
            .name("ntd-fake-ports".to_owned())
            .spawn(move || connection.run())
            .map(drop)
            .map_err(PortsError::Thread)
    }

    fn port(&self, node: u64) -> Option<(usize, &Port)> {
        let index = usize::try_from(node.checked_sub(FIRST_PORT)?).ok()?;
        Some((index, self.ports.get(index)?))
    }

    fn attr(&self, node: u64) -> Option<Attr> {
        if node == fuse::ROOT {
            return Some(Attr { ino: node, mode: libc::S_IFDIR | 0o755, nlink: 2, time: self.time });
        }
        // A regular file: a FUSE node of a device type would open the device, not the port.
        self.port(node).map(|_| Attr { ino: node, mode: libc::S_IFREG | 0o600, nlink: 1, time: self.time })
    }

    fn lookup(&self, name: &[u8]) -> Option<u64> {
        let index = self.ports.iter().position(|p| p.name.as_bytes() == name)?;
        Some(FIRST_PORT + index as u64)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One direction of a port: one request at a time, so that bytes keep their order, while a
/// request waiting for its turn can still give up.
#[derive(Debug, Default)]
struct Gate {
    busy: Mutex<bool>,
    turn: Condvar,
}

/// A request's turn at a [`Gate`], until dropped.
struct Turn<'a>(&'a Gate);

impl Gate {
    fn enter(&self, give_up: &dyn Fn() -> bool) -> Option<Turn<'_>> {
        let mut busy = lock(&self.busy);
        while *busy {
            if give_up() {
                return None;
            }
            let tick = Duration::from_millis(TICK_MS.into());
            busy = self.turn.wait_timeout(busy, tick).map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
        *busy = true;
        Some(Turn(self))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *lock(&self.0.busy) = false;
        self.0.turn.notify_one();
    }
}

/// Wait until `socket` is ready for `events`; false if `give_up` said so first.
fn wait_ready(socket: &UnixStream, events: PollFlags, give_up: &dyn Fn() -> bool) -> bool {
    loop {
        let mut fds = [PollFd::new(socket.as_fd(), events)];
        match poll(&mut fds, PollTimeout::from(TICK_MS)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            // Ready, or an error the next read or write reports.
            _ => return true,
        }
        if give_up() {
            return false;
        }
    }
}

/// Sleep for `pause`; false if `give_up` said so first.
fn pause_for(pause: Duration, give_up: &dyn Fn() -> bool) -> bool {
    let end = Instant::now() + pause;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        if give_up() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(TICK_MS.into())));
    }
}

/// What a read or write that stopped early answers: the bytes it moved, else the error.
fn partial(done: usize, errno: i32) -> Result<u32, i32> {
    if done > 0 { Ok(u32::try_from(done).unwrap_or(u32::MAX)) } else { Err(errno) }
}

impl Port {
    /// Take a guest write: every byte, waiting as long as the socket is full.
    fn write(&self, data: &[u8], nonblocking: bool, give_up: &dyn Fn() -> bool) -> Result<u32, i32> {
        let Some(_turn) = self.writing.enter(give_up) else { return Err(libc::EINTR) };
        let mut done = 0;
        while done < data.len() {
            let mut end = data.len();
            if let Some((after, pause)) = self.stall
                && !self.stalled.load(Ordering::SeqCst)
            {
                let written = self.written.load(Ordering::SeqCst);
                if written >= after {
                    self.stalled.store(true, Ordering::SeqCst);
                    if !pause_for(pause, give_up) {
                        return partial(done, libc::EINTR);
                    }
                    continue;
                }
                end = end.min(done.saturating_add(usize::try_from(after - written).unwrap_or(usize::MAX)));
            }
            match (&self.socket).write(&data[done..end]) {
                Ok(n) => {
                    done += n;
                    self.written.fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if nonblocking {
                        return partial(done, libc::EAGAIN);
                    }
                    if !wait_ready(&self.socket, PollFlags::POLLOUT, give_up) {
                        return partial(done, libc::EINTR);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The driver is gone: QEMU drops what it cannot deliver to a chardev.
                Err(_) => break,
            }
        }
        Ok(u32::try_from(data.len()).unwrap_or(u32::MAX))
    }

    /// Serve a guest read: what the driver sent, at most `size` bytes, waiting for at least one.
    fn read(&self, size: u32, nonblocking: bool, give_up: &dyn Fn() -> bool) -> Result<Vec<u8>, i32> {
        let Some(_turn) = self.reading.enter(give_up) else { return Err(libc::EINTR) };
        let mut buf = vec![0u8; size.min(MAX_WRITE) as usize];
        loop {
            match (&self.socket).read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if nonblocking {
                        return Err(libc::EAGAIN);
                    }
                    if !wait_ready(&self.socket, PollFlags::POLLIN, give_up) {
                        return Err(libc::EINTR);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The driver is gone: the end of the file, as for a port whose host end closed.
                Err(_) => return Ok(Vec::new()),
            }
        }
    }
}

/// A read or write being served by a thread of its own.
struct Pending {
    /// The caller (a pid of the fake's namespace: the mount was made before the guest's
    /// pid namespace had a process).
    pid: u32,
    /// The kernel sent `FUSE_INTERRUPT` for it.
    interrupted: AtomicBool,
}

impl Pending {
    /// Whether the caller was interrupted by a fatal signal (or is gone).
    fn caller_dying(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst) && dying(self.pid)
    }
}

/// Whether a process (thread) has a fatal signal pending or has exited. The kernel queues
/// `SIGKILL` on every thread of a process it is killing, whatever signal killed it.
fn dying(pid: u32) -> bool {
    let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => status,
        Err(e) => return e.kind() == io::ErrorKind::NotFound,
    };
    let sigkill = 1u64 << (libc::SIGKILL - 1);
    status.lines().any(|line| {
        if let Some(state) = line.strip_prefix("State:") {
            return state.trim_start().starts_with(['Z', 'X']);
        }
        let mask = line.strip_prefix("SigPnd:").or_else(|| line.strip_prefix("ShdPnd:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok()).is_some_and(|m| m & sigkill != 0)
    })
}

/// A read or write to serve.
enum Transfer {
    Read { size: u32 },
    Write { data: Vec<u8> },
}

/// One boot's FUSE connection.
struct Connection {
    ports: Arc<Ports>,
    device: File,
    /// Which ports are open.
    open: Mutex<Vec<bool>>,
    /// Reads and writes being served, by request id.
    pending: Mutex<HashMap<u64, Arc<Pending>>>,
    /// The mount is gone: waiting requests give up.
    closed: AtomicBool,
}

impl Connection {
    fn run(self: Arc<Self>) {
        let mut buf = vec![0u8; REQUEST_BUFFER];
        loop {
            match (&self.device).read(&mut buf) {
                Ok(n) => self.handle(&buf[..n]),
                // ENOENT: a request interrupted before it was read.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOENT | libc::EAGAIN)) => {}
                // ENODEV: unmounted, the guest is gone.
                Err(_) => break,
            }
        }
        self.closed.store(true, Ordering::SeqCst);
    }

    fn reply(&self, message: &[u8]) {
        // ENOENT: the request was aborted meanwhile; nothing else is to be done either way.
        let _ = (&self.device).write(message);
    }

    fn handle(self: &Arc<Self>, message: &[u8]) {
        let (header, request) = match fuse::parse(message) {
            Ok(parsed) => parsed,
            Err(_) => {
                if let Some(unique) = fuse::unique(message) {
                    self.reply(&fuse::error(unique, libc::EIO));
                }
                return;
            }
        };
        let unique = header.unique;
        let ports = &self.ports;
        let reply = match request {
            Request::Init { minor, max_readahead, flags, .. } => {
                let flags = flags & (fuse::INIT_ATOMIC_O_TRUNC | fuse::INIT_BIG_WRITES);
                let init = InitReply { minor: minor.min(fuse::MINOR), max_readahead, flags, max_write: MAX_WRITE };
                fuse::init(unique, &init)
            }
            Request::Lookup { .. } if header.nodeid != fuse::ROOT => fuse::error(unique, libc::ENOTDIR),
            Request::Lookup { name } => match ports.lookup(name).and_then(|node| ports.attr(node)) {
                Some(attr) => fuse::entry(unique, &attr),
                None => fuse::error(unique, libc::ENOENT),
            },
            // Not answered.
            Request::Forget => return,
            Request::Interrupt { unique: target } => {
                if let Some(pending) = lock(&self.pending).get(&target) {
                    pending.interrupted.store(true, Ordering::SeqCst);
                }
                // Not answered either: the interrupted request is.
                return;
            }
            Request::GetAttr | Request::SetAttr => match ports.attr(header.nodeid) {
                Some(attr) => fuse::attr(unique, &attr),
                None => fuse::error(unique, libc::ENOENT),
            },
            Request::Open { .. } => self.open(unique, header.nodeid),
            Request::Read { fh, size, flags } => return self.transfer(&header, fh, flags, Transfer::Read { size }),
            Request::Write { fh, data, flags } => {
                return self.transfer(&header, fh, flags, Transfer::Write { data: data.to_vec() });
            }
            Request::Release { fh } => {
                let mut open = lock(&self.open);
                if let Some(slot) = usize::try_from(fh).ok().and_then(|i| open.get_mut(i)) {
                    *slot = false;
                }
                drop(open);
                fuse::data(unique, &[])
            }
            Request::OpenDir if header.nodeid == fuse::ROOT => fuse::open(unique, 0, 0),
            Request::OpenDir => fuse::error(unique, libc::ENOTDIR),
            Request::ReadDir { offset, size } => {
                let mut entries = vec![(fuse::ROOT, &b"."[..], EntryType::Dir), (fuse::ROOT, b"..", EntryType::Dir)];
                for (node, port) in (FIRST_PORT..).zip(&ports.ports) {
                    entries.push((node, port.name.as_bytes(), EntryType::File));
                }
                fuse::dirents(unique, entries, offset, size)
            }
            Request::StatFs => fuse::statfs(unique),
            Request::ReleaseDir | Request::Destroy => fuse::data(unique, &[]),
            Request::Modify => fuse::error(unique, libc::EPERM),
            Request::Other => fuse::error(unique, libc::ENOSYS),
        };
        self.reply(&reply);
    }

    /// Open a port, once at a time; its index is the file handle.
    fn open(&self, unique: u64, node: u64) -> Vec<u8> {
        let Some((index, _)) = self.ports.port(node) else {
            return fuse::error(unique, if node == fuse::ROOT { libc::EISDIR } else { libc::ENOENT });
        };
        let mut open = lock(&self.open);
        if open[index] {
            return fuse::error(unique, libc::EBUSY);
        }
        open[index] = true;
        fuse::open(unique, index as u64, fuse::FOPEN_DIRECT_IO | fuse::FOPEN_NONSEEKABLE | fuse::FOPEN_STREAM)
    }

    /// Serve a read or write on a thread of its own: it may wait for the driver.
    fn transfer(self: &Arc<Self>, header: &Header, fh: u64, flags: u32, transfer: Transfer) {
        let unique = header.unique;
        let Some(index) = usize::try_from(fh).ok().filter(|&i| i < self.ports.ports.len()) else {
            return self.reply(&fuse::error(unique, libc::EBADF));
        };
        let nonblocking = flags & libc::O_NONBLOCK as u32 != 0;
        let pending = Arc::new(Pending { pid: header.pid, interrupted: AtomicBool::new(false) });
        lock(&self.pending).insert(unique, Arc::clone(&pending));
        let connection = Arc::clone(self);
        let serve = move || {
            let port = &connection.ports.ports[index];
            let give_up = || connection.closed.load(Ordering::SeqCst) || pending.caller_dying();
            let reply = match transfer {
                Transfer::Read { size } => match port.read(size, nonblocking, &give_up) {
                    Ok(bytes) => fuse::data(unique, &bytes),
                    Err(errno) => fuse::error(unique, errno),
                },
                Transfer::Write { data } => match port.write(&data, nonblocking, &give_up) {
                    Ok(taken) => fuse::written(unique, taken),
                    Err(errno) => fuse::error(unique, errno),
                },
            };
            lock(&connection.pending).remove(&unique);
            connection.reply(&reply);
        };
        if let Err(e) = std::thread::Builder::new().name("ntd-fake-port-io".to_owned()).spawn(serve) {
            lock(&self.pending).remove(&unique);
            self.reply(&fuse::error(unique, e.raw_os_error().unwrap_or(libc::EAGAIN)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_dying_when_gone_or_killed() {
        assert!(!dying(std::process::id()), "this test is alive");
        assert!(dying(u32::MAX - 1), "no such process");
    }

    #[test]
    fn nodes_have_fixed_inodes() {
        let (a, _) = UnixStream::pair().expect("socketpair");
        let (b, _) = UnixStream::pair().expect("socketpair");
        let ports = Ports::new(vec![
            PortSpec { name: "org.nixos.ntd.out".into(), socket: a, stall: None },
            PortSpec { name: "org.nixos.ntd.ctl".into(), socket: b, stall: None },
        ])
        .expect("ports");
        assert_eq!(ports.lookup(b"org.nixos.ntd.ctl"), Some(3));
        assert_eq!(ports.lookup(b"nope"), None);
        assert_eq!(ports.attr(3).map(|a| (a.ino, a.mode)), Some((3, libc::S_IFREG | 0o600)));
        assert_eq!(ports.attr(fuse::ROOT).map(|a| a.mode & libc::S_IFMT), Some(libc::S_IFDIR));
        assert_eq!(ports.attr(4), None);
    }

    #[test]
    fn writes_wait_for_the_reader_and_stall_after_n_bytes() {
        let (guest, host) = UnixStream::pair().expect("socketpair");
        let stall = Some((3, Duration::from_millis(300)));
        let ports = Ports::new(vec![PortSpec { name: "p".into(), socket: guest, stall }]).expect("ports");
        let never = || false;
        let started = Instant::now();
        let writer = {
            let ports = Arc::clone(&ports);
            std::thread::spawn(move || ports.ports[0].write(b"abcdef", false, &never))
        };
        let mut got = [0u8; 6];
        (&host).read_exact(&mut got[..3]).expect("the bytes before the stall");
        let writer_result = {
            (&host).read_exact(&mut got[3..]).expect("the rest");
            writer.join().expect("writer thread")
        };
        assert_eq!(&got, b"abcdef");
        assert_eq!(writer_result, Ok(6));
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());

        // A reader waits for bytes and gives up when told to.
        let give_up = || true;
        assert_eq!(ports.ports[0].read(10, false, &give_up), Err(libc::EINTR));
        assert_eq!(ports.ports[0].read(10, true, &never), Err(libc::EAGAIN));
        (&host).write_all(b"xy").expect("write");
        assert_eq!(ports.ports[0].read(10, false, &never), Ok(b"xy".to_vec()));
        drop(host);
        assert_eq!(ports.ports[0].read(10, false, &never), Ok(Vec::new()), "the end of the file");
    }
}
