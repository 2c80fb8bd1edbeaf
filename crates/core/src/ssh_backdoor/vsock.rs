//! `vhost-device-vsock`, the host side of every VM's vsock device (upstream's
//! `VHostDeviceVsock` in `driver.py`).
//!
//! One process serves all VMs of the configuration. For each VM it listens on two sockets in a
//! private directory under the run's temporary directory:
//! - `<name>_guest.socket`, the vhost-user socket QEMU connects to
//!   (`-chardev socket,path=… -device vhost-user-vsock-pci`);
//! - `<name>_host.socket`, where a host program reaches the guest's vsock ports by writing
//!   `CONNECT <port>\n` first (the "hybrid vsock" protocol; `ssh vsock-mux/<path>`).
//!
//! CIDs are numbered from 3 in configuration order, as upstream does. Each VM has a device of
//! its own, so the numbers only have to differ within the run, never across runs.
//!
//! Unlike upstream, ntd waits until the guest sockets exist before any VM can start: QEMU
//! connects once, when it starts, and fails if nothing listens yet. (While a QEMU is
//! connected, its guest socket is gone: the device listens again once that QEMU has left,
//! which a machine starting again waits for.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::log;
use crate::process::{self, describe_status};

/// The program, looked up on `PATH` as upstream does (its Nix package puts it there).
pub const PROGRAM: &str = "vhost-device-vsock";
/// The first guest CID: 0–2 are reserved (hypervisor, local, host).
const FIRST_CID: u32 = 3;
/// How long the device gets to create its sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure to start `vhost-device-vsock`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program is not on `PATH`.
    #[error(
        "the SSH backdoor (enable_ssh_backdoor, nixpkgs' sshBackdoor.enable) needs {PROGRAM} on PATH: install it \
         (`cargo install vhost-device-vsock`, or nixpkgs' vhost-device-vsock) or turn the backdoor off"
    )]
    NotFound {
        /// The lookup's error.
        #[source]
        source: std::io::Error,
    },
    /// The program is there but cannot be run.
    #[error("cannot run {PROGRAM} for the SSH backdoor")]
    Spawn {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A machine's name cannot name its sockets.
    #[error("the SSH backdoor cannot name sockets for the machine {name:?}: the name has a '/'")]
    Name {
        /// The name.
        name: String,
    },
    /// Its directory cannot be made.
    #[error("cannot make the directory for {PROGRAM}'s sockets in {tmp_dir}: {source}")]
    Directory {
        /// Where it was to go.
        tmp_dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path cannot be passed on its command line, whose `--vm` values are comma-separated.
    #[error("{PROGRAM} cannot take the socket path {path}: its --vm option separates values with commas")]
    CommaInPath {
        /// The path.
        path: PathBuf,
    },
    /// It did not create its sockets.
    #[error("{PROGRAM} did not start: {reason}")]
    NotReady {
        /// What happened instead.
        reason: String,
    },
}

/// One VM's pair of sockets and its guest CID (upstream's `VsockPair`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockPair {
    /// The vhost-user socket QEMU connects to.
    pub guest: PathBuf,
    /// The socket host programs connect to (`CONNECT <port>\n`, then the stream).
    pub host: PathBuf,
    /// The guest's context id.
    pub cid: u32,
}

/// A running `vhost-device-vsock`.
#[derive(Debug)]
pub struct VHostDeviceVsock {
    /// The private directory holding the sockets.
    dir: SocketDir,
    /// Each VM's sockets, in configuration order.
    sockets: Vec<(String, VsockPair)>,
    child: process::Child,
    /// Set before ntd stops it, so that its exit is not reported.
    stopping: AtomicBool,
}

impl VHostDeviceVsock {
    /// Start one device for each of `machines` (in that order, CIDs from 3), with its sockets
    /// in a new private directory under `tmp_dir`, and wait until QEMU can connect.
    pub async fn start(tmp_dir: &Path, machines: &[String]) -> Result<VHostDeviceVsock, Error> {
        if let Some(name) = machines.iter().find(|name| name.contains('/')) {
            return Err(Error::Name { name: name.clone() });
        }
        let dir =
            SocketDir::create(tmp_dir).map_err(|source| Error::Directory { tmp_dir: tmp_dir.to_owned(), source })?;
        let sockets: Vec<(String, VsockPair)> = machines
            .iter()
            .zip(FIRST_CID..)
            .map(|(name, cid)| {
                let pair = VsockPair {
                    guest: dir.0.join(format!("{name}_guest.socket")),
                    host: dir.0.join(format!("{name}_host.socket")),
                    cid,
                };
                (name.clone(), pair)
            })
            .collect();
        let mut command = Command::new(PROGRAM);
        for (_, pair) in &sockets {
            for path in [&pair.guest, &pair.host] {
                if path.as_os_str().as_encoded_bytes().contains(&b',') {
                    return Err(Error::CommaInPath { path: path.clone() });
                }
            }
            command.arg("--vm").arg(format!(
                "guest-cid={},socket={},uds-path={}",
                pair.cid,
                pair.guest.display(),
                pair.host.display()
            ));
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = process::Child::spawn(command).await.map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { source },
            _ => Error::Spawn { source },
        })?;
        // It logs through env_logger (errors only, unless RUST_LOG says otherwise) and prints
        // argument errors to stdout; both are kept for the log and for an early exit.
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(keep_output(stdout, Arc::clone(&said)));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_output(stderr, Arc::clone(&said)));
        }
        let ready = async {
            for (_, pair) in &sockets {
                wait_for_socket(&pair.guest, READY_TIMEOUT).await?;
                wait_for_socket(&pair.host, READY_TIMEOUT).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        tokio::select! {
            // A timeout here is the branch below's, which stops the process first.
            Ok(()) = ready => {}
            status = child.wait() => {
                // Let the output pumps catch its last words.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let said = crate::machine::lock(&said).join("; ");
                return Err(Error::NotReady {
                    reason: format!(
                        "it exited with {}{}",
                        describe_status(status),
                        if said.is_empty() { String::new() } else { format!(": {said}") }
                    ),
                });
            }
            () = tokio::time::sleep(READY_TIMEOUT) => {
                child.stop(Duration::from_secs(1)).await;
                return Err(Error::NotReady {
                    reason: format!("its sockets did not appear within {} seconds", READY_TIMEOUT.as_secs()),
                });
            }
        }
        log::info(None, &format!("{PROGRAM} running (pid {}; sockets in {})", child.pid(), dir.0.display()));
        Ok(VHostDeviceVsock { dir, sockets, child, stopping: AtomicBool::new(false) })
    }

    /// Each VM's sockets, in configuration order.
    pub fn sockets(&self) -> &[(String, VsockPair)] {
        &self.sockets
    }

    /// The sockets of the VM `name`, if it has any.
    pub fn pair(&self, name: &str) -> Option<&VsockPair> {
        self.sockets.iter().find(|(n, _)| n == name).map(|(_, pair)| pair)
    }

    /// The private directory holding the sockets.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The process's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Resolve if the process exits without ntd stopping it, with a message saying so; never
    /// resolves for a process that ntd stops.
    pub async fn unexpected_exit(&self) -> String {
        let status = self.child.wait().await;
        if self.stopping.load(Ordering::SeqCst) {
            return std::future::pending().await;
        }
        format!("{PROGRAM} exited unexpectedly with {}; the SSH backdoor is gone", describe_status(status))
    }

    /// Stop the process (upstream kills it) and remove its sockets.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        log::info(None, &format!("kill {PROGRAM} (pid {})", self.child.pid()));
        self.child.stop(Duration::from_secs(2)).await;
        self.dir.remove();
    }

    /// Kill the process now, without waiting.
    pub fn kill_now(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.child.signal_group(nix::sys::signal::Signal::SIGKILL);
    }
}

/// A private directory for the sockets, removed when dropped. Its name is lower case: ssh
/// lower-cases the host name it hands a proxy as `%h` (systemd-ssh-proxy's configuration uses
/// it), so `vsock-mux/<path>` only reaches a path without capitals. (Python's `tempfile`,
/// which upstream uses, happens to make such names.)
#[derive(Debug)]
struct SocketDir(PathBuf);

impl SocketDir {
    fn create(tmp_dir: &Path) -> std::io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        loop {
            let mut random = [0u8; 5];
            getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
            let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
            let path = tmp_dir.join(format!("vsock-{suffix}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(SocketDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Remove the directory and its sockets (once: it is gone afterwards).
    fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warning(None, &format!("cannot remove {}: {e}", self.0.display()));
        }
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Wait until a unix socket exists at `path`: the device listens there (it makes the socket
/// when it starts, and the guest socket again each time a QEMU has left).
pub(crate) async fn wait_for_socket(path: &Path, timeout: Duration) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let deadline = tokio::time::Instant::now() + timeout;
    while !std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if tokio::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no socket there after {} seconds", timeout.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// How many of its last lines are kept for an error message.
const TAIL_LINES: usize = 12;

/// Log the process's output at debug level and keep its last lines for an error message.
async fn keep_output(stream: impl tokio::io::AsyncRead + Unpin, said: Arc<Mutex<Vec<String>>>) {
    crate::machine::console::each_line(stream, |line| {
        log::debug(None, &format!("{PROGRAM}: {line}"));
        let mut said = crate::machine::lock(&said);
        if said.len() == TAIL_LINES {
            said.remove(0);
        }
        said.push(line);
    })
    .await;
}
