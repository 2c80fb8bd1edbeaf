//! The web view (`--web-view`, issue 21) in a real headless browser: Debian's chromium,
//! driven by selenium (tests/e2e/web_view_browser.py) against a running test on two
//! smoke-tier machines. The page must show each machine's live screen (noVNC through ntd's
//! proxy), the progress line, and after the failure the artifacts and the outcome.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use crate::harness::{KillOnDrop, SMOKE_LIMIT, Scenario, Tier, py_env, repo_file, wait_for_exit};

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
    let driver = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("run the driver");
    let mut driver = KillOnDrop(driver);
    let (lines, received) = mpsc::channel();
    let stderr = driver.0.stderr.take().expect("stderr pipe");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + SMOKE_LIMIT;
    let url = loop {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                log.push(line.clone());
                if let Some(rest) = line.strip_prefix("web view: ") {
                    break rest.split_whitespace().next().expect("the address").to_owned();
                }
            }
            Err(_) => panic!("the driver never said where the web view is:\n{}", log.join("\n")),
        }
    };
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
    let status = wait_for_exit(&mut driver.0, SMOKE_LIMIT, "the test's end");
    log.extend(received.try_iter());
    let said = format!(
        "browser:\n{}{}\ndriver:\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr),
        log.join("\n")
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
