//! A second kind of machine, written outside ntd-core against its public [`Backend`] trait: a
//! fake container whose command transport runs every command as its own process in the
//! container's mount namespace (`nsenter`), as a systemd-nspawn container's does. The shared
//! machine code — commands, waits, files — runs on it unchanged, with the same assertions as
//! on a QEMU machine: adding a kind of machine touches neither the command nor the wait code.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ntd_core::machine::{Backend, Base, BoxFuture, Console, Error, ExecuteOptions, Machine, NulInCommand};
use ntd_core::process;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::shared;
use crate::support::Scenario;

/// The container's init: it makes the container's file system view (a private `/tmp` with the
/// shared directory on `/tmp/shared`), says so, and waits to be killed.
const INIT: &str = r#"set -eu
mount -t tmpfs none /mnt
mkdir /mnt/shared
mount --bind "$SHARED_DIR" /mnt/shared
mount -t tmpfs none /tmp
mkdir /tmp/shared
mount --move /mnt/shared /tmp/shared
echo ready
exec sleep infinity
"#;

/// A fake container: an init process in a mount namespace of its own.
struct FakeContainer {
    base: Arc<Base>,
    init: Mutex<Option<Arc<process::Child>>>,
}

impl FakeContainer {
    fn init(&self) -> Result<Arc<process::Child>, Error> {
        self.init
            .lock()
            .expect("init lock")
            .clone()
            .ok_or_else(|| Error::NotRunning { machine: self.base.name().to_owned() })
    }

    async fn start(&self) -> Result<(), Error> {
        if self.init.lock().expect("init lock").is_some() {
            return Ok(());
        }
        let mut command = std::process::Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c", INIT])
            .env("SHARED_DIR", self.base.shared_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let start_error =
            |source| Error::Start { machine: self.base.name().to_owned(), action: "run its init".into(), source };
        let mut child = process::Child::spawn(command).await.map_err(start_error)?;
        let stdout = child.stdout.take().ok_or_else(|| start_error(std::io::Error::other("no stdout")))?;
        let mut lines = BufReader::new(stdout).lines();
        match lines.next_line().await {
            Ok(Some(line)) if line == "ready" => {}
            other => return Err(start_error(std::io::Error::other(format!("the init did not get ready: {other:?}")))),
        }
        *self.init.lock().expect("init lock") = Some(Arc::new(child));
        Ok(())
    }

    /// The transport: `nsenter` into the init's mount namespace, `bash -c` with upstream's
    /// shell options, stdout read to its end.
    async fn run_command(&self, command: &str, options: ExecuteOptions) -> Result<(i32, Vec<u8>), Error> {
        self.start().await?;
        let init = self.init()?;
        let mut nsenter = tokio::process::Command::new("nsenter");
        nsenter.arg(format!("--target={}", init.pid())).arg("--mount").arg("--");
        if let Some(timeout) = options.timeout {
            nsenter.arg("timeout").arg(format!("{}", timeout.as_secs_f64()));
        }
        nsenter
            .arg("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail; {command}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let failed =
            |source| Error::Start { machine: self.base.name().to_owned(), action: format!("run `{command}`"), source };
        if command.contains('\0') {
            let machine = self.base.name().to_owned();
            return Err(Error::InvalidCommand { machine, command: command.replace('\0', "\\0"), source: NulInCommand });
        }
        let mut child = nsenter.spawn().map_err(failed)?;
        if !options.check_output {
            tokio::spawn(async move { child.wait().await });
            return Ok((-2, Vec::new()));
        }
        let mut output = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_end(&mut output).await.map_err(failed)?;
        }
        let status = child.wait().await.map_err(failed)?;
        Ok((if options.check_return { status.code().unwrap_or(-1) } else { -1 }, output))
    }
}

impl Backend for FakeContainer {
    fn class_name(&self) -> &'static str {
        "FakeContainer"
    }

    fn start(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(FakeContainer::start(self))
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(FakeContainer::start(self))
    }

    fn execute<'a>(
        &'a self,
        command: &'a str,
        options: ExecuteOptions,
    ) -> BoxFuture<'a, Result<(i32, Vec<u8>), Error>> {
        Box::pin(self.run_command(command, options))
    }

    fn is_booted(&self) -> bool {
        self.init.lock().expect("init lock").is_some()
    }

    fn is_connected(&self) -> bool {
        self.is_booted()
    }

    fn mark_disconnected(&self) {}

    fn pid(&self) -> Option<u32> {
        self.init().ok().map(|init| init.pid())
    }

    fn wait_for_shutdown(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async {
            if let Ok(init) = self.init() {
                init.wait().await;
                self.init.lock().expect("init lock").take();
            }
            Ok(())
        })
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            let init = self.init.lock().expect("init lock").take();
            if let Some(init) = init {
                init.stop(Duration::from_secs(5)).await;
            }
        })
    }

    fn kill_now(&self) {
        if let Ok(init) = self.init() {
            init.signal_group(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn container(scenario: &Scenario, name: &str) -> Machine {
    let base = Base::prepare(name.to_owned(), scenario.tmp_dir(), scenario.out_dir(), false, Console::default())
        .expect("state directory");
    let base = Arc::new(base);
    let backend = Arc::new(FakeContainer { base: Arc::clone(&base), init: Mutex::new(None) });
    Machine::new(base, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_waits_and_files_on_a_second_kind_of_machine() {
    let scenario = Scenario::new();
    let machine = container(&scenario, "container");
    assert_eq!(format!("{machine:?}"), "<FakeContainer 'container'>");
    shared::commands_behave(&machine).await;
    shared::waits_behave(&machine).await;
    shared::files_behave(&machine, &scenario).await;
    assert!(machine.is_up());
    let state: PathBuf = machine.state_dir().to_owned();
    machine.release().await;
    machine.discard_state();
    assert!(!state.exists());
    scenario.assert_nothing_left();
}
