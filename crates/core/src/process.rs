//! Supervision of the processes ntd starts: QEMU (through its start script) and vde_switch.
//!
//! Every child:
//! - runs in a process group of its own, so stopping it reaches whatever its start script
//!   forked (Debian's `/bin/sh` is dash, which does not exec the last command of `sh -c`; the
//!   upstream driver hangs there), and a Ctrl-C on the terminal reaches only the driver, which
//!   then stops its children in order;
//! - gets SIGKILL if the driver itself dies (`PR_SET_PDEATHSIG`). That signal follows the
//!   *thread* that forked, so children are forked from one long-lived spawner thread and never
//!   from a Python thread or a tokio worker that may end before the child;
//! - has a reaper thread of its own that publishes its exit status on a `watch`, so any number
//!   of waiters can race its exit against their own I/O;
//! - is stopped with SIGTERM, a grace period, then SIGKILL to the group, and is killed when
//!   its handle is dropped, also on panic.
//!
//! # Signals only while the leader is unreaped
//!
//! A process group id is the pid of its leader, and once the leader is reaped the kernel may
//! hand that number to an unrelated process, which may then lead a group of its own: a
//! `killpg` after the reap can hit a stranger. While the leader is a zombie, though, its pid is
//! in use and the group id cannot be reused. So the reaper does not reap at once:
//!
//! 1. it waits for the leader's exit with `waitid(P_PID, pid, WEXITED | WNOWAIT)`, which
//!    reports the exit and leaves the zombie in place;
//! 2. it takes the group's lock, SIGKILLs the rest of the group (what a start script left
//!    behind), reaps the leader, marks the group reaped and releases the lock;
//! 3. it publishes the exit status.
//!
//! Every signal ntd sends ([`Child::signal_group`], [`Child::stop`], `Drop`) takes the same
//! lock and is skipped once the group is marked reaped, so no signal is ever sent to a group id
//! that may have been reused. A published exit status therefore also means that the rest of
//! the group was killed. This is why the child is spawned with `std::process::Command` and not
//! tokio's: tokio would reap the leader itself, with nothing to hold the group id meanwhile.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::{Id, WaitPidFlag, waitid, waitpid};
use nix::unistd::{Pid, getpid, getppid, setpgid};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{oneshot, watch};

use crate::log;

/// A supervised child process, leader of its own process group.
#[derive(Debug)]
pub struct Child {
    group: Arc<Group>,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// The child's stdin, if it was piped.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, if it was piped.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, if it was piped.
    pub stderr: Option<ChildStderr>,
}

/// A child's process group, shared by its handle and its reaper thread.
#[derive(Debug)]
struct Group {
    /// The leader's pid, which is the group id.
    leader: Pid,
    /// Whether the leader has been reaped. The reaper holds this lock from the group kill to
    /// the reap, and every signal is sent under it, only while this is false (see the module
    /// documentation).
    reaped: Mutex<bool>,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, bool> {
        // The lock guards a flag that is only ever set: a panic cannot leave it inconsistent.
        self.reaped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Send `signal` to the group if its leader is not reaped yet; whether it was sent.
    fn signal(&self, signal: Signal) -> bool {
        let reaped = self.lock();
        // ESRCH cannot happen while the leader is unreaped; any error means nothing was sent.
        !*reaped && killpg(self.leader, signal).is_ok()
    }
}

/// A forked child, as the spawner thread hands it back.
struct Spawned {
    group: Arc<Group>,
    exit: watch::Receiver<Option<ExitStatus>>,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
}

struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<io::Result<Spawned>>,
}

fn spawner_gone() -> io::Error {
    io::Error::other("the ntd spawner thread is gone")
}

/// The one thread all children are forked from (see the module documentation), started on
/// first use.
fn spawner() -> io::Result<std_mpsc::Sender<SpawnRequest>> {
    static SPAWNER: Mutex<Option<std_mpsc::Sender<SpawnRequest>>> = Mutex::new(None);
    let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(requests) = spawner.as_ref() {
        return Ok(requests.clone());
    }
    let (requests, incoming) = std_mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new().name("ntd-spawner".into()).spawn(move || {
        for mut request in incoming {
            // The caller gave up waiting (its future was dropped): nobody will stop the child.
            if let Err(Ok(spawned)) = request.reply.send(start(&mut request.command)) {
                spawned.group.signal(Signal::SIGKILL);
            }
        }
    })?;
    *spawner = Some(requests.clone());
    Ok(requests)
}

/// Fork `command` and start its reaper thread. Runs on the spawner thread.
fn start(command: &mut Command) -> io::Result<Spawned> {
    let mut child = command.spawn()?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let leader = match i32::try_from(child.id()) {
        // Never treat group 0 (our own) or 1 as the child's.
        Ok(pid) if pid > 1 => Pid::from_raw(pid),
        _ => {
            let pid = child.id();
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("the child got an impossible pid {pid}")));
        }
    };
    let group = Arc::new(Group { leader, reaped: Mutex::new(false) });
    let (publish, exit) = watch::channel(None);
    let reaper_group = Arc::clone(&group);
    // A detached thread: it holds neither the process nor a runtime open, and ends with the
    // child (the kernel shows the first 15 bytes of its name).
    let reaper = std::thread::Builder::new()
        .name(format!("ntd-reap-{leader}"))
        .spawn(move || reap(child, &reaper_group, &publish));
    if let Err(e) = reaper {
        // The child went down with the closure, unreaped (std's Child neither kills nor waits
        // on drop): kill and reap it here, under the lock like the reaper would.
        let mut reaped = group.lock();
        let _ = killpg(leader, Signal::SIGKILL);
        while waitpid(leader, None) == Err(Errno::EINTR) {}
        *reaped = true;
        return Err(e);
    }
    Ok(Spawned { group, exit, stdin, stdout, stderr })
}

/// The reaper thread's body: see the module documentation for the order of its steps.
fn reap(mut child: std::process::Child, group: &Group, publish: &watch::Sender<Option<ExitStatus>>) {
    let exited = loop {
        match waitid(Id::Pid(group.leader), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => {}
            result => break result,
        }
    };
    let status = {
        let mut reaped = group.lock();
        let status = match exited {
            Ok(_) => {
                // The leader is a zombie and still holds the group id.
                let _ = killpg(group.leader, Signal::SIGKILL);
                child.wait()
            }
            // Only ECHILD is possible: something else reaped our child, so its pid may already
            // be reused and nothing may be signalled any more.
            Err(errno) => Err(io::Error::from(errno)),
        };
        *reaped = true;
        status
    };
    let status = status.unwrap_or_else(|e| {
        // Report it as a kill by SIGKILL, which is what the caller can act on: the process
        // is gone or unreachable.
        log::warning(None, &format!("cannot reap process {}: {e}", group.leader));
        ExitStatus::from_raw(Signal::SIGKILL as i32)
    });
    // No receiver left means nobody is interested any more.
    let _ = publish.send(Some(status));
}

impl Child {
    /// Spawn `command` supervised. Must be called from within a tokio runtime (the piped
    /// stdio are registered with it). A program that cannot be started is an error.
    pub async fn spawn(command: Command) -> io::Result<Child> {
        Child::spawn_with_death_signal(command, Signal::SIGKILL).await
    }

    /// [`Child::spawn`], but the child gets `death_signal` instead of SIGKILL if the driver
    /// dies: a container's start script gets SIGTERM, so that it still removes the network
    /// namespace, veths and bridge it made.
    pub async fn spawn_with_death_signal(mut command: Command, death_signal: Signal) -> io::Result<Child> {
        let driver = getpid();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (umask, setpgid, prctl, getppid) through nix's thin
        // wrappers; its errors are raw OS errors, which do not allocate (nix's umask cannot
        // panic: the old mask always fits `Mode`).
        unsafe {
            command.pre_exec(move || {
                // What children create (QEMU's QMP socket, a start script's disk image and
                // shared directories) is the user's alone.
                umask(Mode::S_IRWXG | Mode::S_IRWXO);
                setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                nix::sys::prctl::set_pdeathsig(death_signal)?;
                // The driver may have died between fork and prctl.
                if getppid() != driver {
                    return Err(Errno::ESRCH.into());
                }
                Ok(())
            });
        }
        let (reply, response) = oneshot::channel();
        spawner()?.send(SpawnRequest { command, reply }).map_err(|_| spawner_gone())?;
        let spawned = response.await.map_err(|_| spawner_gone())??;
        // From here on, an error drops `child`, which kills its group.
        let mut child = Child { group: spawned.group, exit: spawned.exit, stdin: None, stdout: None, stderr: None };
        child.stdin = spawned.stdin.map(ChildStdin::from_std).transpose()?;
        child.stdout = spawned.stdout.map(ChildStdout::from_std).transpose()?;
        child.stderr = spawned.stderr.map(ChildStderr::from_std).transpose()?;
        Ok(child)
    }

    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        // Positive: checked when the child was spawned.
        self.group.leader.as_raw().unsigned_abs()
    }

    /// The exit status, if the child has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// A receiver that sees the exit status once the child exits; for racing it against I/O.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    /// Wait until the child exits.
    pub async fn wait(&self) -> ExitStatus {
        wait_exit(self.exit.clone()).await
    }

    /// Send `signal` to the child's whole process group, and say whether it was sent. Once the
    /// child is reaped (before its exit status is published) nothing is sent: its group id may
    /// belong to someone else by then, and the rest of its group was already killed. Errors
    /// are ignored: the group being gone is what every caller wants.
    pub fn signal_group(&self, signal: Signal) -> bool {
        self.group.signal(signal)
    }

    /// Stop the child: SIGTERM to its group, `grace` to exit, then SIGKILL, and wait for it.
    /// Whatever is left in its group when it exits is killed by its reaper.
    pub async fn stop(&self, grace: Duration) -> ExitStatus {
        if self.exit_status().is_none() {
            self.signal_group(Signal::SIGTERM);
            if tokio::time::timeout(grace, self.wait()).await.is_err() {
                self.signal_group(Signal::SIGKILL);
            }
        }
        self.wait().await
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // The reaper thread reaps the child and kills the rest of its group; here we only make
        // sure the child dies. After its exit this sends nothing.
        self.signal_group(Signal::SIGKILL);
    }
}

/// The file `program` names in a directory of `PATH` (as Python's `shutil.which`, without the
/// executable check), if any.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Wait on an exit watch (see [`Child::exit_watch`]) until the exit status is known.
pub async fn wait_exit(mut exit: watch::Receiver<Option<ExitStatus>>) -> ExitStatus {
    loop {
        if let Some(status) = *exit.borrow_and_update() {
            return status;
        }
        if exit.changed().await.is_err() {
            // The reaper thread is gone without a word (it panicked): the last value is all
            // there is.
            return exit.borrow().unwrap_or_else(|| ExitStatus::from_raw(Signal::SIGKILL as i32));
        }
    }
}

/// Describe an exit status the way a shell user reads it: "exit code 1", "signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => match Signal::try_from(signal) {
            Ok(name) => format!("signal {signal} ({name})"),
            Err(_) => format!("signal {signal}"),
        },
        None => "an unknown status".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    /// A process in a group, as `/proc` shows it.
    #[derive(Debug)]
    struct Member {
        pid: u32,
        zombie: bool,
        /// SIGKILL is pending for it: it is as good as dead (it cannot block, ignore or catch it).
        doomed: bool,
    }

    /// The processes in group `pgid`.
    fn members(pgid: u32) -> Vec<Member> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // Fields after the command name (which may contain spaces) start after the
                // last ')'.
                let (_, rest) = stat.rsplit_once(')')?;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                if fields.len() <= 2 || fields[2] != pgid.to_string() {
                    return None;
                }
                let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                // A SIGKILL sent to a group stays in the shared pending set until the process
                // is reaped.
                let doomed = status.lines().any(|line| {
                    let Some(mask) = line.strip_prefix("ShdPnd:").or_else(|| line.strip_prefix("SigPnd:")) else {
                        return false;
                    };
                    u64::from_str_radix(mask.trim(), 16).is_ok_and(|mask| mask & (1 << (libc::SIGKILL - 1)) != 0)
                });
                Some(Member { pid, zombie: matches!(fields[0], "Z" | "X"), doomed })
            })
            .collect()
    }

    /// Whether any live (non-zombie) process is in group `pgid`. Orphaned zombies are reaped
    /// by pid 1 in its own time, which can take seconds on some machines.
    fn group_alive(pgid: u32) -> bool {
        members(pgid).iter().any(|member| !member.zombie)
    }

    /// The grandchild may take a moment to be gone after its group was signalled.
    async fn assert_group_gone(pgid: u32) {
        for _ in 0..250 {
            if !group_alive(pgid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("process group {pgid} survived: {:?}", members(pgid));
    }

    /// Wait (at most 5 s) until group `pgid` has `count` live processes.
    async fn wait_for_members(pgid: u32, count: usize) {
        for _ in 0..250 {
            if members(pgid).iter().filter(|member| !member.zombie).count() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("process group {pgid} never had {count} processes: {:?}", members(pgid));
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]).stdin(Stdio::null());
        command
    }

    #[tokio::test]
    async fn stop_reaches_grandchildren_of_a_shell() {
        // dash forks `sleep` instead of exec'ing it: the group kill must still reach it.
        let child = Child::spawn(shell("sleep 600; true")).await.expect("spawn sh");
        let pgid = child.pid();
        wait_for_members(pgid, 2).await;
        let status = child.stop(Duration::from_secs(5)).await;
        assert_eq!(describe_status(status), "signal 15 (SIGTERM)");
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn stop_kills_what_ignores_sigterm() {
        // The ignored SIGTERM is inherited by `sleep`: only the SIGKILL after the grace ends it.
        let child = Child::spawn(shell("trap '' TERM; sleep 600; true")).await.expect("spawn sh");
        let pgid = child.pid();
        wait_for_members(pgid, 2).await;
        let status = child.stop(Duration::from_millis(200)).await;
        assert_eq!(describe_status(status), "signal 9 (SIGKILL)");
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn exit_status_is_published() {
        let child = Child::spawn(shell("exit 3")).await.expect("spawn sh");
        assert_eq!(child.wait().await.code(), Some(3));
        assert_eq!(describe_status(child.exit_status().expect("exited")), "exit code 3");
    }

    #[tokio::test]
    async fn the_rest_of_the_group_is_killed_before_the_exit_is_published() {
        // The shell leaves a `sleep` in its group and exits by itself once its stdin closes.
        let mut command = shell("sleep 600 & read line; exit 0");
        command.stdin(Stdio::piped());
        let mut child = Child::spawn(command).await.expect("spawn sh");
        let pgid = child.pid();
        wait_for_members(pgid, 2).await;
        drop(child.stdin.take());
        assert_eq!(child.wait().await.code(), Some(0));
        // No waiting here: by the time the status is published every other member of the
        // group must have been sent SIGKILL, with no one calling stop or dropping the handle.
        let survivors: Vec<u32> = members(pgid)
            .into_iter()
            .filter(|member| !member.zombie && !member.doomed)
            .map(|member| member.pid)
            .collect();
        assert!(survivors.is_empty(), "pids not killed before the exit was published: {survivors:?}");
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn signal_group_sends_nothing_once_the_exit_is_published() {
        let mut command = shell("read line; exit 0");
        command.stdin(Stdio::piped());
        let mut child = Child::spawn(command).await.expect("spawn sh");
        // SIGCONT is harmless to a running shell: this only shows that a live group is signalled.
        assert!(child.signal_group(Signal::SIGCONT), "a running child's group is signalled");
        drop(child.stdin.take());
        assert_eq!(child.wait().await.code(), Some(0));
        assert!(!child.signal_group(Signal::SIGKILL), "the group id of a reaped leader was signalled");
        assert!(!child.signal_group(Signal::SIGTERM), "the group id of a reaped leader was signalled");
        // stop on an exited child only reports the status.
        assert_eq!(child.stop(Duration::from_secs(1)).await.code(), Some(0));
    }

    #[tokio::test]
    async fn drop_kills_the_group() {
        let child = Child::spawn(shell("sleep 600; true")).await.expect("spawn sh");
        let pgid = child.pid();
        wait_for_members(pgid, 2).await;
        let watch = child.exit_watch();
        drop(child);
        let status =
            tokio::time::timeout(Duration::from_secs(5), wait_exit(watch)).await.expect("child reaped after drop");
        assert_eq!(describe_status(status), "signal 9 (SIGKILL)");
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_an_error() {
        let error = Child::spawn(Command::new("/nonexistent/ntd-no-such-program"))
            .await
            .expect_err("a missing program cannot be spawned");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        // The spawner thread survives a failed spawn.
        let child = Child::spawn(shell("exit 0")).await.expect("spawn sh after a failure");
        assert!(child.wait().await.success());
    }

    #[test]
    fn statuses_are_described_with_signal_names() {
        assert_eq!(describe_status(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(describe_status(ExitStatus::from_raw(libc::SIGSEGV)), "signal 11 (SIGSEGV)");
        assert_eq!(describe_status(ExitStatus::from_raw(libc::SIGPIPE)), "signal 13 (SIGPIPE)");
    }
}
