# The smallest whole NixOS test: boot one machine, wait for it, run commands in it.
# The same script works unchanged under runNixOSTest with a NixOS node named `machine`.
start_all()
machine.wait_for_unit("multi-user.target")

# succeed() returns stdout and fails the test on a non-zero exit status.
kernel = machine.succeed("uname -r").strip()
machine.log(f"the guest runs kernel {kernel}")
t.assertIn(".", kernel)

# fail() is the opposite: the command must not succeed.
machine.fail("test -e /nonexistent")

with subtest("a service is running"):
    machine.wait_for_unit("hello.service")
    machine.succeed("systemctl is-active hello.service")
