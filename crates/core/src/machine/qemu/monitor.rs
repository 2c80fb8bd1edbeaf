//! The HMP monitor: QEMU's human monitor on the `monitor` socket the driver listens on.
//!
//! Upstream sends `<command>\n` and reads until the reply ends with the prompt `(qemu) `,
//! returning everything read (echo, output and prompt). ntd does the same, so tests that search
//! `send_monitor_command` output keep working.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The prompt that ends every HMP reply.
pub const PROMPT: &str = "(qemu) ";

/// The host end of the HMP monitor.
#[derive(Debug)]
pub struct Monitor {
    stream: UnixStream,
}

impl Monitor {
    /// Wrap a connection accepted from QEMU's `-monitor unix:…`.
    pub fn new(stream: UnixStream) -> Monitor {
        Monitor { stream }
    }

    /// Read until the prompt (or the end of the stream, as upstream) and return what was read.
    pub async fn wait_for_prompt(&mut self) -> io::Result<String> {
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                if answer.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the monitor connection closed"));
                }
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
            if answer.ends_with(PROMPT.as_bytes()) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Send one command and return the reply up to and including the next prompt.
    pub async fn command(&mut self, command: &str) -> io::Result<String> {
        self.stream.write_all(format!("{command}\n").as_bytes()).await?;
        self.wait_for_prompt().await
    }

    /// Send one command without waiting for a reply (for `quit`, after which QEMU exits).
    pub async fn send(&mut self, command: &str) -> io::Result<()> {
        self.stream.write_all(format!("{command}\n").as_bytes()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_until_the_prompt() {
        let (host, mut qemu) = UnixStream::pair().expect("socketpair");
        let mut monitor = Monitor::new(host);
        let server = tokio::spawn(async move {
            qemu.write_all(b"QEMU 10.0.2 monitor - type 'help' for more information\n(qemu) ").await?;
            let mut buf = [0u8; 64];
            let n = qemu.read(&mut buf).await?;
            assert_eq!(&buf[..n], b"info status\n");
            // The reply arrives in pieces; the prompt alone ends it.
            qemu.write_all(b"info status\r\nVM status: ").await?;
            qemu.write_all(b"running\r\n(qemu) ").await?;
            io::Result::Ok(())
        });
        assert!(monitor.wait_for_prompt().await.expect("greeting").ends_with(PROMPT));
        let reply = monitor.command("info status").await.expect("reply");
        assert_eq!(reply, "info status\r\nVM status: running\r\n(qemu) ");
        server.await.expect("server task").expect("server io");
    }
}
