//! The command channel on a real VM (tests/e2e/channel.py): a driver stopped for 3 s in the
//! middle of 32 MiB of output returns the exact bytes; output ends at the end of stdout, with
//! the warning for a background job that holds it; a command or an in-guest wait interrupted
//! by a KeyboardInterrupt or its timeout is gone from the guest's process table and the shell
//! answers within a second; the serial console keeps every line while the script is busy.
//! Ctrl-C in the REPL is in repl.rs, SIGTERM and the global timeout in signals.rs and
//! globals.rs; the console fallback for a guest without the ports is below.

use crate::harness::{SMOKE_LIMIT, Scenario, Tier, repo_file};

#[test]
fn no_byte_lost_output_to_eof_and_interruptions_stop_the_command_in_the_guest() {
    let mut scenario = Scenario::new();
    scenario.machine("machine", Tier::Smoke, &["--memory", "768"]);
    let run = scenario.run(&repo_file("tests/e2e/channel.py"), &[], SMOKE_LIMIT * 3);
    run.assert_status(0);
    run.assert_stderr_contains("command channel: command output through the virtio port org.nixos.ntd.out");
    for subtest in [
        "a stopped driver loses no byte",
        "output ends at the end of stdout",
        "KeyboardInterrupt stops the command in the guest",
        "KeyboardInterrupt stops the command tree and what holds its output",
        "an interrupted wait stops its loop in the guest",
        "a timeout stops the command in the guest",
        "console output is kept while the script is busy",
    ] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    // Upstream's warning for a command whose stdout a background job holds, once.
    let lingering = "`(echo ONE; sleep 15; echo TWO) &` has exited, but its stdout is still open after 10 seconds";
    assert_eq!(run.stderr.matches(lingering).count(), 1, "{}", run.stderr);
    run.assert_stderr_contains("`sleep 601` was interrupted: killed ");
    run.assert_stderr_contains("`echo started; sleep 606` timed out after 2 seconds: killed ");
    for line in run.stdout.lines().chain(run.stderr.lines()).filter(|line| line.contains("channel: ")) {
        println!("{line}");
    }
    scenario.assert_state_removed(&run);
}
