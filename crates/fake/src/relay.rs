//! The backdoor's wire: the virtconsole chardev socket (the guest's `/dev/hvc0`) relayed to
//! and from the guest shell's stdin and stdout.
//!
//! As with QEMU, the socket outlives the guest shell: a reboot kills the shell and starts a
//! new one on the same connection, and bytes the driver sends while no shell runs wait for the
//! next one (QEMU does not read a virtio port the guest has not opened). The faults a slow or
//! lossy virtconsole shows are applied here, to the guest shell's output only (never to the
//! marker, which the backdoor service prints before the shell runs): a delay per chunk, bytes
//! dropped as QEMU drops what it cannot write, and a disconnect after a number of bytes.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, Notify};

use crate::args::ShellFaults;

/// What the drop and close faults leave of a chunk of guest output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The bytes to write.
    pub keep: Vec<u8>,
    /// Close the connection after writing them.
    pub close: bool,
}

/// The byte-counting faults on guest output: positions count every byte the guest shell
/// wrote, dropped ones included.
#[derive(Debug, Clone, Default)]
pub struct OutputFaults {
    drop: Option<Range<u64>>,
    close_after: Option<u64>,
    seen: u64,
}

impl OutputFaults {
    /// The faults of the `--fake-shell-*` options.
    pub fn new(faults: &ShellFaults) -> OutputFaults {
        OutputFaults {
            drop: faults.drop.map(|(after, length)| after..after.saturating_add(length)),
            close_after: faults.close_after,
            seen: 0,
        }
    }

    /// Apply the faults to the next chunk of guest output.
    pub fn filter(&mut self, chunk: &[u8]) -> Filtered {
        let start = self.seen;
        self.seen += chunk.len() as u64;
        let (mut keep, mut close) = (Vec::with_capacity(chunk.len()), false);
        for (position, &byte) in (start..).zip(chunk) {
            if self.close_after.is_some_and(|limit| position >= limit) {
                close = true;
                break;
            }
            if !self.drop.as_ref().is_some_and(|range| range.contains(&position)) {
                keep.push(byte);
            }
        }
        // Exactly N bytes written also closes, even if the chunk ended there.
        close |= self.close_after.is_some_and(|limit| self.seen >= limit);
        Filtered { keep, close }
    }
}

struct Writer {
    half: Option<OwnedWriteHalf>,
    /// The same socket, to shut both directions down (a write half alone cannot).
    raw: std::os::unix::net::UnixStream,
    faults: OutputFaults,
}

/// The guest's end of the backdoor socket: what the guest writes to the driver.
pub struct Link {
    writer: Mutex<Writer>,
    delay: Option<Duration>,
}

impl Link {
    /// Wrap the connected backdoor socket; returns the link and the socket's read half (the
    /// driver's input, for [`pump_input`]).
    pub fn new(stream: UnixStream, faults: &ShellFaults) -> io::Result<(Arc<Link>, OwnedReadHalf)> {
        let std_stream = stream.into_std()?;
        let raw = std_stream.try_clone()?;
        let (read, write) = UnixStream::from_std(std_stream)?.into_split();
        let writer = Writer { half: Some(write), raw, faults: OutputFaults::new(faults) };
        Ok((Arc::new(Link { writer: Mutex::new(writer), delay: faults.delay }), read))
    }

    /// Write what the backdoor service prints before the shell runs (the marker, garbage),
    /// which no fault counts.
    pub async fn write_service(&self, bytes: &[u8]) {
        let mut writer = self.writer.lock().await;
        if let Some(half) = writer.half.as_mut()
            && half.write_all(bytes).await.is_err()
        {
            writer.half = None;
        }
    }

    /// Write a chunk of the guest shell's output, through the faults.
    pub async fn write_guest(&self, chunk: &[u8]) {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let mut writer = self.writer.lock().await;
        let Writer { half, raw, faults } = &mut *writer;
        let Some(stream) = half.as_mut() else { return };
        let filtered = faults.filter(chunk);
        if !filtered.keep.is_empty() && stream.write_all(&filtered.keep).await.is_err() {
            *half = None;
            return;
        }
        if filtered.close {
            // Both directions, as when QEMU drops the chardev connection.
            let _ = raw.shutdown(std::net::Shutdown::Both);
            *half = None;
        }
    }
}

/// Where the driver's input goes: the running guest shell's stdin, if any.
#[derive(Default)]
pub struct GuestInput {
    slot: Mutex<Option<Box<dyn AsyncWrite + Unpin + Send>>>,
    attached: Notify,
}

impl GuestInput {
    /// Send input to this shell from now on (input waiting for a shell goes to it).
    pub async fn attach(&self, stdin: Box<dyn AsyncWrite + Unpin + Send>) {
        *self.slot.lock().await = Some(stdin);
        self.attached.notify_waiters();
    }

    /// No shell runs: hold input until the next one.
    pub async fn detach(&self) {
        *self.slot.lock().await = None;
    }

    /// Deliver one chunk to the shell, waiting for one to run. A shell that dies while the
    /// chunk is written loses it, as a guest loses its tty buffer in a reboot.
    async fn deliver(&self, chunk: &[u8]) {
        loop {
            let attached = self.attached.notified();
            tokio::pin!(attached);
            attached.as_mut().enable();
            {
                let mut slot = self.slot.lock().await;
                if let Some(stdin) = slot.as_mut() {
                    if stdin.write_all(chunk).await.is_err() {
                        *slot = None;
                    }
                    return;
                }
            }
            attached.await;
        }
    }
}

/// Relay the driver's input to the guest shells until the driver disconnects.
pub async fn pump_input(mut socket: impl AsyncRead + Unpin, input: Arc<GuestInput>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => input.deliver(&buf[..n]).await,
        }
    }
}

/// Relay one guest shell's output to the driver until the shell's stdout closes.
pub async fn pump_output(mut stdout: impl AsyncRead + Unpin, link: Arc<Link>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => link.write_guest(&buf[..n]).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(drop: Option<(u64, u64)>, close_after: Option<u64>) -> OutputFaults {
        OutputFaults::new(&ShellFaults { drop, close_after, ..ShellFaults::default() })
    }

    #[test]
    fn drop_counts_across_chunks() {
        let mut f = faults(Some((3, 4)), None);
        let kept: Vec<u8> = [&b"ab"[..], b"cde", b"f", b"ghijk"].iter().flat_map(|c| f.filter(c).keep).collect();
        assert_eq!(kept, b"abchijk");
        assert_eq!(f.filter(b"xyz"), Filtered { keep: b"xyz".to_vec(), close: false });
    }

    #[test]
    fn close_after_exactly_n_bytes() {
        let mut f = faults(None, Some(5));
        assert_eq!(f.filter(b"abc"), Filtered { keep: b"abc".to_vec(), close: false });
        assert_eq!(f.filter(b"defgh"), Filtered { keep: b"de".to_vec(), close: true });
        let mut f = faults(None, Some(3));
        assert_eq!(f.filter(b"abc"), Filtered { keep: b"abc".to_vec(), close: true });
        let mut f = faults(Some((0, 2)), Some(4));
        assert_eq!(f.filter(b"abcdef"), Filtered { keep: b"cd".to_vec(), close: true }, "dropped bytes count");
    }

    #[tokio::test]
    async fn input_waits_for_a_shell_and_output_goes_through_the_faults() {
        let (driver, guest_side) = UnixStream::pair().expect("socketpair");
        let faults = ShellFaults { drop: Some((2, 2)), close_after: Some(8), ..ShellFaults::default() };
        let (link, read) = Link::new(guest_side, &faults).expect("link");
        let input = Arc::new(GuestInput::default());
        let pump = tokio::spawn(pump_input(read, Arc::clone(&input)));
        let (mut driver_read, mut driver_write) = driver.into_split();

        // Input sent before any shell runs reaches the first one.
        driver_write.write_all(b"echo early\n").await.expect("write");
        let (shell_stdin, mut shell_reads) = tokio::io::duplex(1024);
        tokio::task::yield_now().await;
        input.attach(Box::new(shell_stdin)).await;
        let mut got = vec![0u8; 11];
        shell_reads.read_exact(&mut got).await.expect("input delivered");
        assert_eq!(got, b"echo early\n");

        link.write_service(b"marker\n").await;
        link.write_guest(b"0123456789").await;
        let mut received = Vec::new();
        driver_read.read_to_end(&mut received).await.expect("read until closed");
        assert_eq!(received, b"marker\n014567");
        // The close shut the socket both ways: the input pump sees the end too.
        drop(driver_write);
        pump.await.expect("input pump ends");
    }
}
