//! The framing of one command on the backdoor shell, and the decoder of its reply.
//!
//! Upstream frames a command as `timeout T bash -c '<cmd>' | (base64 -w 0; echo)` and then asks
//! for `${PIPESTATUS[0]}` in a second round trip: two round trips and four guest processes per
//! command. ntd sends one line that the stock shell understands and reads one reply:
//!
//! ```text
//! ( eval 'set -euo pipefail; <cmd>' ) </dev/null; printf '\n%s %d\n' <nonce> $?
//! ```
//!
//! - one round trip and one fork (the subshell); `eval` is a builtin;
//! - the output comes back raw (the console is raw, so bytes pass unchanged), ended by a line
//!   with a random 64-bit nonce and the exit status; the host strips the `\n` before it;
//! - `eval` of a single-quoted string means any command text, even with unbalanced quotes,
//!   reaches the guest as one word and fails on its own (exit 2) instead of desynchronising the
//!   shell; the subshell keeps `cd`, variables and `exit` from leaking into the backdoor;
//! - stdin is `/dev/null`, so a command cannot eat the protocol's next bytes;
//! - the reply comes when the command exits, not when its stdout closes, so a background job
//!   that keeps stdout open no longer blocks the caller (upstream issue #144875);
//! - with a timeout, the command runs under `timeout T "${BASH:-sh}" -c` as upstream does
//!   (status 124 when it fires), `${BASH:-sh}` so a busybox guest works too.
//!
//! Measured in `notes/backdoor-framing.md`: 9.7 ms against upstream's 69 ms per `true`.

use std::fmt::Write as _;
use std::time::Duration;

use memchr::memmem;

use crate::machine::NulInCommand;
use crate::machine::quote::shell_quote;

/// The reply ended in something that is not the framing ntd sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed status line from the guest shell: {0:?}")]
pub struct MalformedReply(pub String);

/// One framed command, ready to write to the shell.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The bytes to write.
    pub bytes: Vec<u8>,
    nonce: [u8; 16],
}

fn new_nonce() -> [u8; 16] {
    let mut raw = [0u8; 8];
    if getrandom::fill(&mut raw).is_err() {
        // No entropy source: fall back to time and pid, still unique per command.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        raw = (now ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    let mut nonce = [0u8; 16];
    for (i, b) in raw.iter().enumerate() {
        nonce[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        nonce[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 0xf)];
    }
    nonce
}

impl Frame {
    /// Frame `command` (see the module docs), optionally under a guest-side `timeout`, and
    /// with `TRACEPARENT` in its environment when a trace context is given.
    pub fn new(command: &str, timeout: Option<Duration>, traceparent: Option<&str>) -> Result<Frame, NulInCommand> {
        if command.contains('\0') || traceparent.is_some_and(|t| t.contains('\0')) {
            return Err(NulInCommand);
        }
        let nonce = new_nonce();
        let script = shell_quote(&format!("set -euo pipefail; {command}"));
        let mut line = String::with_capacity(script.len() + 140);
        match (timeout, traceparent) {
            (None, None) => {
                let _ = write!(line, "( eval {script} ) </dev/null");
            }
            (None, Some(traceparent)) => {
                let _ = write!(line, "( export TRACEPARENT={}; eval {script} ) </dev/null", shell_quote(traceparent));
            }
            (Some(timeout), traceparent) => {
                if let Some(traceparent) = traceparent {
                    let _ = write!(line, "TRACEPARENT={} ", shell_quote(traceparent));
                }
                let _ = write!(
                    line,
                    "timeout {} \"${{BASH:-sh}}\" -c {script} </dev/null",
                    crate::config::format_seconds(timeout)
                );
            }
        }
        let _ = writeln!(line, "; printf '\\n%s %d\\n' {} $?", String::from_utf8_lossy(&nonce));
        Ok(Frame { bytes: line.into_bytes(), nonce })
    }

    /// The decoder for this frame's reply.
    pub fn decoder(&self) -> ReplyDecoder {
        ReplyDecoder::new(&self.nonce)
    }

    /// The bytes the guest shell prints in reply to this frame: `output`, then the status line.
    /// The nonce is private so that nothing else can end a reply; this exists so tests and the
    /// fuzz targets can play the guest.
    #[doc(hidden)]
    pub fn reply_for(&self, output: &[u8], status: i32) -> Vec<u8> {
        let mut reply = Vec::with_capacity(output.len() + 30);
        reply.extend_from_slice(output);
        reply.push(b'\n');
        reply.extend_from_slice(&self.nonce);
        reply.extend_from_slice(format!(" {status}\n").as_bytes());
        reply
    }
}

/// The longest status text accepted: `%d` of any `i32` is at most 11 bytes.
const MAX_STATUS_LEN: usize = 16;

/// A complete reply: the command's stdout and exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Exit status, as the shell's `$?`.
    pub status: i32,
    /// Everything the command wrote to stdout, byte for byte.
    pub output: Vec<u8>,
}

/// Incrementally finds the end of one reply in the shell's output stream.
#[derive(Debug)]
pub struct ReplyDecoder {
    /// `\n<nonce> `: the framing's line break before the status line, the nonce and a space.
    terminator: Vec<u8>,
    buf: Vec<u8>,
    /// Where the terminator was found, once it was.
    found: Option<usize>,
    /// How far `buf` has been searched for the terminator.
    searched: usize,
}

impl ReplyDecoder {
    fn new(nonce: &[u8; 16]) -> ReplyDecoder {
        let mut terminator = Vec::with_capacity(18);
        terminator.push(b'\n');
        terminator.extend_from_slice(nonce);
        terminator.push(b' ');
        ReplyDecoder { terminator, buf: Vec::new(), found: None, searched: 0 }
    }

    /// Feed received bytes. Returns the reply and the bytes after it once the status line is
    /// complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<(Reply, Vec<u8>)>, MalformedReply> {
        self.buf.extend_from_slice(data);
        if self.found.is_none() {
            // The terminator may straddle the previous chunk's end.
            let from = self.searched.saturating_sub(self.terminator.len() - 1);
            match memmem::find(&self.buf[from..], &self.terminator) {
                Some(at) => self.found = Some(from + at),
                None => {
                    self.searched = self.buf.len();
                    return Ok(None);
                }
            }
        }
        let Some(at) = self.found else { return Ok(None) };
        let status_start = at + self.terminator.len();
        // Look for the newline only as far as a status can reach, so that a longer line is
        // malformed however the reads split it.
        let status_end = self.buf.len().min(status_start + MAX_STATUS_LEN + 1);
        let Some(newline) = memchr::memchr(b'\n', &self.buf[status_start..status_end]) else {
            if self.buf.len() - status_start > MAX_STATUS_LEN {
                return Err(MalformedReply(String::from_utf8_lossy(&self.buf[status_start..]).into_owned()));
            }
            return Ok(None);
        };
        let status_text = &self.buf[status_start..status_start + newline];
        let status = std::str::from_utf8(status_text)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .ok_or_else(|| MalformedReply(String::from_utf8_lossy(status_text).into_owned()))?;
        let rest = self.buf.split_off(status_start + newline + 1);
        self.buf.truncate(at);
        let output = std::mem::take(&mut self.buf);
        Ok(Some((Reply { status, output }, rest)))
    }

    /// What has arrived of the output so far (for a reply cut short by a disconnect).
    pub fn partial_output(&self) -> &[u8] {
        match self.found {
            Some(at) => &self.buf[..at],
            None => &self.buf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce_of(frame: &Frame) -> String {
        String::from_utf8(frame.nonce.to_vec()).expect("hex nonce")
    }

    #[test]
    fn frames_with_and_without_timeout() {
        let frame = Frame::new("echo 'hi' $X", None, None).expect("no NUL");
        let text = String::from_utf8(frame.bytes.clone()).expect("utf-8");
        let nonce = nonce_of(&frame);
        assert_eq!(
            text,
            format!("( eval 'set -euo pipefail; echo '\\''hi'\\'' $X' ) </dev/null; printf '\\n%s %d\\n' {nonce} $?\n")
        );
        let frame = Frame::new("sleep 30", Some(Duration::from_secs(2)), None).expect("no NUL");
        let text = String::from_utf8(frame.bytes.clone()).expect("utf-8");
        assert!(
            text.starts_with("timeout 2 \"${BASH:-sh}\" -c 'set -euo pipefail; sleep 30' </dev/null; printf"),
            "{text}"
        );
        let frame = Frame::new("true", Some(Duration::from_millis(1500)), None).expect("no NUL");
        assert!(String::from_utf8_lossy(&frame.bytes).starts_with("timeout 1.5 "));
    }

    #[test]
    fn traceparent_reaches_the_command() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let frame = Frame::new("echo $TRACEPARENT", None, Some(tp)).expect("frame");
        let text = String::from_utf8(frame.bytes).expect("utf-8");
        assert!(text.starts_with(&format!("( export TRACEPARENT='{tp}'; eval ")), "{text}");
        let frame = Frame::new("true", Some(Duration::from_secs(3)), Some(tp)).expect("frame");
        let text = String::from_utf8(frame.bytes).expect("utf-8");
        assert!(text.starts_with(&format!("TRACEPARENT='{tp}' timeout 3 ")), "{text}");
    }

    #[test]
    fn nonces_differ() {
        let a = Frame::new("true", None, None).expect("frame");
        let b = Frame::new("true", None, None).expect("frame");
        assert_ne!(a.nonce, b.nonce);
        assert!(a.nonce.iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn rejects_nul() {
        assert_eq!(Frame::new("echo \0", None, None).expect_err("NUL"), NulInCommand);
    }

    fn reply_stream(frame: &Frame, output: &[u8], status: i32) -> Vec<u8> {
        let mut stream = output.to_vec();
        stream.extend_from_slice(format!("\n{} {status}\n", nonce_of(frame)).as_bytes());
        stream
    }

    #[test]
    fn decodes_output_byte_exact_in_any_chunking() {
        let frame = Frame::new("x", None, None).expect("frame");
        let mut output: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        output.extend_from_slice(b"\n\r\n no trailing newline");
        let stream = reply_stream(&frame, &output, 7);
        for chunk_size in [1, 2, 3, 17, 18, 19, 4096, stream.len()] {
            let mut decoder = frame.decoder();
            let mut result = None;
            for chunk in stream.chunks(chunk_size) {
                assert!(result.is_none(), "reply complete before the stream ended");
                result = decoder.push(chunk).expect("well-formed");
            }
            let (reply, rest) = result.expect("complete reply");
            assert_eq!(reply.status, 7);
            assert_eq!(reply.output, output, "chunk size {chunk_size}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn empty_output_and_trailing_newlines() {
        let frame = Frame::new("x", None, None).expect("frame");
        for output in [&b""[..], b"\n", b"\n\n", b"abc\n"] {
            let mut decoder = frame.decoder();
            let (reply, _) = decoder.push(&reply_stream(&frame, output, 0)).expect("ok").expect("complete");
            assert_eq!(reply.output, output);
        }
    }

    #[test]
    fn reply_for_is_what_the_guest_prints() {
        let frame = Frame::new("x", None, None).expect("frame");
        for (output, status) in [(&b""[..], 0), (&b"a\nb\xff"[..], 7), (&b"\n"[..], -1)] {
            assert_eq!(frame.reply_for(output, status), reply_stream(&frame, output, status));
            let (reply, rest) = frame.decoder().push(&frame.reply_for(output, status)).expect("ok").expect("complete");
            assert_eq!(reply, Reply { status, output: output.to_vec() });
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn bytes_after_the_reply_are_returned() {
        let frame = Frame::new("x", None, None).expect("frame");
        let mut stream = reply_stream(&frame, b"out", 0);
        stream.extend_from_slice(b"late background output");
        let (reply, rest) = frame.decoder().push(&stream).expect("ok").expect("complete");
        assert_eq!(reply.output, b"out");
        assert_eq!(rest, b"late background output");
    }

    #[test]
    fn another_nonce_is_just_output() {
        let frame = Frame::new("x", None, None).expect("frame");
        let other = Frame::new("y", None, None).expect("frame");
        let inner = reply_stream(&other, b"nested", 3);
        let (reply, _) = frame.decoder().push(&reply_stream(&frame, &inner, 0)).expect("ok").expect("complete");
        assert_eq!(reply.output, inner);
        assert_eq!(reply.status, 0);
    }

    #[test]
    fn a_long_status_line_is_malformed_in_any_chunking() {
        let frame = Frame::new("x", None, None).expect("frame");
        let status_line = frame.reply_for(b"", 0);
        let terminator = &status_line[..status_line.len() - 2];
        for (status, expected) in [("0000000000000007", Some(7)), ("00000000000000007", None)] {
            let stream = [terminator, status.as_bytes(), b"\n"].concat();
            for chunk_size in [1, stream.len()] {
                let mut decoder = frame.decoder();
                let mut result = Ok(None);
                for chunk in stream.chunks(chunk_size) {
                    result = decoder.push(chunk);
                    if !matches!(result, Ok(None)) {
                        break;
                    }
                }
                let status_got = result.map(|r| r.map(|(reply, _)| reply.status));
                match expected {
                    Some(status) => assert_eq!(status_got, Ok(Some(status)), "chunk size {chunk_size}"),
                    None => assert!(status_got.is_err(), "{status}, chunk size {chunk_size}: {status_got:?}"),
                }
            }
        }
    }

    #[test]
    fn malformed_status_is_an_error() {
        let frame = Frame::new("x", None, None).expect("frame");
        let stream = format!("\n{} notanumber\n", nonce_of(&frame));
        assert!(frame.decoder().push(stream.as_bytes()).is_err());
    }
}
