"""Upstream's `test_driver.driver`: the `Driver`, its configuration and the test-script helpers.

`Driver` takes upstream's arguments, newest first: `Driver(config=DriverConfiguration(...),
out_dir=..., logger=...)` as the JSON-configured CLI builds it, or the keyword arguments of the
releases before it (`vm_names`/`vm_start_scripts`, or `start_scripts`).
"""

import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ntd import _native
from ntd import driver as _driver
from ntd.debug import DebugAbstract
from ntd.driver import AssertionTester, pythonize_name, retry
from ntd.duration import Duration
from ntd.vsock import VHostDeviceVsock, VsockPair
from test_driver.config import DriverConfiguration, VMConfiguration, load_driver_configuration

__all__ = [
    "AssertionTester",
    "Driver",
    "DriverConfiguration",
    "VHostDeviceVsock",
    "VMConfiguration",
    "VsockPair",
    "load_driver_configuration",
    "pythonize_name",
    "retry",
]


class Driver(_driver.Driver):
    """ntd's driver with upstream's constructor arguments."""

    def __init__(
        self,
        vm_names: "Sequence[str] | None" = None,
        vm_start_scripts: "Sequence[str] | None" = None,
        container_names: "Sequence[str] | None" = None,
        container_start_scripts: "Sequence[str] | None" = None,
        vlans: "Sequence[int] | None" = None,
        tests: "str | None" = None,
        out_dir: "str | os.PathLike[str] | None" = None,
        logger: Any = None,
        keep_machine_state: bool = False,
        global_timeout: Duration = _driver.DEFAULT_GLOBAL_TIMEOUT,
        debug: "DebugAbstract | None" = None,
        enable_ssh_backdoor: bool = False,
        *,
        config: "DriverConfiguration | None" = None,
        start_scripts: "Sequence[str] | None" = None,
        keep_vm_state: "bool | None" = None,
        interactive: bool = False,
    ) -> None:
        test_script_path: "Path | None" = None
        machines: "Mapping[str, str | os.PathLike[str]] | Sequence[str]"
        containers: "Mapping[str, str | os.PathLike[str]] | Sequence[str]" = ()
        if config is not None:
            machines = {name: vm.start_script for name, vm in config.vms.items()}
            containers = {name: container.start_script for name, container in config.containers.items()}
            vlans = config.vlans
            global_timeout = config.global_timeout
            test_script_path = config.test_script
            enable_ssh_backdoor = config.enable_ssh_backdoor
        elif vm_names is not None or vm_start_scripts is not None:
            names, scripts = list(vm_names or []), list(vm_start_scripts or [])
            if len(names) != len(scripts):
                raise ValueError(f"{len(names)} VM names for {len(scripts)} start scripts")
            machines = dict(zip(names, scripts))
        else:
            machines = list(start_scripts or [])
        if container_names is not None or container_start_scripts is not None:
            container_scripts = list(container_start_scripts or [])
            if container_names is None:
                # As upstream: each name comes from its script (`run-<name>-nspawn`).
                containers = container_scripts
            else:
                names = list(container_names)
                if len(names) != len(container_scripts):
                    raise ValueError(f"{len(names)} container names for {len(container_scripts)} start scripts")
                containers = dict(zip(names, container_scripts))
        if keep_vm_state is not None:
            keep_machine_state = keep_vm_state
        # Upstream's loggers are sinks of their own; ntd's log goes through its native logger,
        # whatever logger object is passed.
        native_logger = logger if isinstance(logger, _native.Logger) else _native.Logger()
        super().__init__(
            machines,
            vlans or [],
            tests,
            out_dir,
            native_logger,
            keep_machine_state,
            global_timeout,
            debug,
            test_script_path=test_script_path,
            containers=containers,
            enable_ssh_backdoor=enable_ssh_backdoor,
        )
        # A driver for an interactive session (upstream's newest keyword): its waits poll from
        # the host, as in `nixos-test-driver --interactive`.
        self._interactive = interactive
