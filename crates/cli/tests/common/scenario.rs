//! One test's private directory and the driver runs in it: the real `nixos-test-driver`
//! binary with the directory as its TMPDIR and output directory, a hang guard on every run,
//! and a check of the process table afterwards. Each tier wraps [`ScenarioDir`] with its own
//! machines: the e2e tier's real guest, the quick tier's fake QEMU.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one driver run produced.
#[derive(Debug)]
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Fail with the whole output if `needle` is not in stderr.
    pub fn assert_stderr_contains(&self, needle: &str) {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
    }

    /// Fail with the whole output unless the exit status is `status`.
    pub fn assert_status(&self, status: i32) {
        assert_eq!(self.status, Some(status), "exit status\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
    }
}

/// What a test does while the driver runs (see [`ScenarioDir::run_driven`]): called every
/// 20 ms with the driver's pid and its stderr so far.
pub type Driving<'a> = dyn FnMut(i32, &str) + 'a;

/// One test's private directory: start scripts (`bin/`), the driver's TMPDIR (`tmp/`),
/// outputs (`out/`), and the machines and VLANs passed to the driver.
pub struct ScenarioDir {
    dir: tempfile::TempDir,
    scripts: Vec<PathBuf>,
    containers: Vec<PathBuf>,
    vlans: Vec<u32>,
    check_state: bool,
}

impl ScenarioDir {
    /// A fresh directory under /tmp named `<prefix>XXXXXX`.
    pub fn new(prefix: &str) -> ScenarioDir {
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").expect("temp dir");
        for sub in ["bin", "tmp", "out"] {
            std::fs::create_dir(dir.path().join(sub)).expect("scenario dirs");
        }
        ScenarioDir { dir, scripts: Vec::new(), containers: Vec::new(), vlans: Vec::new(), check_state: false }
    }

    /// Check after every run that the driver removed its state from TMPDIR (unless the run
    /// was asked to keep it), as well as that no process of the scenario is left.
    pub fn check_state_after_every_run(&mut self) {
        self.check_state = true;
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the start scripts.
    pub fn bin_dir(&self) -> PathBuf {
        self.path().join("bin")
    }

    pub fn out_dir(&self) -> PathBuf {
        self.path().join("out")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.path().join("tmp")
    }

    /// Pass a start script to the driver (`--start-scripts`) in [`ScenarioDir::run`].
    pub fn pass_start_script(&mut self, script: PathBuf) {
        self.scripts.push(script);
    }

    /// Pass a container's start script to the driver (`--container-start-scripts`) in
    /// [`ScenarioDir::run`].
    pub fn pass_container_script(&mut self, script: PathBuf) {
        self.containers.push(script);
    }

    /// Pass a VLAN to the driver (`--vlans`) in [`ScenarioDir::run`]; once per number.
    pub fn pass_vlan(&mut self, vlan: u32) {
        if !self.vlans.contains(&vlan) {
            self.vlans.push(vlan);
        }
    }

    /// Write a file into the scenario directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write scenario file");
        path
    }

    /// Write a `driverConfiguration.json` as nixpkgs' framework writes it (keys sorted) for
    /// the VMs `vms` (name, start script), no containers and no VLANs; its path.
    pub fn write_configuration(
        &self,
        vms: &[(&str, &Path)],
        test_script: &Path,
        global_timeout: u64,
        enable_ssh_backdoor: bool,
    ) -> PathBuf {
        let vms: serde_json::Map<String, serde_json::Value> = vms
            .iter()
            .map(|(name, script)| (name.to_string(), serde_json::json!({"name": name, "start_script": script})))
            .collect();
        let config = serde_json::json!({
            "containers": {},
            "enable_ssh_backdoor": enable_ssh_backdoor,
            "global_timeout": global_timeout,
            "test_script": test_script,
            "vlans": [],
            "vms": vms,
        });
        self.write("driverConfiguration.json", &config.to_string())
    }

    /// Run the driver on `script` with the machines' start scripts, failing the test if it
    /// runs longer than `limit` (a hang guard, not a speed claim).
    pub fn run(&self, script: &Path, extra: &[&str], limit: Duration) -> Run {
        self.run_with(self.command(extra), script, limit)
    }

    /// [`ScenarioDir::run`] with a prepared driver command (see [`ScenarioDir::command`]).
    pub fn run_with(&self, mut command: Command, script: &Path, limit: Duration) -> Run {
        self.add_machines(&mut command, script);
        self.run_command(command, limit)
    }

    /// Add the test script, then the machines and VLANs passed to the driver, to `command`.
    pub fn add_machines(&self, command: &mut Command, script: &Path) {
        // The script first: --start-scripts takes every argument after it.
        command.arg(script);
        if !self.scripts.is_empty() {
            command.arg("--start-scripts").args(&self.scripts);
        }
        if !self.containers.is_empty() {
            command.arg("--container-start-scripts").args(&self.containers);
        }
        if !self.vlans.is_empty() {
            command.arg("--vlans").args(self.vlans.iter().map(u32::to_string));
        }
    }

    /// The driver command with the scenario's environment and output directory.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nixos-test-driver"));
        command
            .env("TMPDIR", self.tmp_dir())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env("NO_COLOR", "1")
            .arg("-o")
            .arg(self.out_dir())
            .args(extra);
        command
    }

    /// Run a prepared driver command under the hang guard.
    pub fn run_command(&self, command: Command, limit: Duration) -> Run {
        self.run_command_with_stdin(command, None, limit)
    }

    /// Run a prepared driver command under the hang guard, writing `stdin` to it (and then
    /// closing it) when given.
    pub fn run_command_with_stdin(&self, mut command: Command, stdin: Option<&[u8]>, limit: Duration) -> Run {
        let start = Instant::now();
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run the driver");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            let data = data.to_vec();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&data);
            });
        }
        let mut stdout = child.stdout.take().expect("stdout pipe");
        let mut stderr = child.stderr.take().expect("stderr pipe");
        let out_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let Some(status) = wait_or_kill(&mut child, start, limit, || {}) else { hung(limit, err_reader) };
        let run = Run {
            status: status.code(),
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        };
        self.after_run(&command, &run);
        run
    }

    /// Run a prepared driver command and send it `signal` once its stderr has printed a line
    /// containing `trigger` and, when `process` is given, a process of that name runs on the
    /// driver's behalf; fails the test if that never happens or the driver hangs.
    pub fn run_signalled(
        &self,
        command: Command,
        trigger: &str,
        process: Option<&str>,
        signal: libc::c_int,
        limit: Duration,
    ) -> Run {
        let needle = self.path().to_string_lossy().into_owned();
        let mut signalled = false;
        let run = self.run_driven(command, limit, &mut |pid, stderr| {
            let ready = process.is_none_or(|name| {
                live_processes_mentioning(&needle).into_iter().any(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name)
                })
            });
            if !signalled && ready && stderr.lines().any(|line| line.contains(trigger)) {
                send_signal(pid, signal);
                signalled = true;
            }
        });
        assert!(signalled, "the driver ended before {trigger:?} (and {process:?} running):\n{}", run.stderr);
        run
    }

    /// Run a prepared driver command, calling `driving` every 20 ms with its pid and its
    /// stderr so far (to signal it, or to kill one of its children, at the right moment);
    /// fails the test if the driver hangs.
    pub fn run_driven(&self, mut command: Command, limit: Duration, driving: &mut Driving<'_>) -> Run {
        let start = Instant::now();
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run the driver");
        let pid = i32::try_from(child.id()).expect("pid");
        let mut stdout = child.stdout.take().expect("stdout pipe");
        let stderr = child.stderr.take().expect("stderr pipe");
        let out_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
                let _ = lines_tx.send(line);
            }
            text
        });
        let mut seen = String::new();
        let waited = wait_or_kill(&mut child, start, limit, || {
            while let Ok(line) = lines.try_recv() {
                seen.push_str(&line);
                seen.push('\n');
            }
            driving(pid, &seen);
        });
        let Some(status) = waited else { hung(limit, err_reader) };
        let run = Run {
            status: status.code(),
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        };
        self.after_run(&command, &run);
        run
    }

    /// The checks after every run: nothing of the scenario left running and, when asked for,
    /// no state left in TMPDIR unless the run kept it.
    fn after_run(&self, command: &Command, run: &Run) {
        self.assert_nothing_left(run);
        let kept = command
            .get_args()
            .any(|arg| ["-K", "--keep-machine-state", "--keep-vm-state"].contains(&arg.to_str().unwrap_or("")));
        if self.check_state && !kept {
            self.assert_state_removed(run);
        }
    }

    /// Fail unless the driver removed what it made in its TMPDIR: the machines' state
    /// directories, the switches' socket directories, the shared directory, the SSH
    /// backdoor's socket directory.
    pub fn assert_state_removed(&self, run: &Run) {
        let left: Vec<String> = std::fs::read_dir(self.tmp_dir())
            .expect("read the scenario's TMPDIR")
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                name.starts_with("vm-state-")
                    || name.ends_with(".ctl")
                    || name == "shared-xchg"
                    || name.starts_with("vsock-")
            })
            .collect();
        assert!(left.is_empty(), "state left in TMPDIR: {left:?}\n--- stderr\n{}", run.stderr);
    }

    /// Fail if any live process still mentions this scenario's directory in its command line
    /// (QEMU's sockets and vde_switch's socket directory are all in it) or its environment
    /// (every child of the driver inherits TMPDIR, tesseract included).
    pub fn assert_nothing_left(&self, run: &Run) {
        let needle = self.path().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = live_processes_mentioning(&needle);
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                for pid in &left {
                    send_signal(*pid, libc::SIGKILL);
                }
                panic!("processes left running after the driver exited: {left:?}\n--- stderr\n{}", run.stderr);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Send `signal` to the process `pid`.
pub fn send_signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the pid is a process the test started
    // or found running on behalf of its scenario.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Wait for the driver, calling `tick` every 20 ms; kill it and return `None` once it has run
/// longer than `limit` since `start` (the hang guard).
fn wait_or_kill(
    child: &mut std::process::Child,
    start: Instant,
    limit: Duration,
    mut tick: impl FnMut(),
) -> Option<std::process::ExitStatus> {
    loop {
        tick();
        if let Some(status) = child.try_wait().expect("wait for the driver") {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fail the test for a driver that [`wait_or_kill`] had to kill, with what it printed.
fn hung(limit: Duration, err_reader: std::thread::JoinHandle<String>) -> ! {
    let stderr = err_reader.join().unwrap_or_default();
    panic!("the driver hung: still running after {limit:?}\n--- stderr\n{stderr}");
}

/// Pids of live (not zombie) processes whose command line or environment contains `needle`.
pub fn live_processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(needle) && !String::from_utf8_lossy(&environ).contains(needle) {
            continue;
        }
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
            .unwrap_or(true);
        if !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// Whether the process's name (`/proc/<pid>/comm`) starts with `prefix`.
pub fn has_name(pid: i32, prefix: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.starts_with(prefix))
}

/// Each process's pid, name and command line, for a failure message.
pub fn describe(pids: &[i32]) -> Vec<String> {
    let read = |pid: i32, file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    pids.iter()
        .map(|&pid| format!("{pid} {}: {}", read(pid, "comm").trim(), read(pid, "cmdline").replace('\0', " ")))
        .collect()
}
