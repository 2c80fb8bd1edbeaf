//! The guest's `/dev` when it has virtio ports: a tmpfs of its own in the guest's mount
//! namespace, so that `/dev/virtio-ports` can be a directory of the guest's without touching
//! the host's `/dev`.
//!
//! The tmpfs gets what a guest shell uses of `/dev`: the host's `null`, `zero`, `full`,
//! `random`, `urandom` and `tty` nodes, bound in (a bind works where `mknod` may not, in a
//! user namespace or a `nodev` mount); the host's `pts`, with `ptmx` a symlink to `pts/ptmx`
//! (the kernel finds the pty instance next to the `ptmx` node, which for a bound node is the
//! host's `/dev`, not this one); a fresh `shm` tmpfs; the `fd`, `stdin`, `stdout` and `stderr`
//! symlinks; and the ports' FUSE file system on `virtio-ports` (see [`crate::ports`]).
//!
//! The host's nodes are opened (`O_PATH`) before the tmpfs hides them and bound from
//! `/proc/self/fd/N`, as [`crate::guest`] binds `SHARED_DIR`. Everything here runs in the
//! forked child before `exec`: system calls on data prepared before the fork, no allocation.
//!
//! Whatever the ports, the host's own virtio ports (a fake run inside a VM has some, maybe
//! with ntd's names) are hidden from the guest: `/sys/class/virtio-ports` and, when the
//! guest has no ports of its own, `/dev/virtio-ports` are covered by empty read-only tmpfs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{AT_FDCWD, OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::unistd::symlinkat;

use crate::guest::{make_dir, proc_fd_path};

/// The host's device nodes bound into the guest's `/dev`, at the same paths.
const NODES: [&CStr; 6] = [c"/dev/null", c"/dev/zero", c"/dev/full", c"/dev/random", c"/dev/urandom", c"/dev/tty"];

/// The symlinks of the guest's `/dev`: (link, target).
const LINKS: [(&CStr, &CStr); 5] = [
    (c"/dev/fd", c"/proc/self/fd"),
    (c"/dev/stdin", c"/proc/self/fd/0"),
    (c"/dev/stdout", c"/proc/self/fd/1"),
    (c"/dev/stderr", c"/proc/self/fd/2"),
    (c"/dev/ptmx", c"pts/ptmx"),
];

/// Where the ports appear.
pub const PORTS_DIR: &CStr = c"/dev/virtio-ports";

/// The mount options of the ports' FUSE file system for one boot. They name the `/dev/fuse`
/// descriptor the fake serves, open in the fake and so inherited by the forked child that
/// mounts it (the child's copy closes at `exec`).
#[derive(Debug, Clone)]
pub struct FuseMount {
    options: CString,
}

impl FuseMount {
    /// The mount of the file system served on `device` (an open `/dev/fuse`), which must stay
    /// open until the guest is spawned. Root of the mounter's namespace owns it; other users
    /// may use it (`allow_other`) under the kernel's permission checks (`default_permissions`).
    pub fn new(device: &impl AsFd) -> FuseMount {
        let fd = device.as_fd().as_raw_fd();
        let options = format!("fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions");
        // Digits and ASCII letters only: never a NUL.
        FuseMount { options: CString::new(options).unwrap_or_default() }
    }
}

/// Build the guest's `/dev` with the ports' file system on `virtio-ports`. On an error, the
/// tmpfs is taken off again, leaving the host's `/dev` as it was, and the error returned.
/// Runs after fork: no allocation.
pub fn mount_with_ports(ports: &FuseMount) -> io::Result<()> {
    // Opened before the tmpfs hides them; a node the host lacks is left out.
    let mut nodes: [Option<OwnedFd>; NODES.len()] = Default::default();
    for (slot, path) in nodes.iter_mut().zip(NODES) {
        *slot = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).ok();
    }
    let pts = open(c"/dev/pts", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).ok();
    mount(Some(c"tmpfs"), c"/dev", Some(c"tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some(c"mode=755"))?;
    let built = populate(&nodes, pts.as_ref(), ports);
    if built.is_err() {
        let _ = umount2(c"/dev", MntFlags::MNT_DETACH);
    }
    built
}

fn populate(nodes: &[Option<OwnedFd>], pts: Option<&OwnedFd>, ports: &FuseMount) -> io::Result<()> {
    let none = None::<&CStr>;
    let mut buf = [0u8; 32];
    for (path, opened) in NODES.iter().zip(nodes) {
        let Some(opened) = opened else { continue };
        // A bind needs something to bind on: an empty file.
        drop(open(*path, OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o666))?);
        let source = proc_fd_path(opened.as_raw_fd(), &mut buf)?;
        mount(Some(source), *path, none, MsFlags::MS_BIND, none)?;
    }
    make_dir(c"/dev/pts")?;
    if let Some(pts) = pts {
        let source = proc_fd_path(pts.as_raw_fd(), &mut buf)?;
        mount(Some(source), c"/dev/pts", none, MsFlags::MS_BIND | MsFlags::MS_REC, none)?;
    }
    make_dir(c"/dev/shm")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some(c"tmpfs"), c"/dev/shm", Some(c"tmpfs"), flags, Some(c"mode=1777"))?;
    for (link, target) in LINKS {
        symlinkat(target, AT_FDCWD, link)?;
    }
    make_dir(PORTS_DIR)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some(c"ntd-fake-ports"), PORTS_DIR, Some(c"fuse"), flags, Some(ports.options.as_c_str()))?;
    Ok(())
}

/// Cover the host's virtio ports, if it has any (best effort: a guest that sees them anyway
/// only finds ports whose names it does not look for, unless the fake runs inside an ntd VM).
/// `dev_too` when the guest's `/dev` is still the host's. Runs after fork: no allocation.
pub fn hide_host_ports(dev_too: bool) {
    let paths: [(&CStr, bool); 2] = [(c"/sys/class/virtio-ports", true), (PORTS_DIR, dev_too)];
    for (path, wanted) in paths {
        if wanted && nix::sys::stat::stat(path).is_ok() {
            let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            let _ = mount(Some(c"tmpfs"), path, Some(c"tmpfs"), flags, Some(c"mode=755"));
        }
    }
}
