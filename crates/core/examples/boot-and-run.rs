//! ntd-core on its own, without Python: boot a machine from its `run-<name>-vm` start script,
//! wait for systemd, run commands in it, and stop it, with upstream's log on stderr. The run
//! has the same policy as a test run of `nixos-test-driver`: a global timeout (here 15
//! minutes), SIGTERM stopping it cleanly, a dying VLAN switch stopping it at once.
//!
//! ```sh
//! cargo run --release -p ntd-core --example boot-and-run -- ./result/bin/run-machine-vm
//! ```
//!
//! The built-in test guest has start scripts too:
//! `tests/guest/mk-start-script --tier debian machine /tmp/ntd-example` prints one.

use std::process::ExitCode;
use std::time::Duration;

use ntd_core::config::MachineSpec;
use ntd_core::driver::{Driver, DriverOptions};
use ntd_core::log::terminal::TerminalLayer;
use ntd_core::machine::ExecuteOptions;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::main]
async fn main() -> ExitCode {
    // ntd-core reports what it does as tracing spans and events; this layer prints them as
    // upstream's driver does ("machine: must succeed: ...", "(finished: ..., in 0.01 seconds)").
    tracing_subscriber::registry().with(TerminalLayer::stderr()).init();

    let Some(start_script) = std::env::args().nth(1) else {
        eprintln!("usage: boot-and-run START-SCRIPT   (a run-<name>-vm script)");
        return ExitCode::from(2);
    };
    let mut options =
        DriverOptions::new(vec![MachineSpec { name: None, start_command: start_script }], std::env::temp_dir());
    options.global_timeout = Duration::from_secs(15 * 60);
    let driver = match Driver::start(options).await {
        Ok(driver) => driver,
        Err(e) => {
            eprintln!("boot-and-run: {}", ntd_core::full_message(&e));
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = driver.terminate_on_sigterm(false) {
        eprintln!("boot-and-run: cannot handle SIGTERM: {e}");
    }
    // run() arms the global timeout and stops the script when the run is stopped.
    let outcome = driver.run(run(&driver)).await;
    // Stop QEMU whatever happened: a machine whose handles are all dropped kills its process
    // group too, but cleanup() shuts everything down in order and logs it.
    driver.cleanup().await;
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("boot-and-run: {}", e.full_message());
            ExitCode::FAILURE
        }
        Err(stop) => {
            eprintln!("boot-and-run: {}", stop.message());
            ExitCode::from(u8::try_from(stop.exit_status()).unwrap_or(1))
        }
    }
}

async fn run(driver: &Driver) -> Result<(), ntd_core::Error> {
    driver.start_all().await?;
    let machine = &driver.machines()[0];
    machine.wait_for_unit("multi-user.target", None, Duration::from_secs(600)).await?;

    // succeed() fails unless the command exits 0, and returns its stdout.
    let kernel = machine.succeed(&["uname -r".to_owned()], None).await?;
    println!("{} runs Linux {}", machine.name(), String::from_utf8_lossy(&kernel).trim());

    // execute() returns the exit status with the output, whatever the status.
    let (status, output) = machine.execute("systemctl is-system-running", ExecuteOptions::default()).await?;
    println!("systemctl is-system-running: {} (exit status {status})", String::from_utf8_lossy(&output).trim());
    Ok(())
}
