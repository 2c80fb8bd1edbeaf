//! Probes of the backdoor shell on the console: lines that make the shell print a fresh nonce.
//!
//! The shell reads a line only once the command line before it has ended, so a probe's answer
//! comes after the reply of every command sent before it. That makes a probe the console's
//! clock: its answer arriving before a reply's end proves that end lost (QEMU drops console
//! bytes the driver does not read in time, end markers included), and skipping everything up
//! to an answer brings the console back in step after a reply nobody reads. How the shell
//! uses them is in [`super::shell`].
//!
//! A probe's answer can be dropped too. Answers come in the order the probes were sent, so
//! the answer of a later probe settles every earlier one, and a lost answer is made up for by
//! sending another probe.

use memchr::memmem;

use super::frame;

/// The most probes outstanding at once. A probe waits in the guest's console input until the
/// shell reads it; the kernel's buffer for that input is a few KiB, so probes are never
/// sent without end. (On the console a command's output is printed only once it has ended,
/// so one probe while it runs and one per later gap is the rule; this bound is for safety.)
const MAX_OUTSTANDING: usize = 8;

/// The length of an answer: `\n`, the nonce, ` s\n`. An answer may straddle two chunks, so
/// `find_in` may count up to this many bytes of it before the chunk it ends in.
pub(super) const ANSWER_LEN: usize = 1 + 16 + 3;

/// One probe: the answer the shell prints for it.
#[derive(Debug)]
struct Probe {
    /// `\n<nonce> s\n`.
    answer: Vec<u8>,
    /// The last bytes searched, shorter than the answer: they may hold its start.
    tail: Vec<u8>,
}

impl Probe {
    /// Search the next bytes of the console for the answer: where in `data` it ends.
    fn find_in(&mut self, data: &[u8]) -> Option<usize> {
        let straddle = self.answer.len() - 1;
        // First an answer that starts in the tail: the tail and the head of `data` only, so
        // that a big chunk is not copied.
        if !self.tail.is_empty() {
            let mut window = std::mem::take(&mut self.tail);
            let carried = window.len();
            window.extend_from_slice(&data[..data.len().min(straddle)]);
            if let Some(at) = memmem::find(&window, &self.answer) {
                // The tail is shorter than the answer, so the answer ends inside `data`.
                return Some(at + self.answer.len() - carried);
            }
            if data.len() < straddle {
                // All of `data` is in the window: keep the window's end.
                self.tail = window.split_off(window.len().saturating_sub(straddle));
                return None;
            }
        }
        if let Some(at) = memmem::find(data, &self.answer) {
            return Some(at + self.answer.len());
        }
        self.tail = data[data.len().saturating_sub(straddle)..].to_vec();
        None
    }
}

/// The probes sent and not answered yet, oldest first.
#[derive(Debug, Default)]
pub(super) struct Probes {
    outstanding: Vec<Probe>,
    /// The count of bytes received when the last probe was sent.
    received_at_last: u64,
    /// How many probes were ever sent (for tests).
    #[cfg(test)]
    sent: u64,
}

impl Probes {
    /// No answer is due.
    pub(super) fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// How many probes were ever sent.
    #[cfg(test)]
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// Another probe may go out, whatever the console did (the bound alone).
    pub(super) fn has_room(&self) -> bool {
        self.outstanding.len() < MAX_OUTSTANDING
    }

    /// Forget what was searched: the next bytes given are all that may hold an answer's
    /// start (they follow a reply's end, or are searched again).
    pub(super) fn forget_tails(&mut self) {
        for probe in &mut self.outstanding {
            probe.tail.clear();
        }
    }

    /// Whether another probe may be sent now that the console has been silent for a while,
    /// `received` bytes having arrived in all. Only when none is outstanding, or when bytes
    /// arrived since the last one: the console drops bytes only when its socket is full, and
    /// a full socket is read after the driver's pause, so whenever an answer was dropped,
    /// bytes arrived after its probe was sent. A probe whose answer is merely slow (the
    /// command still runs) gets no company.
    pub(super) fn may_send(&self, received: u64) -> bool {
        self.outstanding.is_empty() || (received != self.received_at_last && self.has_room())
    }

    /// A new probe, outstanding from now on; returns the line to send for it.
    pub(super) fn send(&mut self, received: u64) -> Vec<u8> {
        let nonce = frame::new_token();
        let answer = format!("\n{nonce} s\n").into_bytes();
        debug_assert_eq!(answer.len(), ANSWER_LEN);
        self.outstanding.push(Probe { answer, tail: Vec::new() });
        self.received_at_last = received;
        #[cfg(test)]
        {
            self.sent += 1;
        }
        format!("printf '\\n%s s\\n' {nonce}\n").into_bytes()
    }

    /// Search the next bytes of the console for an answer: where in `data` the first one
    /// found ends. That probe and every earlier one are answered (or their answers lost)
    /// from then on.
    pub(super) fn find_in(&mut self, data: &[u8]) -> Option<usize> {
        let (index, after) =
            self.outstanding.iter_mut().enumerate().find_map(|(index, probe)| Some((index, probe.find_in(data)?)))?;
        self.outstanding.drain(..=index);
        // Later answers come after this one: nothing before it is theirs.
        self.forget_tails();
        Some(after)
    }

    /// Remove the answers of the outstanding probes from `data`, wherever they are, and
    /// forget the probes (a new shell answered what the old one left unread).
    pub(super) fn strip_from(&mut self, data: &mut Vec<u8>) {
        for probe in self.outstanding.drain(..) {
            if let Some(at) = memmem::find(data, &probe.answer) {
                data.drain(at..at + probe.answer.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of the probe whose line is `line`.
    fn answer_of(line: &[u8]) -> Vec<u8> {
        let nonce = String::from_utf8_lossy(line).split_whitespace().last().expect("a nonce").to_owned();
        format!("\n{nonce} s\n").into_bytes()
    }

    fn one_probe(answer: &[u8]) -> Probes {
        Probes { outstanding: vec![Probe { answer: answer.to_vec(), tail: Vec::new() }], ..Probes::default() }
    }

    /// Bytes searched twice (what follows a reply's end was searched with the reply) match
    /// only once the tails are forgotten: an answer cut short at the chunk's end is not taken
    /// for a whole one.
    #[test]
    fn bytes_searched_again_after_forgetting_the_tails_match_only_a_whole_answer() {
        let mut probes = Probes::default();
        let answer = answer_of(&probes.send(0));
        let mut chunk = b"reply".to_vec();
        chunk.extend_from_slice(&answer[..answer.len() - 1]);
        assert_eq!(probes.find_in(&chunk), None);
        probes.forget_tails();
        let rest = &chunk[5..];
        assert_eq!(probes.find_in(rest), None, "the answer's last byte has not come");
        assert_eq!(probes.find_in(b"\n"), Some(1));
    }

    #[test]
    fn the_line_is_a_printf_of_the_answer() {
        let mut probes = Probes::default();
        let line = probes.send(0);
        let answer = answer_of(&line);
        let printed = std::process::Command::new("bash")
            .args(["--norc", "-c"])
            .arg(String::from_utf8_lossy(&line).as_ref())
            .output();
        assert_eq!(printed.expect("bash").stdout, answer);
    }

    /// The answer is found where it ends, however the stream is cut, in one chunk or two or
    /// byte by byte, with output before and after it.
    #[test]
    fn an_answer_is_found_across_any_cut() {
        let mut probes = Probes::default();
        let answer = answer_of(&probes.send(0));
        let mut stream = b"output of the command\n".repeat(3);
        stream.extend_from_slice(&answer);
        let end = stream.len();
        stream.extend_from_slice(b"later");
        for cut in 0..=stream.len() {
            let mut probes = one_probe(&answer);
            let found = match probes.find_in(&stream[..cut]) {
                Some(after) => Some(after),
                None => probes.find_in(&stream[cut..]).map(|after| cut + after),
            };
            assert_eq!(found, Some(end), "cut at {cut}");
            assert!(probes.is_empty());
        }
        let mut probes = one_probe(&answer);
        let byte_by_byte =
            stream.iter().enumerate().find_map(|(at, byte)| probes.find_in(&[*byte]).map(|after| at + after));
        assert_eq!(byte_by_byte, Some(end));
    }

    /// A later probe's answer settles the earlier probes whose answers were lost.
    #[test]
    fn a_later_answer_settles_the_earlier_probes() {
        let mut probes = Probes::default();
        let _lost = probes.send(0);
        let second = answer_of(&probes.send(10));
        let third = answer_of(&probes.send(20));
        let mut data = b"xx".to_vec();
        data.extend_from_slice(&second);
        data.extend_from_slice(b"yy");
        assert_eq!(probes.find_in(&data), Some(2 + second.len()));
        assert_eq!(probes.outstanding.len(), 1, "the third is still due");
        assert_eq!(probes.find_in(&third), Some(third.len()));
        assert!(probes.is_empty());
    }

    /// Probes are sent again only after bytes arrived, and never without end.
    #[test]
    fn another_probe_only_after_bytes_and_within_the_bound() {
        let mut probes = Probes::default();
        assert!(probes.may_send(0));
        probes.send(0);
        assert!(!probes.may_send(0), "the command may just be slow");
        assert!(probes.may_send(1));
        for received in 1..MAX_OUTSTANDING as u64 {
            probes.send(received);
        }
        assert!(!probes.may_send(1000));
    }

    #[test]
    fn answers_a_new_shell_gave_are_stripped() {
        let mut probes = Probes::default();
        let first = answer_of(&probes.send(0));
        let second = answer_of(&probes.send(1));
        let mut data = [b"a".as_slice(), &first, b"b", &second, b"c"].concat();
        probes.strip_from(&mut data);
        assert_eq!(data, b"abc");
        assert!(probes.is_empty());
    }
}
