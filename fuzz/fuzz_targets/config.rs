//! The driver configuration (`ntd_core::config`).
//!
//! - `DriverConfiguration::parse` never panics; what it accepts turns into a spec with one
//!   machine per VM and one container per container, each named by its key, no key naming
//!   both; its errors name the file. A configuration written from arbitrary names, paths,
//!   VLANs and timeouts (seconds, `format_seconds`, ISO 8601, `HH:MM:SS`) parses back to those
//!   values, unless a key names both a VM and a container.
//! - `parse_duration` never panics and ignores surrounding whitespace; a duration it returns
//!   survives `format_seconds` and back. `format_seconds` writes plain decimal seconds, which
//!   `parse_duration` reads back exactly for whole seconds and to within the f64 rounding
//!   `format_seconds` documents for fractions.
//! - `machine_name_from_command` and `pythonize_name` agree with upstream's Python regular
//!   expressions, `re.search("run-(.+)-vm$", cmd)` and `re.sub(r"^[^A-Za-z_]|[^A-Za-z0-9_]",
//!   "_", name)`, run here with the `regex` crate in Python's semantics.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ntd_core::config::{
    DriverConfiguration, format_seconds, machine_name_from_command, parse_duration, pythonize_name,
};
use regex::Regex;
use serde_json::json;

/// Python's `$` also matches before a final newline, and its `.` stops at newlines, as the
/// `regex` crate's `.` does.
static MACHINE_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"run-(.+)-vm\n?\z").expect("valid regex"));
static NOT_IDENTIFIER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^A-Za-z_]|[^A-Za-z0-9_]").expect("valid regex"));

/// Whole seconds up to this are exact in an f64; beyond it no decimal text is promised.
const EXACT_SECONDS: u64 = 1 << 53;

#[derive(Debug, Arbitrary)]
enum Input {
    Json { path: String, text: String },
    Config(Config),
    Duration(String),
    Format { secs: u64, nanos: u32 },
    Command(String),
    RunScript { prefix: String, name: String },
    Name(String),
}

#[derive(Debug, Arbitrary)]
struct Config {
    vms: Vec<(String, String, String)>,
    vlans: Vec<u32>,
    timeout: Timeout,
    test_script: String,
    enable_ssh_backdoor: Option<bool>,
    with_containers_key: bool,
    containers: Vec<(String, String, String)>,
}

#[derive(Debug, Arbitrary)]
enum Timeout {
    Seconds(u32),
    Formatted { secs: u32, nanos: u32 },
    Iso { days: u16, hours: u8, minutes: u8, seconds: u8 },
    Clock { hours: u8, minutes: u8, seconds: u8 },
}

fn check_json(path: &str, text: &str) {
    match DriverConfiguration::parse(Path::new(path), text) {
        Ok(config) => {
            assert!(config.vms.keys().all(|key| !config.containers.contains_key(key)), "a key names both");
            let vms = config.vms.clone();
            let containers = config.containers.clone();
            let spec = config.into_spec();
            assert_eq!(spec.machines.len(), vms.len());
            for (machine, (key, vm)) in spec.machines.iter().zip(vms.iter()) {
                assert_eq!(machine.name.as_deref(), Some(key.as_str()));
                assert_eq!(Path::new(&machine.start_command), vm.start_script);
            }
            assert_eq!(spec.containers.len(), containers.len());
            for (container, (key, c)) in spec.containers.iter().zip(containers.iter()) {
                assert_eq!(container.name.as_deref(), Some(key.as_str()));
                assert_eq!(Path::new(&container.start_command), c.start_script);
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains(&Path::new(path).display().to_string()), "{message} names the file");
        }
    }
}

fn check_config(config: Config) {
    let (timeout_json, expected_timeout) = match config.timeout {
        Timeout::Seconds(s) => (json!(s), Duration::from_secs(s.into())),
        Timeout::Formatted { secs, nanos } => {
            let d = Duration::new(secs.into(), nanos % 1_000_000_000);
            (json!(format_seconds(d)), parse_duration(&format_seconds(d)).expect("format_seconds is parsed"))
        }
        Timeout::Iso { days, hours, minutes, seconds } => (
            json!(format!("P{days}DT{hours}H{minutes}M{seconds}S")),
            Duration::from_secs(
                u64::from(days) * 86_400 + u64::from(hours) * 3600 + u64::from(minutes) * 60 + u64::from(seconds),
            ),
        ),
        Timeout::Clock { hours, minutes, seconds } => (
            json!(format!("{hours:02}:{minutes:02}:{seconds:02}")),
            Duration::from_secs(u64::from(hours) * 3600 + u64::from(minutes) * 60 + u64::from(seconds)),
        ),
    };
    let mut vms = serde_json::Map::new();
    for (key, name, start_script) in &config.vms {
        vms.insert(key.clone(), json!({ "name": name, "start_script": start_script }));
    }
    let mut object = json!({
        "vms": vms,
        "vlans": config.vlans,
        "global_timeout": timeout_json,
        "test_script": config.test_script,
    });
    if let Some(ssh) = config.enable_ssh_backdoor {
        object["enable_ssh_backdoor"] = json!(ssh);
    }
    let mut containers = serde_json::Map::new();
    for (key, name, start_script) in &config.containers {
        containers.insert(key.clone(), json!({ "name": name, "start_script": start_script }));
    }
    if config.with_containers_key || !containers.is_empty() {
        object["containers"] = json!(containers);
    }
    let clash = config.vms.iter().any(|(key, _, _)| config.containers.iter().any(|(other, _, _)| key == other));
    let text = object.to_string();
    let parsed = match DriverConfiguration::parse(Path::new("c.json"), &text) {
        Ok(parsed) => {
            assert!(!clash, "{text}: a key naming both a VM and a container is accepted");
            parsed
        }
        Err(e) if clash => {
            assert!(e.to_string().contains("names both a VM and a container"), "{e}");
            return;
        }
        Err(e) => panic!("{text} is rejected: {e}"),
    };
    assert_eq!(parsed.global_timeout, expected_timeout, "{text}");
    assert_eq!(parsed.enable_ssh_backdoor, config.enable_ssh_backdoor.unwrap_or(false));
    assert_eq!(parsed.test_script, Path::new(&config.test_script));
    let spec = parsed.into_spec();
    assert_eq!(spec.vlans, config.vlans);
    // One machine per distinct key, in key order, the last one written winning; named by its
    // key, as upstream's driver names it (the `name` field is not what counts).
    let by_key: std::collections::BTreeMap<&String, &String> =
        config.vms.iter().map(|(key, _name, script)| (key, script)).collect();
    assert_eq!(spec.machines.len(), by_key.len());
    for (machine, (key, script)) in spec.machines.iter().zip(by_key.iter()) {
        assert_eq!(machine.name.as_deref(), Some(key.as_str()));
        assert_eq!(&machine.start_command, *script);
    }
    let by_key: std::collections::BTreeMap<&String, &String> =
        config.containers.iter().map(|(key, _name, script)| (key, script)).collect();
    assert_eq!(spec.containers.len(), by_key.len());
    for (container, (key, script)) in spec.containers.iter().zip(by_key.iter()) {
        assert_eq!(container.name.as_deref(), Some(key.as_str()));
        assert_eq!(&container.start_command, *script);
    }
}

fn check_duration(text: &str) {
    let parsed = parse_duration(text);
    let padded = parse_duration(&format!(" \t{text}\n "));
    assert_eq!(parsed.as_ref().ok(), padded.as_ref().ok(), "surrounding whitespace changes {text:?}");
    if let Ok(d) = parsed {
        check_format(d);
    }
}

fn check_format(d: Duration) {
    let text = format_seconds(d);
    assert!(!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "{d:?} as {text:?}");
    assert!(text.matches('.').count() <= 1 && !text.starts_with('.') && !text.ends_with('.'), "{text:?}");
    if d.as_secs() >= EXACT_SECONDS {
        return;
    }
    let back = parse_duration(&text).unwrap_or_else(|e| panic!("{text:?} from {d:?}: {e}"));
    if d.subsec_nanos() == 0 {
        assert_eq!(back, d, "{text:?}");
    } else {
        // Seconds as an f64 are within half an ulp, and back to nanoseconds within one more.
        let tolerance = Duration::from_secs_f64(d.as_secs_f64() * f64::EPSILON) + Duration::from_nanos(1);
        assert!(back.abs_diff(d) <= tolerance, "{d:?} as {text:?} read back as {back:?}");
    }
}

fn check_command(command: &str) {
    let expected = MACHINE_NAME.captures(command).map_or("machine", |c| c.get(1).map_or("", |m| m.as_str()));
    assert_eq!(machine_name_from_command(command), expected, "name of {command:?}");
}

fn check_name(name: &str) {
    let variable = pythonize_name(name);
    assert_eq!(variable, NOT_IDENTIFIER.replace_all(name, "_"), "pythonize_name({name:?})");
    assert_eq!(variable.chars().count(), name.chars().count());
    assert!(variable.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    assert!(!variable.starts_with(|c: char| c.is_ascii_digit()));
    assert_eq!(pythonize_name(&variable), variable, "idempotent");
}

fuzz_target!(|input: Input| match input {
    Input::Json { path, text } => check_json(&path, &text),
    Input::Config(config) => check_config(config),
    Input::Duration(text) => check_duration(&text),
    Input::Format { secs, nanos } => check_format(Duration::new(secs, nanos % 1_000_000_000)),
    Input::Command(command) => check_command(&command),
    Input::RunScript { prefix, name } => check_command(&format!("{prefix}/bin/run-{name}-vm")),
    Input::Name(name) => check_name(&name),
});
