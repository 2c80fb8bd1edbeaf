//! Link the embedded interpreter so the binary finds the libpython it was built against.
//!
//! pyo3 links `-lpython3.x` from the chosen interpreter's LIBDIR but records no run path, so
//! at run time the loader would pick whatever libpython3.x the system has, possibly another
//! build with another standard library. An rpath to that LIBDIR pins it (Nix does the same).

fn main() {
    let config = pyo3_build_config::get();
    if config.shared()
        && let Some(lib_dir) = config.lib_dir()
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{lib_dir}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
