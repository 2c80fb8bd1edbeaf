//! One test run: resolve the arguments, start the driver, run the script in the embedded
//! interpreter, clean up, and turn the outcome into an exit status.

use std::time::Instant;

use clap::Parser;
use ntd_core::driver::DriverOptions;
use ntd_core::log;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use tracing_subscriber::layer::SubscriberExt;

use crate::args::{Args, Resolved};
use crate::exit;

/// Run the command line; returns the exit status.
pub fn main() -> i32 {
    let args = Args::parse();
    let resolved = match args.resolve() {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("nixos-test-driver: error: {e}");
            return exit::USAGE;
        }
    };
    let subscriber = tracing_subscriber::registry().with(ntd_core::log::terminal::TerminalLayer::stderr());
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        eprintln!("nixos-test-driver: error: cannot install the logger");
        return exit::USAGE;
    }
    log::set_level(resolved.log_level);
    run(resolved)
}

fn run(resolved: Resolved) -> i32 {
    let tests = match std::fs::read_to_string(&resolved.test_script) {
        Ok(tests) => tests,
        Err(e) => {
            eprintln!("nixos-test-driver: error: cannot read test script {}: {e}", resolved.test_script.display());
            return exit::USAGE;
        }
    };
    if !resolved.keep_machine_state {
        log::info(None, "Machine state will be reset. To keep it, pass --keep-machine-state");
    }
    if let Err(e) = ntd_python::embed::initialize() {
        eprintln!("nixos-test-driver: error: cannot start the Python interpreter: {e}");
        return exit::USAGE;
    }
    let global_timeout = resolved.spec.global_timeout;
    let options = DriverOptions {
        machines: resolved.spec.machines,
        vlans: resolved.spec.vlans,
        out_dir: resolved.output_directory,
        keep_machine_state: resolved.keep_machine_state,
        connect_timeout: resolved.connect_timeout,
    };
    Python::attach(|py| {
        let native = match ntd_python::driver::Driver::start(py, options, global_timeout) {
            Ok(native) => native,
            Err(e) => {
                log::error(None, &format!("cannot start the driver: {e}"));
                return exit::TEST_FAILED;
            }
        };
        let status = run_script(py, &native, &tests);
        if let Err(e) = native.call_method0(py, "cleanup") {
            log::error(None, &format!("cleanup failed: {e}"));
        }
        native.call_method0(py, "cancel_timer").ok();
        flush_python_output(py);
        status
    })
}

/// Run the test script through `ntd.driver.Driver.run_tests()` and map its outcome.
fn run_script(py: Python<'_>, native: &Py<ntd_python::driver::Driver>, tests: &str) -> i32 {
    let start = Instant::now();
    let outcome = (|| -> PyResult<()> {
        let logger = py.import("ntd._native")?.getattr("Logger")?.call0()?;
        let driver = py.import("ntd.driver")?.getattr("Driver")?.call1((native.clone_ref(py), tests, logger))?;
        driver.call_method0("run_tests")?;
        Ok(())
    })();
    let timed_out = native.get().has_timed_out();
    if timed_out {
        // The timeout interrupted the main thread; a signal may still be pending.
        let _ = py.check_signals();
        log::test_error(&format!(
            "the test was stopped by its global timeout ({} seconds)",
            ntd_core::config::format_seconds(native.get().global_timeout_duration())
        ));
        return exit::TEST_FAILED;
    }
    match outcome {
        Ok(()) => {
            log::info(None, &format!("test script finished in {:.2}s", start.elapsed().as_secs_f64()));
            exit::SUCCESS
        }
        Err(e) if e.is_instance_of::<PySystemExit>(py) => system_exit_status(py, &e),
        Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => {
            log::test_error("interrupted");
            exit::INTERRUPTED
        }
        Err(e) => {
            // Not an assertion nor a machine error: upstream lets Python print the traceback.
            e.print(py);
            exit::TEST_FAILED
        }
    }
}

/// The status a `SystemExit` asks for, as Python computes it.
fn system_exit_status(py: Python<'_>, error: &PyErr) -> i32 {
    let code = error.value(py).getattr("code").ok();
    match code {
        None => exit::TEST_FAILED,
        Some(code) if code.is_none() => exit::SUCCESS,
        Some(code) => match code.extract::<i32>() {
            Ok(status) => status,
            Err(_) => {
                // sys.exit("message"): Python prints the message and exits 1.
                eprintln!("{code}");
                exit::TEST_FAILED
            }
        },
    }
}

fn flush_python_output(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for stream in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(stream) {
                let _ = stream.call_method0("flush");
            }
        }
    }
}
