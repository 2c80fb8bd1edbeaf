//! The command channel on a real VM (tests/e2e/channel.py): a driver stopped for 3 s in the
//! middle of 32 MiB of output returns the exact bytes; output ends at the end of stdout, with
//! the warning for a background job that holds it; a command or an in-guest wait interrupted
//! by a KeyboardInterrupt or its timeout is gone from the guest's process table and the shell
//! answers within a second; the serial console keeps every line while the script is busy.
//! Ctrl-C in the REPL is in repl.rs, SIGTERM and the global timeout in signals.rs and
//! globals.rs; the console fallback for a guest without the ports is below.

use std::os::unix::fs::PermissionsExt;

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
    // The words nixpkgs' `succeed-stdout-warning` check looks for.
    let lingering = "(echo ONE; sleep 15; echo TWO) &' for the test script has exited, but not closed stdout";
    assert_eq!(run.stderr.matches(lingering).count(), 1, "{}", run.stderr);
    run.assert_stderr_contains("`sleep 601` was interrupted: killed ");
    run.assert_stderr_contains("`echo started; sleep 606` timed out after 2 seconds: killed ");
    for line in run.stdout.lines().chain(run.stderr.lines()).filter(|line| line.contains("channel: ")) {
        println!("{line}");
    }
    scenario.assert_state_removed(&run);
}

/// A start script that drops the ports ntd appends (as a start command that ignores extra
/// arguments would): the driver says so and falls back to the console, where output still
/// ends at the end of stdout and comes back exact, and where a driver stopped for 3 s in the
/// middle of 32 MiB gets an error that bytes were lost (or, if the timing spared them, the
/// exact bytes), never a shortened result, however long the rest takes to cross the console
/// after the command's 30 s timeout. Where the console dropped the end of the reply too (the
/// guest prints faster than the stopped driver can miss), the shell's answer to a probe says
/// so within seconds, and the next command is answered.
#[test]
fn a_guest_without_the_ports_falls_back_to_the_console() {
    let mut scenario = Scenario::new();
    let real = scenario.start_script("machine", Tier::Smoke, &[]);
    let moved = real.with_file_name("real-start-script");
    std::fs::rename(&real, &moved).expect("move the start script");
    let wrapper = format!(
        "#!/usr/bin/env bash\n\
         # Drops ntd's virtio ports: each is a -chardev and a -device naming ntd-out or ntd-ctl.\n\
         args=()\n\
         while [ $# -gt 0 ]; do\n\
           case \"$1 ${{2:-}}\" in\n\
             '-chardev socket,id=ntd-'* | '-device virtserialport,chardev=ntd-'*) shift 2; continue ;;\n\
           esac\n\
           args+=(\"$1\"); shift\n\
         done\n\
         exec {} \"${{args[@]}}\"\n",
        moved.display()
    );
    std::fs::write(&real, wrapper).expect("write the wrapper");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    scenario.pass_start_script(real);
    let script = scenario.write(
        "test.py",
        "import hashlib\n\
         start_all()\n\
         big = machine.succeed('head -c 786432 /dev/urandom | base64 -w 0 > /tmp/b64; cat /tmp/b64')\n\
         assert hashlib.md5(big.encode()).hexdigest() == machine.succeed('md5sum < /tmp/b64').split()[0]\n\
         assert machine.succeed(\"printf 'a\\\\000b\\\\377c'\") == 'a\\x00b\\ufffdc'\n\
         assert machine.execute('echo partial; exit 7') == (7, 'partial\\n')\n\
         assert machine.execute('echo a; false; echo b', timeout=None) == (1, 'a\\n')\n\
         assert machine.succeed('(echo ONE; sleep 2; echo TWO) &') == 'ONE\\nTWO\\n'\n\
         assert machine.succeed('sleep 30 >/dev/null 2>&1 & echo started') == 'started\\n'\n\
         import os, subprocess\n\
         from ntd.errors import MachineError\n\
         # The driver stopped for 3 s while 32 MiB cross the console: QEMU drops what the full\n\
         # socket refuses; the result is exact or an error saying so, never short.\n\
         machine.succeed('head -c 25165824 /dev/urandom | base64 > /tmp/big')\n\
         digest = machine.succeed('md5sum < /tmp/big').split()[0]\n\
         stopper = subprocess.Popen(['sh', '-c', f'sleep 2; kill -STOP {os.getpid()}; sleep 3; kill -CONT {os.getpid()}'])\n\
         try:\n\
         \x20   out = machine.succeed('sleep 1; cat /tmp/big', timeout=30)\n\
         \x20   assert hashlib.md5(out.encode()).hexdigest() == digest\n\
         \x20   print('channel: console: exact')\n\
         except MachineError as e:\n\
         \x20   lost = 'bytes were lost: the guest sent 33995938 bytes of output' in str(e)\n\
         \x20   end_lost = 'running `sleep 1; cat /tmp/big`: the end of the reply was lost: the shell has answered a later line' in str(e)\n\
         \x20   assert lost or end_lost, str(e)\n\
         \x20   print('channel: console:', e)\n\
         stopper.wait()\n\
         assert machine.succeed('echo after') == 'after\\n'\n",
    );
    let run = scenario.run(&script, &[], SMOKE_LIMIT);
    run.assert_status(0);
    run.assert_stderr_contains(
        "machine: command channel: command output on the console (the guest has no org.nixos.ntd.out port)",
    );
    for line in run.stdout.lines().chain(run.stderr.lines()).filter(|line| line.contains("channel: console")) {
        println!("{line}");
    }
    scenario.assert_state_removed(&run);
}
