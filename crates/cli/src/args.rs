//! The command line: upstream's newest `--config` interface and the older flags and
//! environment variables, resolved into one [`DriverSpec`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ntd_core::config::{self, DriverConfiguration, DriverSpec, MachineSpec};
use ntd_core::log::LogLevel;

/// A native (Rust) NixOS test driver: runs a NixOS test script against QEMU machines and
/// systemd-nspawn containers.
///
/// runNixOSTest passes `--config driverConfiguration.json`; the older interface (start scripts
/// and a test script as arguments, or in the environment variables startScripts, vmNames,
/// vmStartScripts, vlans, globalTimeout and testScript) works too.
#[derive(Debug, Parser)]
// `infer_long_args`: upstream's argparse takes any unambiguous prefix of a long option
// (nixpkgs' own junit test passes `--junit=junit.xml`).
#[command(name = "nixos-test-driver", version, max_term_width = 100, infer_long_args = true)]
pub struct Args {
    /// The driver configuration file (JSON) runNixOSTest writes.
    #[arg(short = 'c', long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Run this test script instead of the configuration's `test_script`.
    #[arg(long, value_name = "PATH")]
    pub test_script: Option<PathBuf>,

    /// Re-use the machine state from a previous run instead of wiping it.
    #[arg(short = 'K', long)]
    pub keep_machine_state: bool,

    /// Deprecated name of --keep-machine-state.
    #[arg(long, hide = true)]
    pub keep_vm_state: bool,

    /// Open a Python prompt with the test script's globals instead of running the script
    /// (`test_script()` runs it); leaving the prompt stops every machine.
    #[arg(short = 'I', long, overrides_with = "no_interactive")]
    pub interactive: bool,

    /// Run the test script (the default; undoes an earlier --interactive).
    #[arg(long, overrides_with = "interactive", hide = true)]
    pub no_interactive: bool,

    /// Pause at a failure (and at `debug.breakpoint()`) with a pdb prompt on 127.0.0.1:4444,
    /// and log how to enter the build sandbox with this attach command (the Nix debug hook
    /// passes `--debug-hook=<attach>`).
    #[arg(long, alias = "debug-hook", value_name = "ATTACH-COMMAND")]
    pub debug_hook_attach: Option<String>,

    /// The directory for outputs (screenshots, copied files, reports). Default: the current
    /// directory.
    #[arg(short = 'o', long = "output_directory", alias = "output-directory", value_name = "DIR")]
    pub output_directory: Option<PathBuf>,

    /// Write a JUnit XML report there (relative to the output directory): one test case per
    /// subtest, and `main`.
    #[arg(long, value_name = "PATH")]
    pub junit_xml: Option<PathBuf>,

    /// Log level: debug, info, warning or error [env: logLevel].
    #[arg(long, value_name = "LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Start scripts of the machines; names come from run-<name>-vm [env: startScripts].
    #[arg(long, value_name = "START-SCRIPT", num_args = 0..)]
    pub start_scripts: Option<Vec<String>>,

    /// Names of the machines, with --vm-start-scripts [env: vmNames].
    #[arg(long, value_name = "NAME", num_args = 0..)]
    pub vm_names: Option<Vec<String>>,

    /// Start scripts of the machines named by --vm-names [env: vmStartScripts].
    #[arg(long, value_name = "START-SCRIPT", num_args = 0..)]
    pub vm_start_scripts: Option<Vec<String>>,

    /// Names of the systemd-nspawn containers, with --container-start-scripts [env:
    /// containerNames].
    #[arg(long, value_name = "NAME", num_args = 0..)]
    pub container_names: Option<Vec<String>>,

    /// Start scripts (run-<name>-nspawn) of the containers [env: containerStartScripts].
    #[arg(long, value_name = "START-SCRIPT", num_args = 0..)]
    pub container_start_scripts: Option<Vec<String>>,

    /// VLAN numbers to create switches for [env: vlans].
    #[arg(long, value_name = "VLAN", num_args = 0..)]
    pub vlans: Option<Vec<String>>,

    /// Timeout for the whole test, in seconds [env: globalTimeout].
    #[arg(long, value_name = "GLOBAL_TIMEOUT")]
    pub global_timeout: Option<String>,

    /// Print SSH commands for the machines' kernel vsock devices, numbered from N + 1, as older
    /// nixpkgs asks with its SSH backdoor (its VMs bring the devices themselves)
    #[arg(long, value_name = "N")]
    pub dump_vsocks: Option<u32>,

    /// Give up on a machine whose backdoor shell has not connected (a container: that is not
    /// ready) after this many seconds (default 300).
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<f64>,

    /// Give every QEMU machine a VNC server, on a unix socket in its state directory; the log
    /// says how to connect to each (`vncviewer <socket>`).
    #[arg(long)]
    pub vnc: bool,

    /// Serve a live page on 127.0.0.1 (PORT, or any free port): every machine's screen, the
    /// test's progress and, after a failure, its artifacts. Implies --vnc.
    #[arg(long, value_name = "PORT", num_args = 0..=1, require_equals = true, default_missing_value = "0")]
    pub web_view: Option<u16>,

    /// The test script to run [env: testScript].
    #[arg(value_name = "TESTSCRIPT")]
    pub testscript: Option<PathBuf>,
}

/// A problem with the command line or configuration: exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<config::Error> for UsageError {
    /// The whole story: a file that cannot be read says why.
    fn from(error: config::Error) -> Self {
        UsageError(ntd_core::full_message(&error))
    }
}

/// Everything a run needs, resolved from the arguments.
#[derive(Debug)]
pub struct Resolved {
    pub spec: DriverSpec,
    pub test_script: PathBuf,
    /// The test's name, for telemetry: Nix's `$name` without `vm-test-run-`, else the script's.
    pub test_name: String,
    /// Where the JUnit report goes, if asked for.
    pub junit_xml: Option<PathBuf>,
    pub output_directory: PathBuf,
    /// Write failure artifacts: only where an output directory was given (`-o`), so that a
    /// run in the current directory leaves nothing new there.
    pub failure_artifacts: bool,
    pub keep_machine_state: bool,
    /// Open the interactive prompt instead of running the script.
    pub interactive: bool,
    /// The debug hook's attach command: breakpoints pause the test.
    pub debug_hook_attach: Option<String>,
    /// Give QEMU machines a VNC server (`--vnc`, or `--web-view`).
    pub vnc: bool,
    /// Serve the live page on this loopback port (0: any free one).
    pub web_view: Option<u16>,
    pub log_level: LogLevel,
    pub connect_timeout: Duration,
    /// What was asked for that ntd cannot honour here: one warning line each, logged when the
    /// run starts.
    pub notices: Vec<String>,
    /// Older nixpkgs' `--dump-vsocks <offset>`: print its SSH listing (`vsock/<offset + 1 + i>`)
    /// when the run starts. `None` when not given, or when the configuration's backdoor wins.
    pub dump_vsocks: Option<u32>,
}

/// The command line with `--web-view PORT` written as `--web-view=PORT`: the port is
/// optional, and a value must be attached to be told apart from the test script argument
/// (`--web-view test.py`), so a separate word is taken as the port only when it is a number.
/// An unambiguous prefix (`--web 8080`, as `infer_long_args` takes it) counts too; nothing
/// after `--` does.
pub fn attach_web_view_port(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    use clap::CommandFactory;
    let longs: Vec<String> =
        Args::command().get_arguments().filter_map(|arg| arg.get_long()).map(str::to_owned).collect();
    let is_web_view = |arg: &OsString| {
        let Some(prefix) = arg.to_str().and_then(|arg| arg.strip_prefix("--")) else { return false };
        let matching: Vec<&String> = longs.iter().filter(|long| long.starts_with(prefix)).collect();
        !prefix.is_empty() && matching.len() == 1 && matching[0] == "web-view"
    };
    let is_port =
        |next: &OsString| next.to_str().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    let mut joined: Vec<OsString> = Vec::new();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        if arg == "--" {
            joined.push(arg);
            joined.extend(args);
            break;
        }
        if is_web_view(&arg)
            && let Some(port) = args.next_if(is_port)
        {
            let mut attached = arg;
            attached.push("=");
            attached.push(port);
            joined.push(attached);
        } else {
            joined.push(arg);
        }
    }
    joined
}

/// An argument, or the environment variable upstream takes as its default.
fn or_env(value: Option<String>, var: &str) -> Option<String> {
    value.or_else(|| std::env::var(var).ok())
}

/// A list argument, or the environment variable split on whitespace (upstream's EnvDefault).
fn list_or_env(value: Option<Vec<String>>, var: &str) -> Option<Vec<String>> {
    value.or_else(|| std::env::var(var).ok().map(|v| v.split_whitespace().map(str::to_owned).collect()))
}

fn parse_vlans(values: &[String]) -> Result<Vec<u32>, UsageError> {
    values.iter().map(|v| v.parse::<u32>().map_err(|_| UsageError(format!("invalid VLAN number {v:?}")))).collect()
}

/// Upstream's `writeable_dir` check for `-o`.
fn writable_dir(path: &Path) -> Result<PathBuf, UsageError> {
    if !path.is_dir() {
        return Err(UsageError(format!("{} is not a directory", path.display())));
    }
    if !ntd_core::driver::is_writable(path) {
        return Err(UsageError(format!("{} is not a writeable directory", path.display())));
    }
    std::path::absolute(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))
}

impl Args {
    /// Resolve the arguments (and the environment) into a run.
    pub fn resolve(self) -> Result<Resolved, UsageError> {
        let log_level = match or_env(self.log_level.clone(), "logLevel") {
            None => LogLevel::Info,
            Some(name) => LogLevel::from_name(&name).ok_or_else(|| {
                UsageError(format!("invalid log level {name:?}: choose from debug, info, warning, error"))
            })?,
        };
        let output_directory = match &self.output_directory {
            Some(dir) => writable_dir(dir)?,
            None => writable_dir(Path::new("."))?,
        };
        let connect_timeout = match self.connect_timeout {
            None => ntd_core::machine::qemu::DEFAULT_CONNECT_TIMEOUT,
            Some(secs) => Duration::try_from_secs_f64(secs)
                .map_err(|_| UsageError(format!("invalid --connect-timeout {secs}")))?,
        };
        let keep_machine_state = self.keep_machine_state || self.keep_vm_state;

        let mut notices = Vec::new();
        let mut spec = match &self.config {
            Some(path) => {
                let legacy = [
                    ("--start-scripts", self.start_scripts.is_some()),
                    ("--vm-names", self.vm_names.is_some()),
                    ("--vm-start-scripts", self.vm_start_scripts.is_some()),
                    ("--container-names", self.container_names.is_some()),
                    ("--container-start-scripts", self.container_start_scripts.is_some()),
                    ("--vlans", self.vlans.is_some()),
                    ("--global-timeout", self.global_timeout.is_some()),
                    ("a test script argument", self.testscript.is_some()),
                ];
                if let Some((flag, _)) = legacy.iter().find(|(_, given)| *given) {
                    return Err(UsageError(format!("--config cannot be combined with {flag}")));
                }
                let config = DriverConfiguration::load(path)?;
                notices.extend(config.notices());
                let mut spec = config.into_spec();
                if let Some(script) = &self.test_script {
                    spec.test_script = Some(script.clone());
                }
                spec
            }
            None if self.test_script.is_some() => {
                return Err(UsageError("--test-script replaces the test script of --config; give --config too".into()));
            }
            None => self.legacy_spec()?,
        };
        let test_script = spec.test_script.clone().ok_or_else(|| {
            UsageError(
                "no test to run: give --config <driverConfiguration.json> (as runNixOSTest does), \
                 or start scripts and a test script (see --help)"
                    .into(),
            )
        })?;
        let cwd = std::env::current_dir().map_err(|e| UsageError(format!("cannot read the current directory: {e}")))?;
        for machine in &mut spec.machines {
            let command = ntd_core::machine::qemu::start_command::StartCommand::new(machine.start_command.clone());
            if let Some((path, problem)) = command.script_problem() {
                return Err(UsageError(format!("start script {} {problem}", path.display())));
            }
            machine.start_command = command.absolutized(&cwd).as_str().to_owned();
        }
        for container in &mut spec.containers {
            // Upstream runs a container's script as it is, without a shell.
            let script = cwd.join(&container.start_command);
            if let Some(problem) = ntd_core::machine::start_script_problem(&script) {
                return Err(UsageError(format!("start script {} {problem}", script.display())));
            }
            container.start_command = script.display().to_string();
        }
        // Older nixpkgs' backdoor: its VMs carry kernel vsock devices numbered from the offset,
        // and the driver only lists them. The configuration's enable_ssh_backdoor is the newer
        // backdoor (vhost-device-vsock): with both, that one is set up and listed.
        let dump_vsocks = match self.dump_vsocks {
            Some(0) => {
                notices.push("--dump-vsocks 0: nothing to list (as upstream: an offset of 0 turns it off)".to_owned());
                None
            }
            Some(offset) if spec.enable_ssh_backdoor => {
                notices.push(format!(
                    "--dump-vsocks {offset}: the configuration's enable_ssh_backdoor serves the VMs' vsock through \
                     vhost-device-vsock, so the listing names its sockets (vsock-mux/), not vsock/<CID>"
                ));
                None
            }
            other => other,
        };
        let test_name = match std::env::var("name") {
            Ok(name) if !name.is_empty() => name.strip_prefix("vm-test-run-").unwrap_or(&name).to_owned(),
            _ => test_script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "test".into()),
        };
        let junit_xml = self.junit_xml.as_ref().map(|path| output_directory.join(path));
        Ok(Resolved {
            spec,
            test_script,
            test_name,
            junit_xml,
            output_directory,
            failure_artifacts: self.output_directory.is_some(),
            keep_machine_state,
            interactive: self.interactive && !self.no_interactive,
            debug_hook_attach: self.debug_hook_attach.clone(),
            vnc: self.vnc || self.web_view.is_some(),
            web_view: self.web_view,
            log_level,
            connect_timeout,
            dump_vsocks,
            notices,
        })
    }

    fn legacy_spec(&self) -> Result<DriverSpec, UsageError> {
        let start_scripts = list_or_env(self.start_scripts.clone(), "startScripts");
        let vm_names = list_or_env(self.vm_names.clone(), "vmNames");
        let vm_start_scripts = list_or_env(self.vm_start_scripts.clone(), "vmStartScripts");
        let mut machines: Vec<MachineSpec> = start_scripts
            .unwrap_or_default()
            .into_iter()
            .map(|start_command| MachineSpec { name: None, start_command })
            .collect();
        match (vm_names, vm_start_scripts) {
            (None, None) => {}
            (Some(names), Some(scripts)) if names.len() == scripts.len() => {
                machines.extend(
                    names
                        .into_iter()
                        .zip(scripts)
                        .map(|(name, start_command)| MachineSpec { name: Some(name), start_command }),
                );
            }
            (Some(names), Some(scripts)) => {
                return Err(UsageError(format!(
                    "--vm-names has {} names but --vm-start-scripts has {} scripts",
                    names.len(),
                    scripts.len()
                )));
            }
            (Some(_), None) => return Err(UsageError("--vm-names needs --vm-start-scripts".into())),
            // As upstream: each name comes from its script (`run-<name>-vm`).
            (None, Some(scripts)) => {
                machines.extend(scripts.into_iter().map(|start_command| MachineSpec { name: None, start_command }));
            }
        }
        let container_names = list_or_env(self.container_names.clone(), "containerNames");
        let container_start_scripts = list_or_env(self.container_start_scripts.clone(), "containerStartScripts");
        let containers = match (container_names, container_start_scripts) {
            (None, None) => Vec::new(),
            (Some(names), Some(scripts)) if names.len() == scripts.len() => names
                .into_iter()
                .zip(scripts)
                .map(|(name, start_command)| MachineSpec { name: Some(name), start_command })
                .collect(),
            (Some(names), Some(scripts)) => {
                return Err(UsageError(format!(
                    "--container-names has {} names but --container-start-scripts has {} scripts",
                    names.len(),
                    scripts.len()
                )));
            }
            (Some(_), None) => return Err(UsageError("--container-names needs --container-start-scripts".into())),
            // As upstream: each name comes from its script (`run-<name>-nspawn`).
            (None, Some(scripts)) => {
                scripts.into_iter().map(|start_command| MachineSpec { name: None, start_command }).collect()
            }
        };
        let vlans = parse_vlans(&list_or_env(self.vlans.clone(), "vlans").unwrap_or_default())?;
        let global_timeout = match or_env(self.global_timeout.clone(), "globalTimeout") {
            None => config::DEFAULT_GLOBAL_TIMEOUT,
            Some(text) => config::parse_duration(&text)?,
        };
        let test_script = self.testscript.clone().or_else(|| std::env::var_os("testScript").map(PathBuf::from));
        Ok(DriverSpec { machines, containers, vlans, global_timeout, test_script, enable_ssh_backdoor: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let args = std::iter::once("nixos-test-driver").chain(args.iter().copied()).map(std::ffi::OsString::from);
        Args::try_parse_from(attach_web_view_port(args)).expect("valid arguments")
    }

    #[test]
    fn web_view_takes_an_optional_port_and_implies_vnc() {
        assert_eq!(parse(&["--web-view", "8080", "s.py"]).web_view, Some(8080));
        assert_eq!(parse(&["--web-view=8080", "s.py"]).web_view, Some(8080));
        let any_port = parse(&["--web-view", "s.py"]);
        assert_eq!(any_port.web_view, Some(0));
        assert_eq!(any_port.testscript.as_deref(), Some(Path::new("s.py")));
        assert_eq!(parse(&["s.py"]).web_view, None);
        assert!(!parse(&["s.py"]).vnc);
        assert!(parse(&["--vnc", "s.py"]).vnc);
        let bad = Args::try_parse_from(["nixos-test-driver", "--web-view=99999", "s.py"]);
        assert!(bad.is_err(), "a port past 65535 is a usage error");
        // A prefix, as argparse and `infer_long_args` take it.
        let prefix = parse(&["--web", "8080", "s.py"]);
        assert_eq!((prefix.web_view, prefix.testscript.as_deref()), (Some(8080), Some(Path::new("s.py"))));
        // After `--` everything is an argument.
        let after = parse(&["--", "8080"]);
        assert_eq!((after.web_view, after.testscript.as_deref()), (None, Some(Path::new("8080"))));
    }

    #[test]
    fn legacy_flags() {
        let args = parse(&[
            "--start-scripts",
            "run-a-vm",
            "run-b-vm",
            "--vlans",
            "1",
            "2",
            "--global-timeout",
            "60",
            "-o",
            "/tmp",
            "script.py",
        ]);
        let resolved = args.resolve().expect("resolves");
        assert_eq!(resolved.spec.machines.len(), 2);
        assert_eq!(resolved.spec.machines[1].start_command, "run-b-vm");
        assert_eq!(resolved.spec.vlans, vec![1, 2]);
        assert_eq!(resolved.spec.global_timeout, Duration::from_secs(60));
        assert_eq!(resolved.test_script, PathBuf::from("script.py"));
    }

    #[test]
    fn missing_start_scripts_are_reported_before_anything_starts() {
        let args = parse(&["--start-scripts", "/nonexistent/run-a-vm", "-o", "/tmp", "s.py"]);
        assert_eq!(args.resolve().expect_err("missing").0, "start script /nonexistent/run-a-vm does not exist");
    }

    #[test]
    fn vm_names_must_match_scripts() {
        let args = parse(&["--vm-names", "a", "b", "--vm-start-scripts", "run-a-vm", "-o", "/tmp", "s.py"]);
        let err = args.resolve().expect_err("mismatch");
        assert_eq!(err.0, "--vm-names has 2 names but --vm-start-scripts has 1 scripts");
    }

    #[test]
    fn config_excludes_legacy_flags() {
        let args = parse(&["--config", "c.json", "--vlans", "1", "-o", "/tmp"]);
        assert_eq!(args.resolve().expect_err("conflict").0, "--config cannot be combined with --vlans");
    }

    #[test]
    fn output_directory_must_exist() {
        let args = parse(&["-o", "/nonexistent/dir", "s.py"]);
        assert_eq!(args.resolve().expect_err("missing dir").0, "/nonexistent/dir is not a directory");
    }

    #[test]
    fn log_level_is_checked() {
        let args = parse(&["--log-level", "loud", "-o", "/tmp", "s.py"]);
        assert!(args.resolve().expect_err("bad level").0.starts_with("invalid log level \"loud\""));
    }

    #[test]
    fn unambiguous_prefixes_of_long_options_work_as_with_argparse() {
        let args = parse(&["--junit=junit.xml", "--log", "debug", "-o", "/tmp", "s.py"]);
        let resolved = args.resolve().expect("resolves");
        assert_eq!(resolved.junit_xml, Some(PathBuf::from("/tmp/junit.xml")));
        assert_eq!(resolved.log_level, LogLevel::Debug);
        // --keep-machine-state or --keep-vm-state: ambiguous, as for argparse.
        let error = Args::try_parse_from(["nixos-test-driver", "--keep", "s.py"]).expect_err("ambiguous");
        assert!(error.to_string().contains("--keep"), "{error}");
    }

    #[test]
    fn vm_start_scripts_without_names_take_the_names_from_the_scripts() {
        let args = parse(&["--vm-start-scripts", "run-a-vm", "run-b-vm", "-o", "/tmp", "s.py"]);
        let resolved = args.resolve().expect("resolves");
        let names: Vec<_> = resolved.spec.machines.iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, [None, None]);
        assert_eq!(resolved.spec.machines[1].start_command, "run-b-vm");
    }

    #[test]
    fn dump_vsocks_asks_for_older_nixpkgs_listing() {
        let resolved = parse(&["--dump-vsocks", "3", "-o", "/tmp", "s.py"]).resolve().expect("resolves");
        assert_eq!(resolved.dump_vsocks, Some(3));
        assert!(resolved.notices.is_empty(), "{:?}", resolved.notices);
        // As upstream, 0 lists nothing; ntd says so.
        let resolved = parse(&["--dump-vsocks=0", "-o", "/tmp", "s.py"]).resolve().expect("resolves");
        assert_eq!(resolved.dump_vsocks, None);
        assert!(resolved.notices[0].starts_with("--dump-vsocks 0: nothing to list"), "{:?}", resolved.notices);
    }

    #[test]
    fn test_script_needs_config() {
        let args = parse(&["--test-script", "s.py", "-o", "/tmp"]);
        assert!(args.resolve().expect_err("no config").0.starts_with("--test-script replaces"));
    }

    #[test]
    fn keep_vm_state_is_an_alias() {
        let args = parse(&["--keep-vm-state", "-o", "/tmp", "s.py"]);
        assert!(args.resolve().expect("resolves").keep_machine_state);
    }
}
