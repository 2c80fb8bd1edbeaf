//! The quick tier of the command line: the real `nixos-test-driver` binary running test
//! scripts on fake machines (ntd-fake's QEMU, which speaks QMP, the monitor, the serial
//! console and the backdoor shell for real, with a real bash as the guest shell) and real
//! `vde_switch`es. It checks what the end-to-end tests check on real VMs — the command line,
//! upstream's log and failure report, the JUnit report and the XML log, the run's policy
//! (global timeout, signals, a dying switch), OpenTelemetry, the Python layer and the REPL —
//! in seconds instead of minutes, in `scripts/test --quick` and plain `cargo test`.
//!
//! It needs the `ntd-fake-qemu` binary (`cargo test --workspace` builds it; for this crate
//! alone, `cargo build --release -p ntd-fake` first), bash, util-linux, vde2, tmux and root
//! (the fake guest's namespaces), as scripts/install-host-deps sets up.

// Shared with the end-to-end tests; each tier uses part of it.
#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;

mod efi;
mod failures;
mod harness;
mod passing;
mod policy;
mod python_api;
mod repl;
mod reports;
mod ssh_backdoor;
mod telemetry;
mod usage;
mod web_view;
