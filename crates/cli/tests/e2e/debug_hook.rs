//! `--debug-hook-attach` (runNixOSTest's `enableDebugHook`): a failure pauses the test with a
//! pdb prompt on 127.0.0.1:4444 in the failing script's frame, and says how to attach.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::live::LiveDriver;
use crate::harness::{SMOKE_LIMIT, Scenario, Tier, live_processes_mentioning, read_until};

#[test]
fn a_failure_pauses_with_pdb_in_the_failing_frame_and_resumes_on_continue() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &[]);
    let script =
        scenario.write("test.py", "start_all()\ngreeting = 'hello from the script'\nmachine.succeed('false')\n");
    let mut command = scenario.command(&["--debug-hook-attach", "/stub/attach"]);
    command.arg(&script).arg("--start-scripts").arg(scenario.path().join("bin/run-machine-vm"));
    let mut driver = LiveDriver::spawn(command, SMOKE_LIMIT * 2);

    let prefix = "Breakpoint reached, run 'sudo /stub/attach ";
    let breakpoint = driver.wait_for_line(prefix);
    let pattern = breakpoint.split_once(prefix).expect("the prefix").1.trim_end_matches('\'').to_owned();
    assert!(pattern.len() == 7 && pattern.bytes().all(|b| b.is_ascii_digit()), "{breakpoint}");
    driver.wait_for_line("pdb is listening on 127.0.0.1:4444");
    // The attach command finds the sandbox by a process running `sleep <pattern>`.
    let marker = format!("sleep\0{pattern}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_processes_mentioning(&marker).is_empty() {
        assert!(Instant::now() < deadline, "no `sleep {pattern}` process");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut pdb = TcpStream::connect(("127.0.0.1", 4444)).expect("connect to pdb");
    pdb.set_read_timeout(Some(Duration::from_secs(60))).expect("set a read timeout");
    read_until(&mut pdb, "(Pdb) ");
    // The script's globals and machines are at hand in the failing frame.
    pdb.write_all(b"p greeting, machine.succeed('echo from pdb')\n").expect("write to pdb");
    let answer = read_until(&mut pdb, "(Pdb) ");
    assert!(answer.contains("('hello from the script', 'from pdb\\n')"), "{answer}");
    pdb.write_all(b"c\n").expect("write to pdb");

    let status = driver.wait("after `continue`");
    assert_eq!(status.code(), Some(1), "a failed test fails after the breakpoint");
    assert!(live_processes_mentioning(&marker).is_empty(), "`sleep {pattern}` outlived the breakpoint");
    let needle = scenario.path().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "processes left running: {:?}", live_processes_mentioning(&needle));
        std::thread::sleep(Duration::from_millis(100));
    }
}
