//! Screens, keyboards and OCR (tests/e2e/screen.py, tests/e2e/no_tesseract.py,
//! examples/screen).

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use crate::harness::{DEBIAN_LIMIT, SMOKE_LIMIT, Scenario, Tier, repo_file};

#[test]
fn login_by_typing_and_ocr_and_screenshots() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Debian, &[]);
    let run = scenario.run(&repo_file("tests/e2e/screen.py"), &[], DEBIAN_LIMIT * 2);
    run.assert_status(0);
    for subtest in ["log in by typing, find the output by OCR", "screenshots", "keys", "a wait that times out"] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    run.assert_stderr_contains("machine: sending keys 'root\\n'");
    run.assert_stderr_contains("machine: sending key 'alt-f2'");
    run.assert_stderr_contains("machine: Last OCR attempt failed. Text was: [");
    let out = scenario.out_dir();
    run.assert_stderr_contains(&format!("machine: making screenshot {}", out.join("console.png").display()));
    // The PNGs decode, have the display's size and show something.
    let size = std::fs::read_to_string(out.join("fb-size")).expect("frame buffer size");
    let (width, height) = size.trim().split_once(',').expect("WIDTH,HEIGHT");
    for name in ["console.png", "named.image.png", "sub/nested.png"] {
        let image = image::open(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")).to_luma8();
        assert_eq!((image.width().to_string(), image.height().to_string()), (width.to_owned(), height.to_owned()));
        let lit = image.pixels().filter(|p| p.0[0] > 128).count();
        assert!(lit > 500, "{name} looks blank: {lit} light pixels");
    }
}

#[test]
fn screen_example_passes() {
    let scenario = Scenario::new();
    let mut command = std::process::Command::new(crate::harness::repo().join("scripts/run-example"));
    command
        .arg("screen")
        .env("NTD_DRIVER", env!("CARGO_BIN_EXE_nixos-test-driver"))
        .env("NTD_GUEST_DIR", crate::harness::guest())
        .env("TMPDIR", scenario.tmp_dir())
        .env("NO_COLOR", "1");
    let run = scenario.run_command(command, DEBIAN_LIMIT * 2);
    run.assert_status(0);
    run.assert_stderr_contains("(finished: subtest: type a command and read its output, in ");
}

#[test]
fn ocr_without_tesseract_is_a_clear_error() {
    let mut scenario = Scenario::new();
    let script = scenario.machine("machine", Tier::Smoke, &[]);
    // A PATH with what the smoke tier's start script needs, and no tesseract.
    let bin = scenario.path().join("path");
    std::fs::create_dir(&bin).expect("mkdir");
    for tool in ["env", "bash", "mkdir", "grep", "qemu-system-x86_64"] {
        let found: PathBuf = std::env::split_paths(&std::env::var_os("PATH").expect("PATH"))
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} not found"));
        symlink(found, bin.join(tool)).expect("symlink");
    }
    let mut command = scenario.command(&[]);
    command.env("PATH", &bin).arg(repo_file("tests/e2e/no_tesseract.py")).arg("--start-scripts").arg(&script);
    let run = scenario.run_command(command, SMOKE_LIMIT);
    run.assert_status(0);
    assert!(scenario.out_dir().join("still-works.png").is_file());
}
