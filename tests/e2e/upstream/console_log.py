# nixpkgs' nixos-test-driver.console-log: get_console_log() returns the serial console of the
# current boot: the kernel's and systemd's messages, a command's stderr, lines written to
# /dev/kmsg; and a restart begins a fresh log.
#
# NixOS test VMs log at kernel level 7 (test-instrumentation.nix); the built-in guest boots
# `quiet`, so crates/cli/tests/e2e/upstream.rs appends `loglevel=7` through QEMU_KERNEL_PARAMS.
import time

kernel_lines = ["Linux version", "Command line:", "Kernel command line"]

machine.start()
machine.wait_for_unit("multi-user.target")

with subtest("get_console_log returns the console"):
    boot_log = machine.get_console_log()
    assert isinstance(boot_log, str), type(boot_log)
    assert boot_log != ""
    print(f"console-log: {len(boot_log)} characters after boot")

with subtest("the boot is in it, and a command's stderr"):
    assert "systemd" in boot_log
    machine.succeed("echo 'DIRECT_TEST_MESSAGE_12345' >&2")
    time.sleep(1)
    assert "DIRECT_TEST_MESSAGE_12345" in machine.get_console_log()

with subtest("a kernel message"):
    machine.succeed("echo 'KERNEL_TEST_MESSAGE_12345' > /dev/kmsg")
    time.sleep(2)
    # Upstream only reports this one; the next subtest asserts it.
    print("console-log: kernel message seen:", "KERNEL_TEST_MESSAGE_12345" in machine.get_console_log())

with subtest("the log only grows between calls"):
    first = machine.get_console_log()
    second = machine.get_console_log()
    assert "systemd" in first and "systemd" in second
    assert len(second) >= len(first)
    assert "KERNEL_TEST_MESSAGE_12345" in second

with subtest("the kernel's own boot lines"):
    assert any(line in boot_log for line in kernel_lines), kernel_lines

with subtest("a restart begins a fresh log"):
    before = machine.get_console_log()
    assert "KERNEL_TEST_MESSAGE_12345" in before and "DIRECT_TEST_MESSAGE_12345" in before
    machine.shutdown()
    machine.start()
    machine.wait_for_unit("multi-user.target")
    after = machine.get_console_log()
    print(f"console-log: {len(before)} characters before the restart, {len(after)} after")
    assert "KERNEL_TEST_MESSAGE_12345" not in after and "DIRECT_TEST_MESSAGE_12345" not in after
    assert "systemd" in after
    assert any(line in after for line in kernel_lines), kernel_lines
    machine.succeed("echo 'POST_RESTART_TEST_MESSAGE_67890' > /dev/kmsg")
    time.sleep(1)
    assert "POST_RESTART_TEST_MESSAGE_67890" in machine.get_console_log()
