//! `nixos-test-driver`: run a NixOS test script on ntd.

mod args;
mod exit;
mod new;
mod outputs;
mod run;
mod telemetry;

fn main() {
    // `nixos-test-driver new ...` writes a test directory; anything else runs a test (a test
    // script file named `new` is `./new`).
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|first| first == "new") {
        std::process::exit(new::main(args));
    }
    std::process::exit(run::main());
}
