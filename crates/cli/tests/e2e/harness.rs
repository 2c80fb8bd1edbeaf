//! The harness of the end-to-end tests: real start scripts for the built-in guest, the real
//! `nixos-test-driver` binary, real QEMU, and a check of the process table afterwards.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// A file under tests/e2e/ or examples/.
pub fn repo_file(path: &str) -> PathBuf {
    repo().join(path)
}

/// The built guest: `NTD_GUEST_DIR`, or built (or found in the cache) by tests/guest/build.
pub fn guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| {
        if let Some(dir) = std::env::var_os("NTD_GUEST_DIR") {
            return PathBuf::from(dir);
        }
        let output = Command::new(repo().join("tests/guest/build"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/guest/build");
        assert!(
            output.status.success(),
            "the end-to-end tests need the test guest; tests/guest/build failed (it needs root and \
             the packages of scripts/install-host-deps)"
        );
        PathBuf::from(String::from_utf8(output.stdout).expect("utf-8 path").trim())
    })
}

/// Which guest a machine boots.
#[derive(Clone, Copy)]
pub enum Tier {
    /// Debian with systemd (15-20 s to boot under TCG).
    Debian,
    /// The busybox smoke tier (a few seconds).
    Smoke,
}

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

/// One test's private directory: start scripts, the driver's TMPDIR, outputs.
pub struct Scenario {
    dir: tempfile::TempDir,
    scripts: Vec<PathBuf>,
    vlans: Vec<u32>,
}

impl Scenario {
    pub fn new() -> Scenario {
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("ntd-e2e.").tempdir_in("/tmp").expect("temp dir");
        for sub in ["bin", "tmp", "out"] {
            std::fs::create_dir(dir.path().join(sub)).expect("scenario dirs");
        }
        Scenario { dir, scripts: Vec::new(), vlans: Vec::new() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn out_dir(&self) -> PathBuf {
        self.path().join("out")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.path().join("tmp")
    }

    /// Write a start script for the built-in guest; it is passed to the driver.
    pub fn machine(&mut self, name: &str, tier: Tier, options: &[&str]) -> PathBuf {
        let script = self.start_script(name, tier, options);
        self.scripts.push(script.clone());
        script
    }

    /// Write start scripts for machines on VLANs, numbered and named as NixOS's network.nix
    /// does it: node numbers in name order, every node in every /etc/hosts by the address on
    /// its first VLAN. The VLANs are passed to the driver.
    pub fn network(&mut self, tier: Tier, machines: &[(&str, &[u32])]) {
        let mut sorted: Vec<(&str, &[u32])> = machines.to_vec();
        sorted.sort_by_key(|(name, _)| *name);
        let hosts: Vec<String> = sorted
            .iter()
            .enumerate()
            .filter_map(|(i, (name, vlans))| vlans.first().map(|vlan| format!("{name}={}:{vlan}", i + 1)))
            .collect();
        let hosts = hosts.join(",");
        for (i, (name, vlans)) in sorted.iter().enumerate() {
            let node = (i + 1).to_string();
            let mut options: Vec<String> = vec!["--node-number".into(), node, "--hosts".into(), hosts.clone()];
            for vlan in *vlans {
                options.push("--vlan".into());
                options.push(vlan.to_string());
                if !self.vlans.contains(vlan) {
                    self.vlans.push(*vlan);
                }
            }
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            self.machine(name, tier, &options);
        }
    }

    /// Write a start script for the built-in guest without passing it to the driver.
    pub fn start_script(&self, name: &str, tier: Tier, options: &[&str]) -> PathBuf {
        let tier = match tier {
            Tier::Debian => "debian",
            Tier::Smoke => "smoke",
        };
        let output = Command::new(repo().join("tests/guest/mk-start-script"))
            .arg("--guest")
            .arg(guest())
            .args(["--tier", tier])
            .args(options)
            .arg(name)
            .arg(self.path().join("bin"))
            .output()
            .expect("run mk-start-script");
        assert!(output.status.success(), "mk-start-script: {}", String::from_utf8_lossy(&output.stderr));
        PathBuf::from(String::from_utf8(output.stdout).expect("utf-8").trim())
    }

    /// Write a file into the scenario directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write scenario file");
        path
    }

    /// Run the driver on `script` with the machines' start scripts, failing the test if it
    /// runs longer than `limit` (a hang guard, not a speed claim).
    pub fn run(&self, script: &Path, extra: &[&str], limit: Duration) -> Run {
        self.run_with(self.command(extra), script, limit)
    }

    /// [`Scenario::run`] with a prepared driver command (see [`Scenario::command`]).
    pub fn run_with(&self, mut command: Command, script: &Path, limit: Duration) -> Run {
        // The script first: --start-scripts takes every argument after it.
        command.arg(script);
        if !self.scripts.is_empty() {
            command.arg("--start-scripts").args(&self.scripts);
        }
        if !self.vlans.is_empty() {
            command.arg("--vlans").args(self.vlans.iter().map(u32::to_string));
        }
        self.run_command(command, limit)
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
        self.assert_nothing_left(&run);
        run
    }

    /// Run a prepared driver command and send it `signal` once its stderr has printed a line
    /// containing `trigger` and, when `process` is given, a process of that name runs on the
    /// driver's behalf; fails the test if that never happens or the driver hangs.
    pub fn run_signalled(
        &self,
        mut command: Command,
        trigger: &str,
        process: Option<&str>,
        signal: libc::c_int,
        limit: Duration,
    ) -> Run {
        use std::io::BufRead;
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
        let needle = self.path().to_string_lossy().into_owned();
        let (mut triggered, mut signalled) = (false, false);
        let waited = wait_or_kill(&mut child, start, limit, || {
            while let Ok(line) = lines.try_recv() {
                triggered |= line.contains(trigger);
            }
            let ready = process.is_none_or(|name| {
                live_processes_mentioning(&needle).into_iter().any(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name)
                })
            });
            if triggered && ready && !signalled {
                // SAFETY: kill has no memory-safety preconditions; pid is our child.
                unsafe {
                    libc::kill(pid, signal);
                }
                signalled = true;
            }
        });
        let Some(status) = waited else { hung(limit, err_reader) };
        let run = Run {
            status: status.code(),
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        };
        assert!(signalled, "the driver ended before {trigger:?} (and {process:?} running):\n{}", run.stderr);
        self.assert_nothing_left(&run);
        run
    }

    /// Fail unless the driver removed what it made in its TMPDIR: the machines' state
    /// directories, the switches' socket directories, the shared directory.
    pub fn assert_state_removed(&self, run: &Run) {
        let left: Vec<String> = std::fs::read_dir(self.tmp_dir())
            .expect("read the scenario's TMPDIR")
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("vm-state-") || name.ends_with(".ctl") || name == "shared-xchg")
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
                    // SAFETY: kill has no memory-safety preconditions; clean up before failing.
                    unsafe {
                        libc::kill(*pid, libc::SIGKILL);
                    }
                }
                panic!("processes left running after the driver exited: {left:?}\n--- stderr\n{}", run.stderr);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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

/// Pids of live (not zombie) processes whose command line contains `needle`.
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

/// The generous limit for a test with one Debian boot under TCG.
pub const DEBIAN_LIMIT: Duration = Duration::from_secs(240);
/// The limit for a test with one smoke-tier boot.
pub const SMOKE_LIMIT: Duration = Duration::from_secs(120);

/// The virtualenv holding the ntd wheel with pytest, mypy and pyflakes: `NTD_PY_ENV`, as
/// scripts/python-env prints it (scripts/test sets it). It is not built here: building
/// recreates the venv, which would pull it from under tests running at the same time.
pub fn py_env() -> PathBuf {
    match std::env::var_os("NTD_PY_ENV") {
        Some(env) => PathBuf::from(env),
        None => panic!("the Python tests need the ntd wheel's venv: export NTD_PY_ENV=$(scripts/python-env)"),
    }
}
