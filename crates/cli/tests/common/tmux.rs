//! A real terminal for the REPL tests: a tmux server of the test's own, which the test types
//! into (`send-keys`) and reads back (`capture-pane`), as a user at a terminal would.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::scenario::{has_name, live_processes_mentioning};

/// A tmux server of the test's own (its own socket), killed when the test ends.
pub struct Tmux {
    socket: String,
    /// The session's directory, which its processes name.
    cwd: std::path::PathBuf,
}

impl Tmux {
    /// A detached session running `command` in `cwd`; the pane stays open after it ends. The
    /// server's socket is named after `cwd`, a scenario directory of its own.
    pub fn start(cwd: &Path, command: &str) -> Tmux {
        let name = cwd.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let tmux = Tmux { socket: format!("ntd-{name}-{}", std::process::id()), cwd: cwd.to_owned() };
        let output =
            tmux.run(&["new-session", "-d", "-x", "200", "-y", "50", "-c"], &[cwd.to_str().expect("utf-8"), command]);
        assert!(output.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&output.stderr));
        tmux
    }

    fn run(&self, args: &[&str], more: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .args(more)
            .output()
            .expect("run tmux (scripts/install-host-deps installs it)")
    }

    /// Type `keys` (tmux key names, e.g. "C-c"), each as one key press.
    pub fn send(&self, keys: &[&str]) {
        let output = self.run(&["send-keys", "-t", "0"], keys);
        assert!(output.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Type a line of Python and press Enter.
    pub fn type_line(&self, line: &str) {
        let output = self.run(&["send-keys", "-t", "0", "-l"], &[line]);
        assert!(output.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&output.stderr));
        self.send(&["Enter"]);
    }

    /// The pane's whole text, scrollback included, with tmux's line wrapping undone.
    pub fn screen(&self) -> String {
        let output = self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "0"], &[]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The pid of the shell running the pane's command (its command line names the scenario).
    pub fn pane_pid(&self) -> i32 {
        let output = self.run(&["display-message", "-p", "-t", "0", "#{pane_pid}"], &[]);
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("tmux pane pid")
    }

    /// Live processes that name `dir` (see [`live_processes_mentioning`]) but for tmux and
    /// the pane's shell, whose command lines name it too: the driver and what it started.
    pub fn processes_naming(&self, dir: &Path) -> Vec<i32> {
        let shell = self.pane_pid();
        live_processes_mentioning(&dir.to_string_lossy())
            .into_iter()
            .filter(|pid| *pid != shell && !has_name(*pid, "tmux"))
            .collect()
    }

    /// Wait until the pane shows `needle`, failing with the pane's text after `limit`.
    pub fn wait_for(&self, needle: &str, limit: Duration) {
        self.wait_for_count(needle, 1, limit);
    }

    /// Wait until the pane shows `needle` at least `count` times, failing with the pane's
    /// text after `limit`.
    pub fn wait_for_count(&self, needle: &str, count: usize, limit: Duration) {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.matches(needle).count() >= count {
                return;
            }
            assert!(start.elapsed() < limit, "the terminal never showed {needle:?} {count} time(s):\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    /// Kill the server, and give what ran in it (a driver the test left running when it
    /// failed) a moment to end before the scenario directory is removed.
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"], &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !live_processes_mentioning(&self.cwd.to_string_lossy()).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `command` as one shell command line, with the environment it was given (`env` takes its
/// `-u` options before the assignments), followed by `after`.
pub fn shell_line(command: &Command, after: &str) -> String {
    let mut unset = String::new();
    let mut set = String::new();
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => set += &format!(" {}={}", key.to_string_lossy(), shell_quote(&value.to_string_lossy())),
            None => unset += &format!(" -u {}", key.to_string_lossy()),
        }
    }
    let mut line = format!("env{unset}{set}");
    line += &format!(" {}", shell_quote(&command.get_program().to_string_lossy()));
    for arg in command.get_args() {
        line += &format!(" {}", shell_quote(&arg.to_string_lossy()));
    }
    line + after
}

/// Quote a word for the shell.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
