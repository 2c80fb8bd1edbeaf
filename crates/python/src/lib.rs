//! ntd-python: ntd-core as the Python API NixOS test scripts use.
//!
//! The native module `ntd._native` holds thin wrappers named as upstream's classes
//! (`BaseMachine`, `QemuMachine`, `NspawnMachine`, `VLan`, the logger, `EfiVars`), the codec of
//! UEFI variables ([`efi`]) and the native half of the driver; the `ntd` Python package beside
//! it (`python-shim/ntd/`) runs test scripts with upstream's globals. Two ways in: [`embed`]
//! puts both into the interpreter of a Rust binary (the `nixos-test-driver` CLI); the
//! `_native` extension module below is what `import ntd` loads from the wheel (`maturin
//! build`, see `python-shim/pyproject.toml`).

pub mod driver;
pub mod duration;
pub mod efi;
pub mod embed;
pub mod errors;
pub mod logger;
pub mod machine;
pub mod retry;
pub mod runtime;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Add the native classes and functions to `module` (the `ntd._native` module).
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<machine::BaseMachine>()?;
    module.add_class::<machine::qemu::QemuMachine>()?;
    module.add_class::<machine::nspawn::NspawnMachine>()?;
    module.add_class::<driver::Driver>()?;
    module.add_class::<driver::VLan>()?;
    module.add_class::<logger::Logger>()?;
    module.add_class::<logger::LogBlock>()?;
    module.add_class::<efi::EfiVars>()?;
    module.add_function(wrap_pyfunction!(load_driver_configuration, module)?)?;
    module.add_function(wrap_pyfunction!(retry::retry, module)?)?;
    module.add_function(wrap_pyfunction!(ocr_screenshot, module)?)?;
    module.add_function(wrap_pyfunction!(efi::efi_encode_variable, module)?)?;
    module.add_function(wrap_pyfunction!(efi::efi_describe_variable, module)?)?;
    module.add_function(wrap_pyfunction!(efi::efi_read_variable, module)?)?;
    module.add_function(wrap_pyfunction!(efi::efi_resolve_guid, module)?)?;
    module.add_function(wrap_pyfunction!(efi::efi_lookup_guid, module)?)?;
    module.add_function(wrap_pyfunction!(ssh_proxy, module)?)?;
    Ok(())
}

/// `python -m ntd.ssh_proxy HOST PORT`, the SSH backdoor's ssh `ProxyCommand` for library
/// use (`ntd-ssh-proxy` for the command line): connect to `vsock-mux/<socket>` or
/// `unix/<socket>` and hand the connection to ssh on this process's stdout.
#[pyfunction]
fn ssh_proxy(py: Python<'_>, host: &str, port: &str) -> PyResult<()> {
    use ntd_core::ssh_backdoor::proxy;
    py.detach(|| {
        let port = proxy::parse_port(port)?;
        let stream = proxy::connect(&proxy::Address::parse(host)?, port)?;
        proxy::hand_over(stream)
    })
    .map_err(|e| pyo3::exceptions::PyConnectionError::new_err(e.to_string()))
}

/// Read and check a `driverConfiguration.json` as `nixos-test-driver --config` does; the
/// result is a dict of its fields, durations in seconds and paths as strings.
#[pyfunction]
fn load_driver_configuration<'py>(py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let config = ntd_core::config::DriverConfiguration::load(&path).map_err(|e| errors::to_pyerr(py, e.into()))?;
    for notice in config.notices() {
        ntd_core::log::warning(None, &notice);
    }
    let vms = PyDict::new(py);
    for (key, vm) in &config.vms {
        let entry = PyDict::new(py);
        entry.set_item("name", &vm.name)?;
        entry.set_item("start_script", &vm.start_script)?;
        vms.set_item(key, entry)?;
    }
    let dict = PyDict::new(py);
    dict.set_item("vms", vms)?;
    dict.set_item("containers", PyDict::new(py))?;
    dict.set_item("vlans", &config.vlans)?;
    dict.set_item("global_timeout", config.global_timeout.as_secs_f64())?;
    dict.set_item("enable_ssh_backdoor", config.enable_ssh_backdoor)?;
    dict.set_item("test_script", &config.test_script)?;
    Ok(dict)
}

/// The texts tesseract reads in a screenshot file (any format the `image` crate reads, e.g.
/// QEMU's PPM or a PNG): of each of ntd's OCR variants, in their order, or of the first only
/// (`variants=False`). For `test_driver.machine.ocr`.
#[pyfunction]
#[pyo3(signature = (screenshot_path, variants=true))]
fn ocr_screenshot(py: Python<'_>, screenshot_path: std::path::PathBuf, variants: bool) -> PyResult<Vec<String>> {
    use ntd_core::ocr;
    let data = std::fs::read(&screenshot_path).map_err(|e| {
        errors::machine_error(py, format!("cannot read the screenshot {}: {e}", screenshot_path.display()))
    })?;
    let mut images = ocr::variants(&data).map_err(|e| errors::machine_error(py, ntd_core::full_message(&e)))?;
    if !variants {
        images.truncate(1);
    }
    runtime::block_on(py, ocr::recognise_all(images))?
        .map_err(|e| errors::machine_error(py, ntd_core::full_message(&e)))
}

/// The extension module: `import ntd` in a Python program that uses ntd as a library.
///
/// A program that imports it owns the process, so this sets up what the CLI otherwise does:
/// log lines to stderr in upstream's format (unless the program installed a `tracing`
/// subscriber of its own through another extension), and Python's main thread as the one whose
/// blocked waits Ctrl-C interrupts.
#[pymodule]
#[pyo3(name = "_native")]
fn native_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let threading = py.import("threading")?;
    if threading.call_method0("current_thread")?.is(&threading.call_method0("main_thread")?) {
        runtime::set_main_thread();
    }
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(ntd_core::log::terminal::TerminalLayer::stderr());
    // Fails only if a subscriber is already installed; that one then gets the lines.
    let _ = tracing::subscriber::set_global_default(subscriber);
    register(module)
}
