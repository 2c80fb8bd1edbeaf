//! End-to-end tests: the real `nixos-test-driver` binary running test scripts against real
//! QEMU machines booted from the built-in test guest (TCG here, KVM where it is real).
//!
//! They need the guest (tests/guest/build, root) and the host packages of
//! scripts/install-host-deps; scripts/test provides both. The Python tests also need the ntd
//! wheel's venv in `NTD_PY_ENV` (scripts/python-env).

mod artifacts;
mod bad_input;
mod channel;
mod commands;
mod containers;
// Shared with the quick tier; each tier uses part of it.
#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
mod debian;
mod debug_hook;
mod efi;
mod examples;
mod failures;
mod faults;
mod globals;
mod harness;
mod interfaces;
mod load;
mod network;
mod python;
mod repl;
mod screen;
mod security;
mod signals;
mod ssh_backdoor;
mod start_script;
mod telemetry;
mod templates;
mod typing;
mod upstream;
mod vnc;
mod web_view;
