//! The Python layer as test scripts and downstream drivers use it, in the binary's embedded
//! interpreter: upstream's module paths and class hierarchy, a Python subclass of
//! `QemuMachine` with its own constructor booting a fake machine, containers (on ntd-fake's
//! container start script) beside VMs, and a clear `MachineError` for a subclass that never
//! initialised its native part. Each script
//! checks the values itself and prints a last line the test looks for.

use std::process::Command;

use crate::harness::{LIMIT, Run, Scenario};

/// Run `script` with `command` (the scenario's machines added), expecting it to pass and to
/// print `last` as its last line.
fn run_passing(scenario: &Scenario, command: Command, script: &str, last: &str) -> Run {
    let run = scenario.run_with(command, &scenario.script(script), LIMIT);
    run.assert_status(0);
    assert_eq!(run.stdout.lines().last(), Some(last), "stdout:\n{}\n--- stderr\n{}", run.stdout, run.stderr);
    run
}

const MODULE_PATHS: &str = r#"
import datetime
import ntd.driver
import test_driver
from test_driver.debug import DebugAbstract, DebugNop
from test_driver.driver import Driver, DriverConfiguration, VMConfiguration, pythonize_name
from test_driver.errors import MachineError, RequestedAssertionFailed, TestScriptError
from test_driver.logger import AbstractLogger
from test_driver.machine import BaseMachine as B, Machine as M, NspawnMachine as N, QemuMachine as Q, retry as r
from test_driver.polling_condition import PollingCondition
from test_driver.vlan import VLan

# The script's globals are the classes upstream's modules name.
assert Q is QemuMachine and B is BaseMachine and N is NspawnMachine and M is QemuMachine
assert issubclass(QemuMachine, BaseMachine) and issubclass(NspawnMachine, BaseMachine)
assert not issubclass(QemuMachine, NspawnMachine)
assert issubclass(Driver, ntd.driver.Driver) and isinstance(driver, ntd.driver.Driver)
assert issubclass(RequestedAssertionFailed, AssertionError) and issubclass(MachineError, Exception)
assert issubclass(TestScriptError, Exception)
assert isinstance(debug, DebugAbstract) and isinstance(debug, DebugNop)
assert isinstance(log, AbstractLogger)
assert pythonize_name("my-machine") == "my_machine"
# `driver.out_dir` is the output directory (`-o`), as the machines' is.
assert driver.out_dir == alpha.out_dir and driver.out_dir.name == "out", (driver.out_dir, alpha.out_dir)

start_all()
assert isinstance(alpha, QemuMachine) and isinstance(alpha, BaseMachine)
assert not isinstance(alpha, NspawnMachine)
assert machine is alpha and type(alpha).__name__ == "QemuMachine"
assert isinstance(vlan1, VLan) and vlan1.nr == 1
r(lambda last: alpha.succeed("true") == "", timeout=datetime.timedelta(seconds=10))
try:
    alpha.succeed("false")
    raise Exception("succeed did not raise")
except AssertionError as e:
    assert isinstance(e, RequestedAssertionFailed), type(e)
    # What failed, for the failure artifacts should it end the test.
    failed = (e.ntd_failure, e.ntd_machine, e.ntd_command, e.ntd_output)  # type: ignore[attr-defined]
    assert failed == ("command-failed", "alpha", "false", b""), failed
print("upstream's module paths hold")
"#;

#[test]
fn upstreams_module_paths_and_class_hierarchy_hold() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    scenario.vlan(1);
    run_passing(&scenario, scenario.command(&[]), MODULE_PATHS, "upstream's module paths hold");
}

/// What upstream's machine exposes beyond its methods, and the modules real scripts import:
/// the QMP session and its `QMPAPIError`, the shell and process objects, `booted` and
/// `connected` set by the script around a reboot it typed itself, `wait_for_job`,
/// `VLan.stop()`, the configuration and duration modules, `QemuStartCommand`, the legacy
/// `create_machine` dict.
const MACHINE_SURFACE: &str = r#"
import datetime, os, warnings
from ntd.driver import legacy_start_command
from test_driver.config import DriverConfiguration, QemuMachineConfiguration, load_driver_configuration
from test_driver.duration import Duration, as_seconds, as_timedelta
from test_driver.machine import QemuStartCommand, ocr
from test_driver.machine.qmp import QMPAPIError, QMPSession
from test_driver.errors import MachineError

assert as_seconds(datetime.timedelta(minutes=1)) == 60.0 and as_timedelta(2) == datetime.timedelta(seconds=2)
assert callable(ocr.perform_ocr_on_screenshot) and callable(ocr.perform_ocr_variants_on_screenshot)
assert alpha.qmp_client is None and alpha.shell is None and alpha.process is None
alpha.start(allow_reboot=True)

session = alpha.qmp_client
assert isinstance(session, QMPSession)
assert session.send("query-status")["return"]["running"] is True
try:
    session.send("this-command-does-not-exist")
    raise Exception("no QMPAPIError")
except QMPAPIError as e:
    assert e.class_name == "CommandNotFound" and e.description and e.transaction_id is None, vars(e)
    assert str(e).startswith("<QMP API error related to transaction None [CommandNotFound]: "), str(e)

assert alpha.process.pid == alpha.pid and alpha.pid is not None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    alpha.wait_for_job("multi-user.target")
assert [w.category for w in caught] == [DeprecationWarning], caught
assert alpha.booted and alpha.connected
assert alpha.logger is not None
assert any("Linux version" in line for line in alpha.full_console_log), alpha.full_console_log[:3]
assert alpha.state_dir.name == "vm-state-alpha" and alpha.state_dir.is_dir()

# A reboot the script types into the shell itself: it says the shell went away, and the
# next command waits for the new one.
assert alpha.shell.send(b"reboot\n") == len(b"reboot\n")
alpha.connected = False
assert not alpha.connected
alpha.wait_for_unit("multi-user.target")
assert alpha.succeed("echo back") == "back\n"

# booted = False stops a QEMU that still runs (upstream would leave it next to a new one).
alpha.booted = False
assert not alpha.booted and alpha.pid is None and alpha.qmp_client is None

vlan1.stop()
assert not os.path.exists(vlan1.socket_dir)

# The legacy dict: upstream's command line from QEMU keys, or startCommand and a name.
command, name, keep = legacy_start_command(
    {"qemuBinary": "qemu-system-x86_64", "qemuFlags": "-m 768", "hda": "/disk.qcow2", "hdaInterface": "scsi", "name": "legacy"}
)
assert command == (
    "qemu-system-x86_64 -m 384 -netdev user,id=net0 -device virtio-net-pci,netdev=net0"
    " -drive id=hda,file=/disk.qcow2,werror=report,if=none -device scsi-hd,drive=hda -m 768"
), command
assert (name, keep) == ("legacy", False)
# (A relative script path means one under the driver's directory, though QEMU starts in the
# machine's state directory.)
beta = create_machine({"startCommand": os.path.relpath(os.environ["QUICK_START_SCRIPT"]), "name": "beta"})
assert beta.name == "beta" and beta.succeed("hostname") == "beta\n"
beta.shutdown()
for bad in [{"startCommand": 1}, {"startCommand": "x", "bogus": 1}, {"cdromm": "x"}]:
    try:
        create_machine(bad)
        raise Exception(f"accepted {bad}")
    except TypeError:
        pass

# A start command object works as its script; a subclass that changes the command is refused.
assert QemuStartCommand("/x/bin/run-web-vm").machine_name == "web"
env = QemuStartCommand.build_environment("/state", "/shared", None)
assert env["TMPDIR"] == "/state" and env["SHARED_DIR"] == "/shared" and env["USE_TMPDIR"] == "1"
class Custom(QemuStartCommand):
    def cmd(self, *args, **kwargs):
        return "something else"
try:
    QemuMachine(driver.out_dir, os.environ["QUICK_MACHINE_TMP"], Custom(os.environ["QUICK_START_SCRIPT"]), name="c")
    raise Exception("a cmd() override was accepted")
except MachineError as e:
    assert "Custom.cmd() cannot be used" in str(e), str(e)
print("the machine surface holds")
"#;

#[test]
fn upstreams_machine_attributes_qmp_session_and_legacy_forms_work() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    scenario.vlan(1);
    let start_script = scenario.start_script("beta", &[]);
    let machine_tmp = scenario.tmp_dir().join("created-machines");
    std::fs::create_dir(&machine_tmp).expect("mkdir");
    let mut command = scenario.command(&[]);
    command.env("QUICK_START_SCRIPT", &start_script).env("QUICK_MACHINE_TMP", &machine_tmp);
    let run = run_passing(&scenario, command, MACHINE_SURFACE, "the machine surface holds");
    run.assert_stderr_contains("\nalpha: booted = False while QEMU still runs: stopping it\n");
    run.assert_stderr_contains("\nkill vlan (pid ");
}

/// A downstream driver's machine class: its own constructor, an overridden method, an extra
/// one. Its state goes under its own directory in TMPDIR (`QUICK_MACHINE_TMP`).
const SUBCLASS: &str = r#"
import os
from pathlib import Path
from test_driver.machine import BaseMachine, QemuMachine

class Downstream(QemuMachine):
    def __init__(self, start_command, name):
        self.calls = []
        super().__init__(driver.out_dir, Path(os.environ["QUICK_MACHINE_TMP"]), start_command, name=name)

    def succeed(self, *commands, timeout=None):
        self.calls.append(commands)
        return super().succeed(*commands, timeout=timeout).upper()

    def host_name(self):
        return self.succeed("hostname").strip().lower()

box = Downstream(os.environ["QUICK_START_SCRIPT"], "downstream")
assert isinstance(box, QemuMachine) and isinstance(box, BaseMachine)
assert box.name == "downstream" and repr(box) == "<Downstream 'downstream'>", repr(box)
assert box not in machines and not box.booted
box.start()
assert box.booted
assert box.succeed("echo hello") == "HELLO\n"
assert box.host_name() == "downstream"
assert box.calls == [("echo hello",), ("hostname",)], box.calls
# The inherited methods work on the subclass too.
box.wait_for_unit("multi-user.target")
assert box.execute("echo $((6 * 7))") == (0, "42\n")
box.shutdown()
assert not box.booted
print("the subclass ran commands")
"#;

#[test]
fn a_python_subclass_of_qemumachine_boots_and_runs_commands() {
    let scenario = Scenario::new();
    let start_script = scenario.start_script("downstream", &[]);
    let machine_tmp = scenario.tmp_dir().join("downstream-machines");
    std::fs::create_dir(&machine_tmp).expect("mkdir");
    let mut command = scenario.command(&[]);
    command.env("QUICK_START_SCRIPT", &start_script).env("QUICK_MACHINE_TMP", &machine_tmp);
    let run = run_passing(&scenario, command, SUBCLASS, "the subclass ran commands");
    // Logged as any machine is, under its name.
    run.assert_stderr_contains("\ndownstream: QEMU running (pid ");
    run.assert_stderr_contains("\ndownstream: must succeed: echo hello\n");
    run.assert_stderr_contains("\ndownstream: waiting for the VM to power off\n");
}

const CONTAINERS: &str = r#"
import os
from test_driver.machine import BaseMachine, NspawnMachine, QemuMachine
assert [m.name for m in machines] == ["alpha", "box"], machines
assert machines_qemu == [alpha] and machines_nspawn == [box], (machines_qemu, machines_nspawn)
assert isinstance(box, NspawnMachine) and isinstance(box, BaseMachine) and not isinstance(box, QemuMachine)
assert repr(box) == "<NspawnMachine 'box'>", repr(box)
assert not box.is_up()
start_all()
assert box.is_up(), "up as soon as its start script runs, as upstream's"
assert box.succeed("echo from the container > /tmp/shared/note; printf 'a\\r\\nb'") == "a\nb"
assert alpha.succeed("cat /tmp/shared/note; rm /tmp/shared/note") == "from the container\n"
status, out = box.execute("exit 4")
assert (status, out) == (4, ""), (status, out)
box.copy_from_machine("/etc/hostname")
assert os.path.exists(os.path.join(driver.out_dir, "hostname"))
# What only a VM has is Python's AttributeError, as upstream's.
for method in ["send_monitor_command", "screenshot", "send_key", "wait_for_console_text", "crash", "qmp_client"]:
    assert not hasattr(box, method), method
assert box.ssh_backdoor_command() == 'ssh -o User=root -o ProxyCommand="socat - UNIX-CLIENT:/run/systemd/nspawn/unix-export/box/ssh" bash'
assert NspawnMachine.machine_name_from_start_command("/x/bin/run-db-1-nspawn") == "db-1"
try:
    NspawnMachine.machine_name_from_start_command("/x/bin/start")
    raise Exception("a name was made up")
except AssertionError as e:
    assert str(e) == "Could not extract node name from /x/bin/start", str(e)
made = NspawnMachine(driver.out_dir, None, box.start_command, box.tmp_dir)
assert made.name == "box" and made.start_command == box.start_command
print("containers work")
"#;

#[test]
fn nspawn_machines_run_beside_qemu_machines() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    let container = ntd_fake::ContainerScript::new("box").write(&scenario.bin_dir()).expect("container script");
    let flag = format!("--container-start-scripts={}", container.display());
    let command = scenario.command(&[&flag]);
    run_passing(&scenario, command, CONTAINERS, "containers work");
}

const UNINITIALISED: &str = r#"
from test_driver.errors import MachineError
from test_driver.machine import QemuMachine

class Forgetful(QemuMachine):
    def __init__(self):
        pass  # never calls super().__init__

box = Forgetful()
assert repr(box) == "<Forgetful '?'>", repr(box)
for name, call in [
    ("succeed", lambda: box.succeed("true")),
    ("start", lambda: box.start()),
    ("name", lambda: box.name),
    ("booted", lambda: box.booted),
    ("wait_for_unit", lambda: box.wait_for_unit("x")),
]:
    try:
        call()
        raise Exception(f"{name} worked on an uninitialised machine")
    except MachineError as e:
        assert str(e) == "the machine is not initialized: its __init__ was not called", (name, str(e))
print("uninitialised machines raise MachineError")
"#;

#[test]
fn methods_of_an_uninitialised_subclass_raise_a_machine_error() {
    let scenario = Scenario::new();
    run_passing(&scenario, scenario.command(&[]), UNINITIALISED, "uninitialised machines raise MachineError");
}
