//! Load (tests/e2e/load.py): four machines driven from Python threads, 10,000 sequential
//! commands with the driver's memory checked for growth, 64 MiB each way and 100 MiB of
//! output checked byte for byte, and the driver's peak memory under a stated bound.

use crate::harness::{SMOKE_LIMIT, Scenario, Tier, repo_file};

#[test]
fn four_machines_ten_thousand_commands_and_big_transfers() {
    let mut scenario = Scenario::new();
    scenario.machine("big", Tier::Smoke, &["--memory", "768"]);
    for name in ["m1", "m2", "m3"] {
        scenario.machine(name, Tier::Smoke, &[]);
    }
    let run = scenario.run(&repo_file("tests/e2e/load.py"), &[], SMOKE_LIMIT * 5);
    run.assert_status(0);
    for subtest in [
        "four machines from four threads",
        "10,000 sequential commands",
        "64 MiB from the guest",
        "64 MiB to the guest",
        "100 MiB of output",
    ] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    // The figures, for the log of the run (docs/reliability.md quotes them).
    for line in run.stderr.lines().filter(|line| line.contains("load: ")) {
        println!("{line}");
    }
    scenario.assert_state_removed(&run);
}
