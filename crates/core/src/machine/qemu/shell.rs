//! The host end of the backdoor shell: a root shell in the guest reading commands from
//! `/dev/hvc0`.
//!
//! Guest side (NixOS's `test-instrumentation.nix`, reproduced by the test guest): bash started
//! as `bash --norc /dev/hvc0` with the console in raw mode (`stty raw -echo`), stdout on hvc0,
//! stderr on the serial port, after printing the marker `Spawning backdoor root shell...`. The
//! driver sends one framed command at a time ([`super::frame`]) and reads its reply here.

use std::io;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::frame::{Frame, MalformedReply, Reply, ReplyDecoder};

/// The line the guest prints when the backdoor shell is ready.
pub const MARKER: &[u8] = b"Spawning backdoor root shell...";

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
    /// The reply did not end with ntd's framing.
    #[error(transparent)]
    Malformed(#[from] MalformedReply),
}

/// The host end of the backdoor shell: one connected stream and the state of its reply.
#[derive(Debug)]
pub struct Shell {
    stream: UnixStream,
    /// Bytes received after the end of the last reply.
    leftover: Vec<u8>,
    /// The reply still owed by the guest for a command already sent (fire-and-forget commands
    /// and commands whose caller gave up waiting).
    pending: Option<ReplyDecoder>,
}

impl Shell {
    /// Wrap a connection accepted from QEMU's virtconsole chardev.
    pub fn new(stream: UnixStream) -> Shell {
        Shell { stream, leftover: Vec::new(), pending: None }
    }

    /// Read until the guest has printed the marker line. `on_chunk` sees every chunk as it
    /// arrives (upstream logs each as `Guest shell says: b'…'`).
    pub async fn wait_for_marker(&mut self, mut on_chunk: impl FnMut(&[u8])) -> Result<(), ShellError> {
        // A reboot or a switch to stage 2 abandons whatever reply the old shell owed.
        self.pending = None;
        let mut seen = std::mem::take(&mut self.leftover);
        let mut chunk = vec![0u8; 1024];
        loop {
            if let Some(at) = memmem::find(&seen, MARKER) {
                let after = at + MARKER.len();
                if let Some(newline) = memchr::memchr(b'\n', &seen[after..]) {
                    self.leftover = seen.split_off(after + newline + 1);
                    return Ok(());
                }
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ShellError::Disconnected { partial_output: seen });
            }
            on_chunk(&chunk[..n]);
            seen.extend_from_slice(&chunk[..n]);
        }
    }

    /// Take what the guest wrote since the last reply ended, without waiting: output of a
    /// background job started by an earlier command, which would otherwise be taken for the
    /// next command's output.
    pub async fn take_stray_output(&mut self) -> Vec<u8> {
        if self.pending.is_some() {
            return Vec::new();
        }
        let mut stray = std::mem::take(&mut self.leftover);
        let mut chunk = vec![0u8; 16 * 1024];
        // One poll each: whatever is already in the socket, nothing that is yet to come.
        while let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::ZERO, self.stream.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
            stray.extend_from_slice(&chunk[..n]);
        }
        stray
    }

    /// Send a framed command. The reply must be read with [`Shell::receive`] or is discarded
    /// before the next command is sent.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ShellError> {
        if self.pending.is_some() {
            self.receive().await?;
        }
        self.stream.write_all(&frame.bytes).await?;
        self.pending = Some(frame.decoder());
        Ok(())
    }

    /// Read the reply of the last command sent. Cancel-safe: if the future is dropped, the
    /// reply is still owed and is discarded before the next command.
    pub async fn receive(&mut self) -> Result<Reply, ShellError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let Some(decoder) = self.pending.as_mut() else {
                return Err(ShellError::Io(io::Error::other("no command is waiting for a reply")));
            };
            let data = if self.leftover.is_empty() {
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    let partial_output = decoder.partial_output().to_vec();
                    self.pending = None;
                    return Err(ShellError::Disconnected { partial_output });
                }
                chunk[..n].to_vec()
            } else {
                std::mem::take(&mut self.leftover)
            };
            if let Some((reply, rest)) = decoder.push(&data)? {
                self.pending = None;
                self.leftover = rest;
                return Ok(reply);
            }
        }
    }

    /// What the command in flight has printed so far (its reply has not ended yet).
    pub fn partial_output(&self) -> Vec<u8> {
        self.pending.as_ref().map(|decoder| decoder.partial_output().to_vec()).unwrap_or_default()
    }

    /// Write one line unframed and read back the first line the shell prints (without its
    /// newline). The line must make the shell print exactly one line, or later replies are
    /// misread: this is for measuring the channel and upstream's framing, not for commands.
    pub async fn exchange_line(&mut self, line: &[u8]) -> Result<Vec<u8>, ShellError> {
        if self.pending.is_some() {
            self.receive().await?;
        }
        self.stream.write_all(line).await?;
        let mut received = std::mem::take(&mut self.leftover);
        let mut searched = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            // Only the bytes not searched yet: a long line arrives in many reads.
            if let Some(at) = memchr::memchr(b'\n', &received[searched..]) {
                let newline = searched + at;
                self.leftover = received.split_off(newline + 1);
                received.truncate(newline);
                return Ok(received);
            }
            searched = received.len();
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ShellError::Disconnected { partial_output: received });
            }
            received.extend_from_slice(&chunk[..n]);
        }
    }

    /// The connection's file descriptor, for handing the shell to an interactive program.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.stream.as_raw_fd()
    }

    /// Write bytes to the shell as they are, unframed (upstream's `shutdown()` writes
    /// `poweroff\n` this way).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ShellError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_round_trip_against_a_real_shell() {
        // A real bash (or dash) reading its commands from a socket, as the guest backdoor does.
        let (host, guest) = UnixStream::pair().expect("socketpair");
        let guest = guest.into_std().expect("std socket");
        guest.set_nonblocking(false).expect("blocking");
        let guest_fd = std::os::fd::OwnedFd::from(guest);
        let shell = if std::path::Path::new("/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" };
        let mut child = std::process::Command::new(shell)
            .stdin(std::process::Stdio::from(guest_fd.try_clone().expect("dup")))
            .stdout(std::process::Stdio::from(guest_fd))
            .spawn()
            .expect("spawn shell");
        let mut shell = Shell::new(host);
        let cases: &[(&str, &[u8], i32)] = &[
            ("printf 'a\\nb'", b"a\nb", 0),
            ("echo hi; false; echo no", b"hi\n", 1),
            ("exit 7", b"", 7),
            ("echo 'unbalanced", b"", 2),
            ("cd /; X=1", b"", 0),
            ("pwd; echo ${X:-unset}", b"", 0),
            ("printf '\\000\\377'", b"\x00\xff", 0),
        ];
        let cwd = std::env::current_dir().expect("cwd");
        for (command, expected, status) in cases {
            let frame = Frame::new(command, None, None).expect("frame");
            shell.send(&frame).await.expect("send");
            let reply = shell.receive().await.expect("reply");
            assert_eq!(reply.status, *status, "status of {command}");
            if command.starts_with("pwd") {
                let expected = format!("{}\nunset\n", cwd.display());
                assert_eq!(reply.output, expected.as_bytes(), "cd and variables do not leak");
            } else {
                assert_eq!(reply.output, *expected, "output of {command}");
            }
        }
        let frame = Frame::new("sleep 5", Some(Duration::from_millis(200)), None).expect("frame");
        shell.send(&frame).await.expect("send");
        assert_eq!(shell.receive().await.expect("reply").status, 124);

        // Unframed lines (the benchmarks' channel floor and upstream's framing): the first
        // line comes back, a second one printed at once is kept for the next exchange, and
        // framed commands work after them.
        assert_eq!(shell.exchange_line(b"echo one; echo two\n").await.expect("line"), b"one");
        assert_eq!(shell.exchange_line(b"echo three\n").await.expect("line"), b"two");
        assert_eq!(shell.exchange_line(b"true\n").await.expect("line"), b"three");
        let long = "x".repeat(300_000);
        let echoed = shell.exchange_line(format!("echo {long}\n").as_bytes()).await.expect("line");
        assert_eq!(echoed, long.as_bytes(), "a line longer than one read");
        shell.send(&Frame::new("echo framed", None, None).expect("frame")).await.expect("send");
        assert_eq!(shell.receive().await.expect("reply").output, b"framed\n");
        shell.send_raw(b"exit 0\n").await.expect("send exit");
        assert!(child.wait().expect("wait shell").success());
    }
}
