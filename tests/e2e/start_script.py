# The start-script contract of qemu-vm.nix, as the test guest's scripts honour it, seen from
# inside the guest. Run by crates/cli/tests/e2e/start_script.rs with QEMU_OPTS and
# QEMU_KERNEL_PARAMS set.
import os
import socket

with subtest("SHARED_DIR is the driver's shared-xchg, at /tmp/shared"):
    (machine.shared_dir / "from-host").write_text("hello guest\n")
    machine.start()
    assert machine.succeed("cat /tmp/shared/from-host") == "hello guest\n"
    machine.succeed("echo hello host > /tmp/shared/from-guest")
    assert (machine.shared_dir / "from-guest").read_text() == "hello host\n"

with subtest("TMPDIR is the state directory, its xchg at /tmp/xchg"):
    machine.succeed("echo in-state > /tmp/xchg/marker")
    assert (machine.state_dir / "xchg" / "marker").read_text() == "in-state\n"

with subtest("QEMU_KERNEL_PARAMS and QEMU_OPTS"):
    assert "ntd.e2e=kernel-params" in machine.succeed("cat /proc/cmdline")
    assert machine.succeed("nproc").strip() == "2"

with subtest("QEMU_NET_OPTS adds to the user-mode network"):
    port = int(os.environ["E2E_HOST_PORT"])
    # eth0 is the user-mode NIC, 10.0.2.15 as in NixOS test VMs.
    assert "10.0.2.15" in machine.succeed("ip -o -4 addr show eth0")
    machine.succeed("(echo hello-through-hostfwd | nc -l -p 8080) >/dev/null 2>&1 &")

    def connect(_last: bool) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                return conn.recv(100) == b"hello-through-hostfwd\n"
        except OSError:
            return False

    retry(connect, 30)
