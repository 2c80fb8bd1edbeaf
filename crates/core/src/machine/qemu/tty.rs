//! What only a QEMU guest shows: its virtual consoles (`/dev/vcs<N>`) and its X display, read
//! through commands; and the switch from a systemd initrd with a backdoor to stage 2. Upstream
//! has these on `QemuMachine` only.

use std::time::Duration;

use super::QemuMachine;
use crate::log;
use crate::machine::{DEFAULT_TIMEOUT, ExecuteOptions, Result};

impl QemuMachine {
    /// Upstream's `get_tty_text(tty)`: the text on virtual console `tty`, folded to its width.
    pub async fn get_tty_text(&self, tty: &str) -> Result<Vec<u8>> {
        let command = format!("fold -w$(stty -F /dev/tty{tty} size | awk '{{print $2}}') /dev/vcs{tty}");
        Ok(self.execute(&command, ExecuteOptions::default()).await?.1)
    }

    /// Upstream's `dump_tty_contents(tty)`: put the console's text into the journal.
    pub async fn dump_tty_contents(&self, tty: &str) -> Result<()> {
        self.execute(&format!("fold -w 80 /dev/vcs{tty} | systemd-cat"), ExecuteOptions::default()).await?;
        Ok(())
    }

    /// Upstream's `wait_for_x(timeout=900)`: graphical target reached and the X socket there.
    pub async fn wait_for_x(&self, timeout: Duration) -> Result<()> {
        log::nested(Some(self.name()), "waiting for the X11 server", async {
            let check = "{ journalctl -b SYSLOG_IDENTIFIER=systemd | grep 'Reached target Current graphical' >/dev/null \
                         && [ -e /tmp/.X11-unix/X0 ]; }";
            self.wait_for_condition(check, "1", timeout).await
        })
        .await
    }

    /// Upstream's `switch_root()`: for a guest with a backdoor in its systemd initrd, wait
    /// for `initrd.target`, start the switch to stage 2 without waiting for an answer, and
    /// wait for the stage-2 backdoor.
    pub async fn switch_root(&self) -> Result<()> {
        self.wait_for_unit("initrd.target", None, DEFAULT_TIMEOUT).await?;
        let fire_and_forget = ExecuteOptions { check_return: false, check_output: false, ..ExecuteOptions::default() };
        self.execute("systemctl isolate --no-block initrd-switch-root.target 2>/dev/null >/dev/null", fire_and_forget)
            .await?;
        self.mark_disconnected();
        self.connect().await
    }
}
