//! A minimal driver, doing what ntd does with QEMU: listen on the monitor and shell sockets,
//! run the start script through a shell with upstream's arguments and environment in a state
//! directory, open QMP, frame commands with a nonce.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

/// Generous: a loaded CI machine, never a measure of speed.
pub const WAIT: Duration = Duration::from_secs(20);

pub const MARKER: &[u8] = b"Spawning backdoor root shell...\n";

pub fn fake_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ntd-fake-qemu")
}

fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// A machine started as ntd starts one.
pub struct Machine {
    pub tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub shared: PathBuf,
    pub child: tokio::process::Child,
    pub monitor: UnixStream,
    pub shell: UnixStream,
    /// The virtio ports' chardev connections (`org.nixos.ntd.out`, `org.nixos.ntd.ctl`), when
    /// started with [`Machine::start_with_ports`].
    pub ports: Option<(UnixStream, UnixStream)>,
    shell_buf: Vec<u8>,
    console: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

async fn collect(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<String>>) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        into.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

impl Machine {
    /// The QEMU arguments ntd appends (commas in paths doubled), as one shell string; with
    /// `ports`, the two virtio-serial ports after the console.
    pub fn qemu_arguments(state: &Path, no_reboot: bool, ports: bool) -> String {
        let path = |name: &str| state.join(name).display().to_string().replace(',', ",,");
        let mut line = format!(
            "-qmp {} -monitor {} -chardev {} -device virtio-serial -device virtconsole,chardev=shell \
             -device virtio-rng-pci -serial stdio",
            quote(&format!("unix:{},server=on,wait=off", path("qmp"))),
            quote(&format!("unix:{}", path("monitor"))),
            quote(&format!("socket,id=shell,path={}", path("shell"))),
        );
        if ports {
            for (id, name) in [("ntd-out", "org.nixos.ntd.out"), ("ntd-ctl", "org.nixos.ntd.ctl")] {
                line.push_str(&format!(
                    " -chardev {} -device virtserialport,chardev={id},name={name}",
                    quote(&format!("socket,id={id},path={}", path(id)))
                ));
            }
        }
        if no_reboot {
            line.push_str(" -no-reboot");
        }
        line.push_str(" -nographic");
        line
    }

    /// Start the fake with `options`, through a `run-m-vm` script, and accept its connections.
    pub async fn start(options: &[&str], no_reboot: bool) -> Machine {
        Machine::start_as(options, no_reboot, None).await
    }

    /// Start it as another user (`(uid, gid)`), with the directories and sockets opened to it.
    pub async fn start_as(options: &[&str], no_reboot: bool, user: Option<(u32, u32)>) -> Machine {
        Machine::launch(options, no_reboot, user, false).await
    }

    /// Start it with ntd's two virtio-serial ports, as root.
    pub async fn start_with_ports(options: &[&str], no_reboot: bool) -> Machine {
        Machine::launch(options, no_reboot, None, true).await
    }

    async fn launch(options: &[&str], no_reboot: bool, user: Option<(u32, u32)>, ports: bool) -> Machine {
        use std::os::unix::fs::PermissionsExt;
        let open_to_all = |path: &Path| {
            if user.is_some() {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
            }
        };
        let tmp = tempfile::tempdir().expect("temp dir");
        let state = tmp.path().join("vm-state-m");
        let shared = tmp.path().join("shared-xchg");
        std::fs::create_dir(&state).expect("state dir");
        std::fs::create_dir(&shared).expect("shared dir");
        let monitor_listener = UnixListener::bind(state.join("monitor")).expect("listen on monitor");
        let shell_listener = UnixListener::bind(state.join("shell")).expect("listen on shell");
        let port_listeners = ports.then(|| {
            let out = UnixListener::bind(state.join("ntd-out")).expect("listen on the out port");
            let ctl = UnixListener::bind(state.join("ntd-ctl")).expect("listen on the ctl port");
            (out, ctl)
        });
        for path in [tmp.path(), &state, &shared, &state.join("monitor"), &state.join("shell")] {
            open_to_all(path);
        }
        let script = ntd_fake::StartScript::new("m")
            .binary(fake_binary())
            .options(options.iter().copied())
            .write(tmp.path())
            .expect("write start script");
        let line =
            format!("{} {}", quote(&script.display().to_string()), Machine::qemu_arguments(&state, no_reboot, ports));
        let mut command = tokio::process::Command::new("bash");
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        let mut child = command
            .arg("-c")
            .arg(line)
            .current_dir(&state)
            .env("TMPDIR", &state)
            .env("SHARED_DIR", &shared)
            .env("USE_TMPDIR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run the start script");
        let console = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn(collect(child.stdout.take().expect("stdout"), Arc::clone(&console)));
        tokio::spawn(collect(child.stderr.take().expect("stderr"), Arc::clone(&stderr)));
        let accepted =
            tokio::time::timeout(WAIT, async { tokio::try_join!(monitor_listener.accept(), shell_listener.accept()) })
                .await
                .expect("the fake connects in time")
                .expect("accept");
        let ((monitor, _), (shell, _)) = accepted;
        let ports = match port_listeners {
            Some((out, ctl)) => {
                let accepted = tokio::time::timeout(WAIT, async { tokio::try_join!(out.accept(), ctl.accept()) })
                    .await
                    .expect("the fake connects the ports in time")
                    .expect("accept");
                Some((accepted.0.0, accepted.1.0))
            }
            None => None,
        };
        Machine { tmp, state, shared, child, monitor, shell, ports, shell_buf: Vec::new(), console, stderr }
    }

    pub fn fake_dir(&self) -> ntd_fake::FakeDir {
        ntd_fake::FakeDir::of(&self.state)
    }

    pub fn console(&self) -> String {
        self.console.lock().expect("lock").clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Wait until the console shows `text`.
    pub async fn wait_console(&self, text: &str) {
        let found = tokio::time::timeout(WAIT, async {
            while !self.console().contains(text) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "console never showed {text:?}; it has:\n{}", self.console());
    }

    /// Read from the monitor until its prompt.
    pub async fn monitor_reply(&mut self) -> String {
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        while !reply.ends_with(b"(qemu) ") {
            let n =
                tokio::time::timeout(WAIT, self.monitor.read(&mut buf)).await.expect("monitor answers").expect("read");
            assert!(n > 0, "monitor closed after {:?}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(reply).expect("utf-8")
    }

    pub async fn monitor_command(&mut self, command: &str) -> String {
        self.monitor.write_all(format!("{command}\n").as_bytes()).await.expect("write to monitor");
        self.monitor_reply().await
    }

    /// Read the shell until the marker line; returns what came before it.
    pub async fn wait_marker(&mut self) -> Vec<u8> {
        loop {
            if let Some(at) = self.shell_buf.windows(MARKER.len()).position(|w| w == MARKER) {
                let before = self.shell_buf[..at].to_vec();
                self.shell_buf.drain(..at + MARKER.len());
                return before;
            }
            let bytes = self.read_shell().await;
            assert!(!bytes.is_empty(), "shell closed before the marker; console:\n{}", self.console());
            self.shell_buf.extend_from_slice(&bytes);
        }
    }

    /// Bytes already received after the marker or the last reply.
    pub fn take_shell_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.shell_buf)
    }

    async fn read_shell(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        let n = tokio::time::timeout(WAIT, self.shell.read(&mut buf)).await.expect("shell answers").expect("read");
        buf.truncate(n);
        buf
    }

    /// Send a command framed as ntd frames it.
    pub async fn send(&mut self, command: &str, nonce: &str) {
        let script = format!("'{}'", format!("set -euo pipefail; {command}").replace('\'', "'\\''"));
        let line = format!("( eval {script} ) </dev/null; printf '\\n%s %d\\n' {nonce} $?\n");
        self.shell.write_all(line.as_bytes()).await.expect("write to shell");
    }

    /// Run a command and return its status and output.
    pub async fn run(&mut self, command: &str) -> (i32, Vec<u8>) {
        let nonce = format!("{:016x}", rand_u64());
        self.send(command, &nonce).await;
        let terminator = format!("\n{nonce} ");
        loop {
            if let Some(at) = self.shell_buf.windows(terminator.len()).position(|w| w == terminator.as_bytes()) {
                let rest = &self.shell_buf[at + terminator.len()..];
                if let Some(newline) = rest.iter().position(|&b| b == b'\n') {
                    let status = std::str::from_utf8(&rest[..newline]).expect("utf-8").parse().expect("status");
                    let output = self.shell_buf[..at].to_vec();
                    self.shell_buf.drain(..at + terminator.len() + newline + 1);
                    return (status, output);
                }
            }
            let bytes = self.read_shell().await;
            assert!(!bytes.is_empty(), "shell closed during {command:?}; console:\n{}", self.console());
            self.shell_buf.extend_from_slice(&bytes);
        }
    }

    /// Read the shell until it closes; returns everything read.
    pub async fn read_shell_to_end(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.shell_buf);
        loop {
            let bytes = self.read_shell().await;
            if bytes.is_empty() {
                return all;
            }
            all.extend_from_slice(&bytes);
        }
    }

    /// Wait for the fake to exit with its stdin still open, as ntd keeps it: tokio's `wait`
    /// would close it first, and a QEMU that exits only once its stdin closes would pass.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let _stdin = self.child.stdin.take();
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("the fake exits in time").expect("wait")
    }

    pub async fn qmp(&self) -> Qmp {
        Qmp::connect(&self.state.join("qmp")).await
    }
}

impl Drop for Machine {
    /// Kill a fake still running and wait for it, before the temporary directory (dropped
    /// after this) is removed under it.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + WAIT;
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}

/// A raw QMP client.
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    pub async fn connect(path: &Path) -> Qmp {
        let stream = tokio::time::timeout(WAIT, async {
            loop {
                match UnixStream::connect(path).await {
                    Ok(stream) => return stream,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .expect("QMP socket appears");
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp { reader: BufReader::new(read), writer };
        let greeting = qmp.json().await;
        assert_eq!(greeting["QMP"]["version"]["qemu"]["major"], 10, "{greeting}");
        qmp
    }

    /// The next line, raw (with its `\r\n`); empty at the end of the stream.
    pub async fn raw_line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(WAIT, self.reader.read_line(&mut line)).await.expect("QMP answers").expect("read");
        line
    }

    pub async fn json(&mut self) -> Value {
        let line = self.raw_line().await;
        assert!(line.ends_with("\r\n"), "QMP lines end in CRLF: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    pub async fn send(&mut self, text: &str) {
        self.writer.write_all(format!("{text}\n").as_bytes()).await.expect("write to QMP");
    }

    pub async fn execute(&mut self, text: &str) -> Value {
        self.send(text).await;
        self.json().await
    }

    /// Read lines until an event with this name.
    pub async fn event(&mut self, name: &str) -> Value {
        loop {
            let message = self.json().await;
            if message["event"] == name {
                return message;
            }
        }
    }

    pub async fn negotiate(&mut self) {
        assert_eq!(self.execute(r#"{"execute": "qmp_capabilities"}"#).await, serde_json::json!({"return": {}}));
    }
}

/// Wait until `condition` holds.
pub async fn wait_until(mut condition: impl FnMut() -> bool) {
    let held = tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(held.is_ok(), "the condition never held");
}

/// Processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Wait until a process has `needle` in its command line (a background job may not have
/// exec'd yet when the command that started it returns).
pub async fn wait_for_process(needle: &str) {
    let found = tokio::time::timeout(WAIT, async {
        while processes_with(needle).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no process with {needle:?} appeared");
}

/// Wait until no process has `needle` in its command line (a killed process may take a moment
/// to be reaped by its parent).
pub async fn assert_no_processes(needle: &str) {
    let gone = tokio::time::timeout(WAIT, async {
        while !processes_with(needle).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "processes left behind: {:?}", processes_with(needle));
}
