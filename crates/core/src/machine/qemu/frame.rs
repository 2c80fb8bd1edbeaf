//! The framing of one command on the backdoor shell, and the decoder of its reply.
//!
//! Upstream frames a command as `timeout T bash -c '<cmd>' | (base64 -w 0; echo)` and then asks
//! for `${PIPESTATUS[0]}` in a second round trip: two round trips and four guest processes per
//! command. ntd sends one line that the stock shell understands and reads one reply. Through
//! the output port ([`super::channel`]), the line is
//!
//! ```text
//! ( eval 'set -euo pipefail; <cmd>' ) </dev/null >"$__ntd_out"; __ntd_s=$?
//! until printf '\n%s %d\n' <nonce> "$__ntd_s" >"$__ntd_out"; do <every 0.1 s; after 10 s, say so on hvc0>; done
//! ```
//!
//! - one round trip and one fork (the subshell); `eval` is a builtin;
//! - the output comes back raw, ended by a line with a random 64-bit nonce and the exit
//!   status; the host strips the `\n` before it;
//! - the port opens once at a time, so the marker gets through only after every process that
//!   inherited the command's stdout has closed it: the output ends at the end of stdout, as
//!   upstream's does, and a background job writing to it is part of the result. While it
//!   waits, the shell prints `<nonce> w` on the console after 10 s, and the driver warns;
//! - `eval` of a single-quoted string means any command text, even with unbalanced quotes,
//!   reaches the guest as one word and fails on its own (exit 2) instead of desynchronising the
//!   shell; the subshell keeps `cd`, variables and `exit` from leaking into the backdoor;
//! - stdin is `/dev/null`, so a command cannot eat the protocol's next bytes.
//!
//! Timeouts are enforced by the host through the control port; only without it does a command
//! run under `timeout T "${BASH:-sh}" -c` as upstream's does (status 124 when it fires),
//! `${BASH:-sh}` so a busybox guest works too.
//!
//! Without the output port the reply comes on the console, which may drop bytes. There the
//! output is buffered in a guest file until its stdout closes, then printed with its POSIX
//! `cksum` (CRC and length) in the status line, so a reply that lost or changed a byte is an
//! error, never a result (a guest without `cksum`, like Debian's busybox, sends the length
//! alone, which catches what a full socket drops):
//!
//! ```text
//! { ( eval '…' ) </dev/null; echo $? >"$__ntd_t.s"; } | cat >"$__ntd_t" && … cat "$__ntd_t"
//! printf '\n%s %d %s %s\n' <nonce> <status> <crc> <length>
//! ```
//!
//! Measured in `notes/backdoor-framing.md` and `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::Duration;

use memchr::memmem;

use crate::machine::NulInCommand;
use crate::machine::quote::shell_quote;

/// Which way the reply comes back (see the module documentation).
///
/// In both, the command's pipeline stands on its own, never on the left of `&&` or `||`:
/// there bash ignores `set -e`, in subshells too, and `echo a; false; echo b` would go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Through the output port: the status line is `<status>`.
    Port,
    /// On the console, buffered and checksummed: `<status> <crc> <length>`, or `E` when the
    /// guest could not buffer the output.
    Console,
}

/// A reply that is not one the framing allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The status line is not ntd's.
    #[error("malformed status line from the guest shell: {0:?}")]
    Malformed(String),
    /// The console framing's checksum does not match what arrived.
    #[error(
        "bytes were lost: the guest sent {sent} bytes of output, {received} arrived{}; the console drops what the \
         driver cannot read in time, and this guest has no org.nixos.ntd.out port to carry output losslessly",
        crc_note(*sent, *sent_crc, *received, *received_crc)
    )]
    BytesLost {
        /// The length the guest counted.
        sent: u64,
        /// The guest's checksum (`None` where the guest has no `cksum`: busybox without it).
        sent_crc: Option<u32>,
        /// What arrived.
        received: u64,
        /// Its checksum.
        received_crc: u32,
    },
    /// On the console, the shell answered a line sent after the command before the reply's
    /// end arrived: the console dropped the end.
    #[error(
        "the end of the reply was lost: the shell has answered a later line, and the end never arrived; the console \
         drops what the driver cannot read in time, and this guest has no org.nixos.ntd.out port to carry output \
         losslessly"
    )]
    EndLost,
    /// The console framing could not buffer the output in the guest.
    #[error("the guest could not buffer the command's output in /tmp (is it full or read-only?)")]
    NotBuffered,
}

/// Where the lengths agree, the checksums did not.
fn crc_note(sent: u64, sent_crc: Option<u32>, received: u64, received_crc: u32) -> String {
    match sent_crc {
        Some(sent_crc) if sent == received => format!(" with CRC {received_crc} instead of the guest's {sent_crc}"),
        _ => String::new(),
    }
}

/// One framed command, ready to write to the shell.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The bytes to write.
    pub bytes: Vec<u8>,
    nonce: [u8; 16],
    framing: Framing,
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

/// A fresh random token in the nonces' alphabet (for the channel setup's reply and epoch).
pub fn new_token() -> String {
    String::from_utf8_lossy(&new_nonce()).into_owned()
}

/// How many 0.1 s retries of the port marker make the 10 s after which the shell says that
/// the command's stdout is still open (upstream warns after 10 s too).
const LINGER_NOTICE_RETRIES: u32 = 100;

impl Frame {
    /// Frame `command` (see the module docs) for `framing`, optionally under a guest-side
    /// `timeout` (for guests where the host cannot kill), and with `TRACEPARENT` in its
    /// environment when a trace context is given.
    pub fn new(
        command: &str,
        framing: Framing,
        timeout: Option<Duration>,
        traceparent: Option<&str>,
    ) -> Result<Frame, NulInCommand> {
        if command.contains('\0') || traceparent.is_some_and(|t| t.contains('\0')) {
            return Err(NulInCommand);
        }
        let nonce = new_nonce();
        let nonce_text = String::from_utf8_lossy(&nonce);
        let script = shell_quote(&format!("set -euo pipefail; {command}"));
        // The command itself, stdin from /dev/null and the nap's fifo closed.
        let mut run = String::with_capacity(script.len() + 100);
        match (timeout, traceparent) {
            (None, None) => {
                let _ = write!(run, "( eval {script} )");
            }
            (None, Some(traceparent)) => {
                let _ = write!(run, "( export TRACEPARENT={}; eval {script} )", shell_quote(traceparent));
            }
            (Some(timeout), traceparent) => {
                if let Some(traceparent) = traceparent {
                    let _ = write!(run, "TRACEPARENT={} ", shell_quote(traceparent));
                }
                let _ = write!(run, "timeout {} \"${{BASH:-sh}}\" -c {script}", crate::config::format_seconds(timeout));
            }
        }
        run.push_str(" </dev/null 8<&-");
        let mut line = String::with_capacity(run.len() + 300);
        match framing {
            Framing::Port => {
                let _ = writeln!(
                    line,
                    "{run} >\"$__ntd_out\"; __ntd_s=$?; __ntd_i=0; \
                     until printf '\\n%s %d\\n' {nonce_text} \"$__ntd_s\" 2>/dev/null >\"$__ntd_out\"; \
                     do __ntd_i=$((__ntd_i+1)); [ \"$__ntd_i\" = {LINGER_NOTICE_RETRIES} ] && printf '%s w\\n' {nonce_text}; \
                     __ntd_nap 0.1; done"
                );
            }
            Framing::Console => {
                let _ = writeln!(
                    line,
                    "{{ {run}; echo $? >\"$__ntd_t.s\"; }} | cat >\"$__ntd_t\"; \
                     if [ $? = 0 ] && read -r __ntd_s <\"$__ntd_t.s\" \
                     && set -- $(cksum <\"$__ntd_t\" 2>/dev/null || echo - $(wc -c <\"$__ntd_t\")) && cat \"$__ntd_t\"; \
                     then printf '\\n%s %d %s %s\\n' {nonce_text} \"$__ntd_s\" \"$1\" \"$2\"; \
                     else printf '\\n%s E\\n' {nonce_text}; fi; rm -f \"$__ntd_t\" \"$__ntd_t.s\""
                );
            }
        }
        Ok(Frame { bytes: line.into_bytes(), nonce, framing })
    }

    /// The decoder for this frame's reply.
    pub fn decoder(&self) -> ReplyDecoder {
        ReplyDecoder::new(&self.nonce, self.framing)
    }

    /// The framing this frame was made for.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The line the port framing prints on the console when the command has exited but its
    /// stdout is still open after 10 s.
    pub fn lingering_notice(&self) -> Vec<u8> {
        let mut notice = self.nonce.to_vec();
        notice.extend_from_slice(b" w\n");
        notice
    }

    /// The bytes the guest shell prints in reply to this frame: `output`, then the status line.
    /// The nonce is private so that nothing else can end a reply; this exists so tests and the
    /// fuzz targets can play the guest.
    #[doc(hidden)]
    pub fn reply_for(&self, output: &[u8], status: i32) -> Vec<u8> {
        let mut reply = Vec::with_capacity(output.len() + 60);
        reply.extend_from_slice(output);
        reply.push(b'\n');
        reply.extend_from_slice(&self.nonce);
        match self.framing {
            Framing::Port => reply.extend_from_slice(format!(" {status}\n").as_bytes()),
            Framing::Console => {
                reply.extend_from_slice(format!(" {status} {} {}\n", posix_cksum(output), output.len()).as_bytes())
            }
        }
        reply
    }
}

/// POSIX `cksum`'s CRC: CRC-32 with polynomial 0x04C11DB7, most significant bit first, over
/// the data and then its length in as few bytes as it takes (least significant first),
/// complemented. What `cksum` prints first for the same bytes, in coreutils and busybox.
pub fn posix_cksum(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = (i as u32) << 24;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04C1_1DB7 } else { crc << 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let step = |crc: u32, byte: u8| (crc << 8) ^ TABLE[usize::from((crc >> 24) as u8 ^ byte)];
    let mut crc = data.iter().fold(0, |crc, &byte| step(crc, byte));
    let mut len = data.len() as u64;
    while len != 0 {
        crc = step(crc, len as u8);
        len >>= 8;
    }
    !crc
}

/// The longest status line accepted in the console framing: `%d %u %u` of an `i32`, a CRC and
/// a length is at most 11 + 1 + 10 + 1 + 20 bytes.
const CONSOLE_STATUS_LEN: usize = 48;

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
    framing: Framing,
    buf: Vec<u8>,
    /// Where the terminator was found, once it was.
    found: Option<usize>,
    /// How far `buf` has been searched for the terminator.
    searched: usize,
}

impl ReplyDecoder {
    fn new(nonce: &[u8; 16], framing: Framing) -> ReplyDecoder {
        let mut terminator = Vec::with_capacity(18);
        terminator.push(b'\n');
        terminator.extend_from_slice(nonce);
        terminator.push(b' ');
        ReplyDecoder { terminator, framing, buf: Vec::new(), found: None, searched: 0 }
    }

    /// Feed received bytes. Returns the reply and the bytes after it once the status line is
    /// complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<(Reply, Vec<u8>)>, ReplyError> {
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
        let max_len = match self.framing {
            Framing::Port => PORT_STATUS_LEN,
            Framing::Console => CONSOLE_STATUS_LEN,
        };
        // Look for the newline only as far as a status can reach, so that a longer line is
        // malformed however the reads split it.
        let status_end = self.buf.len().min(status_start + max_len + 1);
        let Some(newline) = memchr::memchr(b'\n', &self.buf[status_start..status_end]) else {
            if self.buf.len() - status_start > max_len {
                return Err(ReplyError::Malformed(String::from_utf8_lossy(&self.buf[status_start..]).into_owned()));
            }
            return Ok(None);
        };
        let status_text = String::from_utf8_lossy(&self.buf[status_start..status_start + newline]).into_owned();
        let rest = self.buf.split_off(status_start + newline + 1);
        self.buf.truncate(at);
        let output = std::mem::take(&mut self.buf);
        let status = match self.framing {
            Framing::Port => status_text.parse::<i32>().ok(),
            Framing::Console => check_console_status(&status_text, &output)?,
        };
        let status = status.ok_or(ReplyError::Malformed(status_text))?;
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

/// The longest status accepted in the port framing: `%d` of any `i32` is at most 11 bytes.
const PORT_STATUS_LEN: usize = 16;

/// The console framing's `<status> <crc> <length>` (or `E`), checked against `output`:
/// `Ok(None)` when the line is malformed.
fn check_console_status(text: &str, output: &[u8]) -> Result<Option<i32>, ReplyError> {
    if text == "E" {
        return Err(ReplyError::NotBuffered);
    }
    let mut words = text.split(' ');
    let (Some(status), Some(crc), Some(len), None) = (words.next(), words.next(), words.next(), words.next()) else {
        return Ok(None);
    };
    // `-`: the guest has no `cksum` (a busybox built without it); the length still counts.
    let sent_crc = match crc {
        "-" => None,
        crc => match crc.parse::<u32>() {
            Ok(crc) => Some(crc),
            Err(_) => return Ok(None),
        },
    };
    let (Ok(status), Ok(sent)) = (status.parse::<i32>(), len.parse::<u64>()) else {
        return Ok(None);
    };
    let received_crc = posix_cksum(output);
    let received = output.len() as u64;
    if sent != received || sent_crc.is_some_and(|sent_crc| sent_crc != received_crc) {
        return Err(ReplyError::BytesLost { sent, sent_crc, received, received_crc });
    }
    Ok(Some(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce_of(frame: &Frame) -> String {
        String::from_utf8(frame.nonce.to_vec()).expect("hex nonce")
    }

    #[test]
    fn frames_with_and_without_timeout() {
        let frame = Frame::new("echo 'hi' $X", Framing::Port, None, None).expect("no NUL");
        let text = String::from_utf8(frame.bytes.clone()).expect("utf-8");
        let nonce = nonce_of(&frame);
        assert_eq!(
            text,
            format!(
                "( eval 'set -euo pipefail; echo '\\''hi'\\'' $X' ) </dev/null 8<&- >\"$__ntd_out\"; __ntd_s=$?; __ntd_i=0; \
                 until printf '\\n%s %d\\n' {nonce} \"$__ntd_s\" 2>/dev/null >\"$__ntd_out\"; \
                 do __ntd_i=$((__ntd_i+1)); [ \"$__ntd_i\" = 100 ] && printf '%s w\\n' {nonce}; __ntd_nap 0.1; done\n"
            )
        );
        assert_eq!(frame.lingering_notice(), format!("{nonce} w\n").into_bytes());
        let frame = Frame::new("sleep 30", Framing::Port, Some(Duration::from_secs(2)), None).expect("no NUL");
        let text = String::from_utf8(frame.bytes.clone()).expect("utf-8");
        assert!(
            text.starts_with(
                "timeout 2 \"${BASH:-sh}\" -c 'set -euo pipefail; sleep 30' </dev/null 8<&- >\"$__ntd_out\";"
            ),
            "{text}"
        );
        let frame = Frame::new("true", Framing::Console, Some(Duration::from_millis(1500)), None).expect("no NUL");
        assert!(String::from_utf8_lossy(&frame.bytes).starts_with("{ timeout 1.5 "));
    }

    #[test]
    fn posix_cksum_is_cksums() {
        // Known values of `cksum` (coreutils and busybox agree).
        assert_eq!(posix_cksum(b""), 4_294_967_295);
        assert_eq!(posix_cksum(b"a"), 1_220_704_766);
        assert_eq!(posix_cksum(b"123456789"), 930_766_865);
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let mut cksum = std::process::Command::new("cksum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cksum");
        std::io::Write::write_all(&mut cksum.stdin.take().expect("stdin"), &data).expect("feed cksum");
        let output = cksum.wait_with_output().expect("cksum output");
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(text.trim(), format!("{} {}", posix_cksum(&data), data.len()));
    }

    #[test]
    fn console_replies_are_checked() {
        let frame = Frame::new("x", Framing::Console, None, None).expect("frame");
        let output = b"some output\n\xff".to_vec();
        let (reply, rest) = frame.decoder().push(&frame.reply_for(&output, 3)).expect("ok").expect("complete");
        assert_eq!(reply, Reply { status: 3, output: output.clone() });
        assert!(rest.is_empty());
        // One byte dropped, one byte changed: both errors, with what was counted.
        let mut dropped = frame.reply_for(&output, 0);
        dropped.remove(4);
        let error = frame.decoder().push(&dropped).expect_err("a lost byte");
        assert!(matches!(error, ReplyError::BytesLost { sent: 13, received: 12, .. }), "{error}");
        let mut changed = frame.reply_for(&output, 0);
        changed[0] = b'S';
        assert!(matches!(frame.decoder().push(&changed), Err(ReplyError::BytesLost { sent: 13, received: 13, .. })));
        let unbuffered = format!("\n{} E\n", nonce_of(&frame));
        assert_eq!(frame.decoder().push(unbuffered.as_bytes()), Err(ReplyError::NotBuffered));
        let short = format!("\n{} 0 12\n", nonce_of(&frame));
        assert!(matches!(frame.decoder().push(short.as_bytes()), Err(ReplyError::Malformed(_))));
        // A guest without `cksum` sends `-` and the length: the length is still checked.
        let nonce = nonce_of(&frame);
        let whole = format!("abc\n{nonce} 0 - 3\n");
        let (reply, _) = frame.decoder().push(whole.as_bytes()).expect("ok").expect("complete");
        assert_eq!(reply, Reply { status: 0, output: b"abc".to_vec() });
        let lost = format!("ab\n{nonce} 0 - 3\n");
        let error = frame.decoder().push(lost.as_bytes()).expect_err("a lost byte");
        assert_eq!(
            error.to_string(),
            "bytes were lost: the guest sent 3 bytes of output, 2 arrived; the console drops what the driver cannot \
             read in time, and this guest has no org.nixos.ntd.out port to carry output losslessly"
        );
    }

    #[test]
    fn traceparent_reaches_the_command() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let frame = Frame::new("echo $TRACEPARENT", Framing::Port, None, Some(tp)).expect("frame");
        let text = String::from_utf8(frame.bytes).expect("utf-8");
        assert!(text.starts_with(&format!("( export TRACEPARENT='{tp}'; eval ")), "{text}");
        let frame = Frame::new("true", Framing::Port, Some(Duration::from_secs(3)), Some(tp)).expect("frame");
        let text = String::from_utf8(frame.bytes).expect("utf-8");
        assert!(text.starts_with(&format!("TRACEPARENT='{tp}' timeout 3 ")), "{text}");
    }

    #[test]
    fn nonces_differ() {
        let a = Frame::new("true", Framing::Port, None, None).expect("frame");
        let b = Frame::new("true", Framing::Port, None, None).expect("frame");
        assert_ne!(a.nonce, b.nonce);
        assert!(a.nonce.iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn rejects_nul() {
        assert_eq!(Frame::new("echo \0", Framing::Port, None, None).expect_err("NUL"), NulInCommand);
    }

    fn reply_stream(frame: &Frame, output: &[u8], status: i32) -> Vec<u8> {
        let mut stream = output.to_vec();
        stream.extend_from_slice(format!("\n{} {status}\n", nonce_of(frame)).as_bytes());
        stream
    }

    #[test]
    fn decodes_output_byte_exact_in_any_chunking() {
        let frame = Frame::new("x", Framing::Port, None, None).expect("frame");
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
        let frame = Frame::new("x", Framing::Port, None, None).expect("frame");
        for output in [&b""[..], b"\n", b"\n\n", b"abc\n"] {
            let mut decoder = frame.decoder();
            let (reply, _) = decoder.push(&reply_stream(&frame, output, 0)).expect("ok").expect("complete");
            assert_eq!(reply.output, output);
        }
    }

    #[test]
    fn reply_for_is_what_the_guest_prints() {
        let frame = Frame::new("x", Framing::Port, None, None).expect("frame");
        for (output, status) in [(&b""[..], 0), (&b"a\nb\xff"[..], 7), (&b"\n"[..], -1)] {
            assert_eq!(frame.reply_for(output, status), reply_stream(&frame, output, status));
            let (reply, rest) = frame.decoder().push(&frame.reply_for(output, status)).expect("ok").expect("complete");
            assert_eq!(reply, Reply { status, output: output.to_vec() });
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn bytes_after_the_reply_are_returned() {
        let frame = Frame::new("x", Framing::Port, None, None).expect("frame");
        let mut stream = reply_stream(&frame, b"out", 0);
        stream.extend_from_slice(b"late background output");
        let (reply, rest) = frame.decoder().push(&stream).expect("ok").expect("complete");
        assert_eq!(reply.output, b"out");
        assert_eq!(rest, b"late background output");
    }

    #[test]
    fn another_nonce_is_just_output() {
        let frame = Frame::new("x", Framing::Port, None, None).expect("frame");
        let other = Frame::new("y", Framing::Port, None, None).expect("frame");
        let inner = reply_stream(&other, b"nested", 3);
        let (reply, _) = frame.decoder().push(&reply_stream(&frame, &inner, 0)).expect("ok").expect("complete");
        assert_eq!(reply.output, inner);
        assert_eq!(reply.status, 0);
    }

    #[test]
    fn a_long_status_line_is_malformed_in_any_chunking() {
        let frame = Frame::new("x", Framing::Port, None, None).expect("frame");
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
        let frame = Frame::new("x", Framing::Port, None, None).expect("frame");
        let stream = format!("\n{} notanumber\n", nonce_of(&frame));
        assert!(frame.decoder().push(stream.as_bytes()).is_err());
    }
}
