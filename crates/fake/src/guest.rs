//! The guest: a real `bash --norc` as NixOS's `backdoor.service` runs it, in namespaces of its
//! own so that it behaves like a separate machine where that is cheap.
//!
//! - **mount**: `/` is made recursively private, a tmpfs is the guest's `/tmp`, and the
//!   driver's `SHARED_DIR` is bind-mounted on `/tmp/shared`, as the NixOS test VM mounts
//!   `shared-xchg` there. `SHARED_DIR` is opened (`O_PATH`) in the new namespace before the
//!   tmpfs can hide it and bound from `/proc/self/fd/N` (a mount of the old namespace cannot
//!   be bound). The fake's own directory (guest tools, control socket) stays
//!   reachable at its host path, bound into the tmpfs when it was under `/tmp`. With virtio
//!   ports, `/dev` is a tmpfs of the guest's too, with the ports' file system on
//!   `/dev/virtio-ports` ([`crate::guest_dev`]);
//! - **pid**: bash is pid 1 of a pid namespace, so when it dies every process it started dies
//!   with it (as a machine's processes end with the machine), and `kill -9 -1` or `pkill` in
//!   the guest cannot reach the host (`/proc` is remounted for the namespace where allowed);
//! - **uts**: the host name is QEMU's `-name` (NixOS's default `nixos` otherwise);
//! - **user**, when not root: `CLONE_NEWUSER` first, mapping root to the caller.
//!
//! The network is the host's. Everything is prepared before `fork`; `pre_exec` makes only
//! async-signal-safe system calls. The namespaces are made in the child, which then execs this
//! binary again as a tiny init (`ntd-fake-guest-init`, below): a new pid namespace's pid 1 is
//! the first process *forked* after `unshare`, so the init forks bash as that pid 1, reaps it,
//! and exits with its status. bash stays in the fake's process group (the driver's group kill
//! reaches the whole guest) and gets SIGKILL when its init dies, which gets SIGKILL when the
//! fake dies.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, chdir, getppid, mkdir, sethostname, write};

use crate::guest_dev::{self, FuseMount};

/// The name this binary is run under as the guest's init.
pub const INIT_NAME: &str = "ntd-fake-guest-init";

/// Exit status of the init when the fake asked it to stop the guest.
pub const STOPPED_STATUS: i32 = 128 + 9;

/// Setting up or running the guest shell failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// No `bash` on `PATH`.
    #[error("no bash on PATH for the guest shell")]
    NoBash,
    /// A path cannot be passed to the kernel.
    #[error("path {0} contains a NUL byte")]
    NulInPath(PathBuf),
    /// The namespaces or the shell could not be set up.
    #[error("cannot start the guest shell in its own namespaces (needs root or unprivileged user namespaces)")]
    Spawn(#[source] io::Error),
}

/// The first `bash` on the fake's `PATH`.
pub fn find_bash() -> Result<PathBuf, GuestError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("bash")).find(|p| p.is_file()).ok_or(GuestError::NoBash)
}

/// A directory bound into the guest's mount namespace.
#[derive(Debug, Clone)]
struct Bind {
    source: CString,
    target: CString,
    /// Directories to create in the tmpfs, outermost first, before binding.
    parents: Vec<CString>,
}

impl Bind {
    fn new(path: &Path, target: &Path, parents: Vec<PathBuf>) -> Result<Bind, GuestError> {
        let parents = parents.iter().map(|p| c_string(p)).collect::<Result<_, _>>()?;
        Ok(Bind { source: c_string(path)?, target: c_string(target)?, parents })
    }

    /// Bind `source` on `target` once the tmpfs hides `source`: `opened` is `source` opened
    /// in the new mount namespace before the tmpfs (a mount of another namespace cannot be
    /// bound), reached as `/proc/self/fd/N`. Runs after fork: no allocation.
    fn mount(&self, opened: &OwnedFd) -> io::Result<()> {
        for dir in &self.parents {
            make_dir(dir)?;
        }
        make_dir(&self.target)?;
        let mut buf = [0u8; 32];
        let source = proc_fd_path(opened.as_raw_fd(), &mut buf)?;
        let none = None::<&CStr>;
        mount(Some(source), self.target.as_c_str(), none, MsFlags::MS_BIND | MsFlags::MS_REC, none)?;
        Ok(())
    }

    fn open(&self) -> io::Result<OwnedFd> {
        Ok(open(self.source.as_c_str(), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?)
    }
}

/// `/proc/self/fd/N` written into `buf`, without allocating.
pub(crate) fn proc_fd_path(fd: RawFd, buf: &mut [u8; 32]) -> io::Result<&CStr> {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (u32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    CStr::from_bytes_until_nul(&buf[..]).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn c_string(path: &Path) -> Result<CString, GuestError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| GuestError::NulInPath(path.to_owned()))
}

/// How the guest shell is started, prepared once and reused for every boot.
#[derive(Debug)]
pub struct GuestPlan {
    bash: PathBuf,
    env: Vec<(String, OsString)>,
    hostname: OsString,
    shared: Option<Bind>,
    fake_dir: Option<Bind>,
}

/// The guest's `PATH`: the guest tools, the usual directories, then the fake's own `PATH`
/// (where a host keeps its tools elsewhere, as NixOS and the Nix build sandbox do; the guest
/// tools come first, so `poweroff` and `systemctl` are always the fake's).
pub fn guest_path(tools: &Path, host_path: Option<&std::ffi::OsStr>) -> OsString {
    let mut dirs: Vec<PathBuf> = vec![tools.to_owned()];
    dirs.extend(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
    for dir in std::env::split_paths(host_path.unwrap_or_default()) {
        if !dir.as_os_str().is_empty() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

impl GuestPlan {
    /// Prepare the guest: `fake_dir` holds the tools and the control socket, `shared` is the
    /// driver's `SHARED_DIR`. The environment is NixOS's `backdoor.service`'s (`USER`, `HOME`,
    /// `PAGER=`, `PS1=`) plus `PATH`, `TERM=dumb` and `control_var=control`.
    pub fn prepare(
        fake_dir: &Path,
        tools: &Path,
        (control_var, control): (&str, &Path),
        shared: Option<&Path>,
        hostname: &str,
    ) -> Result<GuestPlan, GuestError> {
        let bash = find_bash()?;
        let env = vec![
            ("PATH".to_owned(), guest_path(tools, std::env::var_os("PATH").as_deref())),
            ("HOME".to_owned(), "/root".into()),
            ("USER".to_owned(), "root".into()),
            ("TERM".to_owned(), "dumb".into()),
            ("PAGER".to_owned(), OsString::new()),
            ("PS1".to_owned(), OsString::new()),
            (control_var.to_owned(), control.as_os_str().to_owned()),
        ];
        let shared = shared.map(|dir| Bind::new(dir, Path::new("/tmp/shared"), Vec::new())).transpose()?;
        // The fake's directory needs a bind only where the guest's tmpfs hides it.
        let fake_dir = std::fs::canonicalize(fake_dir).unwrap_or_else(|_| fake_dir.to_owned());
        let fake_dir = match fake_dir.strip_prefix("/tmp") {
            Ok(relative) if !relative.as_os_str().is_empty() => {
                let parents: Vec<PathBuf> = relative
                    .ancestors()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| Path::new("/tmp").join(p))
                    .collect();
                Some(Bind::new(&fake_dir, &fake_dir, parents.into_iter().rev().collect())?)
            }
            _ => None,
        };
        Ok(GuestPlan { bash, env, hostname: hostname.into(), shared, fake_dir })
    }

    /// Start the guest shell with piped stdin and stdout and `stderr` as its stderr (the
    /// serial console), with the virtio ports' file system `ports` mounted on
    /// `/dev/virtio-ports`. Tries the root way first, then a user namespace, which gets no
    /// ports (the kernel takes a FUSE device opened in the mounter's user namespace only).
    /// Returns the child and whether it mounted `ports`.
    pub fn spawn(
        &self,
        stderr: impl Fn() -> Stdio,
        ports: Option<&FuseMount>,
    ) -> Result<(tokio::process::Child, bool), GuestError> {
        let as_root = nix::unistd::geteuid().is_root();
        match self.spawn_with(as_root, stderr(), ports.filter(|_| as_root)) {
            Ok(child) => Ok((child, as_root && ports.is_some())),
            // Root without CAP_SYS_ADMIN (a container) may still have user namespaces.
            Err(e) if as_root && e.raw_os_error() == Some(libc::EPERM) => {
                self.spawn_with(false, stderr(), None).map(|child| (child, false))
            }
            Err(e) => Err(e),
        }
        .map_err(GuestError::Spawn)
    }

    fn spawn_with(&self, as_root: bool, stderr: Stdio, ports: Option<&FuseMount>) -> io::Result<tokio::process::Child> {
        let setup = NamespaceSetup {
            ports: ports.cloned(),
            user_maps: (!as_root).then(|| {
                let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
                (format!("0 {uid} 1").into_bytes(), format!("0 {gid} 1").into_bytes())
            }),
            hostname: self.hostname.clone(),
            shared: self.shared.clone(),
            fake_dir: self.fake_dir.clone(),
            parent: Pid::this(),
        };
        let mut command = tokio::process::Command::new("/proc/self/exe");
        command
            .arg0(INIT_NAME)
            .arg(&self.bash)
            .arg("--norc")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec. It only makes system
        // calls (prctl, getppid, unshare, open/write/close, mount, mkdir, sethostname, chdir)
        // on data prepared before the fork, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || setup.enter());
        }
        command.spawn()
    }
}

/// The namespace setup of one spawn, owned by the `pre_exec` closure.
struct NamespaceSetup {
    user_maps: Option<(Vec<u8>, Vec<u8>)>,
    hostname: OsString,
    shared: Option<Bind>,
    fake_dir: Option<Bind>,
    ports: Option<FuseMount>,
    parent: Pid,
}

impl NamespaceSetup {
    /// Runs in the forked child: async-signal-safe calls only, no allocation.
    fn enter(&self) -> io::Result<()> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // The fake may have died between the fork and the prctl. (An errno, not a message:
        // allocating is not safe here.)
        if getppid() != self.parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS;
        if self.user_maps.is_some() {
            flags |= CloneFlags::CLONE_NEWUSER;
        }
        unshare(flags)?;
        if let Some((uid_map, gid_map)) = &self.user_maps {
            // An unprivileged process may map only itself, and must give up setgroups first.
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", uid_map)?;
            write_file(c"/proc/self/gid_map", gid_map)?;
        }
        let none = None::<&CStr>;
        mount(none, c"/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
        // Opened now: in the new mount namespace, and before the tmpfs hides them.
        let shared = self.shared.as_ref().map(|bind| bind.open().map(|fd| (bind, fd))).transpose()?;
        let fake_dir = self.fake_dir.as_ref().map(|bind| bind.open().map(|fd| (bind, fd))).transpose()?;
        mount(Some(c"tmpfs"), c"/tmp", Some(c"tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(c"mode=1777"))?;
        for (bind, fd) in [shared, fake_dir].iter().flatten() {
            bind.mount(fd)?;
        }
        let ports_mounted = match &self.ports {
            Some(ports) => match guest_dev::mount_with_ports(ports) {
                Ok(()) => true,
                Err(_) => {
                    // A guest without ports still runs: the driver falls back to the console.
                    let _ = write(std::io::stderr(), PORTS_FAILED);
                    false
                }
            },
            None => false,
        };
        guest_dev::hide_host_ports(!ports_mounted);
        sethostname(&self.hostname)?;
        chdir(c"/tmp")?;
        Ok(())
    }
}

/// Said on the guest's stderr (the console) when the ports cannot be mounted.
const PORTS_FAILED: &[u8] = b"ntd-fake-qemu: cannot mount /dev/virtio-ports in the guest: it has no virtio ports\n";

fn write_file(path: &CStr, content: &[u8]) -> io::Result<()> {
    let fd = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    write(&fd, content)?;
    Ok(())
}

pub(crate) fn make_dir(path: &CStr) -> io::Result<()> {
    match mkdir(path, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The guest's init (this binary run as [`INIT_NAME`] in the new namespaces): fork bash as
/// pid 1 of the pid namespace, then wait. Exits with bash's status (128 + signal if killed);
/// on SIGTERM from the fake it kills bash, which takes every guest process with it, and exits
/// with [`STOPPED_STATUS`] once they are all gone.
pub fn init_main(args: &[OsString]) -> i32 {
    match run_init(args) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("{INIT_NAME}: {e}");
            127
        }
    }
}

fn run_init(args: &[OsString]) -> io::Result<i32> {
    let Some((bash, bash_args)) = args.split_first() else {
        return Err(io::Error::other("usage: ntd-fake-guest-init BASH [ARGS...]"));
    };
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(signal);
    }
    // Taken with sigwait below; the child unblocks them (a mask survives fork and exec, and
    // a guest whose processes cannot get SIGTERM has a `timeout` that never fires).
    signals.thread_block()?;
    // While this process lives, its child sees no hang-up on the pipe's read end.
    let (alive, alive_writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (alive_fd, writer_fd) = (alive.as_raw_fd(), alive_writer.as_raw_fd());
    let mut command = std::process::Command::new(bash);
    command.arg0("bash").args(bash_args);
    // SAFETY: runs in the forked child before exec; prctl, sigprocmask, close, poll and mount are
    // async-signal-safe system calls on values prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            // The child's copy of the writer would keep the pipe alive.
            libc::close(writer_fd);
            let alive = std::os::fd::BorrowedFd::borrow_raw(alive_fd);
            let mut poll = [nix::poll::PollFd::new(alive, nix::poll::PollFlags::POLLIN)];
            nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO)?;
            if poll[0].revents().is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP)) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // A guest's shell has systemd's umask, not the one the driver gives its own
            // children (077): copies into the guest keep their permission bits as on a VM.
            nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
            // A /proc of the guest's own pid namespace, where the kernel allows it.
            let none = None::<&std::ffi::CStr>;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            let _ = mount(Some(c"proc"), c"/proc", Some(c"proc"), flags, none);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(alive);
    // The guest's pipes must close when bash and its children do, not when this process does.
    let null = open(c"/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    loop {
        match signals.wait()? {
            Signal::SIGCHLD => {
                if let Some(status) = child.try_wait()? {
                    return Ok(status_code(status));
                }
            }
            _ => {
                // pid 1 dying makes the kernel kill and reap the whole pid namespace before
                // this wait returns.
                let _ = child.kill();
                let _ = child.wait();
                drop(alive_writer);
                return Ok(STOPPED_STATUS);
            }
        }
    }
}

/// An exit status as a shell's `$?`: the code, or 128 + the signal.
pub fn status_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(255)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_path_puts_the_tools_first() {
        let path = guest_path(Path::new("/s/bin"), Some("/nix/store/x/bin:/usr/bin::/s/bin".as_ref()));
        assert_eq!(path, "/s/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/nix/store/x/bin");
    }

    #[test]
    fn proc_fd_paths_without_allocating() {
        let mut buf = [0u8; 32];
        assert_eq!(proc_fd_path(0, &mut buf).expect("fd 0"), c"/proc/self/fd/0");
        assert_eq!(proc_fd_path(1234567, &mut buf).expect("a large fd"), c"/proc/self/fd/1234567");
        assert!(proc_fd_path(-1, &mut buf).is_err());
    }

    #[test]
    fn a_hidden_fake_dir_is_rebuilt_in_the_tmpfs() {
        let dir = tempfile::Builder::new().tempdir_in("/tmp").expect("temp dir under /tmp");
        let fake = dir.path().join("state").join("ntd-fake");
        std::fs::create_dir_all(&fake).expect("fake dir");
        let plan = GuestPlan::prepare(&fake, &fake.join("bin"), ("X", &fake.join("control")), Some(dir.path()), "m")
            .expect("plan");
        let bind = plan.fake_dir.as_ref().expect("under /tmp: bound");
        let parents: Vec<&[u8]> = bind.parents.iter().map(|p| p.as_bytes()).collect();
        assert_eq!(parents.len(), 3);
        assert_eq!(parents[0], dir.path().as_os_str().as_bytes());
        assert_eq!(parents[2], fake.as_os_str().as_bytes());
        assert_eq!(plan.shared.as_ref().map(|b| b.target.as_bytes()), Some(&b"/tmp/shared"[..]));
        assert!(plan.env.iter().any(|(k, v)| k == "X" && v == fake.join("control").as_os_str()));
    }
}
