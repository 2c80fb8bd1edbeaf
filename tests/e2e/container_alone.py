# One container (ntd's container guest): every shared machine method, upstream's
# nspawn-daemon-reexec-dbus check, and shutdown. Run by crates/cli/tests/e2e/containers.rs.
import os
import re
import threading
import time

box.start()
box.wait_for_unit("multi-user.target")
assert box.is_up()

with subtest("commands"):
    assert box.succeed("echo hi; echo err >&2") == "hi\n"
    assert box.execute("exit 3") == (3, "")
    box.fail("false")
    assert box.succeed("hostname").strip() == "box"
    # Upstream's environment: what /etc/profile sets, nothing of the driver's.
    assert "NTD" not in box.succeed("env")
    status, out = box.execute("echo begun; sleep 30", timeout=2)
    assert (status, out) == (124, "begun\n"), (status, out)

with subtest("systemd"):
    box.require_unit_state("multi-user.target", "active")
    box.succeed("systemctl start hello.service")
    box.wait_for_unit("hello.service")
    box.wait_for_open_port(8080)
    assert box.succeed("nc -w 5 localhost 8080") == "hello from box\n"
    assert box.get_unit_property("hello.service", "ActiveState") == "active"
    box.stop_job("hello.service")
    box.wait_for_closed_port(8080)

with subtest("files"):
    with open(os.path.join(driver.out_dir, "from-host.txt"), "w") as f:
        f.write("from the host\n")
    box.copy_from_host(os.path.join(driver.out_dir, "from-host.txt"), "/root/in/from-host.txt")
    assert box.succeed("cat /root/in/from-host.txt") == "from the host\n"
    box.succeed("mkdir -p /root/out && echo back > /root/out/f")
    box.copy_from_machine("/root/out", "copied")
    with open(os.path.join(driver.out_dir, "copied/out/f")) as f:
        assert f.read() == "back\n"
    box.wait_for_file("/tmp/shared")

# Upstream's nixos/tests/nspawn-daemon-reexec-dbus.nix: PID 1 re-sends READY=1 on every
# daemon-reexec; a driver that stops reading the notify socket breaks the container's bus.
with subtest("the bus survives daemon-reexec"):
    BUS_BROKEN = re.compile(r"Transport endpoint is not connected|Failed to connect to bus")

    def bus_broken():
        status, out = box.execute(
            "timeout 10 systemctl show -p ActiveState --value multi-user.target 2>&1",
            check_return=False,
            timeout=20,
        )
        return status != 0 or bool(BUS_BROKEN.search(out)), status, out

    assert not bus_broken()[0]
    for i in range(1, 11):
        box.execute("timeout 30 systemctl daemon-reexec", check_return=False, timeout=45)
        broken, status, out = bus_broken()
        assert not broken, f"the bus broke after daemon-reexec #{i}: status={status} out={out!r}"

with subtest("shutdown"):
    box.shutdown()
    assert not box.is_up()
