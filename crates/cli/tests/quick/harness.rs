//! The quick tier's harness: the shared scenario directory (`tests/common/scenario.rs`) with
//! machines whose start scripts run ntd-fake's QEMU, and readers for what the driver prints.
//!
//! Every run is checked afterwards: nothing of the scenario may be left running, and the
//! machines' state directories, the switches' sockets and the shared directory must be gone
//! from TMPDIR unless the run kept them (`-K`).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::common::scenario::Run;
use crate::common::scenario::ScenarioDir;

/// The hang guard of one run on fake machines: they boot in milliseconds, but the tests run
/// in parallel on two cores, beside builds.
pub const LIMIT: Duration = Duration::from_secs(60);

/// One test's private directory with fake machines; everything else (running the driver, the
/// checks afterwards) is the shared [`ScenarioDir`]'s.
pub struct Scenario {
    dir: ScenarioDir,
}

impl std::ops::Deref for Scenario {
    type Target = ScenarioDir;

    fn deref(&self) -> &ScenarioDir {
        &self.dir
    }
}

impl Scenario {
    pub fn new() -> Scenario {
        let mut dir = ScenarioDir::new("ntd-quick.");
        dir.check_state_after_every_run();
        Scenario { dir }
    }

    /// A fake machine `name` with ntd-fake's `options` (`--fake-*`), passed to the driver.
    pub fn machine(&mut self, name: &str, options: &[&str]) -> PathBuf {
        let script = self.start_script(name, options);
        self.dir.pass_start_script(script.clone());
        script
    }

    /// Pass VLAN `vlan` to the driver: it runs a `vde_switch` for it.
    pub fn vlan(&mut self, vlan: u32) {
        self.dir.pass_vlan(vlan);
    }

    /// A `run-<name>-vm` start script for a fake machine, not passed to the driver. Like a
    /// NixOS start script, it names the machine (`-name`), which is the guest's host name.
    pub fn start_script(&self, name: &str, options: &[&str]) -> PathBuf {
        ntd_fake::StartScript::new(name)
            .options(["-name", name])
            .options(options.iter().copied())
            .write(&self.bin_dir())
            .expect("write a start script")
    }

    /// The state directory of machine `name` in the driver's TMPDIR.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.tmp_dir().join(format!("vm-state-{name}"))
    }

    /// Write the test script `test.py`.
    pub fn script(&self, text: &str) -> PathBuf {
        self.write("test.py", text)
    }

    /// Run the test script `text` on the scenario's machines, with `extra` arguments.
    pub fn run_script(&self, text: &str, extra: &[&str]) -> Run {
        self.run(&self.script(text), extra, LIMIT)
    }
}

/// The `!!! ` lines of a failure report, without the prefix.
pub fn test_errors(stderr: &str) -> Vec<&str> {
    stderr.lines().filter_map(|line| line.strip_prefix("!!! ").or_else(|| (line == "!!!").then_some(""))).collect()
}

/// Fail unless stderr has upstream's end of the block `message` (of `machine`, whose name
/// prefixes it): `(finished: <message>, in X.XX seconds)`, the time with two decimals.
pub fn assert_finished(run: &Run, machine: Option<&str>, message: &str) {
    let prefix = machine.map(|machine| format!("{machine}: ")).unwrap_or_default();
    let start = format!("{prefix}(finished: {message}, in ");
    let found = run.stderr.lines().find_map(|line| line.strip_prefix(start.as_str()));
    let Some(found) = found else { panic!("no `{start}…` line:\n{}", run.stderr) };
    let seconds = found.strip_suffix(" seconds)").unwrap_or_else(|| panic!("not upstream's end: {found:?}"));
    let two_decimals = seconds.split_once('.').is_some_and(|(whole, decimals)| {
        !whole.is_empty() && whole.bytes().chain(decimals.bytes()).all(|b| b.is_ascii_digit()) && decimals.len() == 2
    });
    assert!(two_decimals, "not X.XX seconds: {seconds:?} in {found:?}");
}

/// Read a file the driver wrote, failing with the run's stderr if it is not there.
pub fn read_output(path: &Path, run: &Run) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}\n--- stderr\n{}", path.display(), run.stderr))
}

/// Parse the XML document `text` (the `what` of the run), failing with it if it is not
/// well-formed.
pub fn parse_xml<'a>(what: &str, text: &'a str) -> roxmltree::Document<'a> {
    roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("the {what} is not well-formed XML: {e}\n{text}"))
}
