//! `nixos-test-driver new`: the test directories it writes parse as Nix and their scripts run
//! on the built-in guest as written.

use std::path::Path;
use std::process::Command;

use crate::harness::{DEBIAN_LIMIT, Run, Scenario, repo};

/// `nixos-test-driver new ARGS` in `dir`.
fn new(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nixos-test-driver"))
        .arg("new")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run nixos-test-driver new")
}

/// Write the template's test, check its files, run it on the built-in guest.
fn template_runs(template: &str, example: &str, limit: std::time::Duration) -> Run {
    let scenario = Scenario::new();
    let name = format!("tmpl-{template}");
    let output = new(scenario.path(), &[&name, "--template", template]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dir = scenario.path().join(&name);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("scripts/run-example ./{name}\n")),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let nix = std::fs::read_to_string(dir.join("default.nix")).expect("read default.nix");
    assert!(nix.contains(&format!("name = \"{name}\";")), "{nix}");
    assert!(!nix.contains("@name@"), "{nix}");
    // default.nix, and hello.nix where the template has the service.
    for entry in std::fs::read_dir(&dir).expect("list the test directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|extension| extension != "nix") {
            continue;
        }
        let parse = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(&path)
            .env("NIX_CONFIG", "build-users-group =")
            .output()
            .expect("run nix-instantiate (scripts/install-host-deps installs nix-bin)");
        assert!(
            parse.status.success(),
            "{} does not parse: {}",
            path.display(),
            String::from_utf8_lossy(&parse.stderr)
        );
    }
    assert_eq!(dir.join("hello.nix").exists(), nix.contains("./hello.nix"), "hello.nix written iff imported");
    for file in ["test.py", "machines"] {
        assert_eq!(
            std::fs::read_to_string(dir.join(file)).expect("read the written file"),
            std::fs::read_to_string(repo().join("examples").join(example).join(file)).expect("read the example"),
            "{file} differs from examples/{example}"
        );
    }

    let mut command = Command::new(repo().join("scripts/run-example"));
    command
        .arg(&dir)
        .env("NTD_DRIVER", env!("CARGO_BIN_EXE_nixos-test-driver"))
        .env("NTD_GUEST_DIR", crate::harness::guest())
        .env("TMPDIR", scenario.tmp_dir())
        .env("NO_COLOR", "1");
    let run = scenario.run_command(command, limit);
    run.assert_status(0);
    run.assert_stderr_contains("test script finished in ");
    run
}

#[test]
fn the_minimal_template_runs_on_the_guest() {
    template_runs("minimal", "minimal", DEBIAN_LIMIT);
}

#[test]
fn the_multi_machine_template_runs_on_the_guest() {
    template_runs("multi-machine", "multi-machine", DEBIAN_LIMIT * 2);
}

#[test]
fn the_graphical_template_runs_on_the_guest() {
    template_runs("graphical", "screen", DEBIAN_LIMIT);
}

#[test]
fn the_otel_template_runs_on_the_guest() {
    let run = template_runs("otel", "otel", DEBIAN_LIMIT);
    // Without an OTLP endpoint the run exports nothing and guest commands get no TRACEPARENT.
    run.assert_stderr_contains("the guest ran under nothing: no OTLP endpoint");
}

#[test]
fn new_refuses_bad_names_existing_directories_and_unknown_templates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad_name = new(dir.path(), &["my test"]);
    assert_eq!(bad_name.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_name.stderr).contains("invalid test name \"my test\""));

    assert!(new(dir.path(), &["taken"]).status.success());
    let taken = new(dir.path(), &["taken", "--template", "otel"]);
    assert_eq!(taken.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already exists"));

    let unknown = new(dir.path(), &["other", "--template", "sway"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("invalid value 'sway'"));
    assert!(!dir.path().join("other").exists());
}
