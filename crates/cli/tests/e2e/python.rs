//! ntd as a Python library: the wheel (built by scripts/python-env and installed into a fresh
//! venv) drives real machines from a Python program and from pytest, and cleans up after
//! itself however the program ends.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{DEBIAN_LIMIT, SMOKE_LIMIT, Scenario, Tier, live_processes_mentioning, py_env, repo};

/// `python -c program start-script` in the venv, with the scenario's TMPDIR.
fn python(scenario: &Scenario, program: &str, start_script: &std::path::Path) -> Command {
    let mut command = Command::new(py_env().join("bin/python"));
    command
        .arg("-c")
        .arg(program)
        .arg(start_script)
        .current_dir(scenario.path())
        .env("TMPDIR", scenario.tmp_dir())
        .env("NO_COLOR", "1");
    command
}

#[test]
fn the_pytest_example_passes() {
    let scenario = Scenario::new();
    let mut command = Command::new(py_env().join("bin/pytest"));
    command
        .args(["-p", "no:cacheprovider", "examples/pytest"])
        .current_dir(repo())
        .env("NTD_GUEST_DIR", crate::harness::guest())
        .env("TMPDIR", scenario.tmp_dir());
    let run = scenario.run_command(command, DEBIAN_LIMIT);
    run.assert_status(0);
    assert!(run.stdout.contains("6 passed"), "{}", run.stdout);
}

#[test]
fn leaving_the_with_block_by_an_exception_stops_the_machines() {
    let scenario = Scenario::new();
    let script = scenario.start_script("machine", Tier::Smoke, &[]);
    let program = r#"
import sys
from ntd import Driver
with Driver([sys.argv[1]]) as driver:
    driver.start_all()
    (machine,) = driver.machines
    print(machine.succeed("echo up"), end="", flush=True)
    raise RuntimeError("boom")
"#;
    let run = scenario.run_command(python(&scenario, program, &script), SMOKE_LIMIT);
    run.assert_status(1);
    assert_eq!(run.stdout, "up\n");
    run.assert_stderr_contains("RuntimeError: boom");
    run.assert_stderr_contains("kill QemuMachine");
}

#[test]
fn a_driver_never_closed_is_closed_when_the_interpreter_exits() {
    let scenario = Scenario::new();
    let script = scenario.start_script("machine", Tier::Smoke, &[]);
    let program = r#"
import sys
from ntd import Driver
driver = Driver({"server": sys.argv[1]}).open()
driver.start_all()
(server,) = driver.machines
print(server.name, server.succeed("echo up"), end="", flush=True)
"#;
    let run = scenario.run_command(python(&scenario, program, &script), SMOKE_LIMIT);
    run.assert_status(0);
    assert_eq!(run.stdout, "server up\n");
    run.assert_stderr_contains("kill QemuMachine");
}

#[test]
fn the_machines_die_with_a_killed_python() {
    let scenario = Scenario::new();
    let script = scenario.start_script("machine", Tier::Smoke, &[]);
    let program = r#"
import sys, time
from ntd import Driver
driver = Driver([sys.argv[1]]).open()
driver.start_all()
driver.machines[0].succeed("true")
print("ready", flush=True)
time.sleep(600)
"#;
    let mut child =
        python(&scenario, program, &script).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("run python");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout pipe"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read python's stdout");
    assert_eq!(line, "ready\n", "the machine did not come up");
    let needle = scenario.path().to_string_lossy().into_owned();
    assert!(!live_processes_mentioning(&needle).is_empty(), "QEMU is not running under the scenario directory");

    child.kill().expect("SIGKILL python");
    child.wait().expect("reap python");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "QEMU outlived the killed python: {:?}", live_processes_mentioning(&needle));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_native_stubs_match_the_module_and_the_packages_type_check() {
    let stubtest = Command::new(py_env().join("bin/python"))
        .args(["-m", "mypy.stubtest", "ntd._native"])
        .output()
        .expect("run stubtest");
    assert!(stubtest.status.success(), "stubtest:\n{}", String::from_utf8_lossy(&stubtest.stdout));

    let mypy = Command::new(py_env().join("bin/mypy"))
        .args(["--strict", "--no-incremental", "-p", "ntd", "-p", "test_driver"])
        .output()
        .expect("run mypy");
    assert!(mypy.status.success(), "mypy --strict:\n{}", String::from_utf8_lossy(&mypy.stdout));
}

#[test]
fn upstreams_import_paths_name_ntds_classes() {
    let program = r#"
from ntd import _native
import ntd.driver
from test_driver.driver import Driver, DriverConfiguration, VMConfiguration, load_driver_configuration
from test_driver.machine import BaseMachine, Machine, NspawnMachine, QemuMachine, retry
from test_driver.vlan import VLan
from test_driver.logger import AbstractLogger, CompositeLogger
from test_driver.debug import DebugAbstract, DebugNop
from test_driver.errors import MachineError, RequestedAssertionFailed
from test_driver.polling_condition import PollingCondition
assert QemuMachine is Machine is _native.QemuMachine and issubclass(QemuMachine, BaseMachine)
assert VLan is _native.VLan and issubclass(Driver, ntd.driver.Driver)
assert isinstance(_native.Logger(), AbstractLogger)
assert issubclass(RequestedAssertionFailed, AssertionError)
print("ok")
"#;
    let output = Command::new(py_env().join("bin/python")).args(["-c", program]).output().expect("run python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
}

/// The SSH backdoor from the library: `Driver(..., enable_ssh_backdoor=True)` serves the VM's
/// vsock device, and its ssh configuration's proxy is this Python's `-m ntd.ssh_proxy` (a
/// library user need not have `ntd-ssh-proxy`), through which ssh runs a command in the guest.
#[test]
fn the_library_has_the_ssh_backdoor_through_its_own_python() {
    let scenario = Scenario::new();
    let script = scenario.start_script("machine", Tier::Debian, &["--ssh-backdoor"]);
    let program = r#"
import shlex
import subprocess
import sys
from ntd import Driver
with Driver([sys.argv[1]], enable_ssh_backdoor=True) as driver:
    (machine,) = driver.machines
    machine.wait_for_unit("multi-user.target")
    pair = driver.vhost_vsock.sockets["machine"]
    config = driver.native.ssh_config
    proxy = f"ProxyCommand {shlex.quote(sys.executable)} -m ntd.ssh_proxy %n %p"
    assert proxy in config.read_text(), config.read_text()
    ssh = ["ssh", "-F", str(config), "-o", "User=root", f"vsock-mux/{pair.host}", "--", "echo", "over ssh"]
    done = subprocess.run(ssh, capture_output=True, stdin=subprocess.DEVNULL, text=True)
    assert done.returncode == 0, done.stderr
    print(done.stdout, end="", flush=True)
"#;
    let run = scenario.run_command(python(&scenario, program, &script), DEBIAN_LIMIT);
    run.assert_status(0);
    assert_eq!(run.stdout, "over ssh\n", "{}", run.stderr);
    run.assert_stderr_contains("kill vhost-device-vsock");
}

/// VNC from the library: `Driver(..., vnc=True)` gives the machine its server, whose socket
/// (`machine.vnc_socket`) greets a viewer with RFB.
#[test]
fn the_library_gives_machines_a_vnc_server_on_request() {
    let scenario = Scenario::new();
    let script = scenario.start_script("machine", Tier::Smoke, &[]);
    let program = r#"
import socket
import sys
from ntd import Driver
with Driver([sys.argv[1]], vnc=True) as driver:
    (machine,) = driver.machines
    machine.start()
    with socket.socket(socket.AF_UNIX) as viewer:
        viewer.settimeout(30)
        viewer.connect(str(machine.vnc_socket))
        print(viewer.recv(12).decode(), end="", flush=True)
with Driver([sys.argv[1]]) as driver:
    assert driver.machines[0].vnc_socket is None
"#;
    let run = scenario.run_command(python(&scenario, program, &script), SMOKE_LIMIT);
    run.assert_status(0);
    assert_eq!(run.stdout, "RFB 003.008\n", "{}", run.stderr);
    run.assert_stderr_contains("machine: screen over VNC: vncviewer ");
}
