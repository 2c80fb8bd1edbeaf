//! The terminal's live status line: what each machine is doing while it takes a while.
//!
//! A boot or a wait can take minutes, and the log shows nothing between the block's header and
//! its `finished` line. On a terminal, once a machine's block has been open for
//! [`SHOW_AFTER`], one line under the log says, per machine, what it waits for, for how long,
//! and its limit (the method call's timeout):
//!
//! ```text
//! subtest: boot › server: waiting for unit nginx.service (12 s of 900 s) · client: must succeed: curl … (3 s)
//! ```
//!
//! The line is redrawn in place (`\r`, erase line) a few times a second, erased before every
//! log line and drawn again after it, so the log itself is unchanged. It is only drawn where
//! stderr is a terminal, `NO_COLOR` is unset and `TERM` is not `dumb`: a CI log, a pipe or a
//! file gets exactly the lines it always got.

use std::time::{Duration, Instant};

use super::sink::Block;

/// How long a block is open before the status line shows it.
pub const SHOW_AFTER: Duration = Duration::from_secs(2);

/// How often the line is redrawn.
pub const TICK: Duration = Duration::from_millis(250);

/// Erase the current terminal line and go back to its start.
pub const ERASE: &str = "\r\x1b[K";

/// One open block.
#[derive(Debug)]
struct Activity {
    id: u64,
    machine: Option<String>,
    what: String,
    subtest: Option<String>,
    started: Instant,
    limit: Option<Duration>,
}

/// What one machine is doing: its innermost open block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The machine.
    pub machine: String,
    /// The block's message, on one line.
    pub what: String,
    /// How long the block has been open.
    pub elapsed: Duration,
    /// The method call's timeout, if it has one.
    pub limit: Option<Duration>,
}

/// The open blocks, and what the line shows now.
#[derive(Debug, Default)]
pub struct Status {
    open: Vec<Activity>,
    next_id: u64,
    /// The text on the screen now, if any.
    drawn: Option<String>,
}

impl Status {
    /// A block opened at `now`; returns its id for [`Status::close`].
    pub fn open(&mut self, block: &Block, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.open.push(Activity {
            id,
            machine: block.machine.clone(),
            what: one_line(&block.message),
            subtest: block.subtest.clone(),
            started: now,
            limit: block.limit,
        });
        id
    }

    /// The block `id` closed.
    pub fn close(&mut self, id: u64) {
        self.open.retain(|activity| activity.id != id);
    }

    /// Per machine, its innermost block (the last opened) at `now`, in the order the machines
    /// got busy.
    pub fn busy(&self, now: Instant) -> Vec<Busy> {
        let mut busy: Vec<Busy> = Vec::new();
        for activity in &self.open {
            let Some(machine) = &activity.machine else { continue };
            let entry = Busy {
                machine: machine.clone(),
                what: activity.what.clone(),
                elapsed: now.saturating_duration_since(activity.started),
                limit: activity.limit,
            };
            match busy.iter_mut().find(|b| b.machine == *machine) {
                Some(slot) => *slot = entry,
                None => busy.push(entry),
            }
        }
        busy
    }

    /// The innermost open subtest's name.
    pub fn subtest(&self) -> Option<&str> {
        self.open.iter().rev().find_map(|a| a.subtest.as_deref())
    }

    /// The line for `now`, at most `width` characters; `None` when no machine's block has
    /// been open for [`SHOW_AFTER`].
    pub fn text(&self, now: Instant, width: usize) -> Option<String> {
        let mut shown = self.busy(now);
        shown.retain(|b| b.elapsed >= SHOW_AFTER);
        if shown.is_empty() {
            return None;
        }
        let parts: Vec<String> = shown.iter().map(|b| format!("{}: {} ({})", b.machine, b.what, b.time())).collect();
        let mut text = parts.join(" · ");
        if let Some(subtest) = self.subtest() {
            text = format!("subtest: {subtest} › {text}");
        }
        Some(truncate(&text, width))
    }

    /// The bytes that bring the screen from what is drawn to `next` (empty when nothing
    /// changes), and remember `next` as drawn.
    pub fn redraw(&mut self, next: Option<String>) -> String {
        if next == self.drawn {
            return String::new();
        }
        let bytes = match &next {
            Some(text) => format!("{ERASE}{text}"),
            None => ERASE.to_owned(),
        };
        self.drawn = next;
        bytes
    }

    /// Whether something is on the screen (a log line must erase it first).
    pub fn is_drawn(&self) -> bool {
        self.drawn.is_some()
    }

    /// Forget what is drawn (after the caller erased it).
    pub fn erased(&mut self) {
        self.drawn = None;
    }
}

impl Busy {
    /// `12 s of 900 s`, or `12 s` without a limit.
    pub fn time(&self) -> String {
        let elapsed = self.elapsed.as_secs();
        match self.limit {
            Some(limit) => format!("{elapsed} s of {} s", limit.as_secs()),
            None => format!("{elapsed} s"),
        }
    }
}

/// `text` fit for one terminal line: its first line (`…` where more follow), control
/// characters as spaces (a multi-line `succeed("""…""")` must not break the line in two).
fn one_line(text: &str) -> String {
    let mut lines = text.trim().lines();
    let first = lines.next().unwrap_or_default().trim_end();
    let mut line: String = first.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if lines.next().is_some() {
        line.push_str(" …");
    }
    line
}

/// At most `width` characters of `text`, `…` marking a cut.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Whether this process should draw the status line: stderr is a terminal, `NO_COLOR` is unset
/// and `TERM` is not `dumb`.
pub fn wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var_os("TERM").is_none_or(|term| term != "dumb")
}

/// The terminal's width in columns (80 when it cannot be told).
pub fn terminal_width() -> usize {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a `winsize` into the pointer it is given, which is valid.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 { usize::from(size.ws_col) } else { 80 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(machine: Option<&str>, message: &str, limit: Option<u64>) -> Block {
        Block {
            message: message.to_owned(),
            machine: machine.map(str::to_owned),
            attributes: Vec::new(),
            subtest: None,
            limit: limit.map(Duration::from_secs),
        }
    }

    #[test]
    fn shows_each_machines_innermost_block_once_it_lasts() {
        let t0 = Instant::now();
        let mut status = Status::default();
        let mut subtest = block(None, "subtest: boot", None);
        subtest.subtest = Some("boot".to_owned());
        status.open(&subtest, t0);
        let unit = status.open(&block(Some("server"), "waiting for unit nginx.service", Some(900)), t0);
        let booting = status.open(&block(Some("server"), "waiting for the VM to finish booting", Some(900)), t0);
        status.open(&block(Some("client"), "must succeed: curl server", None), t0 + Duration::from_secs(1));
        assert_eq!(status.text(t0 + Duration::from_secs(1), 200), None, "nothing lasts 2 s yet");
        assert_eq!(
            status.text(t0 + Duration::from_secs(2), 200).as_deref(),
            Some("subtest: boot › server: waiting for the VM to finish booting (2 s of 900 s)")
        );
        status.close(booting);
        assert_eq!(
            status.text(t0 + Duration::from_secs(12), 200).as_deref(),
            Some(
                "subtest: boot › server: waiting for unit nginx.service (12 s of 900 s) · client: must succeed: curl server (11 s)"
            )
        );
        status.close(unit);
        let short = status.text(t0 + Duration::from_secs(12), 30).expect("client still shown");
        assert_eq!(short.chars().count(), 30);
        assert!(short.ends_with('…'), "{short}");
    }

    #[test]
    fn a_multi_line_command_is_shown_on_one_line() {
        let t0 = Instant::now();
        let mut status = Status::default();
        status.open(&block(Some("m"), "must succeed: \n  set -x\n  curl\x1b[31m x\n", None), t0);
        assert_eq!(status.text(t0 + Duration::from_secs(2), 200).as_deref(), Some("m: must succeed: … (2 s)"));
        status.open(&block(Some("n"), "waiting for\tx\x1b[0m", None), t0);
        let text = status.text(t0 + Duration::from_secs(2), 200).expect("shown");
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }

    #[test]
    fn redraws_only_what_changed_and_erases_at_the_end() {
        let mut status = Status::default();
        assert_eq!(status.redraw(None), "");
        assert_eq!(status.redraw(Some("a (2 s)".into())), "\r\x1b[Ka (2 s)");
        assert!(status.is_drawn());
        assert_eq!(status.redraw(Some("a (2 s)".into())), "");
        assert_eq!(status.redraw(None), "\r\x1b[K");
        assert!(!status.is_drawn());
    }
}
