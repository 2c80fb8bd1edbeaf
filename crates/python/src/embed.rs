//! Running the `ntd` Python package inside a Rust binary (the `nixos-test-driver` CLI).
//!
//! The Python sources of `ntd` and `test_driver` are compiled into the binary and registered in
//! `sys.modules` together with the native module, so the binary needs no files beside it and
//! the test script sees exactly the code it was built with.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

/// One compiled-in Python module.
struct Source {
    name: &'static str,
    file: &'static str,
    code: &'static str,
}

macro_rules! source {
    ($name:literal, $file:literal) => {
        Source { name: $name, file: $file, code: include_str!(concat!("../../../python-shim/", $file)) }
    };
}

/// The pure-Python modules, in import order: a module's imports come before it. Packages are
/// the `__init__.py` entries.
const SOURCES: &[Source] = &[
    source!("ntd", "ntd/__init__.py"),
    source!("ntd.errors", "ntd/errors.py"),
    source!("ntd.efi", "ntd/efi.py"),
    source!("ntd.duration", "ntd/duration.py"),
    source!("ntd.debug", "ntd/debug.py"),
    source!("ntd.repl", "ntd/repl.py"),
    source!("ntd.polling_condition", "ntd/polling_condition.py"),
    source!("ntd.qmp", "ntd/qmp.py"),
    source!("ntd.handles", "ntd/handles.py"),
    source!("ntd.vsock", "ntd/vsock.py"),
    source!("ntd.driver", "ntd/driver.py"),
    source!("test_driver", "test_driver/__init__.py"),
    source!("test_driver.errors", "test_driver/errors.py"),
    source!("test_driver.efi", "test_driver/efi.py"),
    source!("test_driver.debug", "test_driver/debug.py"),
    source!("test_driver.polling_condition", "test_driver/polling_condition.py"),
    source!("test_driver.vlan", "test_driver/vlan.py"),
    source!("test_driver.logger", "test_driver/logger.py"),
    source!("test_driver.duration", "test_driver/duration.py"),
    source!("test_driver.config", "test_driver/config.py"),
    source!("test_driver.machine", "test_driver/machine/__init__.py"),
    source!("test_driver.machine.qmp", "test_driver/machine/qmp.py"),
    source!("test_driver.machine.ocr", "test_driver/machine/ocr.py"),
    source!("test_driver.driver", "test_driver/driver.py"),
];

/// Start the embedded interpreter and make `ntd` and `test_driver` importable. Call once, from
/// the thread that will run the test script (it becomes Python's main thread and receives
/// SIGINT).
pub fn initialize() -> PyResult<()> {
    crate::runtime::set_main_thread();
    Python::initialize();
    Python::attach(|py| {
        let sys_modules = py.import("sys")?.getattr("modules")?;
        for source in SOURCES {
            let module = PyModule::new(py, source.name)?;
            module.setattr("__file__", source.file)?;
            if source.file.ends_with("__init__.py") {
                // A package needs __path__ for its submodules to be imported.
                module.setattr("__path__", PyList::empty(py))?;
            }
            if source.name == "ntd" {
                let native = PyModule::new(py, "ntd._native")?;
                crate::register(&native)?;
                sys_modules.set_item("ntd._native", &native)?;
                module.setattr("_native", native)?;
            }
            // In sys.modules before its code runs, as an import would have it (the code may
            // import its own submodules lazily).
            sys_modules.set_item(source.name, &module)?;
            if let Some((parent, short)) = source.name.rsplit_once('.') {
                sys_modules.get_item(parent)?.setattr(short, &module)?;
            }
            let code = py.import("builtins")?.getattr("compile")?.call1((source.code, source.file, "exec"))?;
            py.import("builtins")?.getattr("exec")?.call1((code, module.dict()))?;
        }
        // Python only installs its SIGINT handler when it owns the process; the test script
        // expects Ctrl-C to raise KeyboardInterrupt.
        let signal = py.import("signal")?;
        signal.call_method1("signal", (signal.getattr("SIGINT")?, signal.getattr("default_int_handler")?))?;
        Ok(())
    })
}
