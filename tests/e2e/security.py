# Security (crates/cli/tests/e2e/security.rs runs this on a VLAN, and again with TMPDIR, the
# output directory and the start script's directory named with spaces, quotes, commas, `$`
# and backticks):
#   - what the driver and its children create under TMPDIR is the user's, with directories
#     and sockets closed to group and others;
#   - neither the driver nor any child has a TCP socket (none was asked for);
#   - guest output that looks like shell syntax is never run on the host.
import os
import stat
import time

start_all()
machine.succeed("true")
tmp = os.environ["TMPDIR"]
uid = os.getuid()

with subtest("private state"):
    problems, dirs_checked, sockets_checked = [], 0, 0
    for root, dirs, files in os.walk(tmp):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if st.st_uid != uid:
                problems.append(f"{path} belongs to uid {st.st_uid}")
            if stat.S_ISDIR(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                dirs_checked += stat.S_ISDIR(st.st_mode)
                sockets_checked += stat.S_ISSOCK(st.st_mode)
                if st.st_mode & 0o077:
                    problems.append(f"{path} is open to others: {oct(st.st_mode & 0o777)}")
    assert not problems, problems
    # vm-state-machine, shared-xchg and the start script's xchg; monitor, shell and qmp (and
    # vde1.ctl with the switch's sockets when there is a VLAN).
    assert dirs_checked >= 3 and sockets_checked >= 3, (dirs_checked, sockets_checked)
    log.info(f"security: {dirs_checked} directories and {sockets_checked} sockets are private")

with subtest("no TCP sockets"):
    needle = f"TMPDIR={tmp}".encode()
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                # QEMU's TMPDIR is its state directory, inside ours.
                if any(e.startswith(needle) for e in environ.read().split(b"\0")):
                    pids.append(pid)
        except OSError:
            pass
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        except OSError:
            pass
    tcp = []
    for table in ["/proc/net/tcp", "/proc/net/tcp6"]:
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    tcp.append(f"{table}: {line.strip()}")
    assert len(pids) >= 2, pids  # the driver, QEMU (and vde_switch)
    assert not tcp, tcp
    log.info(f"security: {len(pids)} processes with {len(inodes)} sockets, none of them TCP")

with subtest("guest output is data"):
    marker = os.path.join(os.path.dirname(tmp), "executed-on-the-host")
    payload = f"$(touch '{marker}') `touch '{marker}'` ; touch '{marker}'"
    quoted = payload.replace("'", "'\\''")
    assert machine.succeed(f"printf '%s\\n' '{quoted}'") == payload + "\n"
    machine.succeed(f"printf '%s\\n' '{quoted}' > /dev/ttyS0")
    machine.wait_for_console_text("executed-on-the-host")
    machine.succeed(f"printf '\\033]0;%s\\007\\033[2J%s\\n' '{quoted}' '{quoted}' > /dev/ttyS0")
    time.sleep(1)
    assert not os.path.exists(marker), "guest output ran on the host"

with subtest("odd paths"):
    machine.screenshot("screen")
    assert (machine.out_dir / "screen.png").stat().st_size > 0
    machine.succeed("mkdir -p /tmp/shared/out && echo data > /tmp/shared/out/file")
    machine.copy_from_vm("/tmp/shared/out/file", "copied")
    assert (machine.out_dir / "copied" / "file").read_text() == "data\n"
    machine.succeed("rm -r /tmp/shared/out")
