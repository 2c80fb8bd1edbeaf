//! The web view's server on the fakes (the browser test with real VMs is e2e's): the test
//! script itself fetches the page, its files, the state it polls and the host's noVNC while it
//! runs, and checks that nothing outside them is served, to nobody but 127.0.0.1.

use crate::harness::Scenario;

/// Runs inside the driver, while the web view serves; `E2E_PORT` is its port.
const SCRIPT: &str = r#"
import json
import os
import urllib.error
import urllib.request

base = f"http://127.0.0.1:{os.environ['E2E_PORT']}"

def get(path, host=None):
    request = urllib.request.Request(base + path, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()

start_all()
status, kind, page = get("/")
assert status == 200 and b"<title>ntd web view</title>" in page, (status, page[:200])
assert get("/page.js")[:2] == (200, "text/javascript"), get("/page.js")[:2]
assert get("/novnc/core/rfb.js") == (200, "text/javascript", b"export default class RFB {}\n")
for outside in ["/novnc/../secret", "/novnc/core/../../secret", "/novnc/.hidden", "/vnc/nobody", "/artifacts/secret"]:
    assert get(outside)[0] == 404, (outside, get(outside))
assert get("/state", host="rebound.example")[0] == 403

with subtest("watched"):
    with alpha.nested("waiting for the page"):
        state = json.loads(get("/state")[2])
assert state["test"] == "web-view-quick", state
assert state["subtest"] == "watched", state
[machine] = state["machines"]
assert machine["name"] == "alpha" and machine["kind"] == "vm" and machine["running"], machine
assert machine["busy"]["what"] == "waiting for the page", machine
assert machine["vnc_command"].startswith("vncviewer ") and machine["vnc_command"].endswith("/vm-state-alpha/vnc")
assert state["novnc"] and state["outcome"] is None and state["artifacts"] == [], state
assert "alpha: waiting for the page" in state["log"], state["log"]
print("the web view served everything")
"#;

#[test]
fn the_page_its_files_and_the_state_are_served_to_loopback_only() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let novnc = scenario.path().join("novnc");
    std::fs::create_dir_all(novnc.join("core")).expect("a noVNC directory");
    std::fs::write(novnc.join("core/rfb.js"), "export default class RFB {}\n").expect("its rfb.js");
    std::fs::write(scenario.path().join("secret"), "secret\n").expect("a file beside it");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("port").port();
    let mut command = scenario.command(&[&format!("--web-view={port}")]);
    command.env("NTD_NOVNC", &novnc).env("E2E_PORT", port.to_string()).env("name", "vm-test-run-web-view-quick");
    let run = scenario.run_with(command, &scenario.script(SCRIPT), crate::harness::LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains(&format!("web view: http://127.0.0.1:{port}/ (every machine's screen"));
    assert!(run.stdout.contains("the web view served everything"), "{}", run.stdout);
    // The fake QEMU makes no VNC socket: the log says so, as for a start script that drops
    // ntd's arguments.
    run.assert_stderr_contains("alpha: no VNC server: QEMU did not create ");
}

#[test]
fn without_novnc_the_log_says_why_the_page_has_no_screens() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let mut command = scenario.command(&["--web-view"]);
    command.env("NTD_NOVNC", "/nonexistent/novnc");
    let run = scenario.run_with(command, &scenario.script("start_all()\n"), crate::harness::LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains(
        "web view: no live screens: NTD_NOVNC=/nonexistent/novnc has no core/rfb.js (a noVNC directory has)",
    );
    run.assert_stderr_contains("web view: http://127.0.0.1:");
}
