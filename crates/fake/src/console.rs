//! The serial console: QEMU's `-serial stdio`, so the fake's stdout. The guest kernel and
//! systemd write here (the guest shell's stderr goes here directly, as NixOS's backdoor sends
//! it to the serial port), in the kernel's format: `[%5lu.%06lu] message`, the time since boot.
//!
//! Lines are written by one task in order, so a slow reader of stdout never blocks the
//! machine; [`Console::flush`] waits until everything sent so far is written, for the last
//! words before an exit.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

enum Message {
    Text(String),
    Flush(oneshot::Sender<()>),
}

/// The console writer.
#[derive(Debug, Clone)]
pub struct Console {
    tx: Option<mpsc::UnboundedSender<Message>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Text(text) => write!(f, "Text({text:?})"),
            Message::Flush(_) => write!(f, "Flush"),
        }
    }
}

impl Console {
    /// A console on stdout (`enabled`), or one that discards everything (no `-serial stdio`).
    /// Must be called inside the runtime.
    pub fn new(enabled: bool) -> Console {
        if !enabled {
            return Console { tx: None };
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(message) = rx.recv().await {
                match message {
                    Message::Text(text) => {
                        if stdout.write_all(text.as_bytes()).await.is_err() {
                            continue;
                        }
                        let _ = stdout.flush().await;
                    }
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Console { tx: Some(tx) }
    }

    /// Write one line (a newline is added).
    pub fn line(&self, text: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Text(format!("{text}\n")));
        }
    }

    /// Write one kernel line stamped with the time since boot.
    pub fn kernel(&self, uptime: Duration, text: &str) {
        self.line(&kernel_line(uptime, text));
    }

    /// Wait until everything written so far is on stdout.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, written) = oneshot::channel();
        if tx.send(Message::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

/// A line as the kernel prints it with `printk.time`: `[    1.234567] text`.
pub fn kernel_line(uptime: Duration, text: &str) -> String {
    format!("[{:5}.{:06}] {text}", uptime.as_secs(), uptime.subsec_micros())
}

/// The kernel's lines at the start of a boot.
pub fn boot_lines(hostname: &str) -> Vec<String> {
    vec![
        "Linux version 6.1.0-fake (ntd-fake-qemu) #1-NixOS SMP PREEMPT_DYNAMIC".to_owned(),
        "Command line: console=ttyS0 panic=1 boot.panic_on_fail clocksource=acpi_pm loglevel=7".to_owned(),
        "virtio_console virtio0: hvc0 is the backdoor console".to_owned(),
        "Run /init as init process".to_owned(),
        format!("systemd[1]: Hostname set to <{hostname}>."),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_timestamps() {
        assert_eq!(kernel_line(Duration::ZERO, "x"), "[    0.000000] x");
        assert_eq!(kernel_line(Duration::from_micros(12_345_678), "Kernel panic"), "[   12.345678] Kernel panic");
        assert_eq!(kernel_line(Duration::from_secs(123_456), "y"), "[123456.000000] y");
    }
}
