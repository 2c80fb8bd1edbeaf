//! The web view's server on the fakes (the browser test with real VMs is e2e's): while a test
//! waits, this test fetches the page, its files, the state it polls and the host's noVNC, and
//! checks that nothing outside them is served, and nothing without the secret path or to
//! another host name.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::live::LiveDriver;
use crate::harness::{LIMIT, Scenario};

/// The test script: the machine waits until this test creates the file `E2E_GO`.
const SCRIPT: &str = r#"
import os
import time
from pathlib import Path

start_all()
with subtest("watched"):
    with alpha.nested("waiting for the page"):
        while not Path(os.environ["E2E_GO"]).exists():
            time.sleep(0.05)
"#;

/// One HTTP/1.1 request to `address` (`127.0.0.1:port`): the status, the content type and the
/// body.
fn get(address: &str, path: &str, host: &str) -> (u16, String, Vec<u8>) {
    request(address, path, &format!("Host: {host}\r\n"))
}

/// [`get`] with these header lines.
fn request(address: &str, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(address).expect("connect to the web view");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").expect("send the request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read the response");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a header") + 4;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let content_type = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (status, content_type, response[split..].to_vec())
}

#[test]
fn the_page_its_files_and_the_state_are_served_under_a_secret_path_to_loopback_only() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let novnc = scenario.path().join("novnc");
    std::fs::create_dir_all(novnc.join("core")).expect("a noVNC directory");
    std::fs::write(novnc.join("core/rfb.js"), "export default class RFB {}\n").expect("its rfb.js");
    std::fs::write(scenario.path().join("secret"), "secret\n").expect("a file beside it");
    let go = scenario.path().join("go");
    let mut command = scenario.command(&["--web-view"]);
    command.env("NTD_NOVNC", &novnc).env("E2E_GO", &go).env("name", "vm-test-run-web-view-quick");
    scenario.add_machines(&mut command, &scenario.script(SCRIPT));
    let mut driver = LiveDriver::spawn(command, LIMIT);
    let said = driver.wait_for_line("web view: http://127.0.0.1:");
    let url = said.split_whitespace().nth(2).expect("the address").to_owned();
    // The fake QEMU makes no VNC socket: the log says so, as for a start script that drops
    // ntd's arguments.
    driver.wait_for_line("alpha: no VNC server: QEMU did not create ");
    driver.wait_for_line("alpha: waiting for the page");

    let rest = url.strip_prefix("http://").expect("http");
    let (address, base) = rest.split_at(rest.find('/').expect("a path"));
    assert!(base.len() == 34 && base.ends_with('/'), "a 128-bit secret path: {base}");
    let at = |path: &str| get(address, &format!("{base}{path}"), address);

    let (status, _, page) = at("");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("<title>ntd web view</title>"));
    assert_eq!(at("page.js").1, "text/javascript");
    assert_eq!(at("novnc/core/rfb.js"), (200, "text/javascript".into(), b"export default class RFB {}\n".to_vec()));
    // noVNC's own pages take their settings (view-only among them) from the URL: not served.
    std::fs::write(novnc.join("vnc.html"), "<html>noVNC's page</html>\n").expect("noVNC's page");
    for outside in [
        "novnc/../secret",
        "novnc/core/../../secret",
        "novnc/.hidden",
        "novnc/vnc.html",
        "vnc/nobody",
        "artifacts/secret",
    ] {
        assert_eq!(at(outside).0, 404, "{outside}");
    }
    // Nothing without the secret, nor for another host name (DNS rebinding).
    assert_eq!(get(address, "/", address).0, 404);
    assert_eq!(get(address, "/state", address).0, 404);
    assert_eq!(get(address, &format!("{base}state"), "rebound.example").0, 403);
    // A WebSocket opened by a page of another site is refused before the upgrade.
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let foreign = format!("Host: {address}\r\nOrigin: http://evil.example\r\n{upgrade}");
    assert_eq!(request(address, &format!("{base}vnc/alpha"), &foreign).0, 403);
    let (status, _, page_again) = get(address, base, address);
    assert_eq!(status, 200);
    assert_eq!(page_again, page);

    let (status, content_type, state) = at("state");
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let state: serde_json::Value = serde_json::from_slice(&state).expect("JSON");
    assert_eq!(state["test"], "web-view-quick");
    assert_eq!(state["subtest"], "watched");
    let machine = &state["machines"][0];
    assert_eq!((machine["name"].as_str(), machine["kind"].as_str()), (Some("alpha"), Some("vm")));
    assert_eq!(machine["running"], true);
    assert_eq!(machine["vnc"], false, "the fake has no VNC server");
    assert_eq!(machine["busy"]["what"], "waiting for the page");
    let vnc_command = machine["vnc_command"].as_str().expect("the viewer's command");
    assert!(vnc_command.starts_with("vncviewer ") && vnc_command.ends_with("/vm-state-alpha/vnc"), "{vnc_command}");
    assert!(state["log"].as_array().expect("the log").iter().any(|line| line == "alpha: waiting for the page"));
    assert_eq!(
        (&state["novnc"], &state["outcome"], &state["artifacts"]),
        (&true.into(), &serde_json::Value::Null, &serde_json::json!([]))
    );

    std::fs::write(&go, "").expect("let the test go on");
    let status = driver.wait("when the page was seen");
    assert_eq!(status.code(), Some(0), "{}", driver.log());
    assert!(TcpStream::connect(address).is_err(), "the web view outlived the driver");
}

#[test]
fn without_novnc_the_log_says_why_the_page_has_no_screens() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let mut command = scenario.command(&["--web-view"]);
    command.env("NTD_NOVNC", "/nonexistent/novnc");
    let run = scenario.run_with(command, &scenario.script("start_all()\n"), LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains(
        "web view: no live screens: NTD_NOVNC=/nonexistent/novnc has no core/rfb.js (a noVNC directory has)",
    );
    run.assert_stderr_contains("web view: http://127.0.0.1:");
}
