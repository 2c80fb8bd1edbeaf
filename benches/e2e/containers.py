# Containers beside VMs (benches/e2e/run starts it): a test script run by nixos-test-driver on
# one systemd-nspawn container of the container guest (`box`) and one VM of the Debian guest
# (`machine`), both on VLAN 1. Measures, for each, start() → the first succeed("true")
# answered (and → multi-user.target); the container's first start and its restarts; then the
# latency of succeed("true") on both, interleaved. On the container also the same command done
# the way upstream's NspawnMachine does it (the "baseline"): a Python subprocess.run of
# `nsenter … /bin/sh -c 'set -eo pipefail; source /etc/profile; set -u; …'` with an empty
# environment, and nsenter running /bin/true (the floor of entering the container). Results
# go to $NTD_BENCH_OUT as JSON.
import json
import os
import subprocess
import time

REPS = int(os.environ.get("NTD_BENCH_REPS", "30"))
RESTARTS = int(os.environ.get("NTD_BENCH_RESTARTS", "5"))
# Milliseconds per command, by what ran it.
commands: dict = {"container": [], "container_baseline": [], "container_floor": [], "vm": []}
results: dict = {"reps": REPS, "restarts": RESTARTS, "commands_ms": commands}


def timed(mode, action):
    start = time.monotonic()
    action()
    commands[mode].append((time.monotonic() - start) * 1000.0)


def start_to_first_command(m, container):
    """start(), then the first succeed("true"), then multi-user.target; for a container also
    when it was ready (READY=1 on its NOTIFY_SOCKET: get_systemd_process waits for it)."""
    start = time.monotonic()
    m.start()
    times = {}
    if container:
        m.get_systemd_process
        times["ready_s"] = time.monotonic() - start
    m.succeed("true")
    times["first_command_s"] = time.monotonic() - start
    m.wait_for_unit("multi-user.target")
    times["multi_user_s"] = time.monotonic() - start
    return times


# --- start → first command answered ------------------------------------------------------

# The container first, alone on the host: its first start copies the guest's root filesystem
# into the empty root directory (a NixOS container's root starts empty too, but its store is
# shared, so it has nothing this size to copy); the restarts boot the root that is kept.
results["container_first_start"] = start_to_first_command(box, container=True)
results["container_restarts"] = []
results["container_shutdown_s"] = []
for _ in range(RESTARTS):
    start = time.monotonic()
    box.shutdown()
    results["container_shutdown_s"].append(time.monotonic() - start)
    results["container_restarts"].append(start_to_first_command(box, container=True))

# Then the VM, the container idle beside it. Both have reached multi-user.target before the
# commands, as in bench.py.
results["vm_start"] = start_to_first_command(machine, container=False)

# --- succeed("true"), interleaved ----------------------------------------------------------

leader = str(box.get_systemd_process)
NSENTER = ["nsenter", "--target", leader, "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup"]


def upstream_container_execute(command, timeout=900):
    """Upstream's NspawnMachine: one nsenter per command into the init's namespaces, the
    command under upstream's prelude, an empty environment, stdout read whole as text."""
    proc = subprocess.run(
        NSENTER + ["/bin/sh", "-c", f"set -eo pipefail; source /etc/profile; set -u; {command}"],
        env={},
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout


def nsenter_floor():
    """What entering the container costs without a shell: nsenter running /bin/true."""
    subprocess.run(NSENTER + ["/bin/true"], env={}, check=True)


assert upstream_container_execute("echo ok") == (0, "ok\n")
for _ in range(REPS * 4):
    timed("container", lambda: box.succeed("true"))
    timed("container_baseline", lambda: upstream_container_execute("true"))
    timed("container_floor", nsenter_floor)
    timed("vm", lambda: machine.succeed("true"))

with open(os.environ["NTD_BENCH_OUT"], "w") as out:
    json.dump(results, out, indent=1)
