//! How a machine is started: upstream's `QemuStartCommand`.
//!
//! The start command (a `run-<name>-vm` script, or any shell command for `create_machine`) is
//! run by a shell with upstream's QEMU arguments appended, in the machine's state directory,
//! with `TMPDIR`/`SHARED_DIR`/`USE_TMPDIR` set so the script keeps its state there and shares
//! `shared-xchg` with the guest as `/tmp/shared`.

use std::path::Path;

use super::channel;
use crate::machine::quote::shlex_quote;

/// The sockets and directories one machine uses.
#[derive(Debug, Clone)]
pub struct StartPaths<'a> {
    /// The machine's state directory (cwd and `TMPDIR` of the start script).
    pub state_dir: &'a Path,
    /// The directory shared by all machines (`SHARED_DIR`).
    pub shared_dir: &'a Path,
    /// The HMP monitor socket the driver listens on.
    pub monitor: &'a Path,
    /// The QMP socket QEMU creates.
    pub qmp: &'a Path,
    /// The backdoor shell socket the driver listens on.
    pub shell: &'a Path,
    /// ntd's output port's socket the driver listens on ([`super::channel`]).
    pub out: &'a Path,
    /// ntd's control port's socket the driver listens on.
    pub ctl: &'a Path,
    /// The UEFI variable store (`NIX_EFI_VARS`).
    pub efi_vars: &'a Path,
    /// The SSH backdoor's vhost-user socket, if the machine has one.
    pub vsock_guest: Option<&'a Path>,
    /// The VNC server's socket, if the machine has one.
    pub vnc: Option<&'a Path>,
}

/// A start command and the arguments upstream appends to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartCommand {
    command: String,
}

impl StartCommand {
    /// Wrap a start command (shell syntax, as upstream passes it to `Popen(shell=True)`).
    pub fn new(command: impl Into<String>) -> StartCommand {
        StartCommand { command: command.into() }
    }

    /// The command as given.
    pub fn as_str(&self) -> &str {
        &self.command
    }

    /// The machine name upstream derives from the command (`run-(.+)-vm$`, else `machine`).
    pub fn machine_name(&self) -> String {
        crate::config::machine_name_from_command(&self.command)
    }

    /// The full command line: the start command with upstream's QEMU arguments appended.
    /// `display_available` is upstream's check for `DISPLAY`/`WAYLAND_DISPLAY`; without a
    /// display QEMU gets `-nographic`.
    pub fn command_line(&self, paths: &StartPaths<'_>, allow_reboot: bool, display_available: bool) -> String {
        // Upstream pastes the paths in as they are; ntd quotes each argument for the shell and
        // doubles commas for QEMU's option parser, so any TMPDIR works.
        let qemu_path = |path: &Path| path.display().to_string().replace(',', ",,");
        let mut line = format!(
            "{} -qmp {} -monitor {} -chardev {}",
            self.command,
            shlex_quote(&format!("unix:{},server=on,wait=off", qemu_path(paths.qmp))),
            shlex_quote(&format!("unix:{}", qemu_path(paths.monitor))),
            shlex_quote(&format!("socket,id=shell,path={}", qemu_path(paths.shell))),
        );
        line.push_str(" -device virtio-serial -device virtconsole,chardev=shell");
        // ntd's two ports, on the same virtio-serial bus as the backdoor's console.
        for (id, path, name) in
            [(channel::OUT_CHARDEV, paths.out, channel::OUT_PORT), (channel::CTL_CHARDEV, paths.ctl, channel::CTL_PORT)]
        {
            line.push_str(&format!(
                " -chardev {} -device virtserialport,chardev={id},name={name}",
                shlex_quote(&format!("socket,id={id},path={}", qemu_path(path)))
            ));
        }
        line.push_str(" -device virtio-rng-pci -serial stdio");
        // The SSH backdoor: a vsock device served by vhost-device-vsock (upstream's arguments).
        // vhost-user needs the guest's memory shared, which NixOS test VMs have by default
        // (`virtualisation.qemu.enableSharedMemory`).
        if let Some(guest) = paths.vsock_guest {
            line.push_str(&format!(
                " -chardev {} -device vhost-user-vsock-pci,chardev=vsock_ssh",
                shlex_quote(&format!("socket,id=vsock_ssh,path={}", qemu_path(guest)))
            ));
        }
        // ntd's VNC server: a unix socket QEMU creates, never a TCP port. It serves the same
        // screen with or without -nographic. (QEMU opens no window of its own beside a VNC
        // server; the start logs that where a display would have had one.)
        if let Some(vnc) = paths.vnc {
            line.push_str(&format!(" -vnc {}", shlex_quote(&format!("unix:{}", qemu_path(vnc)))));
        }
        if !allow_reboot {
            line.push_str(" -no-reboot");
        }
        if !display_available {
            line.push_str(" -nographic");
        }
        line
    }

    /// The variables upstream adds to the start script's environment. `NIX_EFI_VARS` is set
    /// for every machine, as upstream does: scripts of VMs without UEFI ignore it.
    pub fn environment(paths: &StartPaths<'_>) -> [(&'static str, String); 4] {
        [
            ("TMPDIR", paths.state_dir.display().to_string()),
            ("SHARED_DIR", paths.shared_dir.display().to_string()),
            ("USE_TMPDIR", "1".to_owned()),
            ("NIX_EFI_VARS", paths.efi_vars.display().to_string()),
        ]
    }

    /// The command with a relative script path made absolute against `base`. The start
    /// command runs in the machine's state directory, where a relative path would not resolve.
    pub fn absolutized(&self, base: &Path) -> StartCommand {
        match self.script_path() {
            Some(path) if path.is_relative() => {
                let rest = self.command.trim_start()[path.as_os_str().len()..].to_owned();
                StartCommand { command: format!("{}{rest}", base.join(path).display()) }
            }
            _ => self.clone(),
        }
    }

    /// What is wrong with the start script, if anything: `does not exist`, `is a directory`,
    /// `is not executable`. Commands that do not start with a path are not checked.
    pub fn script_problem(&self) -> Option<(&Path, &'static str)> {
        let path = self.script_path()?;
        crate::machine::start_script_problem(path).map(|problem| (path, problem))
    }

    /// The script to check for existence: the first word of the command, if it is a path.
    /// Commands with shell syntax before or in the script's path (`FOO=1 run-x-vm`, a quoted
    /// path with spaces) are not checked: the shell that runs them decides.
    pub fn script_path(&self) -> Option<&Path> {
        let first = self.command.split_whitespace().next()?;
        if first.contains(['=', '\'', '"', '\\', '$', '`']) || !first.contains('/') {
            return None;
        }
        Some(Path::new(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths of machine `m` in `/tmp`, without the SSH backdoor.
    fn paths_of_m() -> StartPaths<'static> {
        StartPaths {
            state_dir: Path::new("/tmp/vm-state-m"),
            shared_dir: Path::new("/tmp/shared-xchg"),
            monitor: Path::new("/tmp/vm-state-m/monitor"),
            qmp: Path::new("/tmp/vm-state-m/qmp"),
            shell: Path::new("/tmp/vm-state-m/shell"),
            out: Path::new("/tmp/vm-state-m/out"),
            ctl: Path::new("/tmp/vm-state-m/ctl"),
            efi_vars: Path::new("/tmp/vm-state-m/m-efi-vars.fd"),
            vsock_guest: None,
            vnc: None,
        }
    }

    #[test]
    fn appends_upstreams_arguments() {
        let paths = paths_of_m();
        let command = StartCommand::new("/x/bin/run-m-vm");
        assert_eq!(
            command.command_line(&paths, false, false),
            "/x/bin/run-m-vm -qmp unix:/tmp/vm-state-m/qmp,server=on,wait=off -monitor unix:/tmp/vm-state-m/monitor \
             -chardev socket,id=shell,path=/tmp/vm-state-m/shell -device virtio-serial -device virtconsole,chardev=shell \
             -chardev socket,id=ntd-out,path=/tmp/vm-state-m/out -device virtserialport,chardev=ntd-out,name=org.nixos.ntd.out \
             -chardev socket,id=ntd-ctl,path=/tmp/vm-state-m/ctl -device virtserialport,chardev=ntd-ctl,name=org.nixos.ntd.ctl \
             -device virtio-rng-pci -serial stdio -no-reboot -nographic"
        );
        let line = command.command_line(&paths, true, true);
        assert!(!line.contains("-no-reboot") && !line.contains("-nographic"));
        assert_eq!(command.machine_name(), "m");
        let environment = StartCommand::environment(&paths);
        assert_eq!(environment[2], ("USE_TMPDIR", "1".to_owned()));
        assert_eq!(environment[3], ("NIX_EFI_VARS", "/tmp/vm-state-m/m-efi-vars.fd".to_owned()));
    }

    #[test]
    fn the_ssh_backdoor_adds_upstreams_vsock_device() {
        let paths = StartPaths { vsock_guest: Some(Path::new("/tmp/vsock-ab/m_guest.socket")), ..paths_of_m() };
        let line = StartCommand::new("/x/bin/run-m-vm").command_line(&paths, false, false);
        assert!(
            line.contains(
                " -chardev socket,id=vsock_ssh,path=/tmp/vsock-ab/m_guest.socket -device vhost-user-vsock-pci,chardev=vsock_ssh "
            ),
            "{line}"
        );
    }

    #[test]
    fn vnc_listens_on_a_unix_socket_only() {
        let paths = StartPaths { vnc: Some(Path::new("/tmp/vm-state-m/vnc")), ..paths_of_m() };
        let line = StartCommand::new("/x/bin/run-m-vm").command_line(&paths, false, false);
        assert!(line.contains(" -vnc unix:/tmp/vm-state-m/vnc "), "{line}");
        assert_eq!(line.matches("-vnc").count(), 1);
        let without = StartCommand::new("/x/bin/run-m-vm").command_line(&paths_of_m(), false, false);
        assert!(!without.contains("-vnc"), "{without}");
    }

    #[test]
    fn odd_paths_are_quoted_for_the_shell_and_for_qemu() {
        let paths = StartPaths {
            state_dir: Path::new("/t m'p,x/vm-state-m"),
            shared_dir: Path::new("/t m'p,x/shared-xchg"),
            monitor: Path::new("/t m'p,x/vm-state-m/monitor"),
            qmp: Path::new("/t m'p,x/vm-state-m/qmp"),
            shell: Path::new("/t m'p,x/vm-state-m/shell"),
            out: Path::new("/t m'p,x/vm-state-m/out"),
            ctl: Path::new("/t m'p,x/vm-state-m/ctl"),
            efi_vars: Path::new("/t m'p,x/vm-state-m/m-efi-vars.fd"),
            vsock_guest: None,
            vnc: None,
        };
        let line = StartCommand::new("run-m-vm").command_line(&paths, true, true);
        assert_eq!(
            line,
            "run-m-vm -qmp 'unix:/t m'\"'\"'p,,x/vm-state-m/qmp,server=on,wait=off' \
             -monitor 'unix:/t m'\"'\"'p,,x/vm-state-m/monitor' \
             -chardev 'socket,id=shell,path=/t m'\"'\"'p,,x/vm-state-m/shell' -device virtio-serial \
             -device virtconsole,chardev=shell \
             -chardev 'socket,id=ntd-out,path=/t m'\"'\"'p,,x/vm-state-m/out' -device virtserialport,chardev=ntd-out,name=org.nixos.ntd.out \
             -chardev 'socket,id=ntd-ctl,path=/t m'\"'\"'p,,x/vm-state-m/ctl' -device virtserialport,chardev=ntd-ctl,name=org.nixos.ntd.ctl \
             -device virtio-rng-pci -serial stdio"
        );
    }

    #[test]
    fn relative_scripts_become_absolute() {
        let base = Path::new("/work");
        assert_eq!(StartCommand::new("bin/run-a-vm -m 1").absolutized(base).as_str(), "/work/bin/run-a-vm -m 1");
        assert_eq!(StartCommand::new("/x/run-a-vm").absolutized(base).as_str(), "/x/run-a-vm");
        assert_eq!(StartCommand::new("FOO=1 run-a-vm").absolutized(base).as_str(), "FOO=1 run-a-vm");
    }

    #[test]
    fn script_path_only_for_plain_paths() {
        assert_eq!(StartCommand::new("/x/run-a-vm -m 1").script_path(), Some(Path::new("/x/run-a-vm")));
        assert_eq!(StartCommand::new("./run-a-vm").script_path(), Some(Path::new("./run-a-vm")));
        assert_eq!(StartCommand::new("FOO=1 /x/run-a-vm").script_path(), None);
        assert_eq!(StartCommand::new("qemu-system-x86_64 -m 1").script_path(), None);
        assert_eq!(StartCommand::new("'/a b/run-a-vm'").script_path(), None);
    }
}
