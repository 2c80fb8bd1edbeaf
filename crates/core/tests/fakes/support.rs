//! What the tests on fakes share: a private directory per test, start scripts for ntd-fake's
//! QEMU, and a check that nothing a test started outlives it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ntd_core::machine::qemu::{QemuConfig, QemuMachine};
use tracing_subscriber::layer::SubscriberExt;

/// How long a fake machine gets to connect: it connects in milliseconds, but the tests run
/// beside builds on two cores.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One test's private directory: start scripts, the machines' tmp dir, outputs.
pub struct Scenario {
    dir: tempfile::TempDir,
}

impl Scenario {
    pub fn new() -> Scenario {
        logs();
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("ntd-fakes.").tempdir_in("/tmp").expect("temp dir");
        for sub in ["bin", "tmp", "out"] {
            std::fs::create_dir(dir.path().join(sub)).expect("scenario dirs");
        }
        Scenario { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.path().join("tmp")
    }

    pub fn out_dir(&self) -> PathBuf {
        self.path().join("out")
    }

    /// A `run-<name>-vm` start script running ntd-fake's QEMU with `options`.
    pub fn start_script(&self, name: &str, options: &[&str]) -> PathBuf {
        ntd_fake::StartScript::new(name)
            .options(options.iter().copied())
            .write(&self.path().join("bin"))
            .expect("start script")
    }

    /// The configuration of a fake QEMU machine in this scenario.
    pub fn qemu_config(&self, name: &str, options: &[&str]) -> QemuConfig {
        let script = self.start_script(name, options);
        let mut config = QemuConfig::new(script.display().to_string(), self.tmp_dir(), self.out_dir());
        config.connect_timeout = CONNECT_TIMEOUT;
        config.display_available = false;
        config
    }

    /// A fake QEMU machine in this scenario (created, not started).
    pub fn qemu(&self, name: &str, options: &[&str]) -> QemuMachine {
        QemuMachine::new(self.qemu_config(name, options)).expect("machine")
    }

    /// Fail, naming them, if processes that belong to this scenario still run: anything whose
    /// command line or environment names its directory (the fake QEMU, its guest, vde_switch).
    pub fn assert_nothing_left(&self) {
        let mut survivors = Vec::new();
        for _ in 0..50 {
            survivors = processes_naming(self.path());
            if survivors.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("processes of {} outlived the test: {survivors:?}", self.path().display());
    }
}

/// Live (non-zombie) processes other than this one whose command line or environment contains
/// `needle`.
fn processes_naming(needle: &Path) -> Vec<String> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let own = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter(|entry| {
            entry.file_name().to_str().is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && pid != own)
        })
        .filter(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
            let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            !zombie
                && ["cmdline", "environ"].iter().any(|file| {
                    std::fs::read(entry.path().join(file))
                        .is_ok_and(|bytes| bytes.windows(needle.len()).any(|window| window == needle))
                })
        })
        .map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            format!("{}: {}", entry.file_name().to_string_lossy(), String::from_utf8_lossy(&cmdline).replace('\0', " "))
        })
        .collect()
}

/// Everything ntd logged in this test binary, as the terminal sink writes it. Tests find their
/// own lines by their machines' names, which are unique per test.
pub fn logs() -> String {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let layer = ntd_core::log::terminal::TerminalLayer::to_writer(SharedBuffer(Arc::clone(&buffer)));
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        buffer
    });
    let bytes = buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[derive(Clone)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Wait until `condition` holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}
