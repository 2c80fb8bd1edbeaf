//! What can go wrong with a machine, whatever its kind, as one error type.
//!
//! Messages keep upstream's wording where a test script may match on them (a failed
//! `succeed`, a unit's state, systemctl's output); the others name the machine and say what
//! happened, with the last lines of the console or of QEMU's stderr where they tell why.

use std::path::PathBuf;
use std::time::Duration;

use crate::errors::ErrorKind;

use super::qemu::{qmp, shell};

/// A command that cannot be sent to a shell, whatever the machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command contains a NUL byte, which no shell can receive")]
pub struct NulInCommand;

/// A machine failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory cannot be prepared.
    #[error("{machine}: cannot prepare {path}")]
    StateDir {
        /// The machine.
        machine: String,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The start script is missing or cannot be run.
    #[error("{machine}: start script {path} {problem}")]
    StartScript {
        /// The machine.
        machine: String,
        /// The script.
        path: PathBuf,
        /// `does not exist`, `is not executable`, …
        problem: &'static str,
    },
    /// Setting up or running the start command failed.
    #[error("{machine}: cannot {action}")]
    Start {
        /// The machine.
        machine: String,
        /// What was being done.
        action: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU (or its start script) exited before the machine was up.
    #[error("{machine}: QEMU exited with {status} before {stage}{}", tail_text(stderr_tail, "its last output"))]
    ExitedEarly {
        /// The machine.
        machine: String,
        /// How it exited.
        status: String,
        /// What it had not done yet.
        stage: &'static str,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
    /// QEMU did not connect to the driver's sockets in time.
    #[error("{machine}: QEMU did not connect to the monitor and shell sockets within {} seconds", waited.as_secs())]
    StartTimeout {
        /// The machine.
        machine: String,
        /// How long the driver waited.
        waited: Duration,
    },
    /// QMP failed.
    #[error("{machine}: QMP failed")]
    Qmp {
        /// The machine.
        machine: String,
        /// What failed.
        #[source]
        source: qmp::Error,
    },
    /// The HMP monitor failed.
    #[error("{machine}: the QEMU monitor connection failed")]
    Monitor {
        /// The machine.
        machine: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The guest's backdoor shell never announced itself.
    #[error(
        "{machine}: the guest's backdoor shell did not connect within {} seconds; is backdoor.service running?{}",
        waited.as_secs(),
        tail_text(serial_tail, "last serial console lines")
    )]
    ConnectTimeout {
        /// The machine.
        machine: String,
        /// How long the driver waited.
        waited: Duration,
        /// The last serial console lines.
        serial_tail: Vec<String>,
    },
    /// The backdoor shell went away (QEMU exited, or the guest's shell died).
    #[error(
        "{machine}: the backdoor shell disconnected {context}{}",
        tail_text(serial_tail, "last serial console lines")
    )]
    ShellDisconnected {
        /// The machine.
        machine: String,
        /// While doing what, and how QEMU exited if it did.
        context: String,
        /// The last serial console lines.
        serial_tail: Vec<String>,
    },
    /// QEMU's QMP socket closed under a command: QEMU is gone.
    #[error("{machine}: QEMU's QMP connection closed {context}{}", tail_text(serial_tail, "last serial console lines"))]
    QmpClosed {
        /// The machine.
        machine: String,
        /// While doing what, and how QEMU exited if it did.
        context: String,
        /// The last serial console lines.
        serial_tail: Vec<String>,
    },
    /// The backdoor shell failed otherwise.
    #[error("{machine}: backdoor shell failure while running `{command}`")]
    Shell {
        /// The machine.
        machine: String,
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: shell::ShellError,
    },
    /// A command contained a NUL byte.
    #[error("{machine}: cannot run `{command}`")]
    InvalidCommand {
        /// The machine.
        machine: String,
        /// The command (with the NUL shown escaped).
        command: String,
        /// Why.
        #[source]
        source: NulInCommand,
    },
    /// The guest did not answer long after a command's own timeout.
    #[error(
        "{machine}: the guest did not answer within {} seconds after the {}-second timeout of `{command}`; it seems \
         hung",
        waited.as_secs(),
        crate::config::format_seconds(*timeout)
    )]
    GuestHung {
        /// The machine.
        machine: String,
        /// The command.
        command: String,
        /// The command's timeout.
        timeout: Duration,
        /// How long the host waited after it.
        waited: Duration,
    },
    /// On the console (a guest without ntd's output port), the end of a command's reply did
    /// not arrive long after the command's own timeout (the guest went silent): the console
    /// may have dropped the end, as it drops any bytes the driver cannot read in time, and
    /// the probes that would have told so, or the guest is hung.
    #[error(
        "{machine}: the end of the reply to `{command}` did not arrive within {} seconds after the command's \
         {}-second timeout: the console dropped it (it drops what the driver cannot read in time, and this guest has \
         no org.nixos.ntd.out port to carry output losslessly), or the guest is hung",
        waited.as_secs(),
        crate::config::format_seconds(*timeout)
    )]
    ReplyEndLost {
        /// The machine.
        machine: String,
        /// The command.
        command: String,
        /// The command's timeout.
        timeout: Duration,
        /// How long the host waited after it.
        waited: Duration,
    },
    /// An operation needs a running machine.
    #[error("{machine}: the machine is not running")]
    NotRunning {
        /// The machine.
        machine: String,
    },
    /// `succeed` saw a non-zero exit status (upstream's message, word for word).
    #[error("command `{command}` failed (exit code {status})")]
    CommandFailed {
        /// The command.
        command: String,
        /// Its exit status.
        status: i32,
        /// What it printed (for the failure artifacts; upstream's message leaves it out).
        output: Vec<u8>,
    },
    /// `fail` saw a zero exit status (upstream's message, word for word).
    #[error("command `{command}` unexpectedly succeeded")]
    CommandSucceeded {
        /// The command.
        command: String,
        /// What it printed (for the failure artifacts).
        output: Vec<u8>,
    },
    /// A retried wait ran out of time.
    #[error(transparent)]
    TimedOut(#[from] crate::retry::TimedOut),
    /// `systemctl show` failed (upstream's message).
    #[error("retrieving systemctl {what} for unit \"{unit}\"{} failed with exit code {status}", user.as_ref().map(|u| format!(" under user \"{u}\"")).unwrap_or_default())]
    SystemctlFailed {
        /// `info` or `property "<name>"`.
        what: String,
        /// The unit.
        unit: String,
        /// The user of `systemctl --user`, if any.
        user: Option<String>,
        /// systemctl's exit status.
        status: i32,
    },
    /// `systemctl show --property` printed something else (upstream's message, missing space
    /// included).
    #[error("systemctl show --property \"{property}\" \"{unit}\"produced invalid output: {output}")]
    InvalidSystemctlOutput {
        /// The property.
        property: String,
        /// The unit.
        unit: String,
        /// What it printed.
        output: String,
    },
    /// A unit waited for has failed.
    #[error("unit \"{unit}\" reached state \"{state}\"")]
    UnitFailed {
        /// The unit.
        unit: String,
        /// Its state.
        state: String,
    },
    /// A unit is not in the state required (upstream's message, its doubled word included).
    #[error("Expected unit '{unit}' to to be in state '{expected}' but it is in state '{state}'")]
    UnexpectedUnitState {
        /// The unit.
        unit: String,
        /// The state required.
        expected: String,
        /// The state it is in.
        state: String,
    },
    /// An in-guest wait loop ended in a way it cannot (the shell could not run it).
    #[error("{machine}: the wait loop in the guest ended with exit status {status}: {output}")]
    WaitLoop {
        /// The machine.
        machine: String,
        /// Its exit status.
        status: i32,
        /// What it printed.
        output: String,
    },
    /// OCR failed.
    #[error("{machine}: OCR failed")]
    Ocr {
        /// The machine.
        machine: String,
        /// What failed.
        #[source]
        source: crate::ocr::Error,
    },
    /// Copying a file on the host failed.
    #[error("{machine}: cannot {action}")]
    HostFile {
        /// The machine.
        machine: String,
        /// What was being done.
        action: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A unit waited for is inactive and nothing will start it.
    #[error("unit \"{unit}\" is inactive and there are no pending jobs")]
    UnitInactive {
        /// The unit.
        unit: String,
    },
    /// No matching QMP event arrived in time.
    #[error("no matching QMP event within {} seconds", .0.as_secs_f64())]
    EventTimeout(Duration),
    /// The UEFI variable store was to be used while the machine runs (upstream's message,
    /// word for word).
    #[error("System is currently running and concurrent reads / writes to the OVMF variables is unsupported")]
    EfiVarsWhileRunning,
    /// `create_efi_vars` found a store (upstream's message, word for word).
    #[error("OVMF variables store exists")]
    EfiVarsExist,
    /// The UEFI variable store cannot be read or written.
    #[error("{machine}: the UEFI variables failed")]
    EfiVars {
        /// The machine.
        machine: String,
        /// Why.
        #[source]
        source: crate::efi::Error,
    },
    /// No name was given and the start script is not `run-<name>-nspawn` (upstream's message,
    /// word for word).
    #[error("Could not extract node name from {start_command}")]
    NoMachineName {
        /// The start script.
        start_command: String,
    },
    /// A container's start script (or its init) ended: systemd-nspawn exited, or the
    /// container's init died.
    #[error(
        "{machine}: systemd-nspawn process exited unexpectedly {context}{}",
        tail_text(console_tail, "its last output")
    )]
    ContainerExited {
        /// The machine.
        machine: String,
        /// While doing what, and how the start script exited if it did.
        context: String,
        /// The last lines of the start script's output and the journal.
        console_tail: Vec<String>,
    },
    /// A container did not become ready in time.
    #[error(
        "{machine}: the container was not ready (READY=1 on its NOTIFY_SOCKET) within {} seconds: {notified}{}",
        waited.as_secs(),
        tail_text(console_tail, "its last output")
    )]
    ContainerNotReady {
        /// The machine.
        machine: String,
        /// How long the driver waited.
        waited: Duration,
        /// What systemd-nspawn had reported.
        notified: String,
        /// The last lines of the start script's output and the journal.
        console_tail: Vec<String>,
    },
    /// A callback (polling condition) failed; its error is passed through as it is.
    #[error(transparent)]
    Callback(Box<dyn std::error::Error + Send + Sync>),
}

fn tail_text(lines: &[String], what: &str) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut text = format!("; {what}:");
    for line in lines {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}

impl Error {
    /// The upstream error class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::CommandFailed { .. }
            | Error::CommandSucceeded { .. }
            | Error::TimedOut(_)
            | Error::SystemctlFailed { .. }
            | Error::InvalidSystemctlOutput { .. }
            | Error::UnitFailed { .. }
            | Error::UnitInactive { .. }
            | Error::UnexpectedUnitState { .. }
            | Error::EfiVarsWhileRunning
            | Error::EfiVarsExist => ErrorKind::AssertionFailed,
            Error::EventTimeout(_) => ErrorKind::Timeout,
            Error::StartScript { .. } | Error::NoMachineName { .. } => ErrorKind::Config,
            _ => ErrorKind::Machine,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
