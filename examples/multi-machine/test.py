# A server running a real service and a client that reaches it by name over a virtual LAN,
# then a network partition: the same shapes as a NixOS test with
# `nodes.server` and `nodes.client`.
start_all()
server.wait_for_unit("hello.service")
server.wait_for_open_port(8080)
client.wait_for_unit("multi-user.target")

with subtest("the client reaches the server by name"):
    client.succeed("ping -c 1 -W 5 server")
    assert client.succeed("nc server 8080") == "hello from server\n"
    client.succeed("ping -c 1 -W 5 2001:db8:1::1")

with subtest("a partition"):
    server.block()
    client.fail("ping -c 1 -W 2 server")
    server.unblock()
    client.wait_until_succeeds("ping -c 1 -W 2 server", timeout=60)
    assert client.succeed("nc server 8080") == "hello from server\n"
