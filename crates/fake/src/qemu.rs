//! The QEMU process: startup in QEMU's order (its own listening sockets, then the chardevs it
//! connects to: the console's, then the virtio ports'), the tasks that serve the machine, and the exit, after which no guest process
//! is left.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::{UnixListener, UnixStream};

use crate::args::{self, Args, Endpoint};
use crate::console::Console;
use crate::control;
use crate::guest::{GuestError, GuestPlan};
use crate::ports::{PortSpec, Ports, PortsError};
use crate::relay::{self, GuestInput, Link};
use crate::sessions;
use crate::signals::Signals;
use crate::systemd::Units;
use crate::vm::{Config, Vm};
use crate::{FakeDir, error_chain};

/// How long to retry connecting to a socket the driver should be listening on.
const CONNECT_RETRY: Duration = Duration::from_secs(2);

/// Why the fake could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The command line is wrong.
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    /// No `-qmp`.
    #[error("no -qmp unix:PATH,server=on,wait=off option")]
    NoQmp,
    /// No chardev behind a `virtconsole`.
    #[error("no backdoor shell: needs -chardev socket,id=ID,path=PATH and -device virtconsole,chardev=ID")]
    NoBackdoor,
    /// The fake's directory cannot be made.
    #[error("cannot prepare {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A socket QEMU connects to is not there (QEMU's message).
    #[error("{option}: Failed to connect to '{}': {}", path.display(), strerror(error))]
    Connect {
        /// The option as given.
        option: String,
        /// The socket.
        path: PathBuf,
        /// Why (in the message, as QEMU words it).
        error: io::Error,
    },
    /// A socket QEMU listens on cannot be made (QEMU's message).
    #[error("{option}: Failed to bind socket to {}: {}", path.display(), strerror(error))]
    Listen {
        /// The option as given.
        option: String,
        /// The socket.
        path: PathBuf,
        /// Why (in the message, as QEMU words it).
        error: io::Error,
    },
    /// The guest cannot be prepared.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The virtio ports cannot be set up.
    #[error(transparent)]
    Ports(#[from] PortsError),
    /// The signal handlers cannot be installed.
    #[error("cannot install the signal handlers")]
    Signals(#[source] io::Error),
}

impl StartError {
    /// The program name the message is given under: QEMU's for errors QEMU has too.
    fn program(&self) -> &'static str {
        match self {
            StartError::Connect { .. } | StartError::Listen { .. } => "qemu-system-x86_64",
            _ => "ntd-fake-qemu",
        }
    }
}

fn strerror(error: &io::Error) -> String {
    let text = error.to_string();
    text.rfind(" (os error ").map_or(text.clone(), |at| text[..at].to_owned())
}

/// The fake QEMU's `main`: returns the exit status.
pub fn main(arguments: Vec<OsString>) -> i32 {
    let args = match args::parse(arguments) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ntd-fake-qemu: {e}");
            return 1;
        }
    };
    if args.fake.help {
        print!("{}", args::USAGE);
        return 0;
    }
    if let Some((status, message)) = &args.fake.exit_at_start {
        eprintln!("{message}");
        return *status;
    }
    // One thread: the guest init's parent-death signal follows the thread that forked it.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ntd-fake-qemu: cannot start the runtime: {e}");
            return 1;
        }
    };
    let status = runtime.block_on(async {
        match start(args).await {
            Ok((vm, signals)) => run(vm, signals).await,
            Err(e) => {
                eprintln!("{}: {}", e.program(), error_chain(&e));
                1
            }
        }
    });
    // Not a plain drop: the console's input is read by a blocking thread that stays in read(2)
    // while the driver keeps QEMU's stdin open, and dropping the runtime would wait for it. QEMU
    // exits whatever its stdin does.
    runtime.shutdown_background();
    status
}

/// A socket endpoint once opened: connected, or listening for its one client.
enum Opened {
    Connected(UnixStream),
    Listening(UnixListener),
}

async fn open(option: &str, endpoint: &Endpoint) -> Result<Opened, StartError> {
    if endpoint.server {
        return listen(option, &endpoint.path).map(Opened::Listening);
    }
    let deadline = tokio::time::Instant::now() + CONNECT_RETRY;
    loop {
        match UnixStream::connect(&endpoint.path).await {
            Ok(stream) => return Ok(Opened::Connected(stream)),
            // The driver listens before it starts QEMU; retry briefly all the same.
            Err(e)
                if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => {
                return Err(StartError::Connect { option: option.to_owned(), path: endpoint.path.clone(), error });
            }
        }
    }
}

/// A chardev's socket, connected: a listening one waits for its client, as QEMU's `wait=on`
/// does.
async fn open_chardev(option: &str, endpoint: &Endpoint) -> Result<UnixStream, StartError> {
    match open(option, endpoint).await? {
        Opened::Connected(stream) => Ok(stream),
        Opened::Listening(listener) => listener
            .accept()
            .await
            .map(|(stream, _)| stream)
            .map_err(|error| StartError::Connect { option: option.to_owned(), path: endpoint.path.clone(), error }),
    }
}

/// The virtio-serial ports' chardevs, connected in command-line order after the console's (as
/// QEMU connects every chardev, whether or not the guest will see the port). A chardev that is
/// not a unix socket has nothing to connect; its port is left out.
async fn open_ports(args: &Args) -> Result<Option<Arc<Ports>>, StartError> {
    let mut specs = Vec::new();
    for (name, chardev) in args.qemu.virtio_ports() {
        let Some(endpoint) = chardev.endpoint() else { continue };
        let option = format!("-chardev socket,id={}", chardev.id);
        let stream = open_chardev(&option, &endpoint).await?;
        let socket =
            stream.into_std().map_err(|error| StartError::Connect { option, path: endpoint.path.clone(), error })?;
        let stall = args.fake.port_stalls.iter().rev().find(|s| s.name == name).map(|s| (s.after, s.pause));
        specs.push(PortSpec { name: name.to_owned(), socket, stall });
    }
    if specs.is_empty() {
        return Ok(None);
    }
    Ok(Some(Ports::new(specs)?))
}

/// Connect each vhost-user device's chardev, as QEMU does at start (failing, as QEMU does, when
/// its backend is not listening yet), and hold the connection for the process's life. The
/// vhost-user protocol itself is not spoken: the fake guest has no such device.
async fn connect_vhost_user(args: &Args) -> Result<(), StartError> {
    for (driver, chardev) in args.qemu.vhost_user_devices() {
        let Some(endpoint) = chardev.endpoint() else { continue };
        let option = format!("-device {driver},chardev={}", chardev.id);
        let mut stream = open_chardev(&option, &endpoint).await?;
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
        });
    }
    Ok(())
}

fn listen(option: &str, path: &Path) -> Result<UnixListener, StartError> {
    let error = |error| StartError::Listen { option: option.to_owned(), path: path.to_owned(), error };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(error(e)),
        _ => {}
    }
    UnixListener::bind(path).map_err(error)
}

async fn start(args: Args) -> Result<(Arc<Vm>, Signals), StartError> {
    let qemu = &args.qemu;
    let qmp = qemu.qmp.clone().ok_or(StartError::NoQmp)?;
    let backdoor = qemu.backdoor().ok_or(StartError::NoBackdoor)?;
    let backdoor_endpoint = backdoor.endpoint().ok_or(StartError::NoBackdoor)?;
    let backdoor_option = format!("-chardev socket,id={}", backdoor.id);

    // The start script runs in the state directory with TMPDIR pointing there.
    let state_dir = match std::env::var_os("TMPDIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::current_dir().map_err(|source| StartError::Dir { path: ".".into(), source })?,
    };
    let dir = FakeDir::of(&state_dir);
    dir.create().map_err(|source| StartError::Dir { path: dir.root().to_owned(), source })?;
    let signals = Signals::install().map_err(StartError::Signals)?;

    let qmp = open("-qmp", &qmp).await?;
    let monitor = match &qemu.monitor {
        Some(endpoint) => Some(open("-monitor", endpoint).await?),
        None => None,
    };
    let shell = open_chardev(&backdoor_option, &backdoor_endpoint).await?;
    let ports = open_ports(&args).await?;
    connect_vhost_user(&args).await?;
    let control_path = dir.control();
    let control = listen("control socket", &control_path)?;

    let shared = std::env::var_os("SHARED_DIR").map(PathBuf::from).filter(|p| p.is_dir());
    let hostname = qemu.name.clone().unwrap_or_else(|| "nixos".to_owned());
    let plan =
        GuestPlan::prepare(dir.root(), &dir.tools(), (control::ENV_VAR, &control_path), shared.as_deref(), &hostname)?;
    let (link, shell_input) = Link::new(shell, &args.fake.shell).map_err(|error| StartError::Connect {
        option: backdoor_option.clone(),
        path: backdoor_endpoint.path.clone(),
        error,
    })?;
    let input = Arc::new(GuestInput::default());
    let config = Config {
        no_reboot: qemu.no_reboot,
        hostname,
        boot_delay: args.fake.boot_delay,
        no_backdoor: args.fake.no_backdoor,
        shell_garbage: args.fake.shell.garbage.clone(),
        console_lines: args.fake.console_lines,
        units_later: args.fake.units_later.clone(),
        qmp_faults: args.fake.qmp.clone(),
        console_on_stdout: qemu.console_on_stdout(),
        no_ports: args.fake.no_ports,
    };
    let console = Console::new(config.console_on_stdout);
    let units = Units::new(dir.units(), &args.fake.units);
    let vm = Vm::new(config, console, dir, units, plan, (link, Arc::clone(&input)), ports);

    tokio::spawn(relay::pump_input(shell_input, input));
    if qemu.console_on_stdout() {
        tokio::spawn(read_console_input(vm.dir.console_input()));
    }
    match monitor {
        Some(Opened::Connected(stream)) => {
            tokio::spawn(sessions::serve_hmp(stream, Arc::clone(&vm)));
        }
        Some(Opened::Listening(listener)) => {
            let vm = Arc::clone(&vm);
            tokio::spawn(async move {
                if let Ok((stream, _)) = listener.accept().await {
                    sessions::serve_hmp(stream, vm).await;
                }
            });
        }
        None => {}
    }
    match qmp {
        Opened::Listening(listener) => tokio::spawn(sessions::serve_qmp_listener(listener, Arc::clone(&vm))),
        Opened::Connected(stream) => tokio::spawn(sessions::serve_qmp(stream, Arc::clone(&vm))),
    };
    tokio::spawn(control::serve(control, Arc::clone(&vm)));
    if let Some(after) = args.fake.die_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            // A crash: no cleanup, no last words. The guest dies by its parent-death signals.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        });
    }
    vm.start_boot();
    Ok((vm, signals))
}

/// Read QEMU's stdin, the serial console's input, as QEMU does whether or not the guest reads
/// it (a NixOS test VM runs no getty there), so a driver typing on the console never blocks; the
/// bytes are kept in `record` for tests to check.
async fn read_console_input(record: PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stdin = tokio::io::stdin();
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&record).await.ok();
    let mut buf = vec![0u8; 4096];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(file) = file.as_mut() {
                    // tokio's File writes in the background until flushed.
                    let _ = file.write_all(&buf[..n]).await;
                    let _ = file.flush().await;
                }
            }
        }
    }
}

/// Serve until the machine exits or a signal ends it; returns the exit status.
async fn run(vm: Arc<Vm>, mut signals: Signals) -> i32 {
    let mut exit = vm.exit_watch();
    let status = tokio::select! {
        status = exit.wait_for(Option::is_some) => status.ok().and_then(|s| *s).unwrap_or(0),
        signal = signals.next() => {
            if let Ok(signal) = signal {
                eprintln!("{}", signal.message());
            }
            vm.events.emit("SHUTDOWN", Some(json!({"guest": false, "reason": "host-signal"}))).await;
            0
        }
    };
    vm.kill_shell().await;
    vm.console.flush().await;
    let _ = std::fs::remove_file(vm.dir.control());
    status
}
