//! Failure artifacts: what a failed run leaves in the output directory, so that the failure can
//! be understood without running the test again (what openQA's result pages and Playwright's
//! traces give their users).
//!
//! When the test fails — a command, a wait, an assertion, the global timeout, or any other
//! error that ends the script — every machine that is still running gets, in the output
//! directory, files named `<machine>-<failure>-<what>`:
//!
//! - `screen.png`: its screen (QEMU machines);
//! - `console.txt`: everything its console printed during the run;
//! - `journal.txt`: the tail of its journal, when the guest still answers (bounded in time:
//!   a hung guest, or a shell a command of the test still holds, gives none, and the log says
//!   so);
//!
//! and the machine whose command failed gets `output.txt`: that command's stdout, byte for byte.
//! Each file is logged as a failure artifact ([`crate::log::artifact`]), which puts it in the
//! terminal and XML logs, attaches it to the JUnit report's failed cases, and makes it an event
//! of the current telemetry span. A run collects once (the first failure's), and only when the
//! driver was asked to ([`super::DriverOptions::failure_artifacts`]; the command line does with
//! `-o`): a passing run leaves nothing extra.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinSet;

use super::Driver;
use crate::log;
use crate::machine::qemu::QemuMachine;
use crate::machine::{self, ExecuteOptions, Machine};

/// How long the guest gets to print its journal (the whole `execute`, waiting for a shell
/// another command still holds included).
const JOURNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The same at the global timeout, when the script's own command most likely still holds the
/// shell (it is killed only after the artifacts are taken): a short try, not a long wait.
const JOURNAL_TIMEOUT_AT_GLOBAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a screenshot may take (QEMU normally answers in milliseconds).
const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many journal lines are kept: enough for the minutes before a failure.
const JOURNAL_LINES: u32 = 500;

/// What ended the test, as far as the artifacts' names go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `succeed` or `fail` got the other answer.
    Command,
    /// A wait ran out of time or can never hold (a unit failed).
    Wait,
    /// An assertion of the test script (`assert`, `t.assertEqual`).
    Assertion,
    /// The global timeout stopped the test.
    GlobalTimeout,
    /// Anything else that ended the script: a machine error, a Python error.
    Error,
}

impl FailureKind {
    /// Every kind, for parsing a slug back.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Command,
        FailureKind::Wait,
        FailureKind::Assertion,
        FailureKind::GlobalTimeout,
        FailureKind::Error,
    ];

    /// The part of the artifacts' names that says what failed.
    pub fn slug(self) -> &'static str {
        match self {
            FailureKind::Command => "command-failed",
            FailureKind::Wait => "wait-failed",
            FailureKind::Assertion => "assertion-failed",
            FailureKind::GlobalTimeout => "global-timeout",
            FailureKind::Error => "error",
        }
    }

    /// The kind a slug names (for the bindings, which pass it as text).
    pub fn from_slug(slug: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|kind| kind.slug() == slug)
    }
}

impl machine::Error {
    /// The failure this error is, when it ends a test.
    pub fn failure_kind(&self) -> FailureKind {
        use machine::Error as E;
        match self {
            E::CommandFailed { .. } | E::CommandSucceeded { .. } => FailureKind::Command,
            E::TimedOut(_) | E::EventTimeout(_) | E::UnitFailed { .. } | E::UnitInactive { .. } => FailureKind::Wait,
            _ => FailureKind::Error,
        }
    }

    /// The failed command's stdout, for an error that is a failed command.
    pub fn command_output(&self) -> Option<(&str, &[u8])> {
        match self {
            machine::Error::CommandFailed { command, output, .. }
            | machine::Error::CommandSucceeded { command, output } => Some((command, output)),
            _ => None,
        }
    }
}

/// The command whose failure ended the test.
#[derive(Debug, Clone)]
pub struct FailedCommand {
    /// The machine it ran on.
    pub machine: String,
    /// The command.
    pub command: String,
    /// Its stdout.
    pub output: Vec<u8>,
}

/// What ended the test.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Which kind of failure.
    pub kind: FailureKind,
    /// The command that failed, for a failed command.
    pub command: Option<FailedCommand>,
}

/// One file written to explain a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The machine it is about.
    pub machine: String,
    /// What it holds: `screen`, `console`, `journal` or `output`.
    pub what: &'static str,
    /// Where it is.
    pub path: PathBuf,
}

/// The collection state, kept by the driver.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// The artifacts, once collected (the first failure's).
    artifacts: tokio::sync::Mutex<Option<Vec<Artifact>>>,
}

impl Driver {
    /// Write the failure artifacts of `failure` (see the module documentation) and return
    /// them; nothing when the driver was not asked for them. A run collects once: later calls
    /// return the first collection's files.
    pub async fn collect_failure_artifacts(&self, failure: &Failure) -> Vec<Artifact> {
        if !self.inner.failure_artifacts {
            return Vec::new();
        }
        let mut collected = self.inner.artifacts.artifacts.lock().await;
        if let Some(artifacts) = collected.as_ref() {
            return artifacts.clone();
        }
        let block = log::block(None, &format!("collecting failure artifacts ({})", failure.kind.slug()), &[]);
        let artifacts = async {
            if let Err(e) = tokio::fs::create_dir_all(self.out_dir()).await {
                log::warning(
                    None,
                    &format!(
                        "no failure artifacts: cannot create the output directory {}: {e}",
                        self.out_dir().display()
                    ),
                );
                return Vec::new();
            }
            let mut tasks = JoinSet::new();
            for machine in self.all_machines().into_iter().filter(Machine::is_booted) {
                let kind = failure.kind;
                let out_dir = self.out_dir().to_owned();
                tasks.spawn(tracing::Instrument::in_current_span(async move {
                    machine_artifacts(&machine, kind, &out_dir).await
                }));
            }
            let mut artifacts: Vec<Artifact> = tasks.join_all().await.into_iter().flatten().collect();
            // Written here rather than with the machine's other files: the machine whose
            // command failed may have stopped since, and its output still counts.
            if let Some(command) = &failure.command {
                let path = artifact_path(self.out_dir(), &command.machine, failure.kind, "output.txt");
                artifacts.extend(write(&command.machine, "output", path, &command.output).await);
            }
            artifacts.sort_by(|a, b| (&a.machine, a.what).cmp(&(&b.machine, b.what)));
            artifacts
        };
        let artifacts = tracing::Instrument::instrument(artifacts, block.clone()).await;
        for artifact in &artifacts {
            let _entered = block.enter();
            log::artifact(Some(&artifact.machine), &artifact.path);
        }
        *collected = Some(artifacts.clone());
        artifacts
    }

    /// The failure artifacts written so far (none before a failure).
    pub fn failure_artifacts(&self) -> Vec<Artifact> {
        self.inner.artifacts.artifacts.try_lock().ok().and_then(|a| a.clone()).unwrap_or_default()
    }
}

/// `<out>/<machine>-<failure>-<what>`.
fn artifact_path(out_dir: &Path, machine: &str, kind: FailureKind, what: &str) -> PathBuf {
    out_dir.join(format!("{machine}-{}-{what}", kind.slug()))
}

/// Write `data` to `path`; a file that cannot be written is logged and left out.
async fn write(machine: &str, what: &'static str, path: PathBuf, data: &[u8]) -> Option<Artifact> {
    match tokio::fs::write(&path, data).await {
        Ok(()) => Some(Artifact { machine: machine.to_owned(), what, path }),
        Err(e) => {
            log::warning(Some(machine), &format!("cannot write the failure artifact {}: {e}", path.display()));
            None
        }
    }
}

/// One machine's artifacts. The screenshot and the journal are taken at once: each is bounded
/// in time, and a stopped QEMU or a hung guest costs one bound, not two.
async fn machine_artifacts(machine: &Machine, kind: FailureKind, out_dir: &Path) -> Vec<Artifact> {
    let name = machine.name();
    let path = |what: &str| artifact_path(out_dir, name, kind, what);
    let screen = async {
        let qemu = QemuMachine::from_machine(machine)?;
        let screen = path("screen.png");
        match tokio::time::timeout(SCREENSHOT_TIMEOUT, qemu.screenshot(&screen.to_string_lossy())).await {
            Ok(Ok(path)) => Some(Artifact { machine: name.to_owned(), what: "screen", path }),
            Ok(Err(e)) => {
                machine.log(&format!("no screenshot for the failure artifacts: {}", crate::full_message(&e)));
                None
            }
            Err(_) => {
                machine.log(&format!(
                    "no screenshot for the failure artifacts: QEMU did not answer in {} seconds",
                    SCREENSHOT_TIMEOUT.as_secs()
                ));
                None
            }
        }
    };
    let journal_timeout =
        if kind == FailureKind::GlobalTimeout { JOURNAL_TIMEOUT_AT_GLOBAL_TIMEOUT } else { JOURNAL_TIMEOUT };
    let (screen, journal) = tokio::join!(screen, journal_tail(machine, journal_timeout));
    let mut artifacts: Vec<Artifact> = screen.into_iter().collect();
    let mut console = machine.console_log();
    if !console.is_empty() {
        console.push('\n');
    }
    artifacts.extend(write(name, "console", path("console.txt"), console.as_bytes()).await);
    if let Some(journal) = journal {
        artifacts.extend(write(name, "journal", path("journal.txt"), &journal).await);
    }
    artifacts
}

/// The tail of the machine's journal, if the guest answers in time. The callbacks (polling
/// conditions) are not run: the test is over, and a failing one must not hide the journal.
async fn journal_tail(machine: &Machine, timeout: Duration) -> Option<Vec<u8>> {
    if !machine.is_connected() {
        machine.log("no journal for the failure artifacts: the machine's shell is not connected");
        return None;
    }
    let command = format!("journalctl --no-pager --boot --lines={JOURNAL_LINES} -o short-monotonic 2>&1");
    let options = ExecuteOptions { timeout: Some(timeout), ..ExecuteOptions::default() };
    match tokio::time::timeout(timeout, machine.execute_without_callbacks(&command, options)).await {
        Ok(Ok((0, output))) => Some(output),
        Ok(Ok((status, output))) => {
            let said = String::from_utf8_lossy(&output);
            machine.log(&format!(
                "no journal for the failure artifacts: journalctl exited with {status}: {}",
                said.trim()
            ));
            None
        }
        Ok(Err(e)) => {
            machine.log(&format!("no journal for the failure artifacts: {}", crate::full_message(&e)));
            None
        }
        Err(_) => {
            machine.log(&format!(
                "no journal for the failure artifacts: no answer in {} seconds (the guest is hung, or a command of \
                 the test still holds its shell)",
                timeout.as_secs()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_name_the_failure_and_parse_back() {
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::from_slug(kind.slug()), Some(kind));
        }
        assert_eq!(FailureKind::from_slug("nonsense"), None);
        assert_eq!(
            artifact_path(Path::new("/out"), "server", FailureKind::Command, "screen.png"),
            PathBuf::from("/out/server-command-failed-screen.png")
        );
    }

    #[test]
    fn errors_say_which_failure_they_are() {
        let failed =
            machine::Error::CommandFailed { command: "false".into(), status: 1, output: b"said\0this".to_vec() };
        assert_eq!(failed.failure_kind(), FailureKind::Command);
        assert_eq!(failed.command_output(), Some(("false", &b"said\0this"[..])));
        let timed_out: machine::Error =
            crate::retry::TimedOut { elapsed: Duration::from_secs(3), timeout: Duration::from_secs(2) }.into();
        assert_eq!(timed_out.failure_kind(), FailureKind::Wait);
        assert_eq!(timed_out.command_output(), None);
    }
}
