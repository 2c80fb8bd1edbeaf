# nixpkgs' nixos-test-driver.attempt-timeout: a wait's total budget (`timeout`) and the bound
# on one attempt (`attempt_timeout`) hold even when the probe blocks.
#
# Upstream blocks its port probe with an iptables rule dropping SYNs to 127.0.0.1:1234. The
# built-in guest has neither iptables nor the netfilter modules, so here the SYNs go to an
# address on the machine's VLAN whose neighbour entry names a MAC nobody has: they are lost
# just as silently, and a connection attempt blocks for the kernel's SYN retries (about two
# minutes) in the same way.
import datetime as dt
import time

start_all()
machine.wait_for_unit("multi-user.target")

with subtest("a blocking command is retried within the budget"):
    started = time.monotonic()
    try:
        machine.wait_until_succeeds(
            "echo attempt >> /tmp/attempts; exec sleep 600 > /dev/null",
            timeout=dt.timedelta(seconds=20),
            attempt_timeout=dt.timedelta(seconds=2),
        )
    except Exception:
        pass
    else:
        raise Exception("wait_until_succeeds did not time out")
    elapsed = time.monotonic() - started
    attempts = int(machine.succeed("wc -l < /tmp/attempts"))
    print(f"attempt-timeout: {attempts} attempts in {elapsed:.1f} s")
    assert attempts >= 4, f"{attempts} attempts: the command was not retried"
    # The budget and then one last attempt: about 22 s.
    assert elapsed < 40, f"wait_until_succeeds took {elapsed:.1f} s"

with subtest("a blocking probe is bounded by the caller's budget"):
    machine.succeed("ip neigh replace 192.168.1.99 lladdr 52:54:00:12:01:63 nud permanent dev eth1")
    started = time.monotonic()
    try:
        machine.wait_for_open_port(1234, addr="192.168.1.99", timeout=dt.timedelta(seconds=5))
    except Exception:
        pass
    else:
        raise Exception("wait_for_open_port did not time out")
    elapsed = time.monotonic() - started
    print(f"attempt-timeout: wait_for_open_port gave up after {elapsed:.1f} s")
    # The 5 s loop and the last check: about ten seconds.
    assert elapsed < 60, f"wait_for_open_port took {elapsed:.1f} s"
