//! Commands in the guest: upstream's `execute`, `succeed` and `fail`, for every kind of machine.
//!
//! `execute` runs the callbacks (the driver's polling conditions), then hands the command to
//! the machine's command transport ([`super::Backend::execute`]); `succeed` and `fail` are
//! written over it with upstream's log blocks and messages.

use std::time::Duration;

use super::{Error, ExecuteOptions, Machine, Result};
use crate::log;

impl Machine {
    /// Run a shell command in the guest (upstream's `execute`): returns the exit status and
    /// stdout as bytes. Runs the callbacks first and connects if needed.
    pub async fn execute(&self, command: &str, options: ExecuteOptions) -> Result<(i32, Vec<u8>)> {
        self.run_callbacks()?;
        self.execute_without_callbacks(command, options).await
    }

    /// `execute` without running the callbacks first: for the driver's own commands after the
    /// test has ended (the failure artifacts' journal), which a failing condition must not stop.
    pub async fn execute_without_callbacks(&self, command: &str, options: ExecuteOptions) -> Result<(i32, Vec<u8>)> {
        self.inner.backend.execute(command, options).await
    }

    /// Upstream's `succeed(*commands, timeout=None)`: run each command, fail on a non-zero
    /// status, return the concatenated output.
    pub async fn succeed(&self, commands: &[String], timeout: Option<Duration>) -> Result<Vec<u8>> {
        self.run_each(commands, timeout, true).await
    }

    /// Upstream's `fail(*commands, timeout=None)`: like `succeed`, but every command must fail.
    pub async fn fail(&self, commands: &[String], timeout: Option<Duration>) -> Result<Vec<u8>> {
        self.run_each(commands, timeout, false).await
    }

    async fn run_each(&self, commands: &[String], timeout: Option<Duration>, must_succeed: bool) -> Result<Vec<u8>> {
        let mut output = Vec::new();
        let verb = if must_succeed { "must succeed" } else { "must fail" };
        for command in commands {
            let out = log::nested(Some(self.name()), &format!("{verb}: {command}"), async {
                let (status, out) =
                    self.execute(command, ExecuteOptions { timeout, ..ExecuteOptions::default() }).await?;
                if (status == 0) == must_succeed {
                    Ok(out)
                } else if must_succeed {
                    self.log(&format!("output: {}", String::from_utf8_lossy(&out)));
                    Err(Error::CommandFailed { command: command.clone(), status, output: out })
                } else {
                    Err(Error::CommandSucceeded { command: command.clone(), output: out })
                }
            })
            .await?;
            output.extend_from_slice(&out);
        }
        Ok(output)
    }
}
