//! What a host needs for systemd-nspawn containers, set up as upstream's driver does
//! (`Driver._init_nspawn_environment`), and only where upstream does: inside the Nix build
//! sandbox, whose mount namespace and file system are the build's own. Outside it, the
//! host is the user's, and nothing of it is changed: a root user running containers by hand
//! has `/run`, cgroup2 and a machine id already, or gets systemd-nspawn's own error.
//!
//! In the sandbox: root is required; `/run` gets a tmpfs if it is not writable (with
//! `/run/netns`), `/var/run` points at it, cgroup2 is mounted on `/sys/fs/cgroup` unless it
//! is there, and `/etc/os-release` and `/etc/machine-id` are made if missing.

use std::path::Path;
use std::process::Command;

use crate::log;

/// Upstream's `in_nix_sandbox()`: a Nix build, not a `nix-shell`/`nix develop`.
pub fn in_nix_sandbox() -> bool {
    std::env::var_os("NIX_BUILD_TOP").is_some() && std::env::var_os("IN_NIX_SHELL").is_none()
}

/// Whether `/proc/mounts` has cgroup2 on `/sys/fs/cgroup` (upstream's test: any such line).
pub fn cgroup2_mounted(mounts: &str) -> bool {
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 3 && fields[1] == "/sys/fs/cgroup" && fields[2] == "cgroup2"
    })
}

/// A step of the set-up failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the Nix build sandbox for systemd-nspawn: {0}")]
pub struct Error(String);

fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let what = format!("{program} {}", args.join(" "));
    log::info(None, &format!("nspawn set-up: {what}"));
    match Command::new(program).args(args).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(Error(format!("`{what}` failed with {}", crate::process::describe_status(status)))),
        Err(e) => Err(Error(format!("cannot run `{what}`: {e}"))),
    }
}

/// Prepare the sandbox for containers (see the module documentation); nothing outside it.
pub fn prepare() -> Result<(), Error> {
    if !in_nix_sandbox() {
        return Ok(());
    }
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(Error(format!("systemd-nspawn requires root to work. You are {euid}")));
    }
    if !super::is_writable(Path::new("/run")) {
        std::fs::create_dir_all("/run").map_err(|e| Error(format!("cannot create /run: {e}")))?;
        run("mount", &["-t", "tmpfs", "none", "/run"])?;
        std::fs::create_dir_all("/run/netns").map_err(|e| Error(format!("cannot create /run/netns: {e}")))?;
    }
    let same_run = match (std::fs::metadata("/var/run"), std::fs::metadata("/run")) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => false,
    };
    if !same_run {
        std::fs::create_dir_all("/var").map_err(|e| Error(format!("cannot create /var: {e}")))?;
        match std::os::unix::fs::symlink("/run", "/var/run") {
            Ok(()) => {}
            // A directory of its own (upstream's `ln -s` would make /var/run/run): leave it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                log::info(None, "nspawn set-up: /var/run is not /run; left as it is");
            }
            Err(e) => return Err(Error(format!("cannot link /var/run: {e}"))),
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !cgroup2_mounted(&mounts) {
        std::fs::create_dir_all("/sys/fs/cgroup").map_err(|e| Error(format!("cannot create /sys/fs/cgroup: {e}")))?;
        run("mount", &["-t", "cgroup2", "none", "/sys/fs/cgroup"])?;
    }
    if !Path::new("/etc/os-release").is_file() {
        std::fs::write("/etc/os-release", "").map_err(|e| Error(format!("cannot create /etc/os-release: {e}")))?;
    }
    let machine_id_missing = std::fs::metadata("/etc/machine-id").map(|m| !m.is_file() || m.len() == 0).unwrap_or(true);
    if machine_id_missing {
        run("systemd-machine-id-setup", &[])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cgroup2_mounted;

    #[test]
    fn cgroup2_is_found_in_any_line() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert!(!cgroup2_mounted(hybrid));
        let stacked = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\nnone /sys/fs/cgroup cgroup2 rw 0 0\n";
        assert!(cgroup2_mounted(stacked));
        assert!(!cgroup2_mounted(""));
    }
}
