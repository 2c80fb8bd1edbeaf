//! ntd-core: the NixOS test driver as a Rust library.
//!
//! This crate knows nothing of Python or of the command line. It boots machines from their
//! start scripts exactly as the upstream Python driver does, runs commands in them, runs VLAN
//! switches, keeps the policy of a test run (global timeout, termination, the switches'
//! health), and reports what it does as `tracing` spans and events (see [`log`]), which sinks
//! turn into upstream's terminal log, XML log, JUnit report and OpenTelemetry spans.
//!
//! The shape follows upstream's `test_driver` package:
//!
//! - [`driver::Driver`]: the machines and VLANs of one run, their lifecycle, and the run's
//!   [`driver::watchdog`];
//! - [`machine::Machine`]: what every machine has (upstream's `BaseMachine`): commands, waits,
//!   systemd, files, logging, written once over a [`machine::Backend`], the command transport
//!   and lifecycle of one kind of machine;
//! - [`machine::qemu::QemuMachine`]: a QEMU VM (`QemuMachine`): the backdoor shell, QMP, the
//!   monitor, the screen, keys and the serial console;
//! - [`vlan::VLan`], [`process`] (supervision of every child), [`retry`], [`config`];
//! - [`efi`]: OVMF's UEFI variable store, which QEMU machines' EFI helpers read and write.
//!
//! The API is async (tokio). Every blocking operation takes a deadline or honours upstream's
//! default one; every child process is supervised by [`process`] and reaped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ntd_core::Error> {
//! use ntd_core::machine::qemu::{QemuConfig, QemuMachine};
//! let machine = QemuMachine::new(QemuConfig::new("./result/bin/run-machine-vm", "/tmp", "."))?;
//! machine.start(false).await?;
//! let out = machine.succeed(&["uname -a".to_owned()], None).await?;
//! println!("{}", String::from_utf8_lossy(&out));
//! machine.shutdown().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod driver;
pub mod efi;
pub mod errors;
pub mod log;
pub mod machine;
pub mod ocr;
pub mod process;
pub mod retry;
pub mod ssh_backdoor;
pub mod vlan;

pub use driver::Driver;
pub use errors::{ErrorKind, full_message};
pub use machine::Machine;

/// Any error of ntd-core: the module errors gathered, for callers that hold any of them (the
/// Python bindings, the command line). Modules never return it themselves, so that no module
/// depends on every other one.
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

    /// The whole story in one line (see [`full_message`]).
    pub fn full_message(&self) -> String {
        full_message(self)
    }
}
