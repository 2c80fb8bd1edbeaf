//! ntd-python: ntd-core as the Python API NixOS test scripts use.
//!
//! The native module `ntd._native` holds thin wrappers named as upstream's classes
//! (`QemuMachine`, `BaseMachine`, `VLan`, the logger) and the native half of the driver; the
//! `ntd` Python package beside it (`python/ntd/`) runs test scripts with upstream's globals.
//! [`embed`] puts both into the interpreter of a Rust binary.

pub mod driver;
pub mod duration;
pub mod embed;
pub mod errors;
pub mod logger;
pub mod machine;
pub mod runtime;

use pyo3::prelude::*;

/// Add the native classes to `module` (the `ntd._native` module).
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<machine::BaseMachine>()?;
    module.add_class::<machine::QemuMachine>()?;
    module.add_class::<driver::Driver>()?;
    module.add_class::<driver::VLan>()?;
    module.add_class::<logger::Logger>()?;
    module.add_class::<logger::LogBlock>()?;
    Ok(())
}
