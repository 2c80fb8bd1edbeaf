//! The Python layer as test scripts and downstream drivers use it, in the binary's embedded
//! interpreter: upstream's module paths and class hierarchy, a Python subclass of
//! `QemuMachine` with its own constructor booting a fake machine, and clear `MachineError`s
//! for containers and for a subclass that never initialised its native part. Each script
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
print("upstream's module paths hold")
"#;

#[test]
fn upstreams_module_paths_and_class_hierarchy_hold() {
    let mut scenario = Scenario::new();
    scenario.machine("alpha", &[]);
    scenario.vlan(1);
    run_passing(&scenario, scenario.command(&[]), MODULE_PATHS, "upstream's module paths hold");
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
from test_driver.errors import MachineError
from test_driver.machine import NspawnMachine
for make in [lambda: NspawnMachine(), lambda: NspawnMachine("out", "tmp", "start", name="box")]:
    try:
        make()
        raise Exception("an NspawnMachine was made")
    except MachineError as e:
        assert str(e) == "systemd-nspawn containers are not supported by ntd yet; use QEMU nodes", str(e)
print("containers are refused")
"#;

#[test]
fn nspawn_machines_are_refused_with_a_machine_error() {
    let scenario = Scenario::new();
    run_passing(&scenario, scenario.command(&[]), CONTAINERS, "containers are refused");
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
