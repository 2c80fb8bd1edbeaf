//! The harness of the end-to-end tests: real start scripts for the built-in guest, the real
//! `nixos-test-driver` binary, real QEMU, and a check of the process table afterwards (the
//! last two shared with the quick tier: `tests/common/scenario.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::scenario::ScenarioDir;
pub use crate::common::scenario::{Run, live_processes_mentioning};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// A file under tests/e2e/ or examples/.
pub fn repo_file(path: &str) -> PathBuf {
    repo().join(path)
}

/// A built guest: the directory in the environment variable `var`, or what `build` (a script
/// under tests/, which builds or finds it in its cache) prints.
fn built(var: &str, build: &str, needs: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(var) {
        return PathBuf::from(dir);
    }
    let output = Command::new(repo().join(build)).stderr(Stdio::inherit()).output().expect("run the guest build");
    assert!(
        output.status.success(),
        "{needs}; {build} failed (it needs root and the packages of scripts/install-host-deps)"
    );
    PathBuf::from(String::from_utf8(output.stdout).expect("utf-8 path").trim())
}

/// The built guest: `NTD_GUEST_DIR`, or built (or found in the cache) by tests/guest/build.
pub fn guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| built("NTD_GUEST_DIR", "tests/guest/build", "the end-to-end tests need the test guest"))
}

/// The built container guest: `NTD_CONTAINER_DIR`, or built (or found in the cache) by
/// tests/container/build.
pub fn container_guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| {
        built("NTD_CONTAINER_DIR", "tests/container/build", "the container tests need the container guest")
    })
}

/// Which guest a machine boots.
#[derive(Clone, Copy)]
pub enum Tier {
    /// Debian with systemd (15-20 s to boot under TCG).
    Debian,
    /// The busybox smoke tier (a few seconds).
    Smoke,
    /// A systemd-nspawn container of the Debian container guest (seconds; no VM).
    Container,
}

/// One test's private directory with start scripts for the built-in guest; everything else
/// (running the driver, the checks afterwards) is the shared [`ScenarioDir`]'s.
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
        Scenario { dir: ScenarioDir::new("ntd-e2e.") }
    }

    /// Write a start script for the built-in guest (a VM's, or a container's for
    /// [`Tier::Container`]); it is passed to the driver.
    pub fn machine(&mut self, name: &str, tier: Tier, options: &[&str]) -> PathBuf {
        let script = self.start_script(name, tier, options);
        match tier {
            Tier::Container => self.dir.pass_container_script(script.clone()),
            Tier::Debian | Tier::Smoke => self.dir.pass_start_script(script.clone()),
        }
        script
    }

    /// Pass a start script written some other way to the driver.
    pub fn pass_start_script(&mut self, script: PathBuf) {
        self.dir.pass_start_script(script);
    }

    /// Pass a container's start script written some other way to the driver.
    pub fn pass_container_script(&mut self, script: PathBuf) {
        self.dir.pass_container_script(script);
    }

    /// Write start scripts for machines on VLANs, numbered and named as NixOS's network.nix
    /// does it: node numbers in name order, every node in every /etc/hosts by the address on
    /// its first VLAN. The VLANs are passed to the driver.
    pub fn network(&mut self, tier: Tier, machines: &[(&str, &[u32])]) {
        let machines: Vec<(&str, Tier, &[u32])> = machines.iter().map(|(name, vlans)| (*name, tier, *vlans)).collect();
        self.mixed_network(&machines);
    }

    /// [`Scenario::network`] with a tier per machine: VMs and containers on the same VLANs,
    /// numbered together as network.nix numbers nodes and containers.
    pub fn mixed_network(&mut self, machines: &[(&str, Tier, &[u32])]) {
        let mut sorted: Vec<(&str, Tier, &[u32])> = machines.to_vec();
        sorted.sort_by_key(|(name, _, _)| *name);
        let hosts: Vec<String> = sorted
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _, vlans))| vlans.first().map(|vlan| format!("{name}={}:{vlan}", i + 1)))
            .collect();
        let hosts = hosts.join(",");
        for (i, (name, tier, vlans)) in sorted.iter().enumerate() {
            let node = (i + 1).to_string();
            let mut options: Vec<String> = vec!["--node-number".into(), node, "--hosts".into(), hosts.clone()];
            for vlan in *vlans {
                options.push("--vlan".into());
                options.push(vlan.to_string());
                self.dir.pass_vlan(*vlan);
            }
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            self.machine(name, *tier, &options);
        }
    }

    /// Write a start script for the built-in guest without passing it to the driver.
    pub fn start_script(&self, name: &str, tier: Tier, options: &[&str]) -> PathBuf {
        let tier = match tier {
            Tier::Debian => "debian",
            Tier::Smoke => "smoke",
            Tier::Container => {
                let output = Command::new(repo().join("tests/container/mk-start-script"))
                    .arg("--guest")
                    .arg(container_guest())
                    .args(options)
                    .arg(name)
                    .arg(self.bin_dir())
                    .output()
                    .expect("run tests/container/mk-start-script");
                assert!(output.status.success(), "mk-start-script: {}", String::from_utf8_lossy(&output.stderr));
                return PathBuf::from(String::from_utf8(output.stdout).expect("utf-8").trim());
            }
        };
        let output = Command::new(repo().join("tests/guest/mk-start-script"))
            .arg("--guest")
            .arg(guest())
            .args(["--tier", tier])
            .args(options)
            .arg(name)
            .arg(self.bin_dir())
            .output()
            .expect("run mk-start-script");
        assert!(output.status.success(), "mk-start-script: {}", String::from_utf8_lossy(&output.stderr));
        PathBuf::from(String::from_utf8(output.stdout).expect("utf-8").trim())
    }
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

/// Read from a pdb connection until `needle` has arrived; everything read so far.
pub fn read_until(stream: &mut std::net::TcpStream, needle: &str) -> String {
    use std::io::Read;
    let mut text = String::new();
    let mut buffer = [0u8; 4096];
    while !text.contains(needle) {
        let n = stream.read(&mut buffer).expect("read from pdb");
        assert!(n > 0, "pdb hung up before {needle:?}:\n{text}");
        text.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    text
}
