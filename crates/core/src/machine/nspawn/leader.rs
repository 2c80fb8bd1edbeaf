//! The container's init, held by a pidfd: a process ntd did not fork (systemd-nspawn did) and
//! whose pid could be reused once it is gone. Through the pidfd, ntd can tell when it exits
//! and signal it without ever reaching a stranger.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The container's init process (systemd-nspawn's "leader").
#[derive(Debug)]
pub(super) struct Leader {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
}

impl Leader {
    /// Hold the process `pid`. Fails if it does not exist (any more).
    pub(super) fn open(pid: u32) -> io::Result<Leader> {
        let raw_pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd_open returned an impossible descriptor"))?;
        // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd stays open, and the same descriptor, until it is dropped with
        // the AsyncFd.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        Ok(Leader { pid, fd })
    }

    /// Its pid (in the host's pid namespace).
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it has exited.
    pub(super) fn has_exited(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & libc::POLLIN != 0
    }

    /// Resolve when it exits (a pidfd becomes readable then).
    pub(super) async fn exited(&self) {
        while !self.has_exited() {
            match self.fd.readable().await {
                Ok(mut guard) => {
                    if self.has_exited() {
                        return;
                    }
                    guard.clear_ready();
                }
                // The descriptor cannot be watched: poll instead.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// Send `signal` to it; false if it is gone. Killing a pid namespace's init kills every
    /// process in the container.
    pub(super) fn signal(&self, signal: Signal) -> bool {
        // SAFETY: a valid pidfd, a valid signal number, no siginfo, no flags.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        sent == 0
    }
}
