//! The container's journal as its console log (upstream's `NspawnMachine._stream_journal`):
//! once the container's `/var/log/journal` appears in its root directory, `journalctl
//! --follow` on it runs for as long as the container does, and every entry is logged as the
//! machine's serial output.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::log;
use crate::machine::Base;
use crate::machine::console;
use crate::process;

/// How often to look for the journal directory, and to restart a journalctl that died.
const POLL: Duration = Duration::from_secs(1);
/// After this many looks, say that the journal is still missing (upstream: 10).
const PATIENCE: u32 = 10;

/// Whether the run is over: the container's start script exited or ntd is stopping it.
fn over(exit: &watch::Receiver<Option<ExitStatus>>, stopping: &watch::Receiver<bool>) -> bool {
    exit.borrow().is_some() || *stopping.borrow()
}

/// Resolves when the run is over.
async fn until_over(mut exit: watch::Receiver<Option<ExitStatus>>, mut stopping: watch::Receiver<bool>) {
    tokio::select! {
        _ = exit.wait_for(Option::is_some) => {}
        _ = stopping.wait_for(|stopping| *stopping) => {}
    }
}

/// Follow the journal of the container whose root directory is the machine's state
/// directory, until `exit` (the start script's) or `stopping` says the run is over.
///
/// `cursor` keeps the last entry shown, so that a restarted journalctl goes on after it
/// instead of repeating the whole journal (beside the state directory, which is the
/// container's root; the caller removes it).
pub(super) async fn follow(
    base: Arc<Base>,
    cursor: PathBuf,
    exit: watch::Receiver<Option<ExitStatus>>,
    stopping: watch::Receiver<bool>,
) {
    let path = base.state_dir().join("var/log/journal");
    base.log(&format!("Waiting for journal at {}...", path.display()));
    let mut looks = 0;
    while !path.is_dir() {
        if over(&exit, &stopping) {
            base.log(&format!("Error: Journal directory {} never appeared.", path.display()));
            return;
        }
        looks += 1;
        if looks == PATIENCE {
            base.log(&format!("Still waiting for journal at {}...", path.display()));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = until_over(exit.clone(), stopping.clone()) => {}
        }
    }
    let _ = std::fs::remove_file(&cursor);
    while !over(&exit, &stopping) {
        if let Err(e) = follow_once(&base, &path, &cursor, exit.clone(), stopping.clone()).await {
            base.log(&format!("Error while reading journalctl output: {e}"));
            if e.kind() == std::io::ErrorKind::NotFound {
                // No journalctl: saying it once is enough.
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = until_over(exit.clone(), stopping.clone()) => {}
        }
    }
}

/// Run one `journalctl --follow` until it ends or the run is over.
async fn follow_once(
    base: &Base,
    journal: &Path,
    cursor: &Path,
    exit: watch::Receiver<Option<ExitStatus>>,
    stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut command = Command::new("journalctl");
    command
        .arg("--follow")
        .arg(format!("--directory={}", journal.display()))
        .arg("--lines=all")
        .arg("--output=short-monotonic")
        .arg(format!("--cursor-file={}", cursor.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = process::Child::spawn(command).await?;
    if let Some(stderr) = child.stderr.take() {
        let machine = base.name().to_owned();
        tokio::spawn(crate::machine::console::each_line(stderr, move |line| {
            log::log(Some(&machine), &format!("journalctl: {line}"));
        }));
    }
    let Some(stdout) = child.stdout.take() else { return Ok(()) };
    let pump = console::pump_lines(stdout, |line| console::serial_line(base.name(), base.console(), line));
    tokio::pin!(pump);
    let result = tokio::select! {
        result = &mut pump => result,
        // Go on a moment for what the container wrote last.
        _ = until_over(exit, stopping) => tokio::time::timeout(Duration::from_millis(500), &mut pump).await.unwrap_or(Ok(())),
    };
    child.stop(Duration::from_secs(2)).await;
    result
}
