//! Running the `ntd` Python package inside a Rust binary (the `nixos-test-driver` CLI).
//!
//! The package's Python sources are compiled into the binary and registered in `sys.modules`
//! together with the native module, so the binary needs no files beside it and the test
//! script sees exactly the code it was built with.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};
use std::ffi::CString;

/// The pure-Python modules of the `ntd` package, in import order.
const SOURCES: &[(&str, &str, &str)] = &[
    ("ntd", "ntd/__init__.py", include_str!("../python/ntd/__init__.py")),
    ("ntd.errors", "ntd/errors.py", include_str!("../python/ntd/errors.py")),
    ("ntd.duration", "ntd/duration.py", include_str!("../python/ntd/duration.py")),
    ("ntd.debug", "ntd/debug.py", include_str!("../python/ntd/debug.py")),
    ("ntd.polling_condition", "ntd/polling_condition.py", include_str!("../python/ntd/polling_condition.py")),
    ("ntd.driver", "ntd/driver.py", include_str!("../python/ntd/driver.py")),
];

/// Start the embedded interpreter and make `ntd` importable. Call once, from the thread that
/// will run the test script (it becomes Python's main thread and receives SIGINT).
pub fn initialize() -> PyResult<()> {
    crate::runtime::set_main_thread();
    Python::initialize();
    Python::attach(|py| {
        let sys_modules = py.import("sys")?.getattr("modules")?;
        let mut package: Option<Bound<'_, PyModule>> = None;
        for (name, file, source) in SOURCES {
            let module = PyModule::from_code(py, &cstring(source)?, &cstring(file)?, &cstring(name)?)?;
            match &package {
                None => {
                    // A package needs __path__ for submodule imports.
                    module.setattr("__path__", PyList::empty(py))?;
                    let native = PyModule::new(py, "ntd._native")?;
                    crate::register(&native)?;
                    sys_modules.set_item("ntd._native", &native)?;
                    module.setattr("_native", native)?;
                    package = Some(module);
                }
                Some(package) => {
                    let short = name.rsplit('.').next().unwrap_or(name);
                    package.setattr(short, &module)?;
                }
            }
        }
        // Python only installs its SIGINT handler when it owns the process; the test script
        // expects Ctrl-C to raise KeyboardInterrupt.
        let signal = py.import("signal")?;
        signal.call_method1("signal", (signal.getattr("SIGINT")?, signal.getattr("default_int_handler")?))?;
        Ok(())
    })
}

fn cstring(text: &str) -> PyResult<CString> {
    CString::new(text).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}
