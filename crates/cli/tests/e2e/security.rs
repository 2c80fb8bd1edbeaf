//! Security (tests/e2e/security.py): private state directories and sockets, no TCP socket
//! unless asked for, guest output never run on the host, and every path the driver handles
//! (TMPDIR, the output directory, the start script) named with spaces, quotes, commas, `$`
//! and backticks.

use crate::harness::{Run, SMOKE_LIMIT, Scenario, Tier, repo_file};

const SUBTESTS: [&str; 4] = ["private state", "no TCP sockets", "guest output is data", "odd paths"];

fn assert_passed(run: &Run) {
    run.assert_status(0);
    for subtest in SUBTESTS {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
}

#[test]
fn private_state_and_no_tcp_with_a_vlan() {
    let mut scenario = Scenario::new();
    scenario.network(Tier::Smoke, &[("machine", &[1])]);
    let run = scenario.run(&repo_file("tests/e2e/security.py"), &[], SMOKE_LIMIT);
    assert_passed(&run);
    scenario.assert_state_removed(&run);
}

/// A name no unquoted shell word or QEMU option survives. (Not for a VLAN: libvdeplug
/// cannot open a socket path with quotes in it, whoever quotes it; see docs/reliability.md.)
const ODD: &str = "a b'c\"$d`e`,f";

#[test]
fn odd_paths_everywhere() {
    let scenario = Scenario::new();
    let tmp = scenario.path().join(format!("tmp {ODD}"));
    let out = scenario.path().join(format!("out {ODD}"));
    let bin = scenario.path().join(format!("bin {ODD}"));
    for dir in [&tmp, &out, &bin] {
        std::fs::create_dir(dir).expect("scenario dir");
    }
    let generated = scenario.start_script("machine", Tier::Smoke, &[]);
    let script = bin.join("run-machine-vm");
    std::fs::rename(&generated, &script).expect("move the start script");

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nixos-test-driver"));
    command.env("TMPDIR", &tmp).env_remove("XDG_RUNTIME_DIR").env("NO_COLOR", "1").arg("-o").arg(&out);
    // A start script is a shell command line, as upstream's (`create_machine` takes any
    // command): a path with spaces is passed quoted. The name derived from a quoted command
    // is the default one, `machine`.
    let quoted = format!("'{}'", script.to_string_lossy().replace('\'', "'\\''"));
    command.arg(repo_file("tests/e2e/security.py")).arg("--start-scripts").arg(&quoted);
    let run = scenario.run_command(command, SMOKE_LIMIT);
    assert_passed(&run);
    assert!(out.join("screen.png").is_file(), "the screenshot is not in the odd output directory");
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("read TMPDIR").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}\n{}", run.stderr);
}
