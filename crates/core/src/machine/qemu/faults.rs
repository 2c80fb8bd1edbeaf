//! Console lines that mean a QEMU guest can no longer answer: a kernel panic, or the end of
//! NixOS's `backdoor.service`.
//!
//! Upstream waits for the command in flight until its timeout in these cases; ntd watches the
//! serial console and fails the command at once, naming the line.

/// A console line that means the backdoor shell is gone although QEMU still runs: nothing
/// would ever answer the command in flight, which upstream then waits for until its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFault {
    /// The kernel panicked (NixOS boots with `panic=1`: the guest reboots a second later).
    KernelPanic(String),
    /// systemd reports the end of `backdoor.service` (NixOS forwards the journal to the
    /// serial console).
    BackdoorExited(String),
}

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestFault::KernelPanic(line) => write!(f, "the guest kernel panicked: {line}"),
            GuestFault::BackdoorExited(line) => write!(f, "the backdoor shell exited: {line}"),
        }
    }
}

/// The fault a console line reports, if any. Only whole messages count: the kernel's (after
/// its timestamp) and systemd's own (`systemd[1]: backdoor.service: …`, as journald forwards
/// them), so a command that prints such text in the middle of a line (its stderr goes to the
/// same console) or an old journal (`journalctl -b -1`, with dates) is not taken for one.
pub fn fault_in(line: &str) -> Option<GuestFault> {
    const BACKDOOR_ENDED: [&str; 3] = [
        "backdoor.service: Main process exited",
        "backdoor.service: Deactivated successfully",
        "backdoor.service: Failed with result",
    ];
    let message = strip_timestamp(line.trim_start());
    if message.starts_with("Kernel panic - not syncing") {
        return Some(GuestFault::KernelPanic(message.to_owned()));
    }
    let unit_message = message.strip_prefix("systemd[1]: ").unwrap_or(message);
    BACKDOOR_ENDED
        .iter()
        .any(|needle| unit_message.starts_with(needle))
        .then(|| GuestFault::BackdoorExited(unit_message.to_owned()))
}

/// `line` without a leading kernel timestamp (`[   12.345678] `).
fn strip_timestamp(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('[') else { return line };
    match rest.split_once(']') {
        Some((stamp, message)) if stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.') => message.trim_start(),
        _ => line,
    }
}

/// [`fault_in`] as the console's classifier: the fault described for an error message.
pub(crate) fn describe_fault(line: &str) -> Option<String> {
    fault_in(line).map(|fault| fault.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_recognised_and_quoted_without_timestamps() {
        assert_eq!(
            fault_in("[   12.034567] Kernel panic - not syncing: sysrq triggered crash"),
            Some(GuestFault::KernelPanic("Kernel panic - not syncing: sysrq triggered crash".into()))
        );
        let exited = "systemd[1]: backdoor.service: Main process exited, code=killed, status=9/KILL";
        assert_eq!(
            fault_in(exited),
            Some(GuestFault::BackdoorExited(
                "backdoor.service: Main process exited, code=killed, status=9/KILL".into()
            ))
        );
        assert_eq!(
            fault_in("[   13.5] backdoor.service: Deactivated successfully."),
            Some(GuestFault::BackdoorExited("backdoor.service: Deactivated successfully.".into()))
        );
        assert!(fault_in("[  OK  ] Started backdoor.service.").is_none());
        assert!(fault_in("kernel: panic=1 on the command line").is_none());
        // Text a command prints, or an old boot's journal, is not a fault.
        assert!(fault_in("+ echo Kernel panic - not syncing").is_none());
        assert!(fault_in("Dec 02 02:10:11 machine systemd[1]: backdoor.service: Deactivated successfully.").is_none());
        assert!(fault_in("[  OK  ] Kernel panic - not syncing").is_none());
    }
}
