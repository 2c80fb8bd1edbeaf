//! Test bodies for what every machine kind has: the same assertions run on a fake QEMU
//! machine and on a container (ntd's systemd-nspawn backend over a fake start script),
//! through nothing but [`Machine`].

use std::time::Duration;

use ntd_core::ErrorKind;
use ntd_core::machine::{Error, ExecuteOptions, Machine};

use crate::support::Scenario;

pub fn cmd(command: &str) -> Vec<String> {
    vec![command.to_owned()]
}

pub async fn commands_behave(machine: &Machine) {
    let out = machine.succeed(&cmd(r"printf 'a\000b\377\r\n'"), None).await.expect("succeed");
    // Every byte, except that a container's output is read as upstream reads it: with
    // Python's universal newlines.
    let expected: &[u8] = if machine.class_name() == "NspawnMachine" { b"a\0b\xff\n" } else { b"a\0b\xff\r\n" };
    assert_eq!(out, expected);
    let (status, out) =
        machine.execute("echo out; echo err >&2; exit 3", ExecuteOptions::default()).await.expect("run");
    assert_eq!((status, out.as_slice()), (3, &b"out\n"[..]));
    // `set -euo pipefail` as upstream: the first failure ends the command.
    let (status, out) = machine.execute("echo a; false; echo b", ExecuteOptions::default()).await.expect("run");
    assert_eq!((status, out.as_slice()), (1, &b"a\n"[..]));
    let both = machine.succeed(&cmd("echo one"), None).await.expect("one");
    assert_eq!(both, b"one\n");
    let joined = machine.succeed(&["echo a".to_owned(), "echo b".to_owned()], None).await.expect("two");
    assert_eq!(joined, b"a\nb\n");
    let failed = machine.succeed(&cmd("exit 7"), None).await.expect_err("exit 7");
    assert_eq!(failed.to_string(), "command `exit 7` failed (exit code 7)");
    assert_eq!(failed.kind(), ErrorKind::AssertionFailed);
    assert_eq!(machine.fail(&cmd("false"), None).await.expect("fails"), b"");
    let succeeded = machine.fail(&cmd("true"), None).await.expect_err("true");
    assert_eq!(succeeded.to_string(), "command `true` unexpectedly succeeded");
    // Quotes that do not balance fail on their own and leave the shell usable.
    let (status, _) = machine.execute("echo 'unbalanced", ExecuteOptions::default()).await.expect("run");
    assert_eq!(status, 2);
    let nul = machine.execute("echo \0", ExecuteOptions::default()).await.expect_err("NUL");
    assert!(matches!(nul, Error::InvalidCommand { .. }), "{nul}");
    assert_eq!(machine.succeed(&cmd("echo still here"), None).await.expect("after"), b"still here\n");
}

pub async fn waits_behave(machine: &Machine) {
    machine.succeed(&cmd("(sleep 0.5; touch /tmp/flag) >/dev/null 2>&1 &"), None).await.expect("background");
    machine.wait_for_file("/tmp/flag", Duration::from_secs(20)).await.expect("the file appears");
    let missing = machine.wait_for_file("/tmp/never", Duration::from_secs(1)).await.expect_err("times out");
    assert!(missing.to_string().starts_with("action timed out after "), "{missing}");
    assert!(missing.to_string().ends_with(" seconds (timeout=1.0)"), "{missing}");

    machine.succeed(&cmd("(sleep 1; touch /tmp/later) >/dev/null 2>&1 &"), None).await.expect("background");
    let out = machine
        .wait_until_succeeds("test -e /tmp/later && echo there", Duration::from_secs(20), None)
        .await
        .expect("eventually succeeds");
    assert_eq!(out, b"there\n");
    machine.succeed(&cmd("(sleep 1; rm /tmp/later) >/dev/null 2>&1 &"), None).await.expect("background");
    machine.wait_until_fails("test -e /tmp/later", Duration::from_secs(20), None).await.expect("eventually fails");

    // While a polling condition is active, waits poll from the host; same results.
    machine.set_host_side_waits(true);
    machine.succeed(&cmd("(sleep 1; touch /tmp/host-side) >/dev/null 2>&1 &"), None).await.expect("background");
    machine.wait_for_file("/tmp/host-side", Duration::from_secs(20)).await.expect("host-side wait");
}

pub async fn files_behave(machine: &Machine, scenario: &Scenario) {
    use std::os::unix::fs::PermissionsExt;
    let source = scenario.path().join("payload");
    std::fs::create_dir_all(source.join("sub")).expect("dirs");
    std::fs::write(source.join("sub/run.sh"), "#!/bin/sh\necho ran\n").expect("write");
    std::fs::set_permissions(source.join("sub/run.sh"), std::fs::Permissions::from_mode(0o751)).expect("chmod");
    machine.copy_from_host(&source, "/tmp/in/payload").await.expect("copy in");
    assert_eq!(machine.succeed(&cmd("/tmp/in/payload/sub/run.sh"), None).await.expect("run it"), b"ran\n");
    assert_eq!(machine.succeed(&cmd("stat -c %a /tmp/in/payload/sub/run.sh"), None).await.expect("mode"), b"751\n");
    let single = scenario.path().join("single.txt");
    std::fs::write(&single, b"via the shell\n").expect("write");
    machine.copy_from_host_via_shell(&single, "/tmp/deep/er/single.txt").await.expect("via shell");
    assert_eq!(machine.succeed(&cmd("cat /tmp/deep/er/single.txt"), None).await.expect("cat"), b"via the shell\n");
    machine.succeed(&cmd("mkdir -p /tmp/out/d && printf '\\377x' > /tmp/out/d/f"), None).await.expect("make");
    let copied = machine.copy_from_machine("/tmp/out/d", "from-guest").await.expect("copy out");
    assert_eq!(copied, scenario.out_dir().join("from-guest/d"));
    assert_eq!(std::fs::read(copied.join("f")).expect("read"), b"\xffx");
    // Nothing of the copies stays in the shared directory.
    let leftovers: Vec<_> = std::fs::read_dir(machine.shared_dir()).expect("shared dir").collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
