//! A driver watched while it runs, for tests that act in the middle of a run (attach to a
//! breakpoint, ssh into a paused test, open the web view): its output lines as they come, one
//! deadline for the whole run, and the driver killed if the test fails half-way (a driver
//! paused at a breakpoint, or waiting for the test, would otherwise run for ever).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// A running driver and the lines it has written so far.
pub struct LiveDriver {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
    deadline: Instant,
}

impl LiveDriver {
    /// Run `command` with its stdout and stderr read line by line (into one stream), giving the
    /// whole run `limit`.
    pub fn spawn(mut command: Command, limit: Duration) -> LiveDriver {
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run the driver");
        let (sender, lines) = mpsc::channel();
        let outputs: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().expect("stdout pipe")), Box::new(child.stderr.take().expect("stderr pipe"))];
        for output in outputs {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        LiveDriver { child, lines, log: Vec::new(), deadline: Instant::now() + limit }
    }

    /// The next line that contains `needle` (any line for `""`); the test fails with the log
    /// so far if none comes before the deadline.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(self.deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("the driver never said {needle:?}:\n{}", self.log()),
            }
        }
    }

    /// Wait for the driver to end (the test fails at the deadline); every line it wrote is in
    /// the log after.
    pub fn wait(&mut self, when: &str) -> ExitStatus {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the driver") {
                break status;
            }
            assert!(Instant::now() < self.deadline, "the driver did not end {when}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        // The readers end with the pipes; what they still hold arrives at once.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.log.push(line);
        }
        status
    }

    /// Every line read so far, one per line.
    pub fn log(&self) -> String {
        self.log.join("\n")
    }
}

impl Drop for LiveDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
