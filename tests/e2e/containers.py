# Upstream's nixos/tests/nixos-test-driver/containers.nix on ntd's guests, as a NixOS test with
#   containers.c1.virtualisation.vlans = [ 3 ]; containers.c2…vlans = [ 4 ];
#   containers.c12…vlans = [ 3 4 ];       nodes.n1.virtualisation.vlans = [ 3 ];
# (VLANs 3 and 4 rather than upstream's 1 and 2: bridge and tap names are one per host, and
# other tests run beside this one.) Containers and the VM start together (start_all), then
# upstream's checks. Run by crates/cli/tests/e2e/containers.rs.
assert [type(m).__name__ for m in machines] == ["NspawnMachine"] * 3 + ["QemuMachine"], machines
assert machines_nspawn == [c1, c12, c2] and machines_qemu == [n1]
start_all()

c1.succeed("echo hello > /hello.txt")
c1.copy_from_machine("/hello.txt")

c1.systemctl("start network-online.target")
c2.systemctl("start network-online.target")
c12.systemctl("start network-online.target")
c1.wait_for_unit("network-online.target")
c2.wait_for_unit("network-online.target")
c12.wait_for_unit("network-online.target")

with subtest("containers on a VLAN reach each other"):
    c1.succeed("ping -c 1 c12")
    c12.succeed("ping -c 1 c1")
    c12.succeed("ping -c 1 c2")

with subtest("containers on separate VLANs do not"):
    c1.fail("ping -c 1 -W 1 c2")

with subtest("a container and a VM on a VLAN reach each other both ways"):
    n1.wait_for_unit("multi-user.target")
    c1.succeed("ping -c 1 -W 5 n1")
    n1.succeed("ping -c 1 -W 5 c1")
    assert n1.succeed("nc -w 5 c1 8080") == "hello from c1\n"
    assert c1.succeed("nc -w 5 n1 8080") == "hello from n1\n"

with subtest("a container and a VM on separate VLANs do not"):
    c2.fail("ping -c 1 -W 1 n1")
    n1.fail("ping -c 1 -W 1 c2")
