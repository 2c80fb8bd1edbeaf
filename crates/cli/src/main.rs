//! `nixos-test-driver`: run a NixOS test script on ntd.

mod args;
mod exit;
mod run;

fn main() {
    std::process::exit(run::main());
}
