//! Several machines on VLANs (tests/e2e/three_nodes.py, examples/multi-machine).

use crate::harness::{DEBIAN_LIMIT, Scenario, Tier, repo_file};

#[test]
fn three_nodes_on_two_vlans() {
    let mut scenario = Scenario::new();
    scenario.network(Tier::Debian, &[("a", &[1]), ("b", &[1, 2]), ("c", &[2])]);
    let run = scenario.run(&repo_file("tests/e2e/three_nodes.py"), &[], DEBIAN_LIMIT * 2);
    run.assert_status(0);
    for subtest in [
        "addresses and names as NixOS assigns them",
        "who reaches whom",
        "block cuts the first VLAN only",
        "forward_port",
        "two machines wait at once from Python threads",
    ] {
        run.assert_stderr_contains(&format!("(finished: subtest: {subtest}, in "));
    }
    // One switch per VLAN, started and stopped as upstream logs it; its chatter stays quiet.
    assert_eq!(run.stderr.matches("running vlan (pid ").count(), 2, "{}", run.stderr);
    assert_eq!(run.stderr.matches("kill vlan (pid ").count(), 2, "{}", run.stderr);
    assert!(!run.stderr.contains("vde_switch 1:"), "{}", run.stderr);
}

#[test]
fn switch_chatter_shows_at_debug_level() {
    let mut scenario = Scenario::new();
    scenario.network(Tier::Smoke, &[("a", &[1])]);
    let test = scenario.write("test.py", "a.succeed('true')\n");
    let run = scenario.run(&test, &["--log-level", "debug"], crate::harness::SMOKE_LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains("vde_switch 1: ");
}
