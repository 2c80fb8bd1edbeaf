"""The test-script side of the driver (upstream's `test_driver/driver.py`).

The machines, VLANs and the logger are native (`ntd._native`); this module gives a test script
the globals upstream gives it, runs the script, and reports a failure the way upstream does:
for a `RequestedAssertionFailed`, only the script's own frames, each with its source line.
"""

import datetime
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import TestCase

from ntd import _native
from ntd.debug import DebugAbstract, DebugNop
from ntd.duration import as_timedelta
from ntd.errors import MachineError, RequestedAssertionFailed
from ntd.polling_condition import PollingCondition

BaseMachine = _native.BaseMachine
QemuMachine = _native.QemuMachine
# The era-A name of the machine class, for old test scripts.
Machine = _native.QemuMachine
VLan = _native.VLan
Logger = _native.Logger


class NspawnMachine(BaseMachine):
    """Upstream's systemd-nspawn container machine. ntd runs QEMU machines only; the class
    exists so that scripts and type stubs naming it keep working."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "NspawnMachine":
        raise MachineError("systemd-nspawn containers are not supported by ntd; use QEMU nodes")


class AssertionTester(TestCase):
    """`unittest.TestCase` whose failures are `RequestedAssertionFailed`: the script's `t`."""

    failureException = RequestedAssertionFailed


_DEFAULT_TIMEOUT = datetime.timedelta(minutes=15)


def retry(
    fn: Callable[[bool], bool],
    timeout_seconds: "datetime.timedelta | int | float | None" = None,
    timeout: "datetime.timedelta | None" = None,
) -> None:
    """Call `fn(last_try)` once a second until it returns True, for `timeout` (default 15
    minutes); then once more with `last_try=True`; raise `RequestedAssertionFailed` if that
    fails too. `timeout_seconds` is the older name of `timeout`."""
    if timeout_seconds is not None:
        if timeout is not None:
            raise TypeError("retry() got both 'timeout' and 'timeout_seconds' arguments. Pass only 'timeout'")
        timeout = as_timedelta(timeout_seconds)
    elif timeout is None:
        timeout = _DEFAULT_TIMEOUT
    else:
        timeout = as_timedelta(timeout)
    start = time.monotonic()

    def elapsed() -> datetime.timedelta:
        return datetime.timedelta(seconds=time.monotonic() - start)

    while elapsed() < timeout:
        if fn(False):
            return
        time.sleep(1)
    if not fn(True):
        raise RequestedAssertionFailed(
            f"action timed out after {elapsed().total_seconds():.2f} seconds (timeout={timeout.total_seconds()})"
        )


def pythonize_name(name: str) -> str:
    """The variable a machine is bound to in the test script."""
    return re.sub(r"^[^A-Za-z_]|[^A-Za-z0-9_]", "_", name)


class Driver:
    """A test run: the native driver (machines, VLANs), the script and the logger."""

    def __init__(
        self,
        native: "_native.Driver",
        tests: str,
        logger: "_native.Logger",
        debug: "DebugAbstract | None" = None,
    ) -> None:
        self.native = native
        self.tests = tests
        self.logger = logger
        self.debug = debug if debug is not None else DebugNop()
        self.polling_conditions: list[PollingCondition] = []
        # As upstream: every command of a driver machine first checks the polling conditions.
        for machine in self.machines:
            machine.callbacks.append(self.check_polling_conditions)

    @property
    def machines(self) -> list[QemuMachine]:
        return self.native.machines

    @property
    def vlans(self) -> list[VLan]:
        return self.native.vlans

    @property
    def machines_qemu(self) -> list[QemuMachine]:
        return self.native.machines

    @property
    def machines_nspawn(self) -> list[NspawnMachine]:
        return []

    @property
    def global_timeout(self) -> float:
        return self.native.global_timeout

    @contextmanager
    def subtest(self, name: str) -> Iterator[None]:
        """Group logs under a given test name."""
        with self.logger.subtest(name):
            try:
                yield
            except Exception as e:
                self.logger.log_test_error(f'Test "{name}" failed with error: "{e}"')
                raise e

    def test_symbols(self) -> dict[str, Any]:
        @contextmanager
        def subtest(name: str) -> Iterator[None]:
            with self.subtest(name):
                yield

        general_symbols = dict(
            start_all=self.start_all,
            test_script=self.test_script,
            machines=self.machines,
            machines_qemu=self.machines_qemu,
            machines_nspawn=self.machines_nspawn,
            vlans=self.vlans,
            driver=self,
            log=self.logger,
            os=os,
            create_machine=self.create_machine,
            subtest=subtest,
            run_tests=self.run_tests,
            join_all=self.join_all,
            retry=retry,
            serial_stdout_off=self.serial_stdout_off,
            serial_stdout_on=self.serial_stdout_on,
            polling_condition=self.polling_condition,
            BaseMachine=BaseMachine,  # for typing
            QemuMachine=QemuMachine,  # for typing
            NspawnMachine=NspawnMachine,  # for typing
            Machine=Machine,  # for typing, in old scripts
            t=AssertionTester(),
            debug=self.debug,
            dump_machine_ssh=self.dump_machine_ssh,
        )
        machine_symbols = {pythonize_name(m.name): m for m in self.machines}
        # With exactly one machine, it is also `machine`, whatever its name.
        if len(self.machines) == 1:
            (machine_symbols["machine"],) = self.machines
        vlan_symbols = {f"vlan{v.nr}": v for v in self.vlans}
        print(
            "additionally exposed symbols:\n    "
            + ", ".join(m.name for m in self.machines)
            + ",\n    "
            + ", ".join(f"vlan{v.nr}" for v in self.vlans)
            + ",\n    "
            + ", ".join(general_symbols.keys())
        )
        return {**general_symbols, **machine_symbols, **vlan_symbols}

    def test_script(self) -> None:
        """Run the test script."""
        with self.logger.nested("run the VM test script"):
            symbols = self.test_symbols()
            try:
                code = compile(self.tests, "<string>", "exec")
            except SyntaxError as e:
                self.logger.log_test_error(f"the test script has a syntax error on line {e.lineno}: {e.msg}")
                if e.text:
                    self.logger.log_test_error(f"    {e.text.rstrip()}")
                sys.exit(1)
            try:
                exec(code, symbols, None)
            except MachineError:
                for line in traceback.format_exc().splitlines():
                    self.logger.log_test_error(line)
                sys.exit(1)
            except RequestedAssertionFailed:
                exc_type, exc, tb = sys.exc_info()
                # Only the test script's own frames (the script is exec'd as "<string>").
                filtered = [frame for frame in traceback.extract_tb(tb) if frame.filename == "<string>"]
                self.logger.log_test_error("Traceback (most recent call last):")
                code_lines = self.tests.splitlines()
                for frame, line in zip(filtered, traceback.format_list(filtered)):
                    self.logger.log_test_error(line.rstrip())
                    if frame.lineno:
                        self.logger.log_test_error(f"    {code_lines[frame.lineno - 1].strip()}")
                self.logger.log_test_error("")
                exc_prefix = exc_type.__name__ if exc_type is not None else "Error"
                for line in f"{exc_prefix}: {exc}".splitlines():
                    self.logger.log_test_error(line)
                self.debug.breakpoint()
                sys.exit(1)
            except Exception:
                self.debug.breakpoint()
                raise

    def run_tests(self) -> None:
        """Run the test script (for non-interactive runs), then `sync` every machine that is up."""
        shown = int(self.global_timeout) if self.global_timeout == int(self.global_timeout) else self.global_timeout
        self.logger.info(f"Test will time out and terminate in {shown} seconds")
        self.native.start_timer()
        self.test_script()
        for machine in self.machines:
            if machine.is_up():
                machine.execute("sync")

    def start_all(self) -> None:
        """Start all machines, at once."""
        self.native.start_all()

    def join_all(self) -> None:
        """Wait for all machines to shut down."""
        self.native.join_all()
        self.native.cancel_timer()

    def create_machine(
        self,
        start_command: "str | dict",
        *,
        name: "str | None" = None,
        keep_machine_state: bool = False,
        keep_vm_state: "bool | None" = None,
    ) -> QemuMachine:
        """Create a machine from any start command. It is not added to `machines`."""
        if isinstance(start_command, dict):
            # Era-A scripts passed {"startCommand": ..., "name": ...}.
            name = start_command.get("name", name)
            start_command = start_command["startCommand"]
        if keep_vm_state is not None:
            keep_machine_state = keep_vm_state
        return self.native.create_machine(start_command, name=name, keep_machine_state=keep_machine_state)

    def serial_stdout_on(self) -> None:
        self.logger.print_serial_logs(True)

    def serial_stdout_off(self) -> None:
        self.logger.print_serial_logs(False)

    def dump_machine_ssh(self) -> None:
        """Upstream prints how to reach machines over the SSH backdoor; ntd has none."""

    def check_polling_conditions(self) -> None:
        for condition in self.polling_conditions:
            condition.maybe_raise()

    def _set_host_side_waits(self, enable: bool) -> None:
        for machine in self.machines:
            machine._set_host_side_waits(enable)

    def polling_condition(
        self,
        fun_: "Callable | None" = None,
        *,
        seconds_interval: "float | None" = None,
        interval: "datetime.timedelta | None" = None,
        description: "str | None" = None,
    ) -> Any:
        """Make a function a polling condition: a decorator (`@polling_condition`, or with
        arguments) giving a context manager that checks it before every command."""
        driver = self
        if seconds_interval is not None:
            if interval is not None:
                raise TypeError(
                    "polling_condition() got both 'interval' and 'seconds_interval' arguments. Pass only 'interval'"
                )
            warnings.warn("polling_condition(): The 'seconds_interval' argument is deprecated. Use 'interval' instead.")
            interval = as_timedelta(seconds_interval)

        class Poll:
            def __init__(self, fun: Callable) -> None:
                self.condition = PollingCondition(fun, driver.logger, description=description, interval=interval)

            def __enter__(self) -> None:
                driver.polling_conditions.append(self.condition)
                driver._set_host_side_waits(True)

            def __exit__(self, *_: Any) -> None:
                res = driver.polling_conditions.pop()
                assert res is self.condition
                if not driver.polling_conditions:
                    driver._set_host_side_waits(False)

            def wait(
                self,
                timeout_seconds: "datetime.timedelta | int | float | None" = None,
                timeout: "datetime.timedelta | None" = None,
            ) -> None:
                description = self.condition.description

                def holds(last: bool) -> bool:
                    if last:
                        driver.logger.info(f"Last chance for {description}")
                    ok = self.condition.check(force=True)
                    if not ok and not last:
                        driver.logger.info(f"({description} failure not fatal yet)")
                    return ok

                with driver.logger.nested(f"waiting for {description}"):
                    retry(holds, timeout_seconds, timeout)

        if fun_ is None:
            return Poll
        return Poll(fun_)
