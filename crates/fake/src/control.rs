//! The guest tools and their line to the machine.
//!
//! In a VM, `poweroff` or `systemctl` talk to the guest's systemd, and the machine acts. In the
//! fake guest they are this binary under those names (symlinks in the guest-tools directory,
//! first on the guest's `PATH`), which send their arguments over a unix socket in the fake's
//! directory (its path in [`ENV_VAR`]) and print what the machine answers. So no command in
//! the fake guest ever powers off, reboots or reconfigures the host.
//!
//! One request per connection, one JSON line each way: `{"tool": ..., "args": [...]}` and
//! `{"status": N, "stdout": ..., "stderr": ...}`. A tool that takes the machine down gets no
//! answer: the machine kills the guest shell, and the tool with it, as a real `poweroff` never
//! returns.

use std::io::{self, BufRead, BufReader, Write};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::systemd::ToolOutput;
use crate::vm::Vm;

/// The guest shell's variable with the control socket's path.
pub const ENV_VAR: &str = "NTD_FAKE_CONTROL";

/// The guest tools, by the names the binary is called under.
pub const TOOLS: &[&str] = &["poweroff", "reboot", "halt", "shutdown", "systemctl", "fake-panic"];

/// The request line for a tool run.
pub fn encode_request(tool: &str, args: &[String]) -> String {
    let mut line = json!({ "tool": tool, "args": args }).to_string();
    line.push('\n');
    line
}

/// A request line's tool and arguments.
pub fn decode_request(line: &str) -> Option<(String, Vec<String>)> {
    let value: Value = serde_json::from_str(line).ok()?;
    let tool = value.get("tool")?.as_str()?.to_owned();
    let args = value.get("args")?.as_array()?.iter().map(|a| a.as_str().map(str::to_owned)).collect::<Option<_>>()?;
    Some((tool, args))
}

/// The answer line for a tool's output.
pub fn encode_reply(output: &ToolOutput) -> String {
    let mut line = json!({ "status": output.status, "stdout": output.stdout, "stderr": output.stderr }).to_string();
    line.push('\n');
    line
}

/// An answer line's output.
pub fn decode_reply(line: &str) -> Option<ToolOutput> {
    let value: Value = serde_json::from_str(line).ok()?;
    Some(ToolOutput {
        status: i32::try_from(value.get("status")?.as_i64()?).ok()?,
        stdout: value.get("stdout")?.as_str()?.to_owned(),
        stderr: value.get("stderr")?.as_str()?.to_owned(),
    })
}

/// A guest tool's `main`: ask the machine, print its answer, exit with its status.
pub fn tool_main(tool: &str, args: &[String]) -> i32 {
    match ask(tool, args) {
        Ok(output) => {
            print!("{}", output.stdout);
            eprint!("{}", output.stderr);
            let _ = io::stdout().flush();
            output.status
        }
        Err(e) => {
            eprintln!("{tool}: {e}");
            1
        }
    }
}

fn ask(tool: &str, args: &[String]) -> io::Result<ToolOutput> {
    let path = std::env::var_os(ENV_VAR)
        .ok_or_else(|| io::Error::other(format!("not in an ntd-fake-qemu guest ({ENV_VAR} is not set)")))?;
    let mut stream = std::os::unix::net::UnixStream::connect(&path)?;
    stream.write_all(encode_request(tool, args).as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    decode_reply(&line).ok_or_else(|| io::Error::other("the machine did not answer"))
}

/// Answer the guest tools on `listener` for the machine's lifetime.
pub async fn serve(listener: UnixListener, vm: Arc<Vm>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let vm = Arc::clone(&vm);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if tokio::io::BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            let output = match decode_request(&line) {
                Some((tool, args)) => vm.run_tool(&tool, &args).await,
                None => Some(ToolOutput { status: 1, stdout: String::new(), stderr: "malformed request\n".into() }),
            };
            if let Some(output) = output {
                let _ = write.write_all(encode_reply(&output).as_bytes()).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let args = vec!["show".to_owned(), "a \"b\"\n".to_owned()];
        assert_eq!(decode_request(&encode_request("systemctl", &args)), Some(("systemctl".to_owned(), args)));
        let output = ToolOutput { status: 3, stdout: "inactive\n".into(), stderr: "é\n".into() };
        assert_eq!(decode_reply(&encode_reply(&output)), Some(output));
        assert_eq!(decode_reply(""), None);
        assert_eq!(decode_request("{\"tool\": 1}"), None);
    }
}
