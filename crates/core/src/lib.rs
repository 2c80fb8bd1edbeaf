//! ntd-core: the NixOS test driver as a Rust library.
//!
//! This crate knows nothing of Python or of the command line. It boots machines from
//! `run-<name>-vm` start scripts exactly as the upstream Python driver does, talks to them over
//! the virtio-console backdoor shell, QMP and the HMP monitor, runs VLAN switches, and reports
//! what it does as `tracing` spans and events (see [`log`]), which sinks turn into upstream's
//! terminal log, XML log and JUnit report, and OpenTelemetry traces.
//!
//! The API is async (tokio). Every blocking operation takes a deadline or honours upstream's
//! default one; every child process is supervised by [`process`] and reaped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ntd_core::Error> {
//! use ntd_core::machine::{Machine, MachineConfig};
//! let machine = Machine::new(MachineConfig::new("./result/bin/run-machine-vm", "/tmp", "."))?;
//! machine.start(false).await?;
//! let out = machine.succeed(&["uname -a".to_owned()], None).await?;
//! println!("{}", String::from_utf8_lossy(&out));
//! machine.shutdown().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod driver;
mod error;
pub mod log;
pub mod machine;
pub mod ocr;
pub mod process;
pub mod retry;
pub mod vlan;

pub use driver::Driver;
pub use error::{Error, ErrorKind, full_message};
pub use machine::Machine;
