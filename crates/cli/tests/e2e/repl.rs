//! The interactive REPL (`nixos-test-driver --interactive`), driven as a user drives it: in a
//! real terminal (tmux), typing commands, pressing Ctrl-C during a wait and Ctrl-D to leave.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::scenario::{describe, has_name};
use crate::common::tmux::{Tmux, shell_line};
use crate::harness::{Scenario, Tier, py_env};

/// Which prompt the driver offers: Python's own console (ptpython is not installed in the
/// driver's Python) or ptpython's IPython flavour (both installed in the wheel's venv, put on
/// `PYTHONPATH`), what upstream embeds.
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
    let line = shell_line(&driver, "; echo driver exited with status $?; sleep 600");

    let tmux = Tmux::start(scenario.path(), &line);
    // The driver, QEMU and its helpers.
    let running = || tmux.processes_naming(scenario.path());
    // ptpython's IPython flavour, as upstream embeds it (the venv has both).
    tmux.wait_for(if prompt == Prompt::Ptpython { "In [1]:" } else { ">>>" }, Duration::from_secs(30));
    if prompt == Prompt::Ptpython {
        assert!(tmux.screen().contains("IPython"), "not ptpython's IPython flavour:\n{}", tmux.screen());
    }

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

    // Ctrl-C stops a command in the guest too: the shell answers at once and the command is
    // gone from the guest's process table.
    tmux.type_line("machine.succeed('sleep 600; echo never' + 'printed')");
    tmux.wait_for("must succeed: sleep 600", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    tmux.send(&["C-c"]);
    tmux.wait_for("was interrupted: killed", Duration::from_secs(10));
    tmux.type_line(
        "import time; t = time.monotonic(); machine.succeed('true'); print('answered in', 'under a second' if \
         time.monotonic() - t < 1 else 'too long'); print('sleepers:', machine.succeed('ps').count('sleep 600'))",
    );
    tmux.wait_for("sleepers: 0", Duration::from_secs(30));
    assert!(tmux.screen().contains("answered in under a second"), "{}", tmux.screen());
    assert!(!tmux.screen().contains("'neverprinted\\n'"), "{}", tmux.screen());

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

/// The venv's site-packages directory.
fn site_packages(env: &Path) -> String {
    let output = Command::new(env.join("bin/python"))
        .args(["-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
        .output()
        .expect("run the venv's python");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
