//! Termination signals, handled as QEMU handles them (`os_setup_signal_handling`,
//! `qemu_kill_report`): SIGTERM, SIGINT and SIGHUP make QEMU print
//! `qemu-system-x86_64: terminating on signal N from pid P (NAME)` on stderr (without `from pid`
//! when the kernel sent it, as for Ctrl-C on a terminal), emit `SHUTDOWN` with reason
//! `host-signal` and exit with status 0.
//!
//! The sender's pid needs `SA_SIGINFO`, which tokio's signal streams do not give, so the handler
//! stores it and writes a byte to a pipe that a task reads. When the driver signals the whole
//! process group (ntd does), the kernel reports the sender as pid 0 to the members it reaches
//! after one in a child pid namespace (the guest's shell: `send_signal_locked` zeroes `si_pid`
//! in the siginfo it then reuses), so the message has no `from pid`, as QEMU's has for a
//! sender it cannot name.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static SENDER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; `si_pid` is read
    // only for the signals installed here, which the kernel fills it for.
    let sender = if info.is_null() { 0 } else { unsafe { (*info).si_pid() } };
    SENDER.store(sender, Ordering::SeqCst);
    SIGNAL.store(signal, Ordering::SeqCst);
    let fd = WRITE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe
        // (a signal already pending) loses nothing that matters.
        unsafe {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
        }
    }
}

/// A termination signal that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminated {
    /// The signal number.
    pub signal: i32,
    /// The sender's pid (0 when the kernel sent it).
    pub sender: i32,
}

impl Terminated {
    /// QEMU's message for it.
    pub fn message(&self) -> String {
        if self.sender == 0 {
            return format!("qemu-system-x86_64: terminating on signal {}", self.signal);
        }
        let name = std::fs::read(format!("/proc/{}/cmdline", self.sender))
            .ok()
            .and_then(|cmdline| {
                cmdline.split(|&b| b == 0).next().map(|arg0| String::from_utf8_lossy(arg0).into_owned())
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "<unknown process>".to_owned());
        format!("qemu-system-x86_64: terminating on signal {} from pid {} ({name})", self.signal, self.sender)
    }
}

/// The receiving end of the handler's pipe.
pub struct Signals {
    pipe: pipe::Receiver,
}

impl Signals {
    /// Install the handlers. Must be called inside the runtime.
    pub fn install() -> io::Result<Signals> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        use std::os::fd::IntoRawFd;
        WRITE_FD.store(write.into_raw_fd(), Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::SigAction(on_signal),
            SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            // SAFETY: the handler only does atomic stores and write(2), which are
            // async-signal-safe.
            unsafe { sigaction(signal, &action)? };
        }
        Ok(Signals { pipe: pipe::Receiver::from_owned_fd(read)? })
    }

    /// Wait for the next termination signal.
    pub async fn next(&mut self) -> io::Result<Terminated> {
        let mut byte = [0u8; 1];
        self.pipe.read_exact(&mut byte).await?;
        Ok(Terminated { signal: SIGNAL.load(Ordering::SeqCst), sender: SENDER.load(Ordering::SeqCst) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_qemu_prints_them() {
        assert_eq!(Terminated { signal: 2, sender: 0 }.message(), "qemu-system-x86_64: terminating on signal 2");
        let own = std::process::id() as i32;
        let message = Terminated { signal: 15, sender: own }.message();
        assert!(
            message.starts_with(&format!("qemu-system-x86_64: terminating on signal 15 from pid {own} (")),
            "{message}"
        );
        assert!(!message.contains("<unknown process>"));
    }
}
