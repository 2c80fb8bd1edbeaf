//! `generate-driver-symbols`: write the test-script globals, comma-separated, to
//! `./driver-symbols`, as upstream's does. The Nix build of a test's driver runs it and hands
//! the names to pyflakes as builtins when it lints the test script.

use pyo3::prelude::*;

fn main() {
    let written = ntd_python::embed::initialize().and_then(|()| {
        Python::attach(|py| -> PyResult<()> {
            py.import("ntd.driver")?.getattr("generate_driver_symbols")?.call0()?;
            Ok(())
        })
    });
    if let Err(e) = written {
        eprintln!("generate-driver-symbols: error: {e}");
        std::process::exit(1);
    }
}
