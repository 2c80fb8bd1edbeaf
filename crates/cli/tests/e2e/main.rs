//! End-to-end tests: the real `nixos-test-driver` binary running test scripts against real
//! QEMU machines booted from the built-in test guest (TCG here, KVM where it is real).
//!
//! They need the guest (tests/guest/build, root) and the host packages of
//! scripts/install-host-deps; scripts/test provides both.

mod commands;
mod debian;
mod examples;
mod failures;
mod globals;
mod harness;
mod interfaces;
mod network;
mod screen;
mod start_script;
mod telemetry;
