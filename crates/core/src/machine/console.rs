//! A machine's console: QEMU's serial console (`-serial stdio`), a container's journal, read
//! line by line into the log.
//!
//! As upstream (`process_serial_output`): every line has `\r` removed and trailing whitespace
//! stripped, goes into the machine's console log (`get_console_log`) and is logged as
//! `name # line`. Unlike upstream, terminal escape sequences (colours, cursor movement from
//! systemd or a boot menu) are removed with a real VT parser, and undecodable bytes are dropped.
//! A machine kind may name lines that mean its guest can no longer answer (a kernel panic):
//! the console publishes them as faults, which commands in flight watch.

use std::sync::Mutex;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// A line longer than this is split: a guest printing without newlines must not grow memory.
const MAX_LINE: usize = 16 * 1024;

/// Splits a byte stream into clean text lines.
pub struct LineSplitter {
    parser: vte::Parser,
    lines: LineCollector,
}

#[derive(Default)]
struct LineCollector {
    current: String,
    done: Vec<String>,
}

impl LineCollector {
    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.current);
        self.done.push(line.trim_end().to_owned());
    }
}

impl vte::Perform for LineCollector {
    fn print(&mut self, c: char) {
        // The parser turns invalid UTF-8 into U+FFFD; upstream ignores undecodable bytes.
        if c != char::REPLACEMENT_CHARACTER {
            self.current.push(c);
            if self.current.len() >= MAX_LINE {
                self.end_line();
            }
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => self.end_line(),
            b'\t' => self.current.push('\t'),
            // `\r`, bells, backspaces and other controls carry no text.
            _ => {}
        }
    }
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter { parser: vte::Parser::new(), lines: LineCollector::default() }
    }
}

impl LineSplitter {
    /// Feed bytes; returns the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.parser.advance(&mut self.lines, bytes);
        std::mem::take(&mut self.lines.done)
    }

    /// The unterminated last line, if any (at end of stream).
    pub fn finish(&mut self) -> Option<String> {
        if self.lines.current.is_empty() {
            return None;
        }
        self.lines.end_line();
        self.lines.done.pop()
    }
}

/// Says whether a console line means the guest can no longer answer, and describes it.
pub type FaultClassifier = fn(&str) -> Option<String>;

/// A machine's console log since its last start.
#[derive(Debug)]
pub struct Console {
    lines: Mutex<Vec<String>>,
    /// The number of lines so far; waiters watch it.
    count: watch::Sender<usize>,
    /// How many lines `wait_for_console_text` has consumed (upstream's shared queue).
    cursor: Mutex<usize>,
    /// Which lines are faults (none, for a kind that names none).
    classify: Option<FaultClassifier>,
    /// The last fault seen on the console, described; commands in flight watch it.
    fault: watch::Sender<Option<String>>,
    /// How many faults were seen, so that one between two commands is noticed too.
    fault_count: AtomicU64,
}

impl Default for Console {
    /// A console that sees no line as a fault.
    fn default() -> Self {
        Console::new(None)
    }
}

impl Console {
    /// An empty console; `classify` names the lines that are faults.
    pub fn new(classify: Option<FaultClassifier>) -> Console {
        Console {
            lines: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            cursor: Mutex::new(0),
            classify,
            fault: watch::Sender::new(None),
            fault_count: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        match self.lines.lock() {
            Ok(lines) => lines,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Forget everything (a new boot starts a new log, as upstream).
    pub fn clear(&self) {
        self.lock().clear();
        self.set_cursor(0);
        self.count.send_replace(0);
        self.fault.send_replace(None);
        self.fault_count.store(0, Ordering::SeqCst);
    }

    /// The first line `wait_for_console_text` has not consumed yet. Upstream's waits take
    /// lines from one queue, so a line that ended one wait is not seen by the next.
    pub fn cursor(&self) -> usize {
        match self.cursor.lock() {
            Ok(cursor) => *cursor,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Mark lines before `index` as consumed.
    pub fn set_cursor(&self, index: usize) {
        match self.cursor.lock() {
            Ok(mut cursor) => *cursor = index,
            Err(poisoned) => *poisoned.into_inner() = index,
        }
    }

    /// Add a line (the pumps do; tests may).
    pub fn push(&self, line: String) {
        if let Some(fault) = self.classify.and_then(|classify| classify(&line)) {
            self.fault_count.fetch_add(1, Ordering::SeqCst);
            self.fault.send_replace(Some(fault));
        }
        let mut lines = self.lock();
        lines.push(line);
        let n = lines.len();
        drop(lines);
        self.count.send_replace(n);
    }

    /// All lines, joined by `\n` (upstream's `get_console_log`).
    pub fn text(&self) -> String {
        self.lock().join("\n")
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lock();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Lines from index `from` on.
    pub fn lines_from(&self, from: usize) -> Vec<String> {
        let lines = self.lock();
        lines.get(from..).map(<[String]>::to_vec).unwrap_or_default()
    }

    /// A receiver that changes whenever a line arrives.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// How many fault lines have arrived since the machine started.
    pub fn fault_count(&self) -> u64 {
        self.fault_count.load(Ordering::SeqCst)
    }

    /// The last fault line, described, if any.
    pub fn last_fault(&self) -> Option<String> {
        self.fault.borrow().clone()
    }

    /// A receiver that changes whenever a fault line arrives.
    pub fn subscribe_faults(&self) -> watch::Receiver<Option<String>> {
        self.fault.subscribe()
    }
}

/// Call `line` with each line `reader` gives until it closes, undecodable bytes replaced:
/// unlike `AsyncBufReadExt::lines`, a byte that is not UTF-8 neither ends the reading nor
/// leaves the writer with a closed pipe (and SIGPIPE) for its next line.
pub async fn each_line(reader: impl AsyncRead + Unpin, mut line: impl FnMut(String)) {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                line(text.trim_end_matches(['\n', '\r']).to_owned());
            }
        }
    }
}

/// Read a console until it closes, giving `line` each of its lines as [`LineSplitter`] cleans
/// them (the last one too, unterminated); a read error ends it and is returned.
pub async fn pump_lines(mut reader: impl AsyncRead + Unpin, mut line: impl FnMut(String)) -> std::io::Result<()> {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 16 * 1024];
    let result = loop {
        match reader.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => splitter.push(&buf[..n]).into_iter().for_each(&mut line),
            Err(e) => break Err(e),
        }
    };
    if let Some(last) = splitter.finish() {
        line(last);
    }
    result
}

/// Log a console line as the machine's serial output (`machine # line`) and keep it.
pub fn serial_line(machine: &str, console: &Console, line: String) {
    crate::log::serial(machine, &line);
    console.push(line);
}

/// Read a console (QEMU's stdout) until it closes, logging each line as `machine # line`.
pub async fn pump(stdout: impl AsyncRead + Unpin, machine: String, console: std::sync::Arc<Console>) {
    let _ = pump_lines(stdout, |line| serial_line(&machine, &console, line)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes_and_carriage_returns() {
        let mut splitter = LineSplitter::default();
        let lines = splitter.push(b"\x1b[0;32m  OK  \x1b[0m] Started \x1b]0;title\x07unit.\r\n\x1b[?25lplain  \t \n");
        assert_eq!(lines, vec!["  OK  ] Started unit.", "plain"]);
    }

    #[test]
    fn lines_may_span_chunks_and_utf8_may_split() {
        let mut splitter = LineSplitter::default();
        let text = "héllo wörld\nsecond";
        let bytes = text.as_bytes();
        let mut lines = Vec::new();
        for b in bytes {
            lines.extend(splitter.push(std::slice::from_ref(b)));
        }
        assert_eq!(lines, vec!["héllo wörld"]);
        assert_eq!(splitter.finish().as_deref(), Some("second"));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn invalid_bytes_are_dropped() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"a\xffb\xc3\n"), vec!["ab"]);
    }

    #[test]
    fn long_lines_are_split() {
        let mut splitter = LineSplitter::default();
        let lines = splitter.push(&vec![b'x'; MAX_LINE * 2 + 5]);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
    }

    #[test]
    fn a_fault_line_is_published_and_a_new_boot_forgets_it() {
        fn panics(line: &str) -> Option<String> {
            line.starts_with("Kernel panic").then(|| format!("it panicked: {line}"))
        }
        let console = Console::new(Some(panics));
        let mut faults = console.subscribe_faults();
        console.push("booting".into());
        assert!(!faults.has_changed().unwrap_or(true));
        console.push("Kernel panic - not syncing: Attempted to kill init!".into());
        assert!(faults.has_changed().unwrap_or(false));
        assert_eq!(
            faults.borrow_and_update().as_deref(),
            Some("it panicked: Kernel panic - not syncing: Attempted to kill init!")
        );
        assert_eq!(console.fault_count(), 1);
        console.clear();
        assert!(faults.borrow_and_update().is_none());
    }

    #[test]
    fn console_keeps_lines_and_tail() {
        let console = Console::default();
        for i in 0..5 {
            console.push(format!("line {i}"));
        }
        assert_eq!(console.tail(2), vec!["line 3", "line 4"]);
        assert_eq!(console.text().lines().count(), 5);
        assert_eq!(*console.subscribe().borrow(), 5);
        console.clear();
        assert_eq!(console.text(), "");
    }
}
