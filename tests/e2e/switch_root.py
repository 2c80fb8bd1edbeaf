# switch_root() on a guest whose systemd starts in initrd mode with the backdoor in stage 1
# (the test guest's emulation of NixOS's testing.initrdBackdoor; QEMU_KERNEL_PARAMS has
# ntd.initrd-backdoor=1). Run by crates/cli/tests/e2e/debian.rs.
machine.start()
machine.wait_for_unit("initrd.target")
machine.succeed("test -e /etc/initrd-release")
machine.switch_root()
machine.fail("test -e /etc/initrd-release")
machine.wait_for_unit("multi-user.target")
machine.shutdown()
