//! The backdoor shell's reply decoder (`ntd_core::machine::qemu::frame`).
//!
//! - A stream made of raw bytes and pieces of the framing (the `\n<nonce> ` that starts the
//!   status line, whole status lines, newlines, runs of one byte), pushed in any chunking, is
//!   decoded after every chunk exactly as a reference that sees all bytes so far at once
//!   decodes it, and the reply (or the error) does not depend on the chunking.
//!   `partial_output` is what has arrived.
//! - A reply as the guest prints it (output, then `\n<nonce> <status>\n`) decodes to exactly
//!   that output and status, whatever the output's bytes and wherever the reads split it.
//!
//! The nonce is random per frame, so raw bytes from the fuzzer never contain it by chance: the
//! framing pieces are how the fuzzer reaches the status-line parsing at all.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ntd_core::machine::qemu::frame::{Frame, Framing, Reply};

/// The longest status text the decoder waits for before calling the line malformed: `%d` of
/// any `i32` is at most 11 bytes, and the decoder gives up after 16 without a newline.
const MAX_STATUS_LEN: usize = 16;

/// Streams built from pieces are cut to this length.
const MAX_STREAM: usize = 1 << 16;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any stream, checked against the reference.
    Stream { pieces: Vec<Piece>, cuts: Vec<u16> },
    /// A well-formed reply followed by whatever the guest prints next.
    Reply { output: Vec<u8>, status: i32, after: Vec<u8>, cuts: Vec<u16> },
}

#[derive(Debug, Arbitrary)]
enum Piece {
    Bytes(Vec<u8>),
    /// `\n<nonce> `, without a status.
    Terminator,
    /// `\n<nonce> <status>\n`.
    StatusLine(i32),
    Newline,
    /// `count` times `byte`: long status texts (`0000…7` is an `i32` that `%d` never prints).
    Run {
        byte: u8,
        count: u8,
    },
}

/// What a decoder has made of the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pending,
    /// The reply, and the length of the stream up to the end of its status line.
    Complete(Reply, usize),
    Malformed,
}

/// The decoder's contract, over all bytes received so far: the reply ends at the first
/// `\n<nonce> `; the status is the text up to the next newline, as an `i32`; a status line
/// longer than [`MAX_STATUS_LEN`] is malformed whether or not its newline has arrived yet.
///
/// Computed once for the whole stream; [`Reference::after`] answers for any prefix, since the
/// first terminator and newline in a prefix are the stream's, if they fit in it.
struct Reference<'a> {
    stream: &'a [u8],
    /// Where the first terminator starts and its status text starts.
    status_line: Option<(usize, usize)>,
    /// The first newline after the terminator.
    newline: Option<usize>,
}

impl<'a> Reference<'a> {
    fn new(stream: &'a [u8], terminator: &[u8]) -> Reference<'a> {
        let status_line = find(stream, terminator).map(|at| (at, at + terminator.len()));
        let newline =
            status_line.and_then(|(_, start)| stream[start..].iter().position(|&b| b == b'\n').map(|n| start + n));
        Reference { stream, status_line, newline }
    }

    /// The outcome once the first `end` bytes have arrived.
    fn after(&self, end: usize) -> Outcome {
        let Some((at, start)) = self.status_line.filter(|&(_, start)| start <= end) else {
            return Outcome::Pending;
        };
        match self.newline.filter(|&newline| newline < end) {
            Some(newline) if newline - start <= MAX_STATUS_LEN => {
                let text = &self.stream[start..newline];
                match std::str::from_utf8(text).ok().and_then(|s| s.parse::<i32>().ok()) {
                    Some(status) => {
                        Outcome::Complete(Reply { status, output: self.stream[..at].to_vec() }, newline + 1)
                    }
                    None => Outcome::Malformed,
                }
            }
            Some(_) => Outcome::Malformed,
            None if end - start > MAX_STATUS_LEN => Outcome::Malformed,
            None => Outcome::Pending,
        }
    }

    /// What of the output has arrived after `end` bytes: everything, until the terminator has.
    fn partial_output(&self, end: usize) -> &'a [u8] {
        match self.status_line {
            Some((at, start)) if start <= end => &self.stream[..at],
            _ => &self.stream[..end],
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Chunk boundaries from the fuzzer's cut points; repeated cuts give empty chunks.
fn chunk_ends(len: usize, cuts: &[u16]) -> Vec<usize> {
    let mut ends: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (len + 1)).collect();
    ends.sort_unstable();
    ends.push(len);
    ends
}

/// Push the stream in the chunks `cuts` gives, checking each step against the reference;
/// returns the outcome and how many bytes were pushed.
fn decode_in_chunks(frame: &Frame, reference: &Reference<'_>, cuts: &[u16]) -> (Outcome, usize) {
    let stream = reference.stream;
    let mut decoder = frame.decoder();
    let mut start = 0;
    for end in chunk_ends(stream.len(), cuts) {
        let expected = reference.after(end);
        match decoder.push(&stream[start..end]) {
            Ok(None) => {
                assert_eq!(expected, Outcome::Pending, "pending after {end} bytes");
                // The whole of it at the end; its length and its last bytes at each step, which
                // is enough to see anything lost or moved and keeps long streams fast.
                let partial = decoder.partial_output();
                let expected = reference.partial_output(end);
                assert_eq!(partial.len(), expected.len(), "partial output after {end} bytes");
                let tail = partial.len().saturating_sub(32);
                assert_eq!(partial[tail..], expected[tail..], "partial output after {end} bytes");
                if end == stream.len() {
                    assert_eq!(partial, expected);
                }
            }
            Ok(Some((reply, rest))) => {
                let Outcome::Complete(expected_reply, consumed) = expected else {
                    panic!("decoded {reply:?} after {end} bytes, the reference says {expected:?}");
                };
                assert_eq!(reply, expected_reply);
                assert_eq!(rest, &stream[consumed..end], "bytes after the status line");
                return (Outcome::Complete(reply, consumed), end);
            }
            Err(e) => {
                assert_eq!(expected, Outcome::Malformed, "error {e} after {end} bytes");
                return (Outcome::Malformed, end);
            }
        }
        start = end;
    }
    (Outcome::Pending, stream.len())
}

/// Decode `stream` in one push and in the given chunks; both must agree with the reference and
/// with each other. Returns the chunked outcome.
fn check(frame: &Frame, terminator: &[u8], stream: &[u8], cuts: &[u16]) -> Outcome {
    let reference = Reference::new(stream, terminator);
    let whole = reference.after(stream.len());
    let (chunked, pushed) = decode_in_chunks(frame, &reference, cuts);
    let (one_push, _) = decode_in_chunks(frame, &reference, &[]);
    assert_eq!(one_push, whole);
    match (&chunked, &whole) {
        // The same reply; the chunked decoder was given fewer bytes after it.
        (Outcome::Complete(a, consumed), Outcome::Complete(b, _)) => {
            assert_eq!(a, b, "the reply depends on the chunking");
            assert!(*consumed <= pushed);
        }
        _ => assert_eq!(chunked, whole, "the outcome depends on the chunking"),
    }
    chunked
}

fuzz_target!(|input: Input| {
    let Ok(frame) = Frame::new("true", Framing::Port, None, None) else {
        panic!("a command without NUL is framed");
    };
    let status_line = frame.reply_for(b"", 0);
    let terminator = status_line.strip_suffix(b"0\n").expect("a status line ends in the status");
    assert!(terminator.starts_with(b"\n") && terminator.ends_with(b" "));

    match input {
        Input::Stream { pieces, cuts } => {
            let mut stream = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Bytes(bytes) => stream.extend_from_slice(&bytes),
                    Piece::Terminator => stream.extend_from_slice(terminator),
                    Piece::StatusLine(status) => stream.extend_from_slice(&frame.reply_for(b"", status)),
                    Piece::Newline => stream.push(b'\n'),
                    Piece::Run { byte, count } => stream.extend(std::iter::repeat_n(byte, count.into())),
                }
            }
            // Long enough for every chunking of a status line, short enough to stay fast.
            stream.truncate(MAX_STREAM);
            check(&frame, terminator, &stream, &cuts);
        }
        Input::Reply { output, status, after, cuts } => {
            let mut stream = frame.reply_for(&output, status);
            let reply_len = stream.len();
            stream.extend_from_slice(&after);
            let outcome = check(&frame, terminator, &stream, &cuts);
            // Output that happens to contain the terminator ends the reply early, by design;
            // the fuzzer cannot produce it (the nonce is random), but say so rather than assume.
            if find(&output, terminator).is_none() {
                assert_eq!(outcome, Outcome::Complete(Reply { status, output }, reply_len));
            }
        }
    }
});
