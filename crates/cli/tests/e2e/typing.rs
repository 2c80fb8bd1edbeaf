//! Type checks and lints of test scripts, as the Nix build of a test's driver runs them:
//! mypy on typed declarations of the globals plus the script, and pyflakes with the names
//! `generate-driver-symbols` writes (scripts/check-test-script, with the wheel's venv).

use std::collections::BTreeSet;
use std::process::{Command, Output};

use crate::harness::{py_env, repo};

/// scripts/check-test-script ARGS, with its report's whitespace collapsed (mypy wraps lines).
fn check(args: &[&str]) -> (Output, String) {
    let output = Command::new(repo().join("scripts/check-test-script"))
        .args(args)
        .current_dir(repo())
        .env("NTD_PY_ENV", py_env())
        .output()
        .expect("run scripts/check-test-script");
    let report = String::from_utf8_lossy(&output.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    (output, report)
}

#[test]
fn the_examples_type_check_and_lint_clean() {
    for example in ["minimal", "failing", "screen", "otel", "multi-machine"] {
        let dir = repo().join("examples").join(example);
        let machines = std::fs::read_to_string(dir.join("machines")).expect("read the example's machines");
        let mut args = Vec::new();
        let mut names = Vec::new();
        for line in machines.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            let words: Vec<&str> = line.split_whitespace().collect();
            names.push(words[0].to_owned());
            for pair in words.windows(2).filter(|pair| pair[0] == "--vlan") {
                args.extend(["--vlan".to_owned(), pair[1].to_owned()]);
            }
        }
        args.push(format!("examples/{example}/test.py"));
        args.extend(names);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (output, report) = check(&args);
        assert!(output.status.success(), "examples/{example}: {report}\n{}", String::from_utf8_lossy(&output.stderr));
    }
}

#[test]
fn a_script_using_every_global_type_checks_and_lints_clean() {
    let (output, report) = check(&["--vlan", "1", "tests/typing/every-global.py", "server", "client"]);
    assert!(output.status.success(), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_wrong_argument_type_is_a_type_error() {
    let (output, report) = check(&["tests/typing/wrong-argument.py", "machine"]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.contains(
            r#"error: Argument 1 to "wait_for_unit" of "BaseMachine" has incompatible type "int"; expected "str" [arg-type] machine.wait_for_unit(22)"#
        ),
        "{report}"
    );
}

#[test]
fn an_unknown_global_is_a_lint_error() {
    let (output, report) = check(&["tests/typing/undefined-name.py", "client"]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(report.contains("test-script:3:1: undefined name 'clinet'"), "{report}");
}

/// The names in ./driver-symbols after running `program` in an empty directory.
fn driver_symbols(program: &std::path::Path) -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(program).current_dir(dir.path()).output().expect("run generate-driver-symbols");
    assert!(output.status.success(), "{}: {}", program.display(), String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(dir.path().join("driver-symbols")).expect("read driver-symbols");
    text.split(',').map(str::to_owned).collect()
}

#[test]
fn generate_driver_symbols_writes_the_globals_from_the_binary_and_the_wheel() {
    let from_binary = driver_symbols(std::path::Path::new(env!("CARGO_BIN_EXE_generate-driver-symbols")));
    let from_wheel = driver_symbols(&py_env().join("bin/generate-driver-symbols"));
    assert_eq!(from_binary, from_wheel);
    for global in ["start_all", "subtest", "machines", "vlans", "driver", "log", "retry", "polling_condition", "t"] {
        assert!(from_binary.contains(global), "{global} missing from {from_binary:?}");
    }
}
