//! What a test run is made of: machines, VLANs, the global timeout and the test script.
//!
//! Mirrors upstream's `test_driver/config.py` (`DriverConfiguration`, read from the JSON file
//! `runNixOSTest` passes with `--config`). The older command-line flags and environment
//! variables map onto the same [`DriverSpec`]; the CLI does that part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Upstream's default global timeout when none is given (`Driver(global_timeout=…)`): 7 days.
pub const DEFAULT_GLOBAL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A configuration problem, found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file cannot be read.
    #[error("cannot read driver configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not the JSON upstream writes.
    #[error("invalid driver configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (line and column).
        message: String,
    },
    /// The configuration asks for something ntd does not do.
    #[error("unsupported driver configuration {path}: {message}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What.
        message: String,
    },
    /// A duration that is neither seconds nor an ISO 8601 / `[D day[s], ]HH:MM:SS` duration.
    #[error("invalid duration {0:?}: expected seconds, an ISO 8601 duration (PT1H) or HH:MM:SS")]
    Duration(String),
    /// The test script cannot be read.
    #[error("cannot read test script {path}")]
    TestScript {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One machine to create: a name (or none, to derive it from the command) and the command that
/// starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    /// The machine's name; `None` derives it from the start command like upstream.
    pub name: Option<String>,
    /// The start command: a `run-<name>-vm` script, possibly with arguments (shell syntax).
    pub start_command: String,
}

/// Everything a test run needs, however it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverSpec {
    /// The QEMU machines, in the order given.
    pub machines: Vec<MachineSpec>,
    /// The systemd-nspawn containers, in the order given (their start commands are
    /// `run-<name>-nspawn` scripts).
    pub containers: Vec<MachineSpec>,
    /// VLAN numbers; one switch is started per distinct number.
    pub vlans: Vec<u32>,
    /// Kill the test after this long.
    pub global_timeout: Duration,
    /// The test script's path.
    pub test_script: Option<PathBuf>,
    /// Set up the SSH backdoor (`enable_ssh_backdoor`, nixpkgs' `sshBackdoor.enable`).
    pub enable_ssh_backdoor: bool,
}

/// The JSON file of upstream's `--config` (`DriverConfiguration` in `config.py`).
///
/// Keys ntd does not know are kept and named by [`DriverConfiguration::notices`], not
/// rejected: upstream's model ignores them, so the next key nixpkgs adds must not break a run.
#[derive(Debug, Clone, Deserialize)]
pub struct DriverConfiguration {
    /// QEMU machines by name.
    pub vms: BTreeMap<String, MachineConfiguration>,
    /// systemd-nspawn containers by name.
    #[serde(default)]
    pub containers: BTreeMap<String, MachineConfiguration>,
    /// Viewers for container displays (an open nixpkgs pull request's; ignored).
    #[serde(default)]
    pub display_viewers: serde_json::Value,
    /// VLAN numbers.
    pub vlans: Vec<u32>,
    /// The global timeout: seconds, or a duration string as pydantic's `timedelta` accepts.
    #[serde(deserialize_with = "deserialize_duration")]
    pub global_timeout: Duration,
    /// Whether to set up the SSH backdoor over vsock (see [`crate::ssh_backdoor`]).
    #[serde(default)]
    pub enable_ssh_backdoor: bool,
    /// The test script's path.
    pub test_script: PathBuf,
    /// Keys ntd does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// One machine in [`DriverConfiguration`].
#[derive(Debug, Clone, Deserialize)]
pub struct MachineConfiguration {
    /// The machine's name (upstream names the machine by its key; this one is ignored).
    pub name: String,
    /// Its `run-<name>-vm` or `run-<name>-nspawn` script.
    pub start_script: PathBuf,
    /// Keys ntd does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl DriverConfiguration {
    /// Read and check upstream's JSON driver configuration.
    pub fn load(path: &Path) -> Result<DriverConfiguration, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Parse the JSON text of a driver configuration; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<DriverConfiguration, Error> {
        let config: DriverConfiguration =
            serde_json::from_str(text).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })?;
        if let Some(name) = config.vms.keys().find(|name| config.containers.contains_key(*name)) {
            // nixpkgs refuses this when it evaluates the test; a hand-written file may not.
            return Err(Error::Unsupported {
                path: path.to_owned(),
                message: format!("{name:?} names both a VM and a container"),
            });
        }
        Ok(config)
    }

    /// What this configuration asks for that ntd does not honour, one line each: keys it does
    /// not know (ignored, as upstream ignores them) and containers' displays.
    pub fn notices(&self) -> Vec<String> {
        let mut notices = Vec::new();
        let unknown = self
            .unknown
            .keys()
            .map(|key| format!("`{key}`"))
            .chain(
                self.vms.iter().flat_map(|(name, vm)| vm.unknown.keys().map(move |key| format!("`vms.{name}.{key}`"))),
            )
            .chain(self.containers.iter().flat_map(|(name, container)| {
                container.unknown.keys().map(move |key| format!("`containers.{name}.{key}`"))
            }));
        let unknown: Vec<String> = unknown.collect();
        if !unknown.is_empty() {
            notices.push(format!(
                "driver configuration: ignoring {} ntd does not know: {}",
                if unknown.len() == 1 { "a key" } else { "keys" },
                unknown.join(", ")
            ));
        }
        if !self.display_viewers.is_null() && self.display_viewers.as_object().is_none_or(|v| !v.is_empty()) {
            notices.push(
                "driver configuration: ignoring display_viewers (containers' displays are not supported)".to_owned(),
            );
        }
        notices
    }

    /// The run this configuration describes. A machine is named by its key, as upstream's.
    pub fn into_spec(self) -> DriverSpec {
        DriverSpec {
            machines: self
                .vms
                .into_iter()
                .map(|(name, vm)| MachineSpec {
                    name: Some(name),
                    start_command: vm.start_script.to_string_lossy().into_owned(),
                })
                .collect(),
            containers: self
                .containers
                .into_iter()
                .map(|(name, container)| MachineSpec {
                    name: Some(name),
                    start_command: container.start_script.to_string_lossy().into_owned(),
                })
                .collect(),
            vlans: self.vlans,
            global_timeout: self.global_timeout,
            test_script: Some(self.test_script),
            enable_ssh_backdoor: self.enable_ssh_backdoor,
        }
    }
}

fn deserialize_duration<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(secs) => seconds(secs).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid duration {secs}: must be finite and not negative"))
        }),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// Parse a duration as pydantic's `timedelta` accepts it in JSON: seconds (`"3600"`,
/// `"1.5"`), ISO 8601 (`"PT1H"`, `"P1DT30M"`) or `[D day[s], ][HH:]MM:SS[.ffffff]`.
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let bad = || Error::Duration(text.to_owned());
    let trimmed = text.trim();
    if let Ok(secs) = trimmed.parse::<f64>() {
        return seconds(secs).ok_or_else(bad);
    }
    if let Some(iso) = trimmed.strip_prefix('P') {
        return parse_iso8601(iso).ok_or_else(bad);
    }
    parse_clock(trimmed).ok_or_else(bad)
}

/// The part of an ISO 8601 duration after `P`: `[nD][T[nH][nM][nS]]` (also weeks).
fn parse_iso8601(rest: &str) -> Option<Duration> {
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) if !time.is_empty() => (date, Some(time)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut total = 0.0;
    let mut any = false;
    for (part, units) in [
        (date, &[('W', 604_800.0), ('D', 86_400.0)][..]),
        (time.unwrap_or(""), &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let index = units[next_unit..].iter().position(|(u, _)| *u == c)? + next_unit;
            total += number.parse::<f64>().ok()? * units[index].1;
            number.clear();
            next_unit = index + 1;
            any = true;
        }
        if !number.is_empty() {
            return None;
        }
    }
    if any { seconds(total) } else { None }
}

/// `[D day[s], ][HH:]MM:SS[.ffffff]`.
fn parse_clock(text: &str) -> Option<Duration> {
    let (days, clock) = match text.split_once(',') {
        Some((days, clock)) => {
            let days = days.trim().trim_end_matches("days").trim_end_matches("day").trim();
            (days.parse::<f64>().ok()?, clock.trim())
        }
        None => (0.0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let mut total = 0.0;
    for part in &parts {
        total = total * 60.0 + part.parse::<f64>().ok()?;
    }
    seconds(days * 86_400.0 + total)
}

/// A number of seconds as Python's `str(float)` writes it (`3600.0`, `1.5`): how upstream's
/// newest driver, whose durations are `timedelta`s, prints `total_seconds()`.
pub fn python_float(seconds: f64) -> String {
    if seconds.fract() == 0.0 && seconds.abs() < 1e16 { format!("{seconds:.1}") } else { seconds.to_string() }
}

/// A duration as upstream prints an `int` of seconds: `900`, or `1.5` when fractional.
pub fn format_seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 { duration.as_secs().to_string() } else { duration.as_secs_f64().to_string() }
}

/// The machine name upstream derives from a start command: the `(.+)` of the leftmost match of
/// `run-(.+)-vm$`, or `machine`.
pub fn machine_name_from_command(command: &str) -> String {
    // In Python's regex `.` stops at a newline and `$` also matches before a final one: the
    // match can only be on the last line.
    let command = command.strip_suffix('\n').unwrap_or(command);
    let last_line = command.rsplit('\n').next().unwrap_or(command);
    if let Some(stem) = last_line.strip_suffix("-vm") {
        // Leftmost `run-` with at least one character between it and the `-vm` suffix.
        let mut search = 0;
        while let Some(offset) = stem[search..].find("run-") {
            let start = search + offset + 4;
            if start < stem.len() {
                return stem[start..].to_owned();
            }
            search += offset + 1;
        }
    }
    "machine".to_owned()
}

/// Upstream's `pythonize_name`: the variable a machine is bound to in the test script.
pub fn pythonize_name(name: &str) -> String {
    name.char_indices()
        .map(|(i, c)| {
            let ok = if i == 0 { c.is_ascii_alphabetic() || c == '_' } else { c.is_ascii_alphanumeric() || c == '_' };
            if ok { c } else { '_' }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM_JSON: &str = r#"{
      "vms": {
        "client": {"name": "client", "start_script": "/nix/store/aaa-nixos-vm/bin/run-client-vm"},
        "server": {"name": "server", "start_script": "/nix/store/bbb-nixos-vm/bin/run-server-vm"}
      },
      "containers": {},
      "vlans": [1, 2],
      "global_timeout": 3600,
      "enable_ssh_backdoor": false,
      "test_script": "/nix/store/ccc-test-script"
    }"#;

    #[test]
    fn parses_upstreams_configuration() {
        let config = DriverConfiguration::parse(Path::new("c.json"), UPSTREAM_JSON).expect("valid");
        let spec = config.into_spec();
        assert_eq!(spec.machines.len(), 2);
        assert_eq!(spec.machines[0].name.as_deref(), Some("client"));
        assert_eq!(spec.machines[1].start_command, "/nix/store/bbb-nixos-vm/bin/run-server-vm");
        assert_eq!(spec.vlans, vec![1, 2]);
        assert_eq!(spec.global_timeout, Duration::from_secs(3600));
        assert_eq!(spec.test_script.as_deref(), Some(Path::new("/nix/store/ccc-test-script")));
    }

    #[test]
    fn unknown_keys_are_ignored_and_named_in_one_notice() {
        let text = UPSTREAM_JSON
            .replace("\"vlans\"", "\"future_key\": {\"a\": 1}, \"vlans\"")
            .replace("\"name\": \"client\",", "\"name\": \"client\", \"vsock_cid\": 3,");
        let config = DriverConfiguration::parse(Path::new("c.json"), &text).expect("unknown keys are ignored");
        assert_eq!(
            config.notices(),
            ["driver configuration: ignoring keys ntd does not know: `future_key`, `vms.client.vsock_cid`"]
        );
        assert_eq!(config.into_spec().machines.len(), 2);
    }

    #[test]
    fn the_ssh_backdoor_is_honoured_without_a_notice() {
        let text = UPSTREAM_JSON.replace("\"enable_ssh_backdoor\": false", "\"enable_ssh_backdoor\": true");
        let config = DriverConfiguration::parse(Path::new("c.json"), &text).expect("valid");
        assert!(config.notices().is_empty(), "{:?}", config.notices());
        assert!(config.into_spec().enable_ssh_backdoor);
        let plain = DriverConfiguration::parse(Path::new("c.json"), UPSTREAM_JSON).expect("valid");
        assert!(!plain.into_spec().enable_ssh_backdoor);
    }

    #[test]
    fn a_machine_is_named_by_its_key() {
        let text = UPSTREAM_JSON.replace("{\"name\": \"client\"", "{\"name\": \"other\"");
        let spec = DriverConfiguration::parse(Path::new("c.json"), &text).expect("valid").into_spec();
        assert_eq!(spec.machines[0].name.as_deref(), Some("client"));
    }

    #[test]
    fn a_missing_key_is_an_error_with_its_name() {
        let text = UPSTREAM_JSON.replace("\"vlans\": [1, 2],", "");
        let err = DriverConfiguration::parse(Path::new("c.json"), &text).expect_err("no vlans");
        let message = err.to_string();
        assert!(message.contains("missing field `vlans`"), "{message}");
        assert!(message.starts_with("invalid driver configuration c.json: "), "{message}");
    }

    #[test]
    fn rejects_invalid_json_with_a_position() {
        let err = DriverConfiguration::parse(Path::new("c.json"), "{\"vms\": ").expect_err("truncated");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn containers_are_named_by_their_keys() {
        let text = UPSTREAM_JSON.replace(
            "\"containers\": {}",
            "\"containers\": {\"c1\": {\"name\": \"x\", \"start_script\": \"/x/bin/run-c1-nspawn\", \"display_targets\": []}}",
        );
        let config = DriverConfiguration::parse(Path::new("c.json"), &text).expect("containers");
        assert_eq!(
            config.notices(),
            ["driver configuration: ignoring a key ntd does not know: `containers.c1.display_targets`"]
        );
        let spec = config.into_spec();
        assert_eq!(
            spec.containers,
            [MachineSpec { name: Some("c1".into()), start_command: "/x/bin/run-c1-nspawn".into() }]
        );
        assert_eq!(spec.machines.len(), 2);
    }

    #[test]
    fn a_name_for_both_a_vm_and_a_container_is_refused() {
        let text = UPSTREAM_JSON.replace(
            "\"containers\": {}",
            "\"containers\": {\"client\": {\"name\": \"client\", \"start_script\": \"/x/run-client-nspawn\"}}",
        );
        let err = DriverConfiguration::parse(Path::new("c.json"), &text).expect_err("clash");
        assert!(err.to_string().contains("\"client\" names both a VM and a container"), "{err}");
    }

    #[test]
    fn durations_as_pydantic_reads_them() {
        let cases = [
            ("3600", 3600.0),
            ("1.5", 1.5),
            ("PT1H", 3600.0),
            ("P1DT30M", 86_400.0 + 1800.0),
            ("PT0.5S", 0.5),
            ("P2W", 1_209_600.0),
            ("01:00:00", 3600.0),
            ("10:30", 630.0),
            ("1 day, 0:00:01", 86_401.0),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_duration(text).expect(text), Duration::from_secs_f64(secs), "{text}");
        }
        for bad in ["", "P", "PT", "1h", "-5", "P1H", "PT1D", "1:2:3:4"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn global_timeout_accepts_strings_and_numbers() {
        let text = UPSTREAM_JSON.replace("3600", "\"PT2M\"");
        let config = DriverConfiguration::parse(Path::new("c.json"), &text).expect("valid");
        assert_eq!(config.global_timeout, Duration::from_secs(120));
        let text = UPSTREAM_JSON.replace("3600", "-1");
        assert!(DriverConfiguration::parse(Path::new("c.json"), &text).is_err());
    }

    #[test]
    fn machine_names_like_upstream() {
        assert_eq!(machine_name_from_command("/nix/store/x-nixos-vm/bin/run-server-vm"), "server");
        assert_eq!(machine_name_from_command("run-my-node-vm"), "my-node");
        // Leftmost match, as Python's re.search.
        assert_eq!(machine_name_from_command("/a/run-x-vm/bin/run-y-vm"), "x-vm/bin/run-y");
        assert_eq!(machine_name_from_command("/bin/qemu-system-x86_64 -m 512"), "machine");
        assert_eq!(machine_name_from_command("run--vm"), "machine");
        // Python's `.` does not match a newline, and its `$` matches before a final one.
        assert_eq!(machine_name_from_command("/bin/run-a\nb-vm"), "machine");
        assert_eq!(machine_name_from_command("run-a-vm\n/bin/run-b-vm"), "b");
        assert_eq!(machine_name_from_command("/bin/run-a-vm\n"), "a");
        assert_eq!(machine_name_from_command("/bin/run-a-vm\n\n"), "machine");
    }

    #[test]
    fn pythonized_names() {
        assert_eq!(pythonize_name("web-server"), "web_server");
        assert_eq!(pythonize_name("1st"), "_st");
        assert_eq!(pythonize_name("_ok9"), "_ok9");
    }
}
