//! HMP, QEMU's human monitor, as QEMU 10.0 serves it on `-monitor unix:PATH` (QEMU connects;
//! the driver listens).
//!
//! Mirrors `monitor/hmp.c` and `util/readline.c` over a socket: the greeting and prompt, each
//! command line echoed back as typed followed by `\r\n` (readline echoes every character and
//! ends the line on Enter), output lines ending in `\r\n`, then the prompt again; an unknown
//! command prints `unknown command: '<what was typed up to the bad word>'`.
//!
//! This module is the protocol only; what the commands do is the machine's ([`crate::vm`]).

/// The greeting QEMU 10.0.2 prints when the monitor connects, before the first prompt.
pub const GREETING: &str = "QEMU 10.0.2 monitor - type 'help' for more information\r\n";

/// The prompt that ends every reply.
pub const PROMPT: &str = "(qemu) ";

/// The commands the fake's `help` lists (the ones it implements).
const HELP: &[&str] = &[
    "help|? [cmd] -- show the help",
    "hostfwd_add [netdev_id] [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport -- redirect TCP or UDP connections from host to guest (requires -net user)",
    "info [subcommand] -- show various information about the system state",
    "quit|q  -- quit the emulator",
    "screendump filename [-p] [device [head]] -- save screen from a device into a PPM file",
    "sendkey keys [hold_ms] -- send keys to the VM (e.g. 'sendkey ctrl-alt-f1', default hold time=100 ms)",
    "set_link name on|off -- change the link status of a network adapter",
    "system_powerdown  -- send system power down event",
    "system_reset  -- reset the system",
];

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An empty line: just the prompt again.
    Empty,
    /// `help`.
    Help,
    /// `info status`.
    InfoStatus,
    /// `sendkey KEYS`: the keys of the combination (`ctrl-alt-delete` → three).
    SendKey(Vec<String>),
    /// `set_link NAME on|off`.
    SetLink {
        /// The NIC or netdev.
        name: String,
        /// `on`.
        up: bool,
    },
    /// `hostfwd_add ...`, its arguments as typed.
    HostfwdAdd(String),
    /// `screendump FILE`.
    Screendump(String),
    /// `system_powerdown`.
    SystemPowerdown,
    /// `system_reset`.
    SystemReset,
    /// `quit`.
    Quit,
    /// A usage error: the lines QEMU prints for it.
    Usage(Vec<String>),
    /// A command the fake does not have.
    Unknown(String),
}

/// Parse one command line as the HMP dispatcher does.
pub fn parse(line: &str) -> Command {
    let line = line.trim();
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else { return Command::Empty };
    let args: Vec<&str> = words.collect();
    let usage = |problem: &str| {
        Command::Usage(vec![format!("{name}: {problem}"), format!("Try \"help {name}\" for more information")])
    };
    match name {
        "help" | "?" => Command::Help,
        "info" => match args.first() {
            Some(&"status") => Command::InfoStatus,
            Some(sub) => Command::Unknown(format!("{name} {sub}")),
            None => Command::Help,
        },
        "sendkey" => match args.first() {
            Some(keys) => Command::SendKey(keys.split('-').map(str::to_owned).collect()),
            None => usage("string expected"),
        },
        "set_link" => match (args.first(), args.get(1)) {
            (Some(name), Some(&"on")) => Command::SetLink { name: (*name).to_owned(), up: true },
            (Some(name), Some(&"off")) => Command::SetLink { name: (*name).to_owned(), up: false },
            (Some(_), Some(_)) => usage("'on' or 'off' expected"),
            _ => usage("string expected"),
        },
        "hostfwd_add" if !args.is_empty() => Command::HostfwdAdd(args.join(" ")),
        "hostfwd_add" => usage("string expected"),
        "screendump" => match args.iter().find(|a| !a.starts_with('-')) {
            Some(file) => Command::Screendump((*file).to_owned()),
            None => usage("string expected"),
        },
        "system_powerdown" => Command::SystemPowerdown,
        "system_reset" => Command::SystemReset,
        "quit" | "q" => Command::Quit,
        other => Command::Unknown(other.to_owned()),
    }
}

/// The output of the commands that need no machine (`help`, usage errors, unknown commands).
pub fn static_output(command: &Command) -> Option<Vec<String>> {
    match command {
        Command::Empty => Some(Vec::new()),
        Command::Help => Some(HELP.iter().map(|line| (*line).to_owned()).collect()),
        Command::Usage(lines) => Some(lines.clone()),
        Command::Unknown(what) => Some(vec![format!("unknown command: '{what}'")]),
        _ => None,
    }
}

/// What the monitor writes for one command: the echo, the output lines, the prompt.
pub fn reply(line: &str, output: &[String]) -> String {
    let mut reply = String::with_capacity(line.len() + 16);
    reply.push_str(line);
    reply.push_str("\r\n");
    for out in output {
        reply.push_str(out);
        reply.push_str("\r\n");
    }
    reply.push_str(PROMPT);
    reply
}

/// The output of a command as `human-monitor-command` returns it: every line ends in `\r\n`,
/// as QEMU's monitor output does.
pub fn as_string(output: &[String]) -> String {
    output.iter().map(|line| format!("{line}\r\n")).collect()
}

/// Splits monitor input into command lines as readline does: Enter is `\r` or `\n`; a `\r\n`
/// pair is one Enter, so a client ending lines either way gets one reply per line.
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    after_cr: bool,
}

impl LineReader {
    /// Feed input; returns the lines it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => {}
                b'\r' | b'\n' => lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()),
                _ => self.buf.push(b),
            }
            self.after_cr = b == b'\r';
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_commands_ntd_sends() {
        assert_eq!(parse("info status"), Command::InfoStatus);
        assert_eq!(
            parse(" sendkey ctrl-alt-delete "),
            Command::SendKey(vec!["ctrl".into(), "alt".into(), "delete".into()])
        );
        assert_eq!(parse("set_link eth1 off"), Command::SetLink { name: "eth1".into(), up: false });
        assert_eq!(parse("hostfwd_add tcp::2222-:22"), Command::HostfwdAdd("tcp::2222-:22".into()));
        assert_eq!(parse("screendump /tmp/x.ppm"), Command::Screendump("/tmp/x.ppm".into()));
        assert_eq!(parse("quit"), Command::Quit);
        assert_eq!(parse(""), Command::Empty);
        assert!(matches!(parse("set_link eth1 maybe"), Command::Usage(_)));
    }

    #[test]
    fn unknown_commands_as_qemu_prints_them() {
        assert_eq!(static_output(&parse("bogus 1 2")), Some(vec!["unknown command: 'bogus'".to_owned()]));
        assert_eq!(static_output(&parse("info nope")), Some(vec!["unknown command: 'info nope'".to_owned()]));
        assert_eq!(static_output(&parse("info status")), None);
    }

    #[test]
    fn replies_echo_then_output_then_prompt() {
        assert_eq!(
            reply("info status", &["VM status: running".to_owned()]),
            "info status\r\nVM status: running\r\n(qemu) "
        );
        assert_eq!(reply("", &[]), "\r\n(qemu) ");
        assert_eq!(as_string(&["a".to_owned(), "b".to_owned()]), "a\r\nb\r\n");
    }

    #[test]
    fn readline_ends_lines_on_cr_or_lf() {
        let mut reader = LineReader::default();
        assert_eq!(reader.push(b"info st"), Vec::<String>::new());
        assert_eq!(reader.push(b"atus\nquit\r"), vec!["info status".to_owned(), "quit".to_owned()]);
        assert_eq!(reader.push(b"\nx\n\n"), vec!["x".to_owned(), String::new()]);
    }
}
