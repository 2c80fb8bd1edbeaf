"""`python -m ntd.ssh_proxy HOST PORT`: the SSH backdoor's ssh `ProxyCommand` for a program
that uses ntd as a library (the command line has `ntd-ssh-proxy`). It reaches a VM's vsock port
through `vsock-mux/<vhost-device-vsock host socket>` and hands the connection to ssh, as
systemd-ssh-proxy(1) 258 and newer does; the driver writes an ssh configuration that uses it.
"""

import sys

from ntd import _native


def main(argv: "list[str]") -> int:
    if len(argv) != 2:
        print("usage: python -m ntd.ssh_proxy vsock-mux/<socket>|unix/<socket> <port>", file=sys.stderr)
        return 2
    try:
        _native.ssh_proxy(argv[0], argv[1])
    except ConnectionError as e:
        print(f"ntd.ssh_proxy: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
