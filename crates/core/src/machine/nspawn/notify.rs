//! The `NOTIFY_SOCKET` of a container's start script: systemd-nspawn reports there, in
//! sd_notify(3)'s datagrams, the pid of the container's init (`X_NSPAWN_LEADER_PID=<pid>`)
//! and when the container is up (`READY=1`; with `--notify-ready=yes`, when the container's
//! systemd finished booting). Upstream's `NspawnMachine` waits for both.

use std::path::Path;

use tokio::net::UnixDatagram;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What systemd-nspawn reported so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyState {
    /// `READY=1` arrived.
    pub ready: bool,
    /// The container's init, from `X_NSPAWN_LEADER_PID=`.
    pub leader: Option<u32>,
    /// The last `STATUS=` text.
    pub status: Option<String>,
}

impl NotifyState {
    /// Apply one datagram (newline-separated `KEY=VALUE` assignments); unknown keys are
    /// ignored, as sd_notify's receivers do.
    pub fn apply(&mut self, datagram: &[u8]) {
        for line in String::from_utf8_lossy(datagram).lines() {
            match line.split_once('=') {
                Some(("READY", "1")) => self.ready = true,
                Some(("X_NSPAWN_LEADER_PID", pid)) => self.leader = pid.trim().parse().ok().filter(|pid| *pid > 1),
                Some(("STATUS", status)) => self.status = Some(status.to_owned()),
                _ => {}
            }
        }
    }
}

/// Bind the datagram socket at `path` (replacing a stale one), only for the user: whoever can
/// write to it can claim the container's readiness.
pub(super) fn bind(path: &Path) -> std::io::Result<UnixDatagram> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let socket = UnixDatagram::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(socket)
}

/// Read datagrams from `socket` for as long as it is open, publishing the state on a watch.
/// Reading goes on after `READY=1` so the socket never fills up.
pub(super) fn listen(socket: UnixDatagram, machine: String) -> (watch::Receiver<NotifyState>, JoinHandle<()>) {
    let (publish, state) = watch::channel(NotifyState::default());
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match socket.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    crate::log::debug(Some(&machine), &format!("the notify socket failed: {e}"));
                    break;
                }
            };
            publish.send_modify(|state| state.apply(&buf[..n]));
        }
    });
    (state, task)
}

#[cfg(test)]
mod tests {
    use super::NotifyState;

    #[test]
    fn ready_and_leader_come_in_any_datagrams() {
        let mut state = NotifyState::default();
        state.apply(b"STATUS=Container running.\nX_NSPAWN_LEADER_PID=4242\n");
        assert_eq!(state.leader, Some(4242));
        assert!(!state.ready);
        state.apply(b"READY=1");
        assert!(state.ready);
        assert_eq!(state.status.as_deref(), Some("Container running."));
    }

    #[test]
    fn nonsense_is_ignored() {
        let mut state = NotifyState::default();
        state.apply(b"READY=0\nX_NSPAWN_LEADER_PID=one\nX_NSPAWN_LEADER_PID=1\n\xff\xfe");
        assert_eq!(state, NotifyState::default());
    }
}
