# Containers run the same test scripts as VMs: every machine method but the VM-only ones
# (screen, keys, QMP, serial console).
start_all()
server.wait_for_unit("hello.service")
server.wait_for_open_port(8080)

with subtest("the client reaches the server over VLAN 1"):
    client.wait_for_unit("multi-user.target")
    assert client.succeed("nc -w 5 server 8080") == "hello from server\n"
    client.succeed("ping -c 1 -W 5 server")

with subtest("files go through /tmp/shared"):
    server.succeed("journalctl -b -u hello.service > /tmp/hello.log")
    server.copy_from_machine("/tmp/hello.log")
