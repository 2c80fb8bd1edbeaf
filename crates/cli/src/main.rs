//! `nixos-test-driver`: run a NixOS test script on ntd.

mod args;
mod exit;
mod outputs;
mod run;
mod telemetry;

fn main() {
    std::process::exit(run::main());
}
