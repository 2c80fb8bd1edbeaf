//! Watching a running test (issue 21): `--vnc` gives every QEMU machine a VNC server on a unix
//! socket in its state directory. tests/e2e/vnc.py speaks RFB to each, as a viewer would, and
//! saves the frame beside a screenshot taken right after; here the two must show one screen.

use std::path::Path;

use crate::harness::{SMOKE_LIMIT, Scenario, Tier, repo_file};

/// A frame saved by vnc.py as `<label>-vnc-<w>x<h>.bgrx`: its size and pixels (RGB).
fn vnc_frame(out: &Path, label: &str) -> (u32, u32, Vec<[u8; 3]>) {
    let prefix = format!("{label}-vnc-");
    let entry = std::fs::read_dir(out)
        .expect("read the output directory")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(&prefix) && name.ends_with(".bgrx"))
        .unwrap_or_else(|| panic!("no VNC frame {prefix}* in {}", out.display()));
    let size = &entry[prefix.len()..entry.len() - ".bgrx".len()];
    let (width, height) = size.split_once('x').expect("<w>x<h>");
    let (width, height): (u32, u32) = (width.parse().expect("width"), height.parse().expect("height"));
    let data = std::fs::read(out.join(&entry)).expect("read the frame");
    assert_eq!(data.len(), (width * height * 4) as usize, "{entry}");
    let pixels = data.chunks_exact(4).map(|p| [p[2], p[1], p[0]]).collect();
    (width, height, pixels)
}

/// The VNC frame is the machine's screen: the size of its screenshot, and the same pixels but
/// for what changed in between (a cursor's blink).
fn assert_frame_is_the_screen(out: &Path, label: &str) {
    let (width, height, frame) = vnc_frame(out, label);
    let screen = image::open(out.join(format!("{label}-screen.png"))).expect("decode the screenshot").to_rgb8();
    assert_eq!((width, height), screen.dimensions(), "{label}: frame and screenshot differ in size");
    let same = frame.iter().zip(screen.pixels()).filter(|(vnc, png)| **vnc == png.0).count();
    let share = same as f64 / frame.len() as f64;
    assert!(share > 0.98, "{label}: only {:.1} % of the VNC frame's pixels match the screenshot", share * 100.0);
    let lit = frame.iter().filter(|pixel| **pixel != frame[0]).count();
    assert!(lit > 0, "{label}: the frame is one colour; the screen shows nothing");
}

#[test]
fn every_machine_gets_a_private_vnc_server_that_serves_its_screen() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let other = scenario.start_script("other", Tier::Smoke, &[]);
    let out = scenario.out_dir();
    let mut command = scenario.command(&["--vnc"]);
    command
        .env("E2E_OTHER_START_SCRIPT", &other)
        .env("E2E_OUT", &out)
        .arg(repo_file("tests/e2e/vnc.py"))
        .arg("--start-scripts")
        .arg(scenario.path().join("bin/run-machine-vm"));
    let run = scenario.run_command(command, SMOKE_LIMIT * 2);
    run.assert_status(0);
    for label in ["machine", "other", "machine-again"] {
        assert_frame_is_the_screen(&out, label);
    }
    // The log says, on every start, how to connect: the socket in the machine's state dir.
    let tmp = scenario.tmp_dir();
    for (machine, starts) in [("machine", 2), ("other", 1)] {
        let socket = tmp.join(format!("vm-state-{machine}/vnc"));
        let line = format!("{machine}: screen over VNC: vncviewer {}", socket.display());
        assert_eq!(run.stderr.matches(&line).count(), starts, "{line:?}\n{}", run.stderr);
    }
    run.assert_stderr_contains("machine: VNC frame ");
}
