"""The SSH backdoor's `vhost-device-vsock`, as the test script sees it (upstream's
`VHostDeviceVsock` and `VsockPair` in `test_driver/driver.py`).

The process itself is native (`ntd_core::ssh_backdoor`): started with the driver when the
backdoor is on and there are VMs, stopped at cleanup. `driver.vhost_vsock` describes it:
`driver.vhost_vsock.sockets["machine"].host` is the socket `ssh vsock-mux/<it>` reaches.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VsockPair:
    """One VM's sockets: QEMU's vhost-user socket, the host programs' socket, its CID."""

    guest: Path
    host: Path
    cid: int


@dataclass(frozen=True)
class VHostDeviceVsock:
    """The running `vhost-device-vsock`: its pid, its socket directory, each VM's sockets."""

    pid: int
    temp_dir: Path
    sockets: "dict[str, VsockPair]"
