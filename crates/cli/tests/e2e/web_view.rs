//! The web view (`--web-view`, issue 21) in a real headless browser: Debian's chromium,
//! driven by selenium (tests/e2e/web_view_browser.py) against a running test on two
//! smoke-tier machines. The page must show each machine's live screen (noVNC through ntd's
//! proxy), the progress line, and after the failure the artifacts and the outcome.

use std::process::Command;

use crate::common::live::LiveDriver;
use crate::harness::{SMOKE_LIMIT, Scenario, Tier, py_env, repo_file};

const SCRIPT: &str = r#"
import os
import time
from pathlib import Path

start_all()
for m in machines:
    m.wait_until_succeeds("true")
    m.succeed(f"echo hello from {m.name} > /dev/tty0")
with subtest("watched"):
    with alpha.nested("waiting for the browser"):
        while not Path(os.environ["E2E_GO"]).exists():
            time.sleep(0.2)
alpha.succeed("echo the end; false")
"#;

#[test]
fn the_page_shows_every_screen_the_progress_and_the_artifacts_in_a_browser() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", Tier::Smoke, &[]);
    scenario.machine("beta", Tier::Smoke, &[]);
    let test = scenario.write("test.py", SCRIPT);
    let go = scenario.path().join("go");
    let mut command = scenario.command(&["--web-view"]);
    command.env("E2E_GO", &go);
    scenario.add_machines(&mut command, &test);
    let mut driver = LiveDriver::spawn(command, SMOKE_LIMIT * 2);
    let said = driver.wait_for_line("web view: http://");
    let url = said.split_whitespace().nth(2).expect("the address").to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with('/'), "{url}");

    let screenshot = scenario.out_dir().join("web-view.png");
    let browser = Command::new(py_env().join("bin/python"))
        .arg(repo_file("tests/e2e/web_view_browser.py"))
        .arg(&url)
        .arg(&go)
        .arg(&screenshot)
        .args(["alpha", "beta"])
        .output()
        .expect("run the browser test");
    let status = driver.wait("at the test's end");
    let said = format!(
        "browser:\n{}{}\ndriver:\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr),
        driver.log()
    );
    assert!(browser.status.success(), "{said}");
    assert_eq!(status.code(), Some(1), "the script fails at its end\n{said}");
    let page = image::open(&screenshot).expect("the page's screenshot");
    // The browser's window is 1280 wide; its viewport is the window less the browser's bars.
    assert!(page.width() == 1280 && page.height() > 600, "{}x{}\n{said}", page.width(), page.height());
    // Nothing is left listening: the page went with the driver.
    let address = url.trim_start_matches("http://").split('/').next().expect("host:port");
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert!(std::net::TcpStream::connect(address).is_err(), "the web view outlived the driver");
}
