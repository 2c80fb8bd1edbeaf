//! The systemd helpers: `systemctl`, unit properties, and waiting for units.
//!
//! `wait_for_unit` keeps upstream's rules (active: done; failed: error at once; inactive with
//! no job queued: error at once; anything else: keep waiting) but runs inside the guest: one
//! check with `systemctl show`, then the unit's state changes as systemd signals them
//! ([`super::unit_events`]), each `failed` or `inactive` checked again with the same rules.
//! Where the guest cannot follow the signals, the loop polls instead, pausing 0.1 s between
//! the first twenty checks, 0.25 s between the next thirty-two, then 0.5 s: each `systemctl
//! show` costs a TCG vCPU about 60 ms, so the pace slows as the wait grows, and a long wait
//! costs the guest about what upstream's once-a-second polling from the host does.

use std::collections::BTreeMap;
use std::time::Duration;

use super::quote::shell_quote;
use super::unit_events;
use super::waits::{GuestWait, NAP};
use super::{Error, ExecuteOptions, Machine, Result};
use crate::log;

/// Exit statuses of the unit wait loop (0 means the state was reached).
const UNIT_FAILED: i32 = 3;
const UNIT_INACTIVE: i32 = 4;
const SHOW_FAILED: i32 = 5;

/// The in-guest wait for `unit`'s `ActiveState`. With `target` it waits for that state and
/// nothing else ends it early; without, it follows `wait_for_unit`'s rules. It checks once,
/// then follows the unit through systemd's signals where the guest can
/// ([`super::unit_events`]), else polls with `systemctl`.
fn unit_wait_script(unit: &str, target: Option<&str>) -> String {
    let (decide, on_state) = match target {
        Some(state) => {
            let state = shell_quote(state);
            (format!("  [ \"$s\" = {state} ] && exit 0\n"), format!("    [ \"$st\" = {state} ] && exit 0\n"))
        }
        None => (
            format!(
                "  case $s in\n\
                 \x20   active) exit 0 ;;\n\
                 \x20   failed) exit {UNIT_FAILED} ;;\n\
                 \x20   inactive)\n\
                 \x20     if systemctl list-jobs --full 2>&1 | grep -q 'No jobs'; then\n\
                 \x20       out=$(systemctl --no-pager show \"$u\") || {{ echo $?; exit {SHOW_FAILED}; }}\n\
                 \x20       case \"$out\" in ActiveState=inactive*|*\"\n\
                 ActiveState=inactive\"*) exit {UNIT_INACTIVE} ;; esac\n\
                 \x20     fi ;;\n\
                 \x20 esac\n"
            ),
            "    case $st in active) exit 0 ;; failed|inactive) check ;; esac\n".to_owned(),
        ),
    };
    let follow = shell_quote(&unit_events::follow_script(&on_state));
    format!(
        "set +eu +o pipefail\n\
         u={unit}\n\
         {NAP}\
         check() {{\n\
         \x20 out=$(systemctl --no-pager show \"$u\" --property=Id,ActiveState) || {{ echo $?; exit {SHOW_FAILED}; }}\n\
         \x20 case $out in Id=*) id=${{out#Id=}} ;; *\"\nId=\"*) id=${{out#*\"\nId=\"}} ;; esac\n\
         \x20 id=${{id%%\"\n\"*}}\n\
         \x20 s=${{out#*ActiveState=}}\n\
         \x20 s=${{s%%\"\n\"*}}\n\
         {decide}\
         }}\n\
         check\n\
         if [ -n \"${{BASH_VERSION:-}}\" ] && command -v systemd-stdio-bridge >/dev/null 2>&1; then\n\
         \x20 __ntd_follow() {{ eval {follow}; }}\n\
         \x20 __ntd_follow\n\
         \x20 kill \"${{__ntd_bus_PID:-}}\" 2>/dev/null\n\
         fi\n\
         n=0\n\
         while :; do\n\
         \x20 n=$((n+1))\n\
         \x20 if [ $n -le 20 ]; then nap 0.1; elif [ $n -le 52 ]; then nap 0.25; else nap 0.5; fi\n\
         \x20 check\n\
         done\n",
        unit = shell_quote(unit),
    )
}

impl Machine {
    /// Upstream's `systemctl(q, user=None)`: run `systemctl <q>`, as `user` with `--user`.
    pub async fn systemctl(&self, query: &str, user: Option<&str>) -> Result<(i32, Vec<u8>)> {
        let command = match user {
            Some(user) => {
                let query = query.replace('\'', "\\'");
                format!("su -l {user} --shell /bin/sh -c $'XDG_RUNTIME_DIR=/run/user/`id -u` systemctl --user {query}'")
            }
            None => format!("systemctl {query}"),
        };
        self.execute(&command, ExecuteOptions::default()).await
    }

    /// Upstream's `start_job(jobname, user=None)`: `systemctl start`.
    pub async fn start_job(&self, job: &str, user: Option<&str>) -> Result<(i32, Vec<u8>)> {
        self.systemctl(&format!("start {job}"), user).await
    }

    /// Upstream's `stop_job(jobname, user=None)`: `systemctl stop`.
    pub async fn stop_job(&self, job: &str, user: Option<&str>) -> Result<(i32, Vec<u8>)> {
        self.systemctl(&format!("stop {job}"), user).await
    }

    /// Upstream's `get_unit_info(unit, user=None)`: every property `systemctl show` prints.
    pub async fn get_unit_info(&self, unit: &str, user: Option<&str>) -> Result<BTreeMap<String, String>> {
        let (status, output) = self.systemctl(&format!("--no-pager show \"{unit}\""), user).await?;
        if status != 0 {
            return Err(Error::SystemctlFailed {
                what: "info".into(),
                unit: unit.to_owned(),
                user: user.map(str::to_owned),
                status,
            });
        }
        Ok(String::from_utf8_lossy(&output)
            .split('\n')
            .filter_map(|line| line.split_once('=').filter(|(key, _)| !key.is_empty()))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect())
    }

    /// Upstream's `get_unit_property(unit, property, user=None)`.
    pub async fn get_unit_property(&self, unit: &str, property: &str, user: Option<&str>) -> Result<String> {
        let query = format!("--no-pager show \"{unit}\" --property=\"{property}\"");
        let (status, output) = self.systemctl(&query, user).await?;
        if status != 0 {
            return Err(property_failed(unit, property, user, status));
        }
        let output = String::from_utf8_lossy(&output);
        // Upstream matches `^([^=]+)=(.*)$` against the whole output: the first line.
        let first = output.split('\n').next().unwrap_or_default();
        match first.split_once('=') {
            Some((key, value)) if key == property => Ok(value.to_owned()),
            _ => Err(Error::InvalidSystemctlOutput {
                property: property.to_owned(),
                unit: unit.to_owned(),
                output: output.into_owned(),
            }),
        }
    }

    /// Upstream's `require_unit_state(unit, require_state="active")`: the unit must be in
    /// that state now.
    pub async fn require_unit_state(&self, unit: &str, require_state: &str) -> Result<()> {
        let title = format!("checking if unit '{unit}' has reached state '{require_state}'");
        log::nested(Some(self.name()), &title, async {
            let info = self.get_unit_info(unit, None).await?;
            let state = info.get("ActiveState").cloned().unwrap_or_default();
            if state != require_state {
                return Err(Error::UnexpectedUnitState {
                    unit: unit.to_owned(),
                    expected: require_state.to_owned(),
                    state,
                });
            }
            Ok(())
        })
        .await
    }

    /// Upstream's `wait_for_unit(unit, user=None, timeout=900)`: wait until the unit is
    /// active; fail at once if it failed, or if it is inactive with no job pending.
    pub async fn wait_for_unit(&self, unit: &str, user: Option<&str>, timeout: Duration) -> Result<()> {
        let title = match user {
            Some(user) => format!("waiting for unit {unit} with user {user}"),
            None => format!("waiting for unit {unit}"),
        };
        log::nested(Some(self.name()), &title, async {
            // `--user` units go through `su` on every check; those keep upstream's polling.
            if user.is_some() || self.host_side_waits() {
                return self.wait_for_unit_from_host(unit, user, timeout).await;
            }
            let outcome = self.guest_wait(&unit_wait_script(unit, None), &title, timeout).await?;
            self.unit_wait_outcome(unit, outcome, timeout, async { self.unit_check(unit, None).await }).await
        })
        .await
    }

    /// Wait until the unit's `ActiveState` is `state` (`activating`, `failed`, …), whatever
    /// it passes through on the way.
    pub async fn wait_for_unit_active_state(&self, unit: &str, state: &str, timeout: Duration) -> Result<()> {
        let title = format!("waiting for unit {unit} to reach state {state}");
        let reached = || async { Ok::<_, Error>(self.get_unit_property(unit, "ActiveState", None).await? == state) };
        log::nested(Some(self.name()), &title, async {
            if self.host_side_waits() {
                crate::retry::retry(timeout, |_| reached()).await??;
                return Ok(());
            }
            let outcome = self.guest_wait(&unit_wait_script(unit, Some(state)), &title, timeout).await?;
            self.unit_wait_outcome(unit, outcome, timeout, reached()).await
        })
        .await
    }

    /// Turn the exit of a unit wait loop into upstream's result; after a timeout, one last
    /// check decides, as upstream's `retry` does.
    async fn unit_wait_outcome(
        &self,
        unit: &str,
        outcome: GuestWait,
        timeout: Duration,
        last_try: impl Future<Output = Result<bool>>,
    ) -> Result<()> {
        match outcome {
            GuestWait::Holds => Ok(()),
            GuestWait::TimedOut { started } => {
                if last_try.await? {
                    Ok(())
                } else {
                    Err(crate::retry::TimedOut { elapsed: started.elapsed(), timeout }.into())
                }
            }
            GuestWait::Exited { status: UNIT_FAILED, .. } => {
                Err(Error::UnitFailed { unit: unit.to_owned(), state: "failed".to_owned() })
            }
            GuestWait::Exited { status: UNIT_INACTIVE, .. } => Err(Error::UnitInactive { unit: unit.to_owned() }),
            GuestWait::Exited { status: SHOW_FAILED, output } => {
                let status = String::from_utf8_lossy(&output).trim().parse().unwrap_or(-1);
                Err(property_failed(unit, "ActiveState", None, status))
            }
            GuestWait::Exited { status, output } => Err(self.wait_loop_failed(status, &output)),
        }
    }

    /// One check with upstream's rules: `Ok(true)` when active, an error when it never will be.
    async fn unit_check(&self, unit: &str, user: Option<&str>) -> Result<bool> {
        let state = self.get_unit_property(unit, "ActiveState", user).await?;
        if state == "failed" {
            return Err(Error::UnitFailed { unit: unit.to_owned(), state });
        }
        if state == "inactive" {
            let (_, jobs) = self.systemctl("list-jobs --full 2>&1", user).await?;
            if memchr::memmem::find(&jobs, b"No jobs").is_some() {
                let info = self.get_unit_info(unit, user).await?;
                if info.get("ActiveState").map(String::as_str) == Some("inactive") {
                    return Err(Error::UnitInactive { unit: unit.to_owned() });
                }
            }
        }
        Ok(state == "active")
    }

    /// Upstream's loop: one check per second from the host (each check runs the callbacks).
    async fn wait_for_unit_from_host(&self, unit: &str, user: Option<&str>, timeout: Duration) -> Result<()> {
        crate::retry::retry(timeout, |_| self.unit_check(unit, user)).await??;
        Ok(())
    }
}

fn property_failed(unit: &str, property: &str, user: Option<&str>, status: i32) -> Error {
    Error::SystemctlFailed {
        what: format!("property \"{property}\""),
        unit: unit.to_owned(),
        user: user.map(str::to_owned),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest where a fake `systemd-stdio-bridge` plays the bus and a fake `systemctl` says
    /// the unit is `activating`, for ever: the wait can only end through the bus.
    struct FakeGuest {
        dir: tempfile::TempDir,
    }

    impl FakeGuest {
        fn new(state: &str) -> FakeGuest {
            let dir = tempfile::tempdir().expect("temp dir");
            let d = dir.path().display();
            let write = |name: &str, text: &str| {
                let path = dir.path().join(name);
                std::fs::write(&path, text).expect("write");
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
            };
            write("state", state);
            write(
                "systemctl",
                &format!(
                    "#!/bin/sh\ncase \"$*\" in *list-jobs*) echo 'No jobs running.' ;; \
                     *) printf 'Id=x.service\\nActiveState=%s\\n' \"$(cat {d}/state)\" ;; esac\n"
                ),
            );
            // It answers the barrier once it has read the client's messages, then a moment
            // later changes the state to `state-then` and sends the signals in `signals`, if
            // there are.
            write(
                "systemd-stdio-bridge",
                &format!(
                    "#!/bin/bash\nhead -c \"$(stat -c %s {d}/expected)\" > {d}/received\n\
                     printf 'OK 0123456789abcdef0123456789abcdef\\r\\n'; cat {d}/barrier\n\
                     sleep 0.3; [ -e {d}/state-then ] && cp {d}/state-then {d}/state\n\
                     [ -e {d}/signals ] && cat {d}/signals\nexec cat >/dev/null\n"
                ),
            );
            FakeGuest { dir }
        }

        /// Run the wait script in bash with the fakes first on PATH; its exit status.
        fn wait(&self, script: &str, expected_length: usize, signals: &[u8]) -> i32 {
            let path = self.dir.path();
            std::fs::write(path.join("expected"), vec![0u8; expected_length]).expect("write");
            let mut barrier = b"l\x03\x01\x01org.freedesktop.DBus.Error.UnknownMethod".to_vec();
            barrier.extend_from_slice(b"\0\0\0");
            std::fs::write(path.join("barrier"), barrier).expect("write");
            if !signals.is_empty() {
                std::fs::write(path.join("signals"), signals).expect("write");
            }
            let search = format!("{}:{}", path.display(), std::env::var("PATH").unwrap_or_default());
            let mut child =
                std::process::Command::new("bash").arg("-c").arg(script).env("PATH", search).spawn().expect("bash");
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    return status.code().unwrap_or(-1);
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return -1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn received(&self) -> Vec<u8> {
            std::fs::read(self.dir.path().join("received")).expect("what the bridge read")
        }
    }

    /// The length of what the wait writes to the bus for `x.service`.
    fn bytes_sent_for_x() -> usize {
        let script = unit_events::follow_script("");
        let rule = "type='signal',sender='org.freedesktop.systemd1',path='/org/freedesktop/systemd1/unit/x_2eservice',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',arg0='org.freedesktop.systemd1.Unit'";
        // Every `\\xHH` in the script is one byte; the two lengths and the rule come on top.
        script.matches("\\\\x").count() - 8 + 8 + rule.len() + 1
    }

    #[test]
    fn a_unit_turning_active_ends_the_wait_through_the_bus() {
        let guest = FakeGuest::new("activating");
        let signal = unit_events::active_state_signal("/org/freedesktop/systemd1/unit/x_2eservice", "active");
        let status = guest.wait(&unit_wait_script("x.service", None), bytes_sent_for_x(), &signal);
        assert_eq!(status, 0, "systemctl says activating for ever: only the signal can end the wait");
        let received = guest.received();
        let text = String::from_utf8_lossy(&received);
        assert!(received.starts_with(b"\0AUTH EXTERNAL 30\r\nBEGIN\r\nl\x01\x00\x01"), "{text:?}");
        for needle in
            ["Hello", "AddMatch", "path='/org/freedesktop/systemd1/unit/x_2eservice'", "Subscribe", "NtdSubscribed"]
        {
            assert!(text.contains(needle), "{needle} in {text:?}");
        }
        // AddMatch's body length and the rule's length, put together in the guest.
        let rule_at = memchr::memmem::find(&received, b"type='signal'").expect("the rule");
        let rule_length = u32::from_le_bytes(received[rule_at - 4..rule_at].try_into().expect("four bytes")) as usize;
        assert_eq!(&received[rule_at + rule_length..rule_at + rule_length + 1], b"\0");
        assert!(received[rule_at..rule_at + rule_length].ends_with(b"arg0='org.freedesktop.systemd1.Unit'"));
    }

    #[test]
    fn a_failed_signal_is_checked_with_upstreams_rules_and_a_target_state_ends_its_wait() {
        // `failed` in a signal: the check (systemctl now says failed) decides.
        let guest = FakeGuest::new("activating");
        std::fs::write(guest.dir.path().join("state-then"), "failed").expect("write");
        let signal = unit_events::active_state_signal("/org/freedesktop/systemd1/unit/x_2eservice", "failed");
        assert_eq!(guest.wait(&unit_wait_script("x.service", None), bytes_sent_for_x(), &signal), UNIT_FAILED);

        // wait_for_unit_active_state: the signal's state is the one waited for.
        let guest = FakeGuest::new("activating");
        let signal = unit_events::active_state_signal("/org/freedesktop/systemd1/unit/x_2eservice", "deactivating");
        assert_eq!(guest.wait(&unit_wait_script("x.service", Some("deactivating")), bytes_sent_for_x(), &signal), 0);
    }

    /// The scripts must parse in the shells guests have (bash, busybox ash).
    #[test]
    fn unit_wait_scripts_parse_in_posix_shells() {
        for script in [unit_wait_script("multi-user.target", None), unit_wait_script("x.service", Some("failed"))] {
            for shell in crate::machine::waits::tests::GUEST_SHELLS {
                let status = std::process::Command::new(shell[0])
                    .args(&shell[1..])
                    .arg("-n")
                    .arg("-c")
                    .arg(&script)
                    .status()
                    .expect("run shell");
                assert!(status.success(), "{shell:?} cannot parse:\n{script}");
            }
        }
    }
}
