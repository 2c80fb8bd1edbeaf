//! What the page shows, as the JSON it polls (`GET /state`).

use std::path::Path;
use std::time::Instant;

use ntd_core::machine::qemu::QemuMachine;
use serde_json::{Value, json};

use crate::WebViewConfig;

/// The state of the run now: the test, its progress, each machine, the failure artifacts.
pub fn state(config: &WebViewConfig, outcome: Option<&str>) -> Value {
    let progress = config.progress.snapshot(Instant::now());
    let machines: Vec<Value> = config
        .driver
        .all_machines()
        .iter()
        .map(|machine| {
            let qemu = QemuMachine::from_machine(machine);
            // The socket is there while QEMU runs (QEMU removes it when it exits).
            let vnc = machine.is_booted() && qemu.as_ref().and_then(|q| q.vnc_socket()).is_some_and(Path::exists);
            let busy = progress.busy.iter().find(|busy| busy.machine == machine.name());
            json!({
                "name": machine.name(),
                "kind": if qemu.is_some() { "vm" } else { "container" },
                "running": machine.is_booted(),
                "vnc": vnc,
                "vnc_command": qemu.as_ref().and_then(QemuMachine::vnc_command),
                "busy": busy.map(|busy| json!({"what": busy.what, "time": busy.time()})),
            })
        })
        .collect();
    let artifacts: Vec<Value> = config
        .driver
        .failure_artifacts()
        .iter()
        .map(|artifact| {
            let file = artifact.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            json!({"machine": artifact.machine, "what": artifact.what, "file": file})
        })
        .collect();
    json!({
        "test": config.test_name,
        "subtest": progress.subtest,
        "machines": machines,
        "log": progress.tail,
        "log_lines": progress.lines,
        "artifacts": artifacts,
        "novnc": config.novnc.is_some(),
        "outcome": outcome,
    })
}
