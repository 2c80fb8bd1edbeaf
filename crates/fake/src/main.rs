//! `ntd-fake-qemu`, a multi-call binary: QEMU by default, a guest tool under a tool's name
//! (`poweroff`, `systemctl`, ...), and the guest shell's init under `ntd-fake-guest-init`.

use std::ffi::OsString;
use std::path::Path;

use ntd_fake::{control, guest, qemu};

fn main() {
    let mut arguments = std::env::args_os();
    let arg0 = arguments.next().unwrap_or_default();
    let name = Path::new(&arg0).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let rest: Vec<OsString> = arguments.collect();
    let status = if control::TOOLS.contains(&name.as_str()) {
        let args: Vec<String> = rest.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        control::tool_main(&name, &args)
    } else if name == guest::INIT_NAME {
        guest::init_main(&rest)
    } else {
        qemu::main(rest)
    };
    std::process::exit(status);
}
