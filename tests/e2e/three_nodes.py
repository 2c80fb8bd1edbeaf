# Three Debian nodes on two VLANs, as a NixOS test with
#   nodes.a.virtualisation.vlans = [ 1 ]; nodes.b…vlans = [ 1 2 ]; nodes.c…vlans = [ 2 ];
# Run by crates/cli/tests/e2e/network.rs.
import socket
import threading
import time

assert [v.nr for v in vlans] == [1, 2] and vlan1.nr == 1 and vlan2.nr == 2
start_all()
for m in machines:
    m.wait_for_unit("multi-user.target")

with subtest("addresses and names as NixOS assigns them"):
    assert "192.168.1.1/24" in a.succeed("ip -o -4 addr show eth1")
    assert "2001:db8:1::1/64" in a.succeed("ip -o -6 addr show eth1")
    assert "52:54:00:12:01:01" in a.succeed("cat /sys/class/net/eth1/address")
    assert "192.168.1.2/24" in b.succeed("ip -o -4 addr show eth1")
    assert "192.168.2.2/24" in b.succeed("ip -o -4 addr show eth2")
    assert "52:54:00:12:02:02" in b.succeed("cat /sys/class/net/eth2/address")
    assert "192.168.2.3/24" in c.succeed("ip -o -4 addr show eth1")
    assert "10.0.2.15/24" in c.succeed("ip -o -4 addr show eth0")
    for m in machines:
        assert m.succeed("hostname").strip() == m.name
        hosts = m.succeed("cat /etc/hosts")
        for line in ["192.168.1.1 a", "2001:db8:1::1 a", "192.168.1.2 b", "2001:db8:1::2 b", "192.168.2.3 c"]:
            assert line in hosts, (m.name, hosts)

with subtest("who reaches whom"):
    a.succeed("ping -c 1 -W 5 b")
    a.succeed("ping -c 1 -W 5 2001:db8:1::2")
    assert a.succeed("nc b 8080") == "hello from b\n"
    c.succeed("ping -c 1 -W 5 192.168.2.2")
    # a and c share no VLAN, and nothing routes between them.
    a.fail("ping -c 1 -W 2 192.168.2.3")

with subtest("block cuts the first VLAN only"):
    b.block()
    a.fail("ping -c 1 -W 2 b")
    c.succeed("ping -c 1 -W 5 192.168.2.2")
    b.unblock()
    a.wait_until_succeeds("ping -c 1 -W 2 b", timeout=60)

with subtest("forward_port"):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    a.forward_port(port, 8080)

    def greeting(_last):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                return conn.recv(100) == b"hello from a\n"
        except OSError:
            return False

    retry(greeting, 30)

with subtest("two machines wait at once from Python threads"):
    spans = {}

    def wait(machine):
        started = time.monotonic()
        machine.succeed("sleep 3")
        spans[machine.name] = (started, time.monotonic())

    threads = [threading.Thread(target=wait, args=(m,)) for m in (a, c)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a_start, a_end), (c_start, c_end) = spans["a"], spans["c"]
    # The GIL is released during the calls: each wait began before the other ended.
    assert a_start < c_end and c_start < a_end, spans
