//! ntd's command channel: two virtio-serial ports next to the backdoor's console, and the shell
//! code that puts them to use in the stock backdoor shell.
//!
//! The backdoor shell reads commands from `/dev/hvc0`, a *virtconsole*. QEMU discards console
//! output it cannot write to a full socket (console ports have no flow control), so a driver
//! that is not scheduled for a moment loses bytes, and with them, perhaps, a command's end
//! marker. ntd therefore appends two *virtserialports* to QEMU's arguments
//! ([`super::start_command`]): flow-controlled, so QEMU stops the guest's writer instead of
//! dropping its bytes.
//!
//! - `org.nixos.ntd.out` carries each command's stdout and its end marker. A virtio port opens
//!   once at a time (a second `open` fails with `EBUSY`), so the marker, written by reopening
//!   the port after the command exits, gets through only when every process that inherited
//!   the command's stdout has closed it: the output ends where upstream's ends, at the end of
//!   stdout, without a pipe or another process per command.
//! - `org.nixos.ntd.ctl` serves a small helper in the guest that kills the running command's
//!   process tree (and whatever holds the output port) on request, so a timeout or an
//!   interruption stops the command in the guest and the shell answers again at once.
//!
//! Nothing changes in the guest's backdoor service: after the backdoor's marker line the
//! driver sends [`setup_script`] as ordinary shell input. It finds the ports by name (udev's
//! `/dev/virtio-ports/NAME`, else `/sys/class/virtio-ports`), starts the helper and reports
//! what it found. A guest without the ports (a start command that drops ntd's arguments, an
//! emulator without virtio-serial ports) gets the console framing instead, where a lost byte
//! is detected by a checksum ([`super::frame`]).

use std::fmt::Write as _;

/// The name of the output port, as the guest sees it.
pub const OUT_PORT: &str = "org.nixos.ntd.out";
/// The name of the control port, as the guest sees it.
pub const CTL_PORT: &str = "org.nixos.ntd.ctl";
/// The QEMU chardev ids of the ports (they must not clash with a start script's own).
pub const OUT_CHARDEV: &str = "ntd-out";
/// See [`OUT_CHARDEV`].
pub const CTL_CHARDEV: &str = "ntd-ctl";

/// How commands reach the guest and their output comes back, decided at each connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Output and end marker through the output port: nothing lost. `killable` when the
    /// control helper runs, so timeouts and interruptions are enforced from the host.
    Port {
        /// The control helper answered.
        killable: bool,
    },
    /// Output and end marker on the console: a loss is detected, not prevented.
    Console,
}

impl Mode {
    /// The host can kill a running command in the guest.
    pub fn killable(self) -> bool {
        matches!(self, Mode::Port { killable: true })
    }

    /// How the channel is described in the log when the shell connects.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Port { killable: true } => {
                "command output through the virtio port org.nixos.ntd.out, kills through org.nixos.ntd.ctl"
            }
            Mode::Port { killable: false } => {
                "command output through the virtio port org.nixos.ntd.out; no kill helper, so timeouts run in the guest and an interrupted command runs to its end"
            }
            Mode::Console => {
                "command output on the console (the guest has no org.nixos.ntd.out port): lost bytes are detected, not prevented; an interrupted command runs to its end"
            }
        }
    }
}

/// The helper serving the control port, run by `sh -c` with `$1` the output port and `$2`
/// this connection's epoch. It announces itself (`R <epoch>`), then for each `k <epoch> <n>`
/// kills the command's whole process tree: every descendant of the backdoor shell but itself,
/// each stopped before its children are listed so that nothing forks behind its back (a child
/// whose parent died first would leave the tree), and the process group of each of the
/// shell's children (the backdoor runs `set -m`, so a command is a group of its own, which
/// also holds what a command double-forked, and what the command's own process forks while
/// the tree is walked). The shell's own children are never stopped: a shell with job control
/// would take the stop for the end of the command and print its marker with status 147. A
/// child of the shell counts once, by its group kill or else by its pid: after the group
/// kill the shell may reap it before a second `kill` could reach it. Then every process still holding the output
/// port (a daemon that left the group but kept the command's stdout). It answers
/// `K <n> <count>` with how many processes it killed. A request from another epoch (sent to
/// an earlier boot's helper and never read) is ignored. The backdoor shell itself is spared:
/// it holds the port only for the instant it writes a marker. `kill -KILL -PGID` is the one
/// spelling of a group kill that dash, bash and busybox all take (dash rejects `--` and
/// `-s KILL` before a negative pid).
const KILL_HELPER: &str = r#"
printf "R %s\n" "$2"
while read -r r e n; do
  [ "$r $e" = "k $2" ] || continue
  c=0
  g=
  for t in /proc/$PPID/task/*/children; do
    l=
    read -r l <"$t" 2>/dev/null
    g="$g $l"
  done
  q=
  for p in $g; do
    [ "$p" = $$ ] && continue
    for t in /proc/$p/task/*/children; do
      l=
      read -r l <"$t" 2>/dev/null
      q="$q $l"
    done
  done
  a=
  while [ -n "$q" ]; do
    m=
    for p in $q; do
      kill -STOP "$p" 2>/dev/null || continue
      a="$a $p"
      for t in /proc/$p/task/*/children; do
        l=
        read -r l <"$t" 2>/dev/null
        m="$m $l"
      done
    done
    q=$m
  done
  for p in $g; do
    [ "$p" = $$ ] && continue
    { kill -KILL "-$p" || kill -KILL "$p"; } 2>/dev/null && c=$((c+1))
  done
  for p in $a; do
    kill -KILL "$p" 2>/dev/null && c=$((c+1))
  done
  for f in /proc/[0-9]*/fd/*; do
    [ "$f" -ef "$1" ] || continue
    p=${f#/proc/}
    p=${p%%/*}
    [ "$p" = "$PPID" ] || [ "$p" = $$ ] || { kill -KILL "$p" 2>/dev/null && c=$((c+1)); }
  done
  printf "K %s %s\n" "$n" "$c"
done"#;

/// The shell code sent after the backdoor's marker (see the module documentation). With
/// `ports`, it looks for the ports and starts the kill helper with `epoch`; either way it
/// defines `__ntd_nap` (a pause without a process where bash can) and `__ntd_t` (the console
/// framing's buffer file), and ends by printing `\n<nonce> <out> <ctl>\n`, each path or `-`.
pub fn setup_script(ports: bool, nonce: &str, epoch: &str) -> String {
    let mut script = String::with_capacity(2048);
    // Job control: each command runs as a process group the helper can kill whole (a shell
    // without a terminal for it, like dash, says so: not worth a console line).
    script.push_str("set -m 2>/dev/null\n");
    script.push_str(
        "__ntd_nf=/tmp/.ntd-nap.$$\n\
         if [ -n \"${BASH_VERSION:-}\" ] && mkfifo \"$__ntd_nf\" 2>/dev/null && exec 8<>\"$__ntd_nf\"; then\n\
         rm -f \"$__ntd_nf\"; __ntd_nap() { read -t \"$1\" -u 8 __ntd_x || :; }\n\
         else __ntd_nap() { sleep \"$1\"; }; fi\n\
         __ntd_t=/tmp/.ntd-out.$$\n__ntd_out= __ntd_ctl=\n",
    );
    if ports {
        script.push_str(
            "__ntd_port() {\n\
             __ntd_f=/dev/virtio-ports/$1\n\
             [ -e \"$__ntd_f\" ] && return 0\n\
             __ntd_f=\n\
             for __ntd_d in /sys/class/virtio-ports/*; do\n\
             __ntd_m=\n\
             read -r __ntd_m <\"$__ntd_d/name\" 2>/dev/null\n\
             [ \"$__ntd_m\" = \"$1\" ] && [ -e \"/dev/${__ntd_d##*/}\" ] && __ntd_f=/dev/${__ntd_d##*/}\n\
             done\n\
             }\n",
        );
        let _ = writeln!(script, "__ntd_port {OUT_PORT}; __ntd_out=$__ntd_f");
        let _ = writeln!(script, "__ntd_port {CTL_PORT}; __ntd_ctl=$__ntd_f");
        let _ = writeln!(
            script,
            "if [ -n \"$__ntd_out\" ] && [ -n \"$__ntd_ctl\" ]; then\n\
             sh -c '{KILL_HELPER}\n' ntd-ctl \"$__ntd_out\" {epoch} <>\"$__ntd_ctl\" >&0 2>/dev/null &\n\
             fi"
        );
    }
    let _ = writeln!(script, "printf '\\n%s %s %s\\n' {nonce} \"${{__ntd_out:--}}\" \"${{__ntd_ctl:--}}\"");
    script
}

/// What the setup found in the guest: the ports' device paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The output port, if the guest has it.
    pub out: Option<String>,
    /// The control port, if the guest has it.
    pub ctl: Option<String>,
}

impl Found {
    /// Parse the setup's reply line (after the nonce): `<out> <ctl>`, `-` for a missing port.
    pub fn parse(line: &str) -> Option<Found> {
        let mut words = line.split_whitespace();
        let path = |word: &str| (word != "-").then(|| word.to_owned());
        let found = Found { out: path(words.next()?), ctl: path(words.next()?) };
        words.next().is_none().then_some(found)
    }
}

/// A kill request for the helper of `epoch`.
pub fn kill_request(epoch: &str, seq: u64) -> String {
    format!("k {epoch} {seq}\n")
}

/// The helper's answer to kill request `seq`: how many processes it killed.
pub fn parse_kill_ack(line: &str, seq: u64) -> Option<u32> {
    let mut words = line.split_whitespace();
    (words.next()? == "K" && words.next()?.parse::<u64>().ok()? == seq).then_some(())?;
    words.next()?.parse().ok()
}

/// The helper's announcement for `epoch`.
pub fn is_ready_line(line: &str, epoch: &str) -> bool {
    line.strip_prefix("R ").is_some_and(|rest| rest.trim_end() == epoch)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn setup_reply_lines() {
        assert_eq!(
            Found::parse("/dev/virtio-ports/org.nixos.ntd.out /dev/vport0p2"),
            Some(Found { out: Some("/dev/virtio-ports/org.nixos.ntd.out".into()), ctl: Some("/dev/vport0p2".into()) })
        );
        assert_eq!(Found::parse("- -"), Some(Found { out: None, ctl: None }));
        assert_eq!(Found::parse("-"), None);
        assert_eq!(Found::parse("a b c"), None);
        assert_eq!(parse_kill_ack("K 7 3", 7), Some(3));
        assert_eq!(parse_kill_ack("K 6 3", 7), None);
        assert_eq!(parse_kill_ack("R 7", 7), None);
        assert!(is_ready_line("R abc\n", "abc"));
        assert!(!is_ready_line("R abd", "abc"));
    }

    /// The setup in the shells a guest may have: it defines what the frames use and reports no
    /// ports where there are none.
    #[test]
    fn setup_runs_in_posix_shells() {
        for shell in ["bash", "sh"] {
            let script = format!(
                "{}type __ntd_nap >/dev/null && __ntd_nap 0.01 && echo napped $__ntd_t && type __ntd_nap\n",
                setup_script(true, "n0nce", "e1")
            );
            let output = Command::new(shell).arg("-c").arg(&script).output().expect("run the shell");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(stdout.contains("\nn0nce - -\n"), "{shell}: {stdout:?}");
            assert!(stdout.contains("napped /tmp/.ntd-out."), "{shell}: {stdout:?}");
            // bash naps on a fifo without a process (dash's `type` does not show the body).
            if shell == "bash" {
                assert!(stdout.contains("read -t"), "{shell}: {stdout:?}");
            }
        }
    }

    /// The kill helper, run against a stand-in for the backdoor shell: a request with another
    /// epoch is ignored; one with its epoch kills the shell's children (a sleeping command
    /// with a child of its own) and the process holding the "port" (here a plain file), spares
    /// the shell, and answers with the count.
    #[test]
    fn kill_helper_kills_the_command_tree_and_the_port_holders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = dir.path().join("port");
        std::fs::write(&port, "").expect("port file");
        let fifo_in = dir.path().join("in");
        let fifo_out = dir.path().join("out");
        for fifo in [&fifo_in, &fifo_out] {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        }
        // The "backdoor": starts a command group and an escaped holder of the port, then the
        // helper reading requests from one fifo and answering on the other, then the command in
        // the foreground, with a job of its own (a group the command's group kill misses). The sleeps' lengths
        // are unique to this test process, so that nothing else's sleepers are counted.
        let base = 1_000_000 + u64::from(std::process::id()) * 3;
        let backdoor = format!(
            "set -m\n\
             setsid sh -c 'exec sleep {b2}' >>{port} &\n\
             sh -c '{KILL_HELPER}\n' ntd-ctl {port} e1 <{fifo_in} >{fifo_out} &\n\
             ( set -m; sleep {base} & sleep {b1}; true )\n\
             echo $? >{status}\n\
             wait\n",
            status = dir.path().join("status").display(),
            b1 = base + 1,
            b2 = base + 2,
            port = port.display(),
            fifo_in = fifo_in.display(),
            fifo_out = fifo_out.display(),
        );
        let mut shell = Command::new("bash").arg("-c").arg(&backdoor).stdin(Stdio::null()).spawn().expect("bash");
        let mut requests = std::fs::OpenOptions::new().write(true).open(&fifo_in).expect("open requests");
        let mut answers = BufReader::new(std::fs::File::open(&fifo_out).expect("open answers"));
        let mut line = String::new();
        answers.read_line(&mut line).expect("ready line");
        assert!(is_ready_line(&line, "e1"), "{line:?}");
        let sleepers = || {
            let pattern = format!("^sleep ({base}|{}|{})$", base + 1, base + 2);
            let output = Command::new("pgrep").args(["-f", &pattern]).output().expect("pgrep");
            String::from_utf8_lossy(&output.stdout).lines().count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sleepers() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(sleepers(), 3, "the command tree and the escaped holder run");
        requests.write_all(kill_request("e0", 1).as_bytes()).expect("stale request");
        requests.write_all(kill_request("e1", 2).as_bytes()).expect("request");
        line.clear();
        answers.read_line(&mut line).expect("answer");
        let killed = parse_kill_ack(&line, 2).unwrap_or_else(|| panic!("an answer to request 2: {line:?}"));
        assert!(killed >= 2, "the command group's leader and the holder at least: {line:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while sleepers() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(sleepers(), 0, "every sleeper is gone");
        // The backdoor saw its command killed, not stopped (a stop would end the job at once).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let status = loop {
            match std::fs::read_to_string(dir.path().join("status")) {
                Ok(status) if status.ends_with('\n') => break status,
                _ if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(20)),
                other => panic!("the command's status: {other:?}"),
            }
        };
        assert_eq!(status.trim(), "137", "the command's status");
        // The shell survives; closing the requests ends the helper and then the shell.
        drop(requests);
        let status = shell.wait().expect("wait");
        assert!(status.success(), "the backdoor shell was spared: {status:?}");
    }
}
