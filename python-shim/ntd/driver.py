"""The test-script side of the driver (upstream's `test_driver/driver.py`), and ntd's Python
library entry point.

The machines, VLANs and the logger are native (`ntd._native`); this module gives a test script
the globals upstream gives it, runs the script, and reports a failure the way upstream does:
for a `RequestedAssertionFailed`, only the script's own frames, each with its source line.

A Python program drives machines with it directly::

    with Driver(["./result/bin/run-machine-vm"]) as driver:
        driver.start_all()
        (machine,) = driver.machines
        machine.wait_for_unit("multi-user.target")

Leaving the `with` block (also by an exception) stops every machine and switch; so does the
interpreter's exit for a driver that was never closed.
"""

import atexit
import datetime
import os
import re
import sys
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import TestCase

from ntd import _native
from ntd.debug import Debug, DebugAbstract, DebugNop
from ntd.duration import Duration, as_timedelta, polling_interval
from ntd.errors import MachineError, RequestedAssertionFailed
from ntd.polling_condition import PollingCondition
from ntd.vsock import VHostDeviceVsock, VsockPair

BaseMachine = _native.BaseMachine
QemuMachine = _native.QemuMachine
NspawnMachine = _native.NspawnMachine
# The era-A name of the machine class, for old test scripts.
Machine = _native.QemuMachine
VLan = _native.VLan
Logger = _native.Logger


class AssertionTester(TestCase):
    """`unittest.TestCase` whose failures are `RequestedAssertionFailed`: the script's `t`."""

    failureException = RequestedAssertionFailed


_DEFAULT_TIMEOUT = datetime.timedelta(minutes=15)


def _renamed_timeout(
    caller: str,
    timeout_seconds: "datetime.timedelta | int | float | None",
    timeout: "datetime.timedelta | int | float | None",
) -> "datetime.timedelta | int | float | None":
    """The timeout given as `timeout`, or as the older `timeout_seconds` (with upstream's
    warning for a bare number); both at once is a `TypeError`. `caller` names the function in
    the messages, as upstream's do."""
    if timeout_seconds is None:
        return timeout
    if timeout is not None:
        raise TypeError(f"{caller}() got both 'timeout' and 'timeout_seconds' arguments. Pass only 'timeout'")
    if not isinstance(timeout_seconds, datetime.timedelta):
        warnings.warn(f"{caller}(): The 'timeout_seconds' argument is deprecated. Use 'timeout' instead.")
    return timeout_seconds


def retry(
    fn: Callable[[bool], bool],
    timeout_seconds: "datetime.timedelta | int | float | None" = None,
    timeout: "datetime.timedelta | int | float | None" = None,
) -> None:
    """Call `fn(last_try)` once a second until it returns True, for `timeout` (default 15
    minutes); then once more with `last_try=True`; raise `RequestedAssertionFailed` if that
    fails too. `timeout_seconds` is the older name of `timeout`. The schedule is ntd-core's,
    shared with every wait that retries."""
    timeout = _renamed_timeout("retry", timeout_seconds, timeout)
    _native.retry(fn, as_timedelta(timeout) if timeout is not None else _DEFAULT_TIMEOUT)


_LEGACY_QEMU_KEYS = {
    "qemuBinary",
    "qemuFlags",
    "hda",
    "hdaInterface",
    "cdrom",
    "usb",
    "bios",
    "netBackendArgs",
    "netFrontendArgs",
}


def legacy_start_command(args: "dict[str, Any]") -> "tuple[str, str | None, bool]":
    """The start command, name and keep-state flag of `create_machine`'s old dict argument.

    `startCommand` is the command as it is. Without it, the command is built from the QEMU
    keys as upstream's `LegacyStartCommand` built it: the binary (`qemu-kvm` by default),
    384 MiB, a user-mode NIC, the disk, CD-ROM, USB stick and BIOS, then `qemuFlags`.
    """
    args = dict(args)
    name = args.pop("name", None)
    keep = bool(args.pop("keep_vm_state", args.pop("keepVmState", False)))
    if "startCommand" in args:
        command = args.pop("startCommand")
        if not isinstance(command, str):
            raise TypeError(f"startCommand must be a string, got: {command!r}")
        if args:
            raise TypeError(f"Unsupported arguments passed to create_machine: {args}")
        return command, name, keep
    unknown = set(args) - _LEGACY_QEMU_KEYS
    if unknown:
        raise TypeError(f"Unsupported arguments passed to create_machine: {sorted(unknown)}")
    if not args:
        raise TypeError("Dictionary passed to create_machine must contain startCommand")
    backend = f",{args['netBackendArgs']}" if args.get("netBackendArgs") else ""
    frontend = f",{args['netFrontendArgs']}" if args.get("netFrontendArgs") else ""
    command = (
        f"{args.get('qemuBinary') or 'qemu-kvm'} -m 384"
        f" -netdev user,id=net0{backend} -device virtio-net-pci,netdev=net0{frontend}"
    )
    if args.get("hda"):
        hda = os.path.abspath(args["hda"])
        interface = args.get("hdaInterface") or "virtio"
        if interface == "scsi":
            command += f" -drive id=hda,file={hda},werror=report,if=none -device scsi-hd,drive=hda"
        else:
            command += f" -drive file={hda},if={interface},werror=report"
    if args.get("cdrom"):
        command += f" -cdrom {args['cdrom']}"
    if args.get("usb"):
        command += (
            f" -device usb-ehci -drive id=usbdisk,file={args['usb']},if=none,readonly"
            " -device usb-storage,drive=usbdisk "
        )
    if args.get("bios"):
        command += f" -bios {args['bios']}"
    if args.get("qemuFlags"):
        command += f" {args['qemuFlags']}"
    return command, name, keep


def pythonize_name(name: str) -> str:
    """The variable a machine is bound to in the test script."""
    return re.sub(r"^[^A-Za-z_]|[^A-Za-z0-9_]", "_", name)


# Upstream's default when nothing sets it: a week.
DEFAULT_GLOBAL_TIMEOUT = datetime.timedelta(days=7)

StartScripts = Sequence["str | os.PathLike[str]"] | Mapping[str, "str | os.PathLike[str]"]

# Drivers this process opened and has not closed yet: closed at interpreter exit.
_open_drivers: "weakref.WeakSet[Driver]" = weakref.WeakSet()


@atexit.register
def _close_open_drivers() -> None:
    for driver in list(_open_drivers):
        driver.close()


def _specs(scripts: StartScripts) -> list[tuple[str | None, str]]:
    """(name or None, command) pairs of start scripts given as a list or a mapping."""
    if isinstance(scripts, Mapping):
        return [(name, os.fspath(script)) for name, script in scripts.items()]
    return [(None, os.fspath(script)) for script in scripts]


class Driver:
    """A test run: machines from start scripts, VLAN switches, a logger and a test script.

    `start_scripts` are `run-<name>-vm` commands (the machine's name comes from the script's
    name) or a mapping of names to commands; `containers` are `run-<name>-nspawn` scripts of
    systemd-nspawn containers, likewise. Nothing starts until the driver is opened
    (`with Driver(...) as driver`, or `open()`); machines boot on `start_all()` or their own
    `start()`.
    """

    def __init__(
        self,
        start_scripts: StartScripts = (),
        vlans: Iterable[int] = (),
        tests: "str | None" = None,
        out_dir: "str | os.PathLike[str] | None" = None,
        logger: "_native.Logger | None" = None,
        keep_machine_state: bool = False,
        global_timeout: Duration = DEFAULT_GLOBAL_TIMEOUT,
        debug: "DebugAbstract | None" = None,
        *,
        test_script_path: "str | os.PathLike[str] | None" = None,
        connect_timeout: "Duration | None" = None,
        native: "_native.Driver | None" = None,
        containers: StartScripts = (),
        enable_ssh_backdoor: bool = False,
        failure_artifacts: bool = False,
        vnc: bool = False,
    ) -> None:
        self._machine_specs = _specs(start_scripts)
        self._container_specs = _specs(containers)
        self._vlan_ids = list(vlans)
        self._tests = tests
        self._test_script_path = Path(test_script_path) if test_script_path is not None else None
        # The output directory: given, or the native driver's (nixos-test-driver's `-o`), or
        # the current directory.
        if out_dir is not None:
            self.out_dir = Path(out_dir)
        elif native is not None:
            self.out_dir = Path(native.out_dir)
        else:
            self.out_dir = Path.cwd()
        self.logger = logger if logger is not None else _native.Logger()
        self.keep_machine_state = keep_machine_state
        self._global_timeout = as_timedelta(global_timeout)
        self._connect_timeout = as_timedelta(connect_timeout) if connect_timeout is not None else None
        self.debug = debug if debug is not None else DebugNop()
        self.polling_conditions: list[PollingCondition] = []
        self._interactive = False
        self._enable_ssh_backdoor = enable_ssh_backdoor
        self._failure_artifacts = failure_artifacts
        self._vnc = vnc
        # A native driver handed in (by nixos-test-driver) belongs to whoever made it.
        self._owned = native is None
        self.native: "_native.Driver | None" = None
        if native is not None:
            self._attach(native)

    def _attach(self, native: "_native.Driver") -> None:
        self.native = native
        # As upstream: every command of a driver machine first checks the polling conditions.
        for machine in native.machines:
            machine.callbacks.append(self.check_polling_conditions)
        # A test paused at a breakpoint says how to get a shell in its machines (upstream's
        # debug hook names only the sandbox and the pdb port).
        if isinstance(self.debug, Debug) and native.enable_ssh_backdoor:
            self.debug.hints.append(lambda: native.ssh_backdoor_listing(styled=False))

    def open(self) -> "Driver":
        """Start the VLAN switches and create the machines (none is booted yet). Opening an
        open driver does nothing."""
        if self.native is None:
            self._attach(
                _native.Driver.create(
                    self._machine_specs,
                    self._vlan_ids,
                    out_dir=self.out_dir,
                    keep_machine_state=self.keep_machine_state,
                    global_timeout=self._global_timeout,
                    connect_timeout=self._connect_timeout,
                    containers=self._container_specs,
                    enable_ssh_backdoor=self._enable_ssh_backdoor,
                    # A library user has this Python, with ntd, but maybe no ntd-ssh-proxy.
                    ssh_proxy=[sys.executable, "-m", "ntd.ssh_proxy"],
                    failure_artifacts=self._failure_artifacts,
                    vnc=self._vnc,
                )
            )
            _open_drivers.add(self)
        return self

    def close(self) -> None:
        """Stop every machine (created ones too) and every switch. Closing twice, or a driver
        that was never opened, does nothing."""
        native = self.native
        if native is None or not self._owned:
            return
        _open_drivers.discard(self)
        native.cleanup()
        self._owned = False

    def __enter__(self) -> "Driver":
        return self.open()

    def __exit__(self, *_: Any) -> None:
        self.close()

    @property
    def tests(self) -> str:
        """The test script's text (read from its file when the driver was given a path)."""
        if self._tests is None:
            if self._test_script_path is None:
                return ""
            self._tests = self._test_script_path.read_text()
        return self._tests

    @property
    def machines(self) -> list[BaseMachine]:
        """The VMs and containers, sorted by name."""
        return self.native.machines if self.native is not None else []

    @property
    def vlans(self) -> list[VLan]:
        return self.native.vlans if self.native is not None else []

    @property
    def machines_qemu(self) -> list[QemuMachine]:
        return [m for m in self.machines if isinstance(m, QemuMachine)]

    @property
    def machines_nspawn(self) -> list[NspawnMachine]:
        return [m for m in self.machines if isinstance(m, NspawnMachine)]

    @property
    def enable_ssh_backdoor(self) -> bool:
        """Whether the run has the SSH backdoor (upstream's `config.enable_ssh_backdoor`)."""
        if self.native is not None:
            return self.native.enable_ssh_backdoor
        return self._enable_ssh_backdoor

    @property
    def vhost_vsock(self) -> "VHostDeviceVsock | None":
        """The SSH backdoor's vhost-device-vsock (upstream's `driver.vhost_vsock`): `None`
        without the backdoor, or without VMs."""
        described = self.native.vhost_vsock if self.native is not None else None
        if described is None:
            return None
        pid, temp_dir, sockets = described
        return VHostDeviceVsock(
            pid=pid,
            temp_dir=temp_dir,
            sockets={name: VsockPair(guest=guest, host=host, cid=cid) for name, guest, host, cid in sockets},
        )

    @property
    def global_timeout(self) -> float:
        """The global timeout in seconds (it runs only during `run_tests()`)."""
        if self.native is not None:
            return self.native.global_timeout
        return self._global_timeout.total_seconds()

    def _opened(self) -> "_native.Driver":
        if self.native is None:
            raise MachineError("the driver is not open: use `with Driver(...) as driver:` or driver.open()")
        return self.native

    @contextmanager
    def subtest(self, name: str) -> Iterator[None]:
        """Group logs under a given test name."""
        with self.logger.subtest(name):
            try:
                yield
            except Exception as e:
                self.logger.log_test_error(f'Test "{name}" failed with error: "{e}"')
                raise e
            except KeyboardInterrupt:
                # Ctrl-C, SIGTERM, the global timeout: the report shows where the test stood.
                self.logger.log_test_error(f'Test "{name}" was interrupted')
                raise

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
            except MachineError as e:
                self.collect_failure_artifacts(e)
                for line in traceback.format_exc().splitlines():
                    self.logger.log_test_error(line)
                sys.exit(1)
            except RequestedAssertionFailed as e:
                self.collect_failure_artifacts(e)
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
            except Exception as e:
                self.collect_failure_artifacts(e)
                self.debug.breakpoint()
                raise

    def collect_failure_artifacts(self, error: BaseException) -> "list[tuple[str, str, Path]]":
        """The test failed with `error`: write each running machine's screen, console, journal
        tail and, for a failed command, its output into the output directory (only if the
        driver was made with `failure_artifacts`; `nixos-test-driver` is, with `-o`). Returns
        `(machine, what, path)` for each file written. Never raises: the test's own error is
        what the report is about."""
        if self.native is None:
            return []
        # What ntd raised says what failed; an exception raised `from` it counts as it (not one
        # raised while handling it: that is a failure of its own).
        cause: "BaseException | None" = error
        for _ in range(100):  # a chain is finite, but a hand-made one could loop
            if cause is None or hasattr(cause, "ntd_failure"):
                break
            cause = cause.__cause__
        else:
            cause = None
        if cause is not None:
            kind = str(getattr(cause, "ntd_failure", "error"))
        elif isinstance(error, AssertionError):
            kind = "assertion-failed"
        else:
            kind = "error"
        try:
            return self.native.collect_failure_artifacts(
                kind,
                machine=getattr(cause, "ntd_machine", None),
                command=getattr(cause, "ntd_command", None),
                output=getattr(cause, "ntd_output", None),
            )
        except Exception as e:
            self.logger.error(f"cannot write the failure artifacts: {e}")
            return []

    def run_tests(self) -> None:
        """Run the test script (for non-interactive runs), then `sync` every machine that is up."""
        # Upstream's newest writes the timedelta's total_seconds(): `3600.0`.
        self.logger.info(f"Test will time out and terminate in {float(self.global_timeout)} seconds")
        self._opened().arm_global_timeout()
        self.test_script()
        # Only machines that answer at once: a container still booting (upstream's is_up()
        # for a container) would hold the run until it is ready, or forever.
        for machine in self.machines:
            if machine._ready_for_commands():
                machine.execute("sync")

    def start_all(self) -> None:
        """Start all machines, at once."""
        self._opened().start_all()

    def join_all(self) -> None:
        """Wait for all machines to shut down."""
        native = self._opened()
        native.join_all()
        native.finish()

    def create_machine(
        self,
        start_command: "str | dict[str, Any]",
        *,
        name: "str | None" = None,
        keep_machine_state: bool = False,
        keep_vm_state: "bool | None" = None,
    ) -> QemuMachine:
        """Create a machine from any start command. It is not added to `machines`.

        Older scripts pass one dict: `{"startCommand": ..., "name": ...}` (NixOS 23.11's
        form), or the oldest form that describes QEMU itself (`qemuFlags`, `hda`,
        `hdaInterface`, `cdrom`, `usb`, `bios`, `netBackendArgs`, `netFrontendArgs`,
        `qemuBinary`), from which upstream built the command line; ntd builds the same one.
        """
        if isinstance(start_command, dict):
            if name is not None or keep_vm_state is not None or keep_machine_state:
                raise TypeError("Dictionary passed to create_machine must be the only argument")
            command, name, keep_machine_state = legacy_start_command(start_command)
            self.logger.warning(
                "Using create_machine with a single dictionary argument is deprecated: "
                "pass the start command, and name= and keep_machine_state= as keywords"
            )
        else:
            command = start_command
        if keep_vm_state is not None:
            keep_machine_state = keep_vm_state
        return self._opened().create_machine(command, name=name, keep_machine_state=keep_machine_state)

    def serial_stdout_on(self) -> None:
        self.logger.print_serial_logs(True)

    def serial_stdout_off(self) -> None:
        self.logger.print_serial_logs(False)

    def dump_machine_ssh(self, offset: "int | None" = None) -> None:
        """Print how to reach each machine over the SSH backdoor (nothing without it).

        Where the host's ssh cannot reach `vsock-mux/` addresses (no systemd-ssh-proxy 258 or
        newer), a second command per VM uses ntd's ssh configuration. `offset` is older
        nixpkgs' `--dump-vsocks`: VMs with kernel vsock devices, `vsock/<offset + 1 + i>`."""
        native = self.native
        if native is None:
            # Not open: no machines, no backdoor yet.
            return
        if offset is not None:
            print(native.legacy_ssh_listing(offset), end="")
            return
        listing = native.ssh_backdoor_listing()
        if listing is not None:
            print(listing, end="")

    def check_polling_conditions(self) -> None:
        for condition in self.polling_conditions:
            condition.maybe_raise()

    def _set_host_side_waits(self, enable: bool) -> None:
        # An interactive session keeps them on: a wait interrupted by Ctrl-C must not leave a
        # loop running in the guest that the next command would have to wait for. (Where the
        # guest has ntd's control port the loop is killed anyway; a guest without the ports,
        # on the console fallback, cannot kill it.)
        for machine in self.machines:
            machine._set_host_side_waits(enable or self._interactive)

    def interactive(self, history: "str | os.PathLike[str]" = ".nixos-test-history") -> None:
        """Upstream's `--interactive`: a Python prompt with the test script's globals, until
        end of input (see `ntd.repl`). Ctrl-C interrupts the command running, not the session;
        the global timeout does not run."""
        from ntd.repl import prompt

        self._interactive = True
        self._set_host_side_waits(True)
        prompt(self.test_symbols(), os.path.abspath(history))

    def polling_condition(
        self,
        fun_: "Callable[[], Any] | None" = None,
        *,
        seconds_interval: "float | None" = None,
        interval: "datetime.timedelta | None" = None,
        description: "str | None" = None,
    ) -> Any:
        """Make a function a polling condition: a decorator (`@polling_condition`, or with
        arguments) giving a context manager that checks it before every command."""
        driver = self
        interval = polling_interval("polling_condition", seconds_interval, interval)

        class Poll:
            def __init__(self, fun: Callable[[], Any]) -> None:
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
                # Upstream's newest rules and words for the two spellings of the timeout.
                chosen = _renamed_timeout("wait", timeout_seconds, timeout)
                description = self.condition.description

                def holds(last: bool) -> bool:
                    if last:
                        driver.logger.info(f"Last chance for {description}")
                    ok = self.condition.check(force=True)
                    if not ok and not last:
                        driver.logger.info(f"({description} failure not fatal yet)")
                    return ok

                with driver.logger.nested(f"waiting for {description}"):
                    retry(holds, timeout=chosen)

        if fun_ is None:
            return Poll
        return Poll(fun_)


def generate_driver_symbols() -> None:
    """Write the test-script globals, comma-separated, to `./driver-symbols`: what
    `generate-driver-symbols` does for the Nix build, whose pyflakes check of the test script
    takes them as builtins."""
    symbols = Driver(logger=_native.Logger()).test_symbols()
    with open("driver-symbols", "w") as out:
        out.write(",".join(symbols.keys()))
