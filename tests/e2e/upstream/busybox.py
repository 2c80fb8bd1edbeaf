# nixpkgs' nixos-test-driver.busybox: the driver still works when busybox's applets are the
# guest's tools (upstream's node has busybox in environment.systemPackages).
#
# The built-in guest has no busybox, so the host's static one is copied in, its applets linked
# into /opt/busybox/bin, and that directory put first on the PATH of login shells, which the
# backdoor is; a reboot (the disk is kept) restarts the backdoor with it. Then upstream's script.
import shutil

machine.start()
machine.wait_for_unit("multi-user.target")
busybox = shutil.which("busybox")
assert busybox is not None, "the host has no busybox (scripts/install-host-deps installs it)"
machine.copy_from_host(busybox, "/opt/busybox/bin/busybox")
machine.succeed(
    "/opt/busybox/bin/busybox --install -s /opt/busybox/bin",
    "echo 'PATH=/opt/busybox/bin:$PATH' > /etc/profile.d/busybox.sh",
)
machine.shutdown()

start_all()
machine.wait_for_unit("multi-user.target")

# The premise: the backdoor's commands now find busybox's applets first.
for tool in ["timeout", "base64", "cat", "sleep", "grep", "sed", "stty"]:
    found = machine.succeed(f"command -v {tool}").strip()
    assert found == f"/opt/busybox/bin/{tool}", (tool, found)
