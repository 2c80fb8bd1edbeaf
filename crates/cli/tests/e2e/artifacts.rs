//! What a failed run leaves behind (issue 20): per running machine its screen, console and
//! journal tail, and the failed command's output, named after the machine and the failure;
//! named by the JUnit report and the log's last lines. And the live status line on a terminal.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use mock_collector::Protocol;

use crate::common::otlp::Collector;
use crate::harness::{DEBIAN_LIMIT, SMOKE_LIMIT, Scenario, Tier, repo_file};

/// The names of the files in `dir`.
fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read the output directory")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// Empty `dir` between two runs of one scenario.
fn clear(dir: &Path) {
    for name in files(dir) {
        std::fs::remove_file(dir.join(name)).expect("clear the output directory");
    }
}

fn assert_png(path: &Path) {
    let data = std::fs::read(path).expect("read the screenshot");
    assert!(data.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
}

/// The log's last lines name every file, after cleanup.
fn assert_log_ends_with_the_listing(stderr: &str, out: &Path, names: &BTreeSet<String>) {
    let tail: Vec<&str> = stderr.lines().rev().take(names.len() + 1).collect::<Vec<_>>().into_iter().rev().collect();
    assert_eq!(tail[0], format!("the failure left {} file(s) in {}:", names.len(), out.display()), "{stderr}");
    for (line, name) in tail[1..].iter().zip(names) {
        assert!(line.starts_with(&format!("    {name}  (")), "{line:?} should name {name}\n{stderr}");
    }
}

#[test]
fn a_failed_command_leaves_the_screen_console_journal_and_its_exact_output() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Debian, &[]);
    let test = scenario.write(
        "test.py",
        "machine.wait_for_unit('multi-user.target')\n\
         with subtest('the check'):\n\
         \x20   machine.succeed(\"echo hello; printf 'x\\\\0y'; exit 3\")\n",
    );
    let collector = Collector::start(Protocol::HttpBinary);
    let mut command = scenario.command(&["--junit-xml", "junit.xml"]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("name", "vm-test-run-artifacts")
        .env_remove("OTEL_SDK_DISABLED");
    let run = scenario.run_with(command, &test, DEBIAN_LIMIT);
    run.assert_status(1);
    let out = scenario.out_dir();
    let artifacts = set(&[
        "machine-command-failed-console.txt",
        "machine-command-failed-journal.txt",
        "machine-command-failed-output.txt",
        "machine-command-failed-screen.png",
    ]);
    let mut expected = artifacts.clone();
    expected.insert("junit.xml".to_owned());
    assert_eq!(files(&out), expected, "{}", run.stderr);

    // The command's stdout, byte for byte (the log shows it decoded).
    let output = std::fs::read(out.join("machine-command-failed-output.txt")).expect("output");
    assert_eq!(output, b"hello\nx\0y");
    assert_png(&out.join("machine-command-failed-screen.png"));
    let console = std::fs::read_to_string(out.join("machine-command-failed-console.txt")).expect("console");
    assert!(console.contains("Reached target multi-user.target"), "the console holds the boot:\n{console}");
    let journal = std::fs::read_to_string(out.join("machine-command-failed-journal.txt")).expect("journal");
    assert!(journal.contains("systemd"), "the journal's tail:\n{journal}");

    // The JUnit report's failed case names the files and attaches them.
    let junit = std::fs::read_to_string(out.join("junit.xml")).expect("junit");
    assert!(junit.contains("<failure type=\"failure\" message=\"test case failed\">failure artifacts:"), "{junit}");
    for name in &artifacts {
        let path = out.join(name);
        assert!(junit.contains(&format!("\n{}", path.display())), "the failure names {name}:\n{junit}");
        assert!(junit.contains(&format!("[[ATTACHMENT|{}]]", path.display())), "attached: {name}:\n{junit}");
    }
    run.assert_stderr_contains(&format!(
        "machine: failure artifact: {}",
        out.join("machine-command-failed-output.txt").display()
    ));
    assert_log_ends_with_the_listing(&run.stderr, &out, &artifacts);

    // The failed run's span lists the files, and each is an event on it.
    let trace = collector.trace();
    let root = trace.one("nixos-test artifacts");
    let paths: Vec<String> = artifacts.iter().map(|name| out.join(name).display().to_string()).collect();
    assert_eq!(root.attributes["ntd.failure.artifacts"], paths.join("\n"), "{root:#?}");
    for path in &paths {
        assert!(root.events.iter().any(|event| event.contains(path.as_str())), "an event for {path}: {root:#?}");
    }
}

#[test]
fn a_wait_an_assertion_and_the_global_timeout_name_their_artifacts() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let out = scenario.out_dir();

    // A wait that times out. The smoke guest has no journal, and the log says so.
    let test = scenario.write("wait.py", "start_all()\nmachine.wait_for_file('/nonexistent', timeout=2)\n");
    let run = scenario.run(&test, &[], SMOKE_LIMIT);
    run.assert_status(1);
    let wait = set(&["machine-wait-failed-console.txt", "machine-wait-failed-screen.png"]);
    assert_eq!(files(&out), wait, "{}", run.stderr);
    assert_png(&out.join("machine-wait-failed-screen.png"));
    run.assert_stderr_contains("machine: no journal for the failure artifacts: journalctl exited with 127");
    assert_log_ends_with_the_listing(&run.stderr, &out, &wait);
    clear(&out);

    // An assertion of the script itself.
    let test = scenario.write("assertion.py", "start_all()\nmachine.succeed('true')\nassert 1 == 2, 'numbers'\n");
    let run = scenario.run(&test, &[], SMOKE_LIMIT);
    run.assert_status(1);
    assert_eq!(
        files(&out),
        set(&["machine-assertion-failed-console.txt", "machine-assertion-failed-screen.png"]),
        "{}",
        run.stderr
    );
    clear(&out);

    // The global timeout, while a command runs: the artifacts are taken before the machines
    // are killed, and the busy shell gives no journal.
    let run =
        scenario.run(&repo_file("tests/e2e/global_timeout_in_command.py"), &["--global-timeout", "20"], SMOKE_LIMIT);
    run.assert_status(143);
    let timeout = set(&["machine-global-timeout-console.txt", "machine-global-timeout-screen.png"]);
    assert_eq!(files(&out), timeout, "{}", run.stderr);
    let console = std::fs::read_to_string(out.join("machine-global-timeout-console.txt")).expect("console");
    assert!(!console.is_empty(), "the console of the timed-out machine");
    assert_log_ends_with_the_listing(&run.stderr, &out, &timeout);
    scenario.assert_state_removed(&run);
}

#[test]
fn a_passing_run_and_a_run_without_an_output_directory_leave_nothing_new() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let passing = scenario.write("pass.py", "start_all()\nmachine.succeed('true')\n");
    let run = scenario.run(&passing, &[], SMOKE_LIMIT);
    run.assert_status(0);
    assert_eq!(files(&scenario.out_dir()), BTreeSet::new(), "{}", run.stderr);

    // Without -o the output directory is the current one: a failure writes nothing there.
    let cwd = scenario.path().join("cwd");
    std::fs::create_dir(&cwd).expect("cwd");
    let failing = scenario.write("fail.py", "start_all()\nmachine.succeed('false')\n");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nixos-test-driver"));
    command.current_dir(&cwd).env("TMPDIR", scenario.tmp_dir()).env_remove("XDG_RUNTIME_DIR").env("NO_COLOR", "1");
    scenario.add_machines(&mut command, &failing);
    let run = scenario.run_command(command, SMOKE_LIMIT);
    run.assert_status(1);
    assert_eq!(files(&cwd), BTreeSet::new(), "{}", run.stderr);
    assert!(!run.stderr.contains("failure artifact"), "{}", run.stderr);
}

/// Run `driver_args` under a pseudo-terminal (util-linux's `script`) with `term`; returns the
/// bytes the terminal got.
fn on_a_terminal(scenario: &Scenario, script: &Path, term: &str) -> Vec<u8> {
    let mut driver = scenario.command(&[]);
    scenario.add_machines(&mut driver, script);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let mut line = quote(driver.get_program());
    for arg in driver.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    let typescript = scenario.path().join(format!("typescript-{term}"));
    let mut command = Command::new("script");
    command.arg("-q").arg("-e").arg("-c").arg(&line).arg(&typescript);
    for (key, value) in driver.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    // Colours and the status line are off with NO_COLOR, which the scenario sets.
    command.env_remove("NO_COLOR").env("TERM", term);
    let run = scenario.run_command(command, SMOKE_LIMIT);
    run.assert_status(0);
    std::fs::read(&typescript).expect("the terminal's bytes")
}

#[test]
fn a_terminal_shows_a_live_status_line_and_a_dumb_one_does_not() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    // Booted first: the boot would count in the command's time.
    let test = scenario.write("test.py", "start_all()\nmachine.succeed('true')\nmachine.succeed('sleep 4')\n");
    let shown = String::from_utf8_lossy(&on_a_terminal(&scenario, &test, "xterm")).into_owned();
    // Drawn after 2 s, redrawn as the seconds pass, erased before the next log line.
    assert!(shown.contains("\r\x1b[Kmachine: must succeed: sleep 4 (2 s)"), "{shown:?}");
    assert!(shown.contains("\r\x1b[Kmachine: must succeed: sleep 4 (3 s)"), "{shown:?}");
    let finished = shown.find("(finished: must succeed: sleep 4, in ").expect("the finished line");
    let drawn = shown.rfind("must succeed: sleep 4 (3 s)").expect("drawn");
    assert!(shown[drawn..finished].contains("\r\x1b[K"), "erased before the next line: {shown:?}");

    let dumb = on_a_terminal(&scenario, &test, "dumb");
    let dumb = String::from_utf8_lossy(&dumb);
    assert!(dumb.contains("(finished: must succeed: sleep 4, in "), "{dumb:?}");
    assert!(!dumb.contains("\x1b[K"), "no status line on a dumb terminal: {dumb:?}");
}
