//! The crate-wide error and its classification into upstream's error classes.
//!
//! Each module has its own error enum with the facts in its fields; this one only gathers them
//! so callers can hold any of them, and sorts them with [`Error::kind`] into the classes the
//! upstream driver presents differently (`test_driver/errors.py`).

use crate::{config, driver, machine, vlan};

/// How a failure should be presented: upstream's three classes of error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Something the test asked for did not hold (a command failed, a wait timed out):
    /// upstream's `RequestedAssertionFailed`. Only the test script's own frames are shown.
    AssertionFailed,
    /// The machine or the driver failed, not the test (QEMU died, the guest never connected):
    /// upstream's `MachineError`.
    Machine,
    /// A Python `TimeoutError` in upstream (only `wait_for_qmp_event`).
    Timeout,
    /// The driver was configured wrongly (a bad config file, a missing start script).
    Config,
}

/// Any error of ntd-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A machine operation failed.
    #[error(transparent)]
    Machine(#[from] machine::Error),
    /// Starting or stopping the driver failed.
    #[error(transparent)]
    Driver(#[from] driver::Error),
    /// A VLAN switch failed.
    #[error(transparent)]
    Vlan(#[from] vlan::Error),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
}

/// The error's message followed by those of its sources, `: `-separated: the whole story in
/// one line, for a Python exception or a CLI message.
pub fn full_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl Error {
    /// The upstream error class this error belongs to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Machine(e) => e.kind(),
            Error::Driver(e) => e.kind(),
            Error::Vlan(_) => ErrorKind::Machine,
            Error::Config(_) => ErrorKind::Config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_message_walks_the_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let error: Error =
            crate::machine::Error::Start { machine: "m".into(), action: "run the start command /x".into(), source: io }
                .into();
        assert_eq!(full_message(&error), "m: cannot run the start command /x: No such file or directory");
    }
}
