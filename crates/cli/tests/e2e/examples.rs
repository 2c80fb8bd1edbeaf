//! The examples users run first must work as documented.

use std::process::Command;

use crate::harness::{DEBIAN_LIMIT, SMOKE_LIMIT, Scenario, repo};

fn run_example(name: &str) -> (Scenario, crate::harness::Run) {
    let scenario = Scenario::new();
    let mut command = Command::new(repo().join("scripts/run-example"));
    command
        .arg(name)
        .env("NTD_DRIVER", env!("CARGO_BIN_EXE_nixos-test-driver"))
        .env("NTD_GUEST_DIR", crate::harness::guest())
        .env("NTD_CONTAINER_DIR", crate::harness::container_guest())
        .env("TMPDIR", scenario.tmp_dir())
        .env("NO_COLOR", "1");
    let limit = match name {
        "minimal" => DEBIAN_LIMIT,
        "multi-machine" => DEBIAN_LIMIT * 2,
        _ => SMOKE_LIMIT,
    };
    let run = scenario.run_command(command, limit);
    (scenario, run)
}

#[test]
fn minimal_example_passes() {
    let (_scenario, run) = run_example("minimal");
    run.assert_status(0);
    run.assert_stderr_contains("machine: Guest shell says: b'Spawning backdoor root shell...\\n'");
    run.assert_stderr_contains("machine: connected to guest root shell");
    run.assert_stderr_contains("machine: (finished: waiting for unit multi-user.target, in ");
    run.assert_stderr_contains("(finished: subtest: a service is running, in ");
    run.assert_stderr_contains("test script finished in ");
    assert!(run.stdout.contains("additionally exposed symbols:\n    machine,\n"), "{}", run.stdout);
}

#[test]
fn failing_example_fails_with_upstreams_report() {
    let (_scenario, run) = run_example("failing");
    run.assert_status(1);
    run.assert_stderr_contains(
        "!!! Test \"the guest has a file it does not have\" failed with error: \
         \"command `cat /etc/this-file-does-not-exist` failed (exit code 1)\"",
    );
    run.assert_stderr_contains(
        "!!! Traceback (most recent call last):\n\
         !!!   File \"<string>\", line 7, in <module>\n\
         !!!     machine.succeed(\"cat /etc/this-file-does-not-exist\")\n\
         !!! \n\
         !!! RequestedAssertionFailed: command `cat /etc/this-file-does-not-exist` failed (exit code 1)\n",
    );
    assert!(!run.stderr.contains("test script finished"), "{}", run.stderr);
}

#[test]
fn multi_machine_example_passes() {
    let (_scenario, run) = run_example("multi-machine");
    run.assert_status(0);
    run.assert_stderr_contains("(finished: subtest: the client reaches the server by name, in ");
    run.assert_stderr_contains("(finished: subtest: a partition, in ");
    run.assert_stderr_contains("client: (finished: waiting for success: ping -c 1 -W 2 server, in ");
}

#[test]
fn containers_example_passes() {
    let (_scenario, run) = run_example("containers");
    run.assert_status(0);
    run.assert_stderr_contains("(finished: subtest: the client reaches the server over VLAN 1, in ");
    run.assert_stderr_contains("(finished: subtest: files go through /tmp/shared, in ");
    run.assert_stderr_contains("server: the container is ready (init pid ");
    let log = repo().join("target/examples/containers/out/hello.log");
    let log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(log.contains("hello.service"), "{log}");
}

/// `cargo run -p ntd-core --example boot-and-run`: cargo builds the examples of the workspace
/// with its tests, next to the test binaries' `deps/` directory.
fn library_example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>/deps/..");
    let example = profile_dir.join("examples").join(name);
    assert!(example.exists(), "{} is not built: cargo build --release --examples", example.display());
    example
}

#[test]
fn the_rust_library_example_boots_a_machine_and_runs_commands() {
    let scenario = Scenario::new();
    let script = scenario.start_script("machine", crate::harness::Tier::Debian, &[]);
    let mut command = Command::new(library_example("boot-and-run"));
    command.arg(&script).env("TMPDIR", scenario.tmp_dir()).env("NO_COLOR", "1");
    let run = scenario.run_command(command, DEBIAN_LIMIT);
    run.assert_status(0);
    assert!(run.stdout.starts_with("machine runs Linux 6."), "{}", run.stdout);
    assert!(run.stdout.contains("\nsystemctl is-system-running: "), "{}", run.stdout);
    run.assert_stderr_contains("machine: (finished: waiting for unit multi-user.target, in ");
    run.assert_stderr_contains("(finished: cleanup, in ");
}
