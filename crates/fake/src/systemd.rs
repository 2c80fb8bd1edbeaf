//! A small systemd for the fake guest: unit states and the `systemctl` verbs a test driver
//! uses, with systemd's output formats.
//!
//! Each unit's `ActiveState` is a file named after the unit in a directory under the state
//! directory, so a host-side test can read or change it. A unit without a file is `inactive`
//! and not found (`LoadState=not-found`), as an unknown unit is; at every boot the directory is
//! reset to the `--fake-unit` seeds, and the units of a booted NixOS system (`multi-user.target`
//! and those before it, `backdoor.service`) become `active` when the backdoor starts, unless
//! seeded. A change scheduled with `--fake-unit-later` is a queued job until it happens, so
//! `systemctl list-jobs` shows it, as systemd shows a unit that is about to start.
//!
//! Every unit exists for `start` and `stop`: the fake has no unit files to check against.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Unit types systemd knows; a name without one is a `.service`.
const UNIT_TYPES: &[&str] =
    &["service", "socket", "target", "device", "mount", "automount", "swap", "timer", "path", "slice", "scope"];

/// The units a booted NixOS test VM has active once its backdoor runs.
const BOOTED: &[&str] = &["sysinit.target", "basic.target", "multi-user.target", "backdoor.service"];

/// What a guest tool prints and its exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolOutput {
    /// Exit status.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ToolOutput {
    fn ok(stdout: String) -> ToolOutput {
        ToolOutput { status: 0, stdout, stderr: String::new() }
    }

    fn fail(status: i32, stderr: String) -> ToolOutput {
        ToolOutput { status, stdout: String::new(), stderr }
    }
}

/// `name` as systemd names it: with `.service` when it has no unit type.
pub fn unit_name(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((_, suffix)) if UNIT_TYPES.contains(&suffix) => name.to_owned(),
        _ => format!("{name}.service"),
    }
}

fn valid_unit(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\0']) && name.len() <= 255
}

/// systemd's `SubState` for an `ActiveState` of a unit of this type.
fn sub_state(unit: &str, active: &str) -> &'static str {
    let service = unit.ends_with(".service");
    match active {
        "active" if service => "running",
        "active" => "active",
        "inactive" => "dead",
        "failed" => "failed",
        "activating" => "start",
        "deactivating" => "stop",
        "reloading" => "reload",
        _ => "dead",
    }
}

fn description(unit: &str) -> String {
    match unit {
        "multi-user.target" => "Multi-User System".to_owned(),
        "basic.target" => "Basic System".to_owned(),
        "sysinit.target" => "System Initialization".to_owned(),
        "backdoor.service" => "backdoor.service".to_owned(),
        _ => unit.to_owned(),
    }
}

/// A queued job: a scheduled state change not done yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// systemd's job id.
    pub id: u32,
    /// The unit.
    pub unit: String,
    /// `start` or `stop`.
    pub kind: &'static str,
}

/// The fake guest's units.
#[derive(Debug)]
pub struct Units {
    dir: PathBuf,
    seeds: Vec<(String, String)>,
    jobs: Mutex<(u32, Vec<Job>)>,
}

impl Units {
    /// Units kept in `dir`, seeded at every boot with `seeds` (`(unit, ActiveState)`).
    pub fn new(dir: PathBuf, seeds: &[(String, String)]) -> Units {
        let seeds = seeds.iter().map(|(unit, state)| (unit_name(unit), state.clone())).collect();
        Units { dir, seeds, jobs: Mutex::new((0, Vec::new())) }
    }

    /// The directory of the state files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, (u32, Vec<Job>)> {
        match self.jobs.lock() {
            Ok(jobs) => jobs,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A new boot: every unit inactive but the seeded ones, no jobs.
    pub fn reset(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&self.dir)?;
        self.jobs().1.clear();
        for (unit, state) in &self.seeds {
            self.set(unit, state)?;
        }
        Ok(())
    }

    /// The backdoor started: the booted system's units are active, unless seeded otherwise.
    pub fn reach_multi_user(&self) -> io::Result<()> {
        for unit in BOOTED {
            if !self.seeds.iter().any(|(seeded, _)| seeded == unit) {
                self.set(unit, "active")?;
            }
        }
        Ok(())
    }

    fn path(&self, unit: &str) -> PathBuf {
        self.dir.join(unit)
    }

    /// A unit's `ActiveState`, and whether it is known (has a state file).
    pub fn state(&self, unit: &str) -> (String, bool) {
        match std::fs::read_to_string(self.path(&unit_name(unit))) {
            Ok(state) => (state.trim().to_owned(), true),
            Err(_) => ("inactive".to_owned(), false),
        }
    }

    /// Set a unit's `ActiveState` (atomically: a concurrent reader sees the old or the new).
    pub fn set(&self, unit: &str, state: &str) -> io::Result<()> {
        let unit = unit_name(unit);
        if !valid_unit(&unit) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid unit name {unit:?}")));
        }
        let temporary = self.dir.join(format!(".{unit}.new"));
        std::fs::write(&temporary, format!("{state}\n"))?;
        std::fs::rename(&temporary, self.path(&unit))
    }

    /// Queue a job for a change to `state`; returns its id.
    pub fn queue_job(&self, unit: &str, state: &str) -> u32 {
        let kind = if matches!(state, "active" | "activating" | "reloading") { "start" } else { "stop" };
        let mut jobs = self.jobs();
        jobs.0 += 1;
        let id = jobs.0;
        jobs.1.push(Job { id, unit: unit_name(unit), kind });
        id
    }

    /// A queued job is done.
    pub fn finish_job(&self, id: u32) {
        self.jobs().1.retain(|job| job.id != id);
    }

    /// Run `systemctl ARGS` (the verbs that power off or reboot are the machine's and are
    /// handled before this).
    pub fn systemctl(&self, args: &[String]) -> ToolOutput {
        let mut properties = Vec::new();
        let (mut value_only, mut quiet) = (false, false);
        let mut words = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-p" | "--property" => properties.extend(args.next().map(|p| split_properties(p)).unwrap_or_default()),
                "--value" => value_only = true,
                "-q" | "--quiet" => quiet = true,
                other if other.starts_with("--property=") => {
                    properties.extend(split_properties(&other["--property=".len()..]));
                }
                // --no-pager, --user, --system, --full, --no-block, --no-legend, ...
                other if other.starts_with('-') => {}
                other => words.push(other.to_owned()),
            }
        }
        let Some((verb, units)) = words.split_first() else {
            return ToolOutput::ok(String::new());
        };
        let units: Vec<String> = units.iter().map(|u| unit_name(u)).collect();
        if let Some(bad) = units.iter().find(|u| !valid_unit(u)) {
            return ToolOutput::fail(1, format!("Invalid unit name \"{bad}\" escaped as \"{bad}\".\n"));
        }
        match verb.as_str() {
            "show" => ToolOutput::ok(self.show(&units, &properties, value_only)),
            "start" | "restart" | "reload" | "reload-or-restart" | "try-restart" | "isolate" => {
                self.set_all(&units, "active", verb)
            }
            "stop" => self.set_all(&units, "inactive", verb),
            "reset-failed" => {
                for unit in &units {
                    if self.state(unit).0 == "failed" && self.set(unit, "inactive").is_err() {
                        return ToolOutput::fail(1, format!("Failed to reset failed state of unit {unit}.\n"));
                    }
                }
                ToolOutput::ok(String::new())
            }
            "is-active" | "is-failed" => {
                let wanted = if verb == "is-active" { "active" } else { "failed" };
                let states: Vec<String> = units.iter().map(|u| self.state(u).0).collect();
                let stdout = if quiet { String::new() } else { states.iter().map(|s| format!("{s}\n")).collect() };
                let hit = states.iter().any(|s| s == wanted);
                let status = match (verb.as_str(), hit) {
                    (_, true) => 0,
                    ("is-active", false) => 3,
                    _ => 1,
                };
                ToolOutput { status, stdout, stderr: String::new() }
            }
            "status" => self.status(&units),
            "list-jobs" => ToolOutput::ok(self.list_jobs()),
            "is-system-running" => ToolOutput::ok(if quiet { String::new() } else { "running\n".to_owned() }),
            "daemon-reload" | "daemon-reexec" | "enable" | "disable" | "mask" | "unmask" | "kill" => {
                ToolOutput::ok(String::new())
            }
            other => ToolOutput::fail(1, format!("Unknown command verb '{other}'.\n")),
        }
    }

    fn set_all(&self, units: &[String], state: &str, verb: &str) -> ToolOutput {
        if units.is_empty() {
            return ToolOutput::fail(1, "Too few arguments.\n".to_owned());
        }
        for unit in units {
            if let Err(e) = self.set(unit, state) {
                return ToolOutput::fail(1, format!("Failed to {verb} {unit}: {e}\n"));
            }
        }
        ToolOutput::ok(String::new())
    }

    fn show(&self, units: &[String], properties: &[String], value_only: bool) -> String {
        if units.is_empty() {
            return "Version=252-fake\nSystemState=running\n".to_owned();
        }
        let mut out = String::new();
        for (i, unit) in units.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let (state, known) = self.state(unit);
            let all = [
                ("Id", unit.clone()),
                ("Names", unit.clone()),
                ("Description", description(unit)),
                ("LoadState", if known { "loaded" } else { "not-found" }.to_owned()),
                ("ActiveState", state.clone()),
                ("SubState", sub_state(unit, &state).to_owned()),
                ("Result", if state == "failed" { "exit-code" } else { "success" }.to_owned()),
            ];
            let wanted: Vec<&(&str, String)> = if properties.is_empty() {
                all.iter().collect()
            } else {
                // In the order asked for; unknown properties print nothing, as systemd's do.
                properties.iter().filter_map(|p| all.iter().find(|(name, _)| name == p)).collect()
            };
            for (name, value) in wanted {
                if value_only {
                    out.push_str(&format!("{value}\n"));
                } else {
                    out.push_str(&format!("{name}={value}\n"));
                }
            }
        }
        out
    }

    fn status(&self, units: &[String]) -> ToolOutput {
        let mut out = String::new();
        let mut status = 0;
        for unit in units {
            let (state, known) = self.state(unit);
            if !known {
                return ToolOutput::fail(4, format!("Unit {unit} could not be found.\n"));
            }
            out.push_str(&format!(
                "● {unit} - {}\n     Loaded: loaded\n     Active: {state} ({})\n",
                description(unit),
                sub_state(unit, &state)
            ));
            if state != "active" {
                status = 3;
            }
        }
        ToolOutput { status, stdout: out, stderr: String::new() }
    }

    fn list_jobs(&self) -> String {
        let jobs = self.jobs().1.clone();
        if jobs.is_empty() {
            return "No jobs running.\n".to_owned();
        }
        let width = jobs.iter().map(|j| j.unit.len()).max().unwrap_or(0).max(4);
        let mut out = format!("JOB {:width$} TYPE  STATE  \n", "UNIT");
        for job in &jobs {
            out.push_str(&format!("{:>3} {:width$} {:5} waiting\n", job.id, job.unit, job.kind));
        }
        out.push_str(&format!("\n{} jobs listed.\n", jobs.len()));
        out
    }
}

fn split_properties(text: &str) -> Vec<String> {
    text.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(seeds: &[(&str, &str)]) -> (tempfile::TempDir, Units) {
        let dir = tempfile::tempdir().expect("temp dir");
        let seeds: Vec<(String, String)> = seeds.iter().map(|(u, s)| ((*u).to_owned(), (*s).to_owned())).collect();
        let units = Units::new(dir.path().join("units"), &seeds);
        units.reset().expect("reset");
        (dir, units)
    }

    fn run(units: &Units, line: &str) -> ToolOutput {
        units.systemctl(&line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn show_prints_systemds_properties() {
        let (_dir, units) = units(&[("foo", "failed")]);
        units.reach_multi_user().expect("booted");
        assert_eq!(run(&units, "show multi-user.target --property=ActiveState").stdout, "ActiveState=active\n");
        assert_eq!(
            run(&units, "--no-pager show foo -p ActiveState,SubState").stdout,
            "ActiveState=failed\nSubState=failed\n"
        );
        assert_eq!(run(&units, "show foo.service --property=ActiveState --value").stdout, "failed\n");
        let all = run(&units, "show nope");
        assert!(all.stdout.starts_with("Id=nope.service\nNames=nope.service\n"), "{}", all.stdout);
        assert!(all.stdout.contains("\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"));
        assert_eq!(all.status, 0);
        assert_eq!(run(&units, "show foo --property=NoSuchProperty").stdout, "");
    }

    #[test]
    fn start_stop_and_checks() {
        let (_dir, units) = units(&[]);
        assert_eq!(run(&units, "is-active x").status, 3);
        assert_eq!(run(&units, "start x").status, 0);
        assert_eq!(run(&units, "is-active x.service"), ToolOutput::ok("active\n".to_owned()));
        assert_eq!(units.state("x"), ("active".to_owned(), true));
        assert_eq!(run(&units, "stop x").status, 0);
        assert_eq!(run(&units, "--quiet is-active x"), ToolOutput { status: 3, ..ToolOutput::default() });
        assert_eq!(run(&units, "status nope").status, 4);
        assert_eq!(run(&units, "frobnicate").status, 1);
        assert_eq!(run(&units, "start ../etc").status, 1, "no path escapes the units directory");
    }

    #[test]
    fn jobs_are_listed_until_done() {
        let (_dir, units) = units(&[]);
        assert_eq!(run(&units, "list-jobs").stdout, "No jobs running.\n");
        let id = units.queue_job("later", "active");
        let listed = run(&units, "list-jobs --full").stdout;
        assert!(listed.contains("later.service start waiting"), "{listed}");
        assert!(listed.ends_with("\n1 jobs listed.\n"));
        units.finish_job(id);
        assert_eq!(run(&units, "list-jobs").stdout, "No jobs running.\n");
    }

    #[test]
    fn a_reboot_resets_to_the_seeds() {
        let (_dir, units) = units(&[("multi-user.target", "activating")]);
        units.reach_multi_user().expect("booted");
        assert_eq!(units.state("multi-user.target").0, "activating", "a seed wins over the boot");
        assert_eq!(units.state("basic.target").0, "active");
        units.set("x", "active").expect("set");
        units.reset().expect("reboot");
        assert_eq!(units.state("x"), ("inactive".to_owned(), false));
        assert_eq!(units.state("basic.target").0, "inactive");
    }

    #[test]
    fn names_get_service() {
        assert_eq!(unit_name("sshd"), "sshd.service");
        assert_eq!(unit_name("a.socket"), "a.socket");
        assert_eq!(unit_name("getty@tty1"), "getty@tty1.service");
        assert_eq!(unit_name("foo.bar"), "foo.bar.service");
    }
}
