//! QEMU's own arguments: the sockets, chardevs and devices of a `run-<name>-vm` command line
//! plus ntd's appended ones, parsed as QEMU's `QemuOpts` parser does: comma-separated
//! `key=value` pairs, the first one possibly a bare value (the chardev backend, the device
//! driver), and `,,` standing for a literal comma. Every chardev and device is recorded, so
//! that a channel the fake does not serve yet is still seen. Options the fake does not know
//! are accepted and ignored, as they configure hardware it does not have.

use std::path::PathBuf;

use crate::args::ArgsError;

/// A unix socket QEMU either listens on (`server=on`) or connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The socket's path.
    pub path: PathBuf,
    /// Whether QEMU is the listening side.
    pub server: bool,
}

/// One `-chardev BACKEND,id=ID,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chardev {
    /// The `id`.
    pub id: String,
    /// The backend (`socket`, `pty`, `null`, ...).
    pub backend: String,
    /// The other options, in order.
    pub options: Vec<(String, String)>,
}

impl Chardev {
    /// The value of an option.
    pub fn get(&self, key: &str) -> Option<&str> {
        option(&self.options, key)
    }

    /// The unix socket of a `socket` chardev with a `path`.
    pub fn endpoint(&self) -> Option<Endpoint> {
        if self.backend != "socket" {
            return None;
        }
        let path = self.get("path")?;
        Some(Endpoint { path: PathBuf::from(path), server: is_on(self.get("server")) })
    }
}

/// One `-device DRIVER,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The driver (`virtconsole`, `virtserialport`, ...).
    pub driver: String,
    /// The other options, in order.
    pub options: Vec<(String, String)>,
}

impl Device {
    /// The value of an option.
    pub fn get(&self, key: &str) -> Option<&str> {
        option(&self.options, key)
    }
}

fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// QEMU's boolean option values.
fn is_on(value: Option<&str>) -> bool {
    matches!(value, Some("on" | "yes" | "true" | "y"))
}

/// The QEMU arguments the fake understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuArgs {
    /// `-qmp unix:PATH,...`.
    pub qmp: Option<Endpoint>,
    /// `-monitor unix:PATH,...`.
    pub monitor: Option<Endpoint>,
    /// Every `-chardev`, in order.
    pub chardevs: Vec<Chardev>,
    /// Every `-device`, in order.
    pub devices: Vec<Device>,
    /// `-serial` (`stdio` for the console on stdout).
    pub serial: Option<String>,
    /// `-name` (the guest's host name).
    pub name: Option<String>,
    /// `-no-reboot`: a guest reset ends QEMU.
    pub no_reboot: bool,
    /// `-nographic`.
    pub nographic: bool,
}

impl QemuArgs {
    /// The chardev with this id.
    pub fn chardev(&self, id: &str) -> Option<&Chardev> {
        self.chardevs.iter().find(|c| c.id == id)
    }

    /// The backdoor's chardev: the one behind the first `virtconsole` (the guest's hvc0).
    pub fn backdoor(&self) -> Option<&Chardev> {
        let device = self.devices.iter().find(|d| d.driver == "virtconsole")?;
        self.chardev(device.get("chardev")?)
    }

    /// The vhost-user devices (`-device vhost-user-*,chardev=ID`, e.g. the SSH backdoor's
    /// `vhost-user-vsock-pci`) and their chardevs, in order.
    pub fn vhost_user_devices(&self) -> Vec<(&str, &Chardev)> {
        self.devices
            .iter()
            .filter(|d| d.driver.starts_with("vhost-user-"))
            .filter_map(|d| Some((d.driver.as_str(), self.chardev(d.get("chardev")?)?)))
            .collect()
    }

    /// The virtio-serial ports with a name and a chardev, in order: `(name, chardev)`.
    pub fn virtio_ports(&self) -> Vec<(&str, &Chardev)> {
        self.devices
            .iter()
            .filter(|d| d.driver == "virtserialport")
            .filter_map(|d| Some((d.get("name")?, self.chardev(d.get("chardev")?)?)))
            .collect()
    }

    /// Whether the serial console is QEMU's stdout: `-serial stdio` (or `mon:stdio`), or no
    /// `-serial` with `-nographic`, which defaults to it.
    pub fn console_on_stdout(&self) -> bool {
        match self.serial.as_deref() {
            Some(serial) => serial == "stdio" || serial == "mon:stdio",
            None => self.nographic,
        }
    }
}

/// QEMU options that take no value; every other `-x` takes one.
const FLAGS: &[&str] =
    &["no-reboot", "nographic", "enable-kvm", "snapshot", "no-shutdown", "nodefaults", "no-user-config", "S", "s"];

impl QemuArgs {
    /// Take a QEMU option without a value; false if `name` takes one.
    pub(crate) fn flag(&mut self, name: &str) -> bool {
        match name {
            "no-reboot" => self.no_reboot = true,
            "nographic" => self.nographic = true,
            _ if FLAGS.contains(&name) => {}
            _ => return false,
        }
        true
    }

    /// Take a QEMU option with its value (`word` is the option as given, for messages).
    pub(crate) fn option(&mut self, word: &str, name: &str, value: &str) -> Result<(), ArgsError> {
        qemu_option(self, word, name, value)
    }
}

fn qemu_option(qemu: &mut QemuArgs, word: &str, name: &str, value: &str) -> Result<(), ArgsError> {
    let unsupported = |problem| ArgsError::Unsupported { option: word.to_owned(), value: value.to_owned(), problem };
    match name {
        "qmp" => qemu.qmp = Some(unix_endpoint(value).ok_or_else(|| unsupported("only unix: sockets are supported"))?),
        "monitor" => {
            qemu.monitor = match value {
                "none" | "null" => None,
                _ => Some(unix_endpoint(value).ok_or_else(|| unsupported("only unix: sockets are supported"))?),
            }
        }
        "chardev" => {
            let mut options = split_options(value);
            if options.is_empty() || !options[0].0.is_empty() {
                return Err(unsupported("the chardev backend must come first"));
            }
            let backend = options.remove(0).1;
            let id = option(&options, "id").ok_or_else(|| unsupported("Parameter 'id' is missing"))?.to_owned();
            options.retain(|(k, _)| k != "id");
            qemu.chardevs.push(Chardev { id, backend, options });
        }
        "device" => {
            let mut options = split_options(value);
            if options.is_empty() || !options[0].0.is_empty() {
                return Err(unsupported("the device driver must come first"));
            }
            let driver = options.remove(0).1;
            qemu.devices.push(Device { driver, options });
        }
        "serial" => qemu.serial = Some(value.to_owned()),
        "name" => {
            // `-name NAME` or `-name guest=NAME,...`.
            let options = split_options(value);
            qemu.name = options
                .iter()
                .find(|(k, _)| k.is_empty() || k == "guest")
                .map(|(_, v)| v.clone())
                .filter(|n| !n.is_empty());
        }
        _ => {}
    }
    Ok(())
}

/// `unix:PATH[,server=on,wait=off]` as `-qmp` and `-monitor` take it (`server` alone means
/// `server=on`, the old `nowait` means `wait=off`).
fn unix_endpoint(value: &str) -> Option<Endpoint> {
    let options = split_options(value);
    let (key, first) = options.first()?;
    if !key.is_empty() {
        return None;
    }
    let path = first.strip_prefix("unix:")?;
    let server = is_on(option(&options, "server"));
    Some(Endpoint { path: PathBuf::from(path), server })
}

/// Split a QemuOpts string into `(key, value)` pairs. A bare first element has an empty key
/// (the implied option); a later bare `flag` is `flag=on`, as QemuOpts reads it; `,,` is a
/// literal comma.
pub fn split_options(text: &str) -> Vec<(String, String)> {
    let mut elements = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                elements.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    elements.push(current);
    elements
        .into_iter()
        .enumerate()
        .filter(|(i, element)| *i == 0 || !element.is_empty())
        .map(|(i, element)| match element.split_once('=') {
            // As in QEMU, a first element with `=` is a `key=value`, not the implied value.
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None if i == 0 => (String::new(), element),
            None => match element.strip_prefix("no") {
                Some(flag) if flag == "wait" || flag == "server" => (flag.to_owned(), "off".to_owned()),
                _ => (element, "on".to_owned()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::parse;

    fn parse_words(line: &str) -> QemuArgs {
        parse(line.split_whitespace()).expect("valid").qemu
    }

    #[test]
    fn qemu_opts_splitting() {
        assert_eq!(
            split_options("socket,id=x,path=/a,,b,server,nowait"),
            vec![
                (String::new(), "socket".to_owned()),
                ("id".to_owned(), "x".to_owned()),
                ("path".to_owned(), "/a,b".to_owned()),
                ("server".to_owned(), "on".to_owned()),
                ("wait".to_owned(), "off".to_owned()),
            ]
        );
        assert_eq!(split_options(""), vec![(String::new(), String::new())]);
        let endpoint = unix_endpoint("unix:/q,server,nowait").expect("endpoint");
        assert!(endpoint.server);
    }

    #[test]
    fn every_chardev_and_device_is_recorded() {
        let args = parse_words(
            "-chardev socket,id=shell,path=/s -chardev socket,id=data,path=/d,server=on \
             -device virtserialport,chardev=data,name=org.ntd.data -device virtconsole,chardev=shell",
        );
        assert_eq!(args.chardevs.len(), 2);
        let data = args.chardev("data").expect("data chardev");
        assert_eq!(data.endpoint(), Some(Endpoint { path: "/d".into(), server: true }));
        assert_eq!(args.devices[0].get("name"), Some("org.ntd.data"));
        assert_eq!(args.backdoor().map(|c| c.id.as_str()), Some("shell"));
        assert!(!args.console_on_stdout(), "no -serial and no -nographic: no console on stdout");
        let ports: Vec<(&str, &str)> = args.virtio_ports().into_iter().map(|(name, c)| (name, c.id.as_str())).collect();
        assert_eq!(ports, vec![("org.ntd.data", "data")]);
    }
}
