# The machine methods that need systemd, X11 or virtual consoles, on the Debian guest.
# Run by crates/cli/tests/e2e/debian.rs.
from ntd.errors import RequestedAssertionFailed


def expect_failure(call, message=None, prefix=None):
    try:
        call()
    except RequestedAssertionFailed as e:
        if message is not None:
            assert str(e) == message, str(e)
        if prefix is not None:
            assert str(e).startswith(prefix), str(e)
        return
    raise Exception("expected RequestedAssertionFailed")


start_all()
machine.wait_for_unit("multi-user.target")
# NIX_DISK_IMAGE's default: ./<name>.qcow2 in the state directory, an overlay made at start.
assert (machine.state_dir / "machine.qcow2").is_file()

with subtest("systemd units"):
    machine.wait_for_unit("hello.service")
    assert machine.get_unit_property("hello.service", "ActiveState") == "active"
    info = machine.get_unit_info("hello.service")
    assert info["Id"] == "hello.service", info["Id"]
    status, out = machine.systemctl("is-active hello.service")
    assert (status, out) == (0, "active\n"), (status, out)
    machine.require_unit_state("hello.service")
    expect_failure(
        lambda: machine.require_unit_state("hello.service", "inactive"),
        "Expected unit 'hello.service' to to be in state 'inactive' but it is in state 'active'",
    )
    assert machine.stop_job("hello.service")[0] == 0
    machine.wait_for_unit_active_state("hello.service", "inactive", timeout=30)
    assert machine.start_job("hello.service")[0] == 0
    machine.wait_for_unit("hello.service", timeout=30)
    # A unit that becomes active later: the wait returns once it is.
    machine.succeed("systemd-run --unit=later --no-block --service-type=oneshot --remain-after-exit sleep 2")
    machine.wait_for_unit("later.service", timeout=60)
    machine.succeed("systemd-run --unit=slow --no-block --service-type=oneshot sleep 30")
    machine.wait_for_unit_active_state("slow.service", "activating", timeout=30)
    # A unit that fails is reported at once, with upstream's message.
    machine.succeed("systemd-run --unit=broken --service-type=oneshot --remain-after-exit false || true")
    expect_failure(lambda: machine.wait_for_unit("broken.service", timeout=30), 'unit "broken.service" reached state "failed"')
    machine.wait_for_unit_active_state("broken.service", "failed", timeout=30)
    # An inactive unit with nothing queued will never start.
    expect_failure(
        lambda: machine.wait_for_unit("never-started.service", timeout=30),
        'unit "never-started.service" is inactive and there are no pending jobs',
    )
    expect_failure(lambda: machine.wait_for_unit_active_state("hello.service", "reloading", timeout=2), prefix="action timed out after ")

with subtest("user units"):
    machine.succeed("useradd -m alice", "loginctl enable-linger alice")
    machine.wait_for_unit("user@1000.service", timeout=120)
    machine.wait_for_unit("default.target", user="alice", timeout=120)
    status, out = machine.systemctl("is-active default.target", user="alice")
    assert (status, out) == (0, "active\n"), (status, out)

with subtest("ports and sockets"):
    machine.wait_for_open_port(8080)
    machine.succeed("systemd-run --unit=listener nc -l -k -p 9090")
    machine.wait_for_open_port(9090, addr="127.0.0.1", timeout=60)
    machine.succeed("systemctl stop listener")
    machine.wait_for_closed_port(9090, timeout=60)
    expect_failure(lambda: machine.wait_for_open_port(9999, timeout=2), prefix="action timed out after ")
    machine.succeed("systemd-run --unit=stream nc -l -k -U /tmp/stream.sock")
    machine.wait_for_open_unix_socket("/tmp/stream.sock", timeout=60)
    machine.succeed("systemd-run --unit=dgram nc -l -u -U /tmp/dgram.sock")
    machine.wait_for_open_unix_socket("/tmp/dgram.sock", is_datagram=True, timeout=60)

with subtest("virtual consoles"):
    machine.succeed("echo tty-marker-77 > /dev/tty1")
    assert "tty-marker-77" in machine.get_tty_text(1)
    machine.succeed("(sleep 1; echo late-tty-text > /dev/tty1) >/dev/null 2>&1 &")
    machine.wait_until_tty_matches("1", "late-tty-text", timeout=60)
    machine.dump_tty_contents(1)
    machine.wait_until_succeeds("journalctl -b | grep -q tty-marker-77", timeout=60)

with subtest("X11"):
    machine.succeed("systemd-run --unit=xvfb Xvfb :0 -nolisten tcp")
    # upstream's check: the journal line of the graphical session target, and the X socket
    machine.succeed("echo 'Reached target Current graphical user session.' | systemd-cat -t systemd")
    machine.wait_for_x(timeout=60)
    machine.succeed("systemd-run --unit=xmessage --setenv=DISPLAY=:0 xmessage -title ntd-window hello")
    machine.wait_for_window("ntd-window", timeout=60)
    assert "ntd-window" in machine.get_window_names()
    expect_failure(lambda: machine.wait_for_window("no-such-window", timeout=2), prefix="action timed out after ")

with subtest("a guest-side timeout"):
    assert machine.execute("sleep 30", timeout=2) == (124, "")

with subtest("power off"):
    machine.shutdown()
    assert not machine.is_up()
