//! A stand-in for nixpkgs' container start script (`run-<name>-nspawn`) that speaks the real
//! contract without systemd-nspawn or a root file system: it is run with nothing but
//! `RUN_NSPAWN_ROOT_DIR`, `RUN_NSPAWN_SHARED_DIR` and `NOTIFY_SOCKET` in its environment, and
//! makes an "init" in a PID and mount namespace of its own (where `/bin/sh` is bash and
//! `/tmp/shared` is the shared directory, as in a NixOS container), then reports
//! `X_NSPAWN_LEADER_PID=` and `READY=1` on the notify socket as systemd-nspawn does. Commands
//! reach it through `nsenter` like any container's. SIGTERM ends the container; killing its
//! init ends every command in it, as in a real one. Needs root (namespaces, mounts), as a
//! real container does.
//!
//! A [`Behaviour`] turns the script into one of the faults a real container shows.

use std::io;
use std::path::{Path, PathBuf};

/// What the fake container does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Boot and report ready.
    Ready,
    /// Start its init and report it, but never `READY=1` (a container whose systemd hangs).
    NeverReady,
    /// Print a message on stderr and exit with this status before anything is reported.
    ExitEarly(i32),
    /// Boot, then print this many bytes on stdout, then create `chatter-done` in the root
    /// directory: a container whose console output fills any pipe that is not read.
    Chatty(usize),
}

/// A `run-<name>-nspawn` script for the fake container.
#[derive(Debug, Clone)]
pub struct ContainerScript {
    name: String,
    behaviour: Behaviour,
}

impl ContainerScript {
    /// A script for the container `name` that boots normally.
    pub fn new(name: impl Into<String>) -> ContainerScript {
        ContainerScript { name: name.into(), behaviour: Behaviour::Ready }
    }

    /// Behave as `behaviour`.
    pub fn behaviour(mut self, behaviour: Behaviour) -> ContainerScript {
        self.behaviour = behaviour;
        self
    }

    /// The script's text.
    pub fn text(&self) -> String {
        let (before_ready, ready, after_ready) = match self.behaviour {
            Behaviour::Ready => (String::new(), true, String::new()),
            Behaviour::NeverReady => (String::new(), false, String::new()),
            Behaviour::ExitEarly(status) => {
                (format!("echo 'fake-nspawn: giving up on purpose' >&2\nexit {status}\n"), true, String::new())
            }
            Behaviour::Chatty(bytes) => (
                String::new(),
                true,
                format!("head -c {bytes} /dev/zero | tr '\\0' 'x' | fold -w 100\ntouch \"$root/chatter-done\"\n"),
            ),
        };
        let ready = if ready { "READY=1\\n" } else { "" };
        format!(
            r#"#!/bin/bash
# A fake run-{name}-nspawn (ntd-fake): see ntd_fake::container.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
set -euo pipefail
root=${{RUN_NSPAWN_ROOT_DIR:?}}
shared=${{RUN_NSPAWN_SHARED_DIR:?}}
notify=${{NOTIFY_SOCKET:?}}
{before_ready}
# The init: PID 1 of its own PID namespace, in a private mount namespace whose /bin/sh is
# bash and whose /tmp/shared is the shared directory.
unshare --pid --fork --kill-child --mount-proc --mount --propagation private bash -c '
  set -e
  # Opened before /tmp is covered: says when the mounts are done.
  exec 4>"$2"
  mount --bind /bin/bash /bin/sh
  # The shared directory may be under /tmp: hold it on /mnt while /tmp gets a tmpfs.
  mount -t tmpfs none /mnt
  mkdir /mnt/shared
  mount --bind "$1" /mnt/shared
  mount -t tmpfs none /tmp
  mkdir /tmp/shared
  mount --move /mnt/shared /tmp/shared
  echo ready >&4
  exec 4>&-
  # An init reaps the orphans of the commands, as systemd does.
  while :; do sleep 1 & wait $!; done
' init "$shared" "$root/.fake-init-ready" &
unshare_pid=$!
trap 'kill -KILL "$unshare_pid" 2>/dev/null; wait "$unshare_pid" 2>/dev/null; exit 0' TERM INT
init=
for _ in $(seq 500); do
  init=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null || true)
  init=${{init%% *}}
  [ -n "$init" ] && [ -s "$root/.fake-init-ready" ] && break
  sleep 0.01
done
rm -f "$root/.fake-init-ready"
echo "systemd-nspawn's PID is $unshare_pid"
echo "Spawning container {name} on $root."
printf 'STATUS=Container running.\nX_NSPAWN_LEADER_PID=%s\n{ready}' "$init" | socat -u - "UNIX-SENDTO:$notify"
{after_ready}
wait "$unshare_pid" || true
echo "Container {name} exited."
"#,
            name = self.name,
        )
    }

    /// Write the script as `<dir>/run-<name>-nspawn` (executable) and return its path.
    pub fn write(&self, dir: &Path) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("run-{}-nspawn", self.name));
        std::fs::write(&path, self.text())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }
}
