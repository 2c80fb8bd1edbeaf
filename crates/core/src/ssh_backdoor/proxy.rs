//! The client side of `ssh vsock-mux/<path>`: an ssh `ProxyCommand` that reaches a VM's vsock
//! port through `vhost-device-vsock`'s host socket, as systemd-ssh-proxy(1) (258 and newer)
//! does. ntd ships it as `ntd-ssh-proxy` for hosts whose systemd has none (see
//! [`super::ssh_config`]).
//!
//! The host socket speaks the "hybrid vsock" protocol: the client writes `CONNECT <port>\n`,
//! and once the guest has accepted, the device answers `OK <port>\n`; after that the stream is
//! the guest's. The connected socket is then handed to ssh (`ProxyUseFdpass yes`: sent over
//! the proxy's stdout, a socket, with `SCM_RIGHTS`), or, when ssh did not ask for that, relayed
//! between stdin/stdout and the socket.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long the guest gets to accept or refuse a connection. Its kernel answers, not a
/// program, so this is long only for a guest that is busy under emulation.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest answer line the device sends (`OK <u32>`), with room to spare.
const MAX_ANSWER: usize = 64;

/// A proxy failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not one this proxy knows.
    #[error("cannot reach {0:?}: the address must be vsock-mux/<socket path> or unix/<socket path>")]
    Address(String),
    /// The port is not a number.
    #[error("{0:?} is not a port number")]
    Port(String),
    /// The socket cannot be connected.
    #[error("cannot connect to {path}: {source}{hint}", hint = connect_hint(source))]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The guest did not accept the connection.
    #[error(
        "the guest did not accept a connection to its vsock port {port}{what}; is the machine running, and is a \
         server listening on that port (for SSH: sshd on vsock, as NixOS's systemd-ssh-generator sets it up)?"
    )]
    Refused {
        /// The port.
        port: u32,
        /// What came back instead, if anything.
        what: String,
    },
    /// The guest did not answer in time.
    #[error("the guest did not answer a connection to its vsock port {port} within {} seconds; is the VM running?", ANSWER_TIMEOUT.as_secs())]
    NoAnswer {
        /// The port.
        port: u32,
    },
    /// Handing the connection to ssh, or relaying it, failed.
    #[error("cannot hand the connection over: {0}")]
    HandOver(#[source] std::io::Error),
}

/// Why connecting to a path may have failed, in the words of someone debugging a test.
fn connect_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            " (the test run that made it has ended, or its vhost-device-vsock is gone)"
        }
        _ => "",
    }
}

/// Where a proxy connects: what follows `vsock-mux/` or `unix/` in the ssh host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A `vhost-device-vsock` host socket (`vsock-mux/<path>`): `CONNECT <port>` first.
    VsockMux(PathBuf),
    /// A plain unix socket (`unix/<path>`), the stream as it is.
    Unix(PathBuf),
}

impl Address {
    /// Parse an ssh host name as systemd-ssh-proxy does: `vsock-mux/<path>` or `unix/<path>`.
    pub fn parse(host: &str) -> Result<Address, Error> {
        let path = |rest: &str| (!rest.is_empty()).then(|| PathBuf::from(rest));
        if let Some(path) = host.strip_prefix("vsock-mux/").and_then(path) {
            return Ok(Address::VsockMux(path));
        }
        if let Some(path) = host.strip_prefix("unix/").and_then(path) {
            return Ok(Address::Unix(path));
        }
        Err(Error::Address(host.to_owned()))
    }
}

/// Parse ssh's `%p`.
pub fn parse_port(text: &str) -> Result<u32, Error> {
    text.parse().map_err(|_| Error::Port(text.to_owned()))
}

/// Connect to `port` at `address`; for `vsock-mux/`, after the guest has accepted.
pub fn connect(address: &Address, port: u32) -> Result<UnixStream, Error> {
    let (path, handshake) = match address {
        Address::VsockMux(path) => (path, true),
        Address::Unix(path) => (path, false),
    };
    let mut stream = UnixStream::connect(path).map_err(|source| Error::Connect { path: path.clone(), source })?;
    if handshake {
        let refused = |what: String| Error::Refused { port, what };
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .map_err(|source| Error::Connect { path: path.clone(), source })?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(Error::HandOver)?;
        let answer = read_answer(&mut stream).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::NoAnswer { port },
            _ => refused(format!(" ({e})")),
        })?;
        if !answer.starts_with("OK ") {
            return Err(refused(if answer.is_empty() {
                ": the connection was closed".to_owned()
            } else {
                format!(": the device answered {answer:?}")
            }));
        }
        stream.set_read_timeout(None).map_err(Error::HandOver)?;
    }
    Ok(stream)
}

/// The answer line, read a byte at a time: whatever follows it belongs to ssh.
fn read_answer(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_ANSWER {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Give the connection to ssh: over stdout when stdout is a socket (`ProxyUseFdpass yes`),
/// else relay stdin and stdout to it until both directions are done.
pub fn hand_over(stream: UnixStream) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let is_socket = nix::sys::stat::fstat(stdout.as_fd())
        .map(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFSOCK)
        .unwrap_or(false);
    if is_socket {
        return send_fd(stdout.as_raw_fd(), stream.as_raw_fd()).map_err(Error::HandOver);
    }
    // Unbuffered, unlike `Stdout`, whose line buffer would hold ssh's bytes after the last
    // newline byte until the next one.
    let input = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().map_err(Error::HandOver)?);
    let output = std::fs::File::from(stdout.as_fd().try_clone_to_owned().map_err(Error::HandOver)?);
    relay(stream, input, output).map_err(Error::HandOver)
}

/// Send `fd` over the socket `over` as ssh's `ProxyUseFdpass` expects: one byte of data with
/// the descriptor attached.
fn send_fd(over: std::os::fd::RawFd, fd: std::os::fd::RawFd) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let data = [0u8; 1];
    let iov = [std::io::IoSlice::new(&data)];
    let fds = [fd];
    let control = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(over, &iov, &control, MsgFlags::empty(), None).map_err(std::io::Error::from)?;
    Ok(())
}

/// Copy `input` to the stream and the stream to `output`, until the guest's side ends. What
/// is left of `input` then is not needed: ssh is done. An error on the way in ends the relay
/// too (the stream is shut down, so the guest's side ends).
fn relay(stream: UnixStream, mut input: impl Read + Send + 'static, mut output: impl Write) -> std::io::Result<()> {
    let mut to_guest = stream.try_clone()?;
    let upstream = std::thread::spawn(move || -> std::io::Result<()> {
        let copied = std::io::copy(&mut input, &mut to_guest).map(|_| ());
        let _ = to_guest.shutdown(std::net::Shutdown::Write);
        copied
    });
    let mut from_guest = stream;
    std::io::copy(&mut from_guest, &mut output)?;
    output.flush()?;
    if upstream.is_finished() {
        upstream.join().map_err(|_| std::io::Error::other("the relay thread panicked"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    #[test]
    fn addresses_as_systemd_ssh_proxy_reads_them() {
        assert_eq!(
            Address::parse("vsock-mux//tmp/a_host.socket").ok(),
            Some(Address::VsockMux("/tmp/a_host.socket".into()))
        );
        assert_eq!(Address::parse("unix//run/x").ok(), Some(Address::Unix("/run/x".into())));
        assert!(matches!(Address::parse("vsock/3"), Err(Error::Address(_))));
        assert!(matches!(Address::parse("vsock-mux/"), Err(Error::Address(_))));
        assert!(matches!(parse_port("ssh"), Err(Error::Port(_))));
        assert_eq!(parse_port("22").ok(), Some(22));
    }

    /// A device that answers the handshake as `vhost-device-vsock` does, with `answer`, then
    /// echoes one line.
    fn device(answer: &'static str) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m_host.socket");
        let listener = UnixListener::bind(&path).expect("bind");
        let served = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            reader.read_line(&mut request).expect("read the request");
            let mut writer = stream;
            if !answer.is_empty() {
                writer.write_all(answer.as_bytes()).expect("answer");
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok() {
                    let _ = writer.write_all(line.as_bytes());
                }
            }
            request
        });
        (dir, path, served)
    }

    #[test]
    fn connects_after_the_device_says_ok_and_keeps_what_follows_for_ssh() {
        let (_dir, path, served) = device("OK 22\n");
        let mut stream = connect(&Address::VsockMux(path), 22).expect("connect");
        stream.write_all(b"SSH-2.0-probe\n").expect("write");
        let mut echoed = String::new();
        std::io::BufReader::new(&stream).read_line(&mut echoed).expect("read");
        assert_eq!(echoed, "SSH-2.0-probe\n");
        assert_eq!(served.join().expect("device"), "CONNECT 22\n");
    }

    #[test]
    fn a_closed_connection_is_a_refusal_that_says_what_to_check() {
        let (_dir, path, served) = device("");
        let error = connect(&Address::VsockMux(path), 22).expect_err("refused");
        served.join().expect("device");
        let message = error.to_string();
        assert!(
            message
                .starts_with("the guest did not accept a connection to its vsock port 22: the connection was closed"),
            "{message}"
        );
        assert!(message.contains("is the machine running") && message.contains("sshd on vsock"), "{message}");
    }

    #[test]
    fn a_missing_socket_says_the_run_is_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = connect(&Address::VsockMux(dir.path().join("gone")), 22).expect_err("no socket");
        assert!(error.to_string().contains("the test run that made it has ended"), "{error}");
    }

    #[test]
    fn the_relay_passes_bytes_both_ways_without_waiting_for_a_newline() {
        let (ours, mut guest) = UnixStream::pair().expect("pair");
        let (input, mut ssh_writes) = UnixStream::pair().expect("pair");
        let (output, mut ssh_reads) = UnixStream::pair().expect("pair");
        let relayed = std::thread::spawn(move || relay(ours, input, output));
        ssh_writes.write_all(b"\x00client bytes, no newline").expect("write");
        let mut buffer = [0u8; 25];
        guest.read_exact(&mut buffer).expect("the guest reads");
        assert_eq!(&buffer, b"\x00client bytes, no newline");
        guest.write_all(b"guest bytes").expect("write");
        let mut buffer = [0u8; 11];
        ssh_reads.read_exact(&mut buffer).expect("ssh reads, though no newline came");
        assert_eq!(&buffer, b"guest bytes");
        drop(guest);
        relayed.join().expect("the relay").expect("relayed");
    }

    #[test]
    fn the_descriptor_goes_to_ssh_with_one_byte() {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let (ours, ssh_side) = UnixStream::pair().expect("pair");
        let (payload, mut other_end) = UnixStream::pair().expect("pair");
        send_fd(ours.as_raw_fd(), payload.as_raw_fd()).expect("send");
        let mut data = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut data)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let message = recvmsg::<()>(ssh_side.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).expect("recv");
        let received = message
            .cmsgs()
            .expect("cmsgs")
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor");
        // SAFETY: the descriptor was just received and is owned by nobody else.
        let mut received = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(received) };
        received.write_all(b"through the passed descriptor").expect("write");
        drop(received);
        drop(payload);
        let mut text = String::new();
        other_end.read_to_string(&mut text).expect("read");
        assert_eq!(text, "through the passed descriptor");
    }
}
