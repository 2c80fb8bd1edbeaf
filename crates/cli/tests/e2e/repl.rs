//! The interactive REPL (`nixos-test-driver --interactive`), driven as a user drives it: in a
//! real terminal (tmux), typing commands, pressing Ctrl-C during a wait and Ctrl-D to leave.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{Scenario, Tier, live_processes_mentioning, py_env};

/// A tmux server of the test's own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A detached session running `command` in `cwd`; the pane stays open after it ends.
    fn start(cwd: &Path, command: &str) -> Tmux {
        let tmux = Tmux { socket: format!("ntd-e2e-{}", std::process::id()) };
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
    fn send(&self, keys: &[&str]) {
        let output = self.run(&["send-keys", "-t", "0"], keys);
        assert!(output.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Type a line of Python and press Enter.
    fn type_line(&self, line: &str) {
        let output = self.run(&["send-keys", "-t", "0", "-l"], &[line]);
        assert!(output.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&output.stderr));
        self.send(&["Enter"]);
    }

    /// The pane's whole text, scrollback included, with tmux's line wrapping undone.
    fn screen(&self) -> String {
        let output = self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "0"], &[]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The pid of the shell running the pane's command (its command line names the scenario).
    fn pane_pid(&self) -> i32 {
        let output = self.run(&["display-message", "-p", "-t", "0", "#{pane_pid}"], &[]);
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("tmux pane pid")
    }

    /// Wait until the pane shows `needle`, failing with the pane's text after `limit`.
    fn wait_for(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return;
            }
            assert!(start.elapsed() < limit, "the terminal never showed {needle:?}:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"], &[]);
    }
}

/// Which prompt the driver offers: Python's own console (ptpython is not installed in the
/// driver's Python) or ptpython (installed in the wheel's venv, put on `PYTHONPATH`).
#[derive(Clone, Copy, PartialEq)]
enum Prompt {
    Console,
    Ptpython,
}

#[test]
fn the_console_repl_runs_commands_survives_ctrl_c_and_shuts_down_on_ctrl_d() {
    repl_session(Prompt::Console);
}

#[test]
fn the_ptpython_repl_runs_commands_survives_ctrl_c_and_shuts_down_on_ctrl_d() {
    repl_session(Prompt::Ptpython);
}

fn repl_session(prompt: Prompt) {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let script = scenario.write("test.py", "start_all()\nprint('the test ' + machine.succeed('echo script ran'))\n");
    let mut driver = scenario.command(&["--interactive"]);
    if prompt == Prompt::Ptpython {
        driver.env("PYTHONPATH", site_packages(&py_env()));
    }
    driver.arg(&script).arg("--start-scripts").arg(scenario.path().join("bin/run-machine-vm"));
    // The driver's command line for the terminal, with the environment the harness set.
    // (`env` takes its `-u` options before the assignments.)
    let mut unset = String::new();
    let mut set = String::new();
    for (key, value) in driver.get_envs() {
        match value {
            Some(value) => set += &format!(" {}={}", key.to_string_lossy(), shell_quote(&value.to_string_lossy())),
            None => unset += &format!(" -u {}", key.to_string_lossy()),
        }
    }
    let mut line = format!("env{unset}{set}");
    line += &format!(" {}", shell_quote(&driver.get_program().to_string_lossy()));
    for arg in driver.get_args() {
        line += &format!(" {}", shell_quote(&arg.to_string_lossy()));
    }
    line += "; echo driver exited with status $?; sleep 600";

    let tmux = Tmux::start(scenario.path(), &line);
    // The driver, QEMU and its helpers: what runs under the scenario directory, but tmux and the
    // pane's shell (their command lines name it too).
    let needle = scenario.path().to_string_lossy().into_owned();
    let shell = tmux.pane_pid();
    let running = || -> Vec<i32> {
        live_processes_mentioning(&needle).into_iter().filter(|pid| *pid != shell && !has_name(*pid, "tmux")).collect()
    };
    tmux.wait_for(">>>", Duration::from_secs(30));

    // The first command boots the machine.
    tmux.type_line("machine.succeed('echo hello from the ' + 'guest')");
    tmux.wait_for("'hello from the guest\\n'", Duration::from_secs(120));

    // Ctrl-C interrupts a wait; the machine and the REPL go on.
    tmux.type_line("machine.wait_until_succeeds('test -e /nonexistent')");
    tmux.wait_for("waiting for success: test -e /nonexistent", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    tmux.send(&["C-c"]);
    tmux.wait_for("KeyboardInterrupt", Duration::from_secs(10));
    assert!(!tmux.screen().contains("driver exited"), "Ctrl-C ended the REPL:\n{}", tmux.screen());
    assert!(
        running().iter().any(|pid| has_name(*pid, "qemu-system")),
        "Ctrl-C stopped the machine:\n{}",
        tmux.screen()
    );
    tmux.type_line("machine.succeed('echo still ' + 'alive')");
    tmux.wait_for("'still alive\\n'", Duration::from_secs(30));

    // test_script() runs the test script in the session.
    tmux.type_line("test_script()");
    tmux.wait_for("the test script ran", Duration::from_secs(30));

    // Ctrl-D leaves (ptpython asks first): the machine is stopped and the history is kept.
    tmux.send(&["C-d"]);
    if prompt == Prompt::Ptpython {
        tmux.wait_for("Do you really want to exit?", Duration::from_secs(10));
        tmux.send(&["y"]);
    }
    tmux.wait_for("driver exited with status 0", Duration::from_secs(60));
    let history =
        std::fs::read_to_string(scenario.path().join(".nixos-test-history")).expect("read .nixos-test-history");
    // (ptpython's history file marks each entry with `+`.)
    assert!(history.contains("machine.wait_until_succeeds('test -e /nonexistent')\n"), "{history}");
    assert!(history.contains("test_script()\n"), "{history}");
    if prompt == Prompt::Ptpython {
        assert!(history.contains("+test_script()\n"), "not ptpython's history: {history}");
    } else {
        assert!(tmux.screen().contains("Traceback (most recent call last):"), "not Python's console");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running after the REPL ended: {:?}\n{}",
            describe(&running()),
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each process's pid, name and command line, for a failure message.
fn describe(pids: &[i32]) -> Vec<String> {
    let read = |pid: i32, file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    pids.iter()
        .map(|&pid| format!("{pid} {}: {}", read(pid, "comm").trim(), read(pid, "cmdline").replace('\0', " ")))
        .collect()
}

/// Whether the process's name (`/proc/<pid>/comm`) starts with `prefix`.
fn has_name(pid: i32, prefix: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.starts_with(prefix))
}

/// The venv's site-packages directory.
fn site_packages(env: &Path) -> String {
    let output = Command::new(env.join("bin/python"))
        .args(["-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
        .output()
        .expect("run the venv's python");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
