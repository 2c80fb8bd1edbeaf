//! Upstream's classes of error (`test_driver/errors.py`), and how a chain of errors reads.
//!
//! Every module of ntd-core has its own error enum with the facts in its fields; each says with
//! `kind()` which of upstream's classes it belongs to, because the upstream driver presents
//! them differently (only the test script's frames for a failed assertion, the whole traceback
//! for a machine error). This module depends on nothing else in the crate, so any module can
//! use it; the crate-wide [`crate::Error`] that gathers the module errors lives in the crate
//! root.

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

/// The error's message followed by those of its sources, `: `-separated: the whole story in
/// one line, for a Python exception or a CLI message. A source whose text the message already
/// ends with is not repeated.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("m: cannot run the start command /x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn full_message_walks_the_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        assert_eq!(full_message(&Outer(io)), "m: cannot run the start command /x: No such file or directory");
    }
}
