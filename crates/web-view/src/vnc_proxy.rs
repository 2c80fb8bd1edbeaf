//! A WebSocket to a machine's VNC unix socket, byte for byte both ways (what websockify does
//! for noVNC), until either side closes.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The WebSocket close code for "the server cannot go on" (RFC 6455, 1011).
const INTERNAL_ERROR: u16 = 1011;

/// The longest close reason a control frame has room for (125 bytes less the code's 2).
const MAX_REASON: usize = 123;

/// Carry RFB between the browser's `ws` and the VNC server at `socket`, until either side
/// closes or the web view stops (`stopped` turns true).
pub async fn proxy(mut ws: WebSocket, socket: PathBuf, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut vnc = match UnixStream::connect(&socket).await {
        Ok(vnc) => vnc,
        Err(e) => {
            // The machine is not running (its QEMU makes the socket anew on every start).
            let reason = truncated(format!("cannot connect to the VNC server: {e}"), MAX_REASON);
            let frame = CloseFrame { code: INTERNAL_ERROR, reason: reason.into() };
            let _ = ws.send(Message::Close(Some(frame))).await;
            return;
        }
    };
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // Both are cancel-safe: whichever is not chosen has consumed nothing.
        tokio::select! {
            () = async { let _ = stopped.wait_for(|stop| *stop).await; } => break,
            read = vnc.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws.send(Message::Binary(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                        return;
                    }
                }
            },
            message = ws.recv() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if vnc.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                // Pings are answered by the WebSocket layer; RFB is binary only.
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = ws.send(Message::Close(None)).await;
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(100);
        let cut = super::truncated(long, super::MAX_REASON);
        assert!(cut.len() <= super::MAX_REASON && cut.chars().all(|c| c == 'é'));
        assert_eq!(super::truncated("short".into(), super::MAX_REASON), "short");
    }
}
