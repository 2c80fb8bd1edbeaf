# nixpkgs' nixos-test-driver.junit, on the Debian guest; run by crates/cli/tests/e2e/upstream.rs
# with `--junit=junit.xml`, which then counts the report's test cases (upstream's wrapper wants 2).
#
# Upstream's node runs systemd-networkd (networking.useNetworkd) and has /etc/something
# holding "nothing"; the built-in guest gets the same at run time, outside any subtest.
machine.start()
machine.wait_for_unit("multi-user.target")
machine.succeed("systemctl start systemd-networkd.service", "printf nothing > /etc/something")

with subtest("systemd-networkd is started"):
    machine.succeed("systemctl status systemd-networkd.service")

with subtest("/etc is populated correctly"):
    t.assertEqual(machine.succeed("cat /etc/something"), "nothing")
