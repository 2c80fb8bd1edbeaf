//! The command line: QEMU's own arguments ([`crate::qemu_args`]), as a `run-<name>-vm` script
//! and ntd's start command pass them, and the fake's `--fake-*` options, which may appear
//! anywhere among them. An unknown `--fake-*` option is an error (a typo in a fault would make a
//! test pass for the wrong reason); an unknown QEMU option is accepted and ignored.

use std::time::Duration;

pub use crate::qemu_args::{Chardev, Device, Endpoint, QemuArgs};

/// A bad command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An argument is not UTF-8.
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(String),
    /// An option needs a value and none followed.
    #[error("{0}: requires an argument")]
    MissingValue(String),
    /// A `--fake-*` option the fake does not have.
    #[error("unknown option {0} (see --fake-help)")]
    UnknownFakeOption(String),
    /// A value that does not parse.
    #[error("{option}: invalid value {value:?}: expected {expected}")]
    InvalidValue {
        /// The option.
        option: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A QEMU option with a setting the fake cannot honour.
    #[error("{option} {value}: {problem}")]
    Unsupported {
        /// The option.
        option: String,
        /// Its value.
        value: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// How the fake misbehaves on the backdoor shell (guest output counted from the guest shell's
/// first byte, the marker excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellFaults {
    /// Delay before each chunk of guest output.
    pub delay: Option<Duration>,
    /// After `.0` bytes of guest output, discard the next `.1` bytes.
    pub drop: Option<(u64, u64)>,
    /// Close the connection after this many bytes of guest output.
    pub close_after: Option<u64>,
    /// Text written to the driver right after the marker.
    pub garbage: Option<String>,
}

/// How the fake misbehaves on QMP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QmpFaults {
    /// Delay before each reply.
    pub delay: Option<Duration>,
    /// Commands never answered.
    pub no_reply: Vec<String>,
    /// A line that is not JSON before every reply.
    pub garbage: bool,
    /// Replies without the request's `id`.
    pub no_id: bool,
    /// An unrelated event before every reply.
    pub event_before_reply: bool,
}

/// The `--fake-port-stall` fault on one virtio port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStall {
    /// The port's name (`org.nixos.ntd.out`).
    pub name: String,
    /// Bytes of the guest's writes taken before the stall.
    pub after: u64,
    /// How long the fake then takes none.
    pub pause: Duration,
}

/// A unit state change scheduled after boot (`--fake-unit-later`).
#[derive(Debug, Clone, PartialEq)]
pub struct LaterUnit {
    /// The unit.
    pub unit: String,
    /// Its new `ActiveState`.
    pub state: String,
    /// How long after the boot started.
    pub after: Duration,
}

/// The `--fake-*` options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FakeOptions {
    /// `--fake-help`.
    pub help: bool,
    /// Time from the boot lines to the backdoor marker.
    pub boot_delay: Duration,
    /// Units seeded with a state at every boot.
    pub units: Vec<(String, String)>,
    /// Unit state changes scheduled after every boot.
    pub units_later: Vec<LaterUnit>,
    /// Exit with this status and message before doing anything.
    pub exit_at_start: Option<(i32, String)>,
    /// Never print the marker (no guest shell).
    pub no_backdoor: bool,
    /// SIGKILL itself after this long.
    pub die_after: Option<Duration>,
    /// Backdoor shell faults.
    pub shell: ShellFaults,
    /// QMP faults.
    pub qmp: QmpFaults,
    /// Lines of chatter on the console at boot.
    pub console_lines: u64,
    /// Show the guest no virtio ports (their chardevs are still connected).
    pub no_ports: bool,
    /// Virtio port stalls.
    pub port_stalls: Vec<PortStall>,
}

/// The whole command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    /// QEMU's arguments.
    pub qemu: QemuArgs,
    /// The fake's own options.
    pub fake: FakeOptions,
}

/// The `--fake-*` options that take no value.
const FAKE_FLAGS: &[&str] = &["help", "no-backdoor", "qmp-garbage", "qmp-no-id", "qmp-event-before-reply", "no-ports"];

/// The `--fake-*` options that take a value.
const FAKE_VALUED: &[&str] = &[
    "boot-delay",
    "unit",
    "unit-later",
    "exit-at-start",
    "die-after",
    "shell-delay",
    "shell-drop",
    "shell-close-after",
    "shell-garbage",
    "qmp-delay",
    "qmp-no-reply",
    "console-lines",
    "port-stall",
];

/// Usage text for `--fake-help`.
pub const USAGE: &str = "\
usage: ntd-fake-qemu [--fake-* options] <QEMU arguments>

A stand-in for QEMU behind a run-<name>-vm start script: it serves QMP and the HMP monitor,
prints a boot on the serial console (stdout) and runs the backdoor shell as a host bash in
private namespaces. QEMU arguments understood: -qmp unix:PATH[,server=on,wait=off],
-monitor unix:PATH, -chardev socket,id=ID,path=PATH, -device DRIVER,..., -serial stdio,
-name NAME, -no-reboot, -nographic; others are accepted and ignored. Each
-device vhost-user-*,chardev=ID connects its chardev (and speaks no vhost-user). Each
-device virtserialport,chardev=ID,name=NAME is /dev/virtio-ports/NAME in the guest (when run
as root: a FUSE file system in the guest's own /dev).

Guest:
  --fake-boot-delay SECONDS        time from boot to the backdoor marker (default 0)
  --fake-unit NAME=STATE           seed a unit's ActiveState at every boot
  --fake-unit-later NAME=STATE@S   set a unit's ActiveState S seconds after every boot
  --fake-console-lines N           N lines of console chatter at boot

Faults:
  --fake-exit-at-start CODE:MSG    print MSG on stderr and exit CODE before anything else
  --fake-no-backdoor               never print the backdoor marker
  --fake-die-after SECONDS         SIGKILL itself (a crashing QEMU)
  --fake-shell-delay MS            delay each chunk of guest shell output
  --fake-shell-drop N:M            after N bytes of guest shell output, discard M bytes
  --fake-shell-close-after N       close the shell socket after N bytes of guest output
  --fake-shell-garbage TEXT        write TEXT to the shell socket right after the marker
  --fake-qmp-delay MS              delay every QMP reply
  --fake-qmp-no-reply COMMAND      never answer COMMAND (repeatable)
  --fake-qmp-garbage               a non-JSON line before every QMP reply
  --fake-qmp-no-id                 QMP replies without their id
  --fake-qmp-event-before-reply    an RTC_CHANGE event before every QMP reply
  --fake-no-ports                  show the guest no virtio ports (still connect their chardevs)
  --fake-port-stall NAME:N:MS      after N bytes the guest wrote to port NAME, take none for MS
                                   milliseconds (the guest's writer waits; repeatable)

  --fake-help                      this text

In the guest: poweroff, reboot, shutdown [-r], systemctl (show, start, stop, restart,
is-active, is-failed, status, list-jobs), fake-panic (a kernel panic).
";

/// Parse the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Args, ArgsError>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    let mut words = Vec::new();
    for arg in args {
        let arg = arg.into();
        words.push(arg.into_string().map_err(|raw| ArgsError::NotUtf8(raw.to_string_lossy().into_owned()))?);
    }
    let mut parsed = Args::default();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        if let Some(fake) = word.strip_prefix("--fake-") {
            let (name, inline) = match fake.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (fake, None),
            };
            if FAKE_FLAGS.contains(&name) && inline.is_none() {
                fake_flag(&mut parsed.fake, name);
            } else if FAKE_VALUED.contains(&name) {
                let value = match inline {
                    Some(value) => value,
                    None => words.next().ok_or_else(|| ArgsError::MissingValue(word.clone()))?,
                };
                fake_option(&mut parsed.fake, name, &value)?;
            } else {
                return Err(ArgsError::UnknownFakeOption(word));
            }
            continue;
        }
        // QEMU accepts `--opt` for `-opt`; a word without a dash is the disk image.
        let Some(name) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) else { continue };
        if parsed.qemu.flag(name) {
            continue;
        }
        let value = words.next().ok_or_else(|| ArgsError::MissingValue(word.clone()))?;
        parsed.qemu.option(&word, name, &value)?;
    }
    Ok(parsed)
}

fn fake_flag(fake: &mut FakeOptions, name: &str) {
    match name {
        "help" => fake.help = true,
        "no-backdoor" => fake.no_backdoor = true,
        "qmp-garbage" => fake.qmp.garbage = true,
        "qmp-no-id" => fake.qmp.no_id = true,
        "qmp-event-before-reply" => fake.qmp.event_before_reply = true,
        "no-ports" => fake.no_ports = true,
        _ => {}
    }
}

fn fake_option(fake: &mut FakeOptions, name: &str, value: &str) -> Result<(), ArgsError> {
    let option = format!("--fake-{name}");
    let invalid =
        |expected: &'static str| ArgsError::InvalidValue { option: option.clone(), value: value.to_owned(), expected };
    let seconds = |text: &str| {
        text.parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| invalid("a number of seconds"))
    };
    let millis = |text: &str| text.parse::<u64>().map(Duration::from_millis).map_err(|_| invalid("milliseconds"));
    let count = |text: &str| text.parse::<u64>().map_err(|_| invalid("a byte count"));
    let unit_state = |text: &str| match text.split_once('=') {
        Some((unit, state)) if !unit.is_empty() && !state.is_empty() => Ok((unit.to_owned(), state.to_owned())),
        _ => Err(invalid("NAME=STATE")),
    };
    match name {
        "boot-delay" => fake.boot_delay = seconds(value)?,
        "die-after" => fake.die_after = Some(seconds(value)?),
        "unit" => fake.units.push(unit_state(value)?),
        "unit-later" => {
            let (assignment, after) = value.rsplit_once('@').ok_or_else(|| invalid("NAME=STATE@SECONDS"))?;
            let (unit, state) = unit_state(assignment)?;
            fake.units_later.push(LaterUnit { unit, state, after: seconds(after)? });
        }
        "exit-at-start" => {
            let (code, message) = value.split_once(':').unwrap_or((value, ""));
            let code = code.parse::<i32>().map_err(|_| invalid("CODE:MESSAGE"))?;
            fake.exit_at_start = Some((code, message.to_owned()));
        }
        "shell-delay" => fake.shell.delay = Some(millis(value)?),
        "shell-drop" => {
            let (after, length) = value.split_once(':').ok_or_else(|| invalid("N:M"))?;
            fake.shell.drop = Some((count(after)?, count(length)?));
        }
        "shell-close-after" => fake.shell.close_after = Some(count(value)?),
        "shell-garbage" => fake.shell.garbage = Some(value.to_owned()),
        "qmp-delay" => fake.qmp.delay = Some(millis(value)?),
        "qmp-no-reply" => fake.qmp.no_reply.push(value.to_owned()),
        "console-lines" => fake.console_lines = count(value)?,
        "port-stall" => {
            // The name may hold colons; the numbers do not.
            let mut parts = value.rsplitn(3, ':');
            let (Some(pause), Some(after), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(invalid("NAME:BYTES:MILLISECONDS"));
            };
            if name.is_empty() {
                return Err(invalid("NAME:BYTES:MILLISECONDS"));
            }
            fake.port_stalls.push(PortStall { name: name.to_owned(), after: count(after)?, pause: millis(pause)? });
        }
        _ => return Err(ArgsError::UnknownFakeOption(option)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(line: &str) -> Result<Args, ArgsError> {
        parse(line.split_whitespace())
    }

    #[test]
    fn ntds_start_arguments() {
        let args = parse([
            "-m",
            "1024",
            "-qmp",
            "unix:/t/a,,b/qmp,server=on,wait=off",
            "-monitor",
            "unix:/t/a,,b/monitor",
            "-chardev",
            "socket,id=shell,path=/t/a,,b/shell",
            "-device",
            "virtio-serial",
            "-device",
            "virtconsole,chardev=shell",
            "-device",
            "virtio-rng-pci",
            "-serial",
            "stdio",
            "-no-reboot",
            "-nographic",
        ])
        .expect("valid");
        let qemu = &args.qemu;
        assert_eq!(qemu.qmp, Some(Endpoint { path: "/t/a,b/qmp".into(), server: true }));
        assert_eq!(qemu.monitor, Some(Endpoint { path: "/t/a,b/monitor".into(), server: false }));
        let backdoor = qemu.backdoor().expect("backdoor chardev");
        assert_eq!(backdoor.endpoint(), Some(Endpoint { path: "/t/a,b/shell".into(), server: false }));
        assert_eq!(qemu.devices.len(), 3);
        assert!(qemu.no_reboot && qemu.nographic && qemu.console_on_stdout());
        assert_eq!(args.fake, FakeOptions::default());
    }

    #[test]
    fn fake_options_anywhere() {
        let args = parse_words(
            "--fake-boot-delay 0.5 -m 1 --fake-unit foo=failed --fake-unit-later a.service=active@2.5 \
             --fake-shell-drop=10:3 --fake-qmp-no-reply query-status --fake-qmp-no-id \
             --fake-exit-at-start 3:no:kvm --fake-console-lines 7 -enable-kvm -name m1",
        )
        .expect("valid");
        let fake = &args.fake;
        assert_eq!(fake.boot_delay, Duration::from_millis(500));
        assert_eq!(fake.units, vec![("foo".to_owned(), "failed".to_owned())]);
        assert_eq!(
            fake.units_later,
            vec![LaterUnit { unit: "a.service".into(), state: "active".into(), after: Duration::from_millis(2500) }]
        );
        assert_eq!(fake.shell.drop, Some((10, 3)));
        assert_eq!(fake.qmp.no_reply, vec!["query-status".to_owned()]);
        assert!(fake.qmp.no_id && !fake.qmp.garbage);
        assert_eq!(fake.exit_at_start, Some((3, "no:kvm".to_owned())));
        assert_eq!(fake.console_lines, 7);
        assert!(!fake.no_ports && fake.port_stalls.is_empty());
        assert_eq!(args.qemu.name.as_deref(), Some("m1"));
    }

    #[test]
    fn port_faults() {
        let args = parse_words("--fake-no-ports --fake-port-stall org.nixos.ntd.out:4096:1500").expect("valid");
        assert!(args.fake.no_ports);
        assert_eq!(
            args.fake.port_stalls,
            vec![PortStall { name: "org.nixos.ntd.out".into(), after: 4096, pause: Duration::from_millis(1500) }]
        );
        for bad in ["x:1", ":1:2", "x:y:2", "x:1:z"] {
            assert!(
                matches!(parse(["--fake-port-stall", bad]), Err(ArgsError::InvalidValue { .. })),
                "{bad} is refused"
            );
        }
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(
            parse_words("--fake-nope").expect_err("unknown"),
            ArgsError::UnknownFakeOption("--fake-nope".into())
        );
        assert_eq!(parse_words("-m").expect_err("no value"), ArgsError::MissingValue("-m".into()));
        assert!(matches!(parse_words("--fake-boot-delay x"), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse_words("--fake-shell-drop 3"), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse_words("-qmp tcp:1:2"), Err(ArgsError::Unsupported { .. })));
        assert!(matches!(parse_words("-chardev socket,path=/x"), Err(ArgsError::Unsupported { .. })));
        assert!(parse_words("-x y disk.img -snapshot").is_ok(), "unknown options are ignored");
    }
}
