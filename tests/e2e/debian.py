# The foundation on the Debian guest with systemd: units, a guest-side timeout with coreutils'
# status, and a clean power-off. Run by crates/cli/tests/e2e/debian.rs.
from ntd.errors import RequestedAssertionFailed

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
    # A unit that fails is reported at once, with upstream's message.
    machine.succeed("systemd-run --unit=broken --service-type=oneshot --remain-after-exit false || true")
    try:
        machine.wait_for_unit("broken.service", timeout=30)
        raise Exception("wait_for_unit accepted a failed unit")
    except RequestedAssertionFailed as e:
        assert str(e) == 'unit "broken.service" reached state "failed"', str(e)
    # An inactive unit with nothing queued will never start.
    try:
        machine.wait_for_unit("never-started.service", timeout=30)
        raise Exception("wait_for_unit accepted an inactive unit")
    except RequestedAssertionFailed as e:
        assert str(e) == 'unit "never-started.service" is inactive and there are no pending jobs', str(e)

with subtest("a guest-side timeout"):
    assert machine.execute("sleep 30", timeout=2) == (124, "")

with subtest("power off"):
    machine.shutdown()
    assert not machine.is_up()
