//! ntd-fake: a stand-in for QEMU and a NixOS test guest that speaks their real protocols, so
//! ntd's machine, driver, log, telemetry and Python layers can be tested in seconds without
//! booting a VM.
//!
//! The binary `ntd-fake-qemu` takes QEMU's command line (as a `run-<name>-vm` script and ntd's
//! start command build it) plus `--fake-*` options (`ntd-fake-qemu --fake-help`). It creates
//! the QMP socket and connects to the driver's monitor and backdoor sockets as QEMU does,
//! prints a boot on the serial console (stdout), and runs the backdoor shell as a real
//! `bash --norc` in private namespaces, relayed byte for byte; virtio-serial ports appear in the
//! guest as `/dev/virtio-ports/NAME` (a FUSE file system in the guest's own `/dev`, as root).
//! `poweroff`, `reboot`, `systemctl` and `fake-panic` in the guest are the fake's own tools, so
//! nothing in the guest touches the host's machine state. Faults (a slow or lossy console, a crash, QMP replies out
//! of line) are options.
//!
//! For other crates' tests the library gives the built binary ([`binary`]), start scripts
//! that run it ([`StartScript`]), the fake's directory in a state directory ([`FakeDir`]),
//! and a fake container's start script ([`ContainerScript`]):
//!
//! ```no_run
//! let dir = tempfile::tempdir().unwrap();
//! let script = ntd_fake::StartScript::new("server")
//!     .option("--fake-unit-later")
//!     .option("nginx.service=active@1")
//!     .write(dir.path())
//!     .unwrap();
//! // Give `script` to the driver as a start script; it boots in milliseconds.
//! # let _ = script;
//! ```
//!
//! The other modules are the fake itself, one per protocol or part of the machine.
#![warn(missing_docs)]

pub mod args;
pub mod console;
pub mod container;
pub mod control;
pub mod fuse;
pub mod guest;
pub mod guest_dev;
mod harness;
pub mod hmp;
pub mod json;
pub mod ports;
pub mod qemu;
pub mod qemu_args;
pub mod qmp;
pub mod relay;
pub mod sessions;
pub mod signals;
pub mod systemd;
pub mod vm;

pub use container::{Behaviour, ContainerScript};
pub use harness::{BINARY_NAME, FakeDir, StartScript, binary};

/// An error and its sources, joined by `: `.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
