//! `QemuMachine` for Python: upstream's machine methods over `ntd_core::Machine`.
//!
//! Each method only extracts its arguments, releases the GIL around the core call
//! ([`call`]) and converts the result; output bytes become `str` here, with undecodable bytes
//! replaced, as upstream decodes them. The few waits whose condition is a Python regular
//! expression (console text, tty text, window names) match with Python's `re` here, so
//! patterns mean what they mean upstream.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ntd_core::log;
use ntd_core::machine::{ExecuteOptions, Machine, MachineConfig};
use pyo3::exceptions::{PyDeprecationWarning, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::duration::PyDuration;
use crate::errors::{assertion_failed, machine_to_pyerr};
use crate::logger::{LogBlock, attributes};
use crate::runtime::block_on;

/// Upstream's default timeout of waits and `execute`.
const DEFAULT_TIMEOUT: PyDuration = PyDuration::secs(900);

fn text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// What a method call's span (`machine.<method>`) says about the call up front.
#[derive(Clone)]
struct Traced<'a> {
    method: &'static str,
    command: Option<&'a str>,
    argument: Option<String>,
    timeout: Option<Duration>,
}

impl<'a> Traced<'a> {
    fn new(method: &'static str) -> Traced<'a> {
        Traced { method, command: None, argument: None, timeout: None }
    }

    /// What the method acts on, for a trace reader: a unit, file, port, pattern or key.
    fn argument(mut self, argument: impl std::fmt::Display) -> Traced<'a> {
        self.argument = Some(argument.to_string());
        self
    }

    fn command(mut self, command: &'a str) -> Traced<'a> {
        self.command = Some(command);
        self
    }

    fn timeout(mut self, timeout: Option<Duration>) -> Traced<'a> {
        self.timeout = timeout;
        self
    }
}

/// Drive a core call with the GIL released, its guest commands carrying the current span's
/// trace context, and convert its error (recording a failed command's exit status).
fn drive<T: Send>(
    py: Python<'_>,
    span: &tracing::Span,
    future: impl Future<Output = Result<T, ntd_core::machine::Error>> + Send,
) -> PyResult<T> {
    let traceparent = log::traceparent_of(span);
    match block_on(py, log::with_traceparent(traceparent, future))? {
        Ok(value) => Ok(value),
        Err(error) => {
            if let ntd_core::machine::Error::CommandFailed { status, .. } = &error {
                span.record("exit_code", status);
            }
            Err(machine_to_pyerr(py, error))
        }
    }
}

/// Anything a test script passes as a tty number (`1` or `"1"`).
fn tty_name(tty: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(tty.str()?.to_string())
}

/// Upstream's `retry` from the host, for checks that run Python code: `check(last_try)` once
/// a second (the GIL released in between) until it holds, one last time after `timeout`.
fn host_retry(
    py: Python<'_>,
    timeout: Duration,
    mut check: impl FnMut(Python<'_>, bool) -> PyResult<bool>,
) -> PyResult<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check(py, false)? {
            return Ok(());
        }
        // The timer must be made inside the runtime, hence the async block.
        block_on(py, async { tokio::time::sleep(Duration::from_secs(1)).await })?;
    }
    if check(py, true)? {
        return Ok(());
    }
    let timed_out = ntd_core::retry::TimedOut { elapsed: start.elapsed(), timeout };
    Err(assertion_failed(py, timed_out.to_string()))
}

/// Run `body` inside a nested log block of `machine`, ending it as failed on an error.
fn nested<T>(machine: &str, message: &str, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    let span = log::block(Some(machine), message, &[]);
    let result = {
        let _entered = span.enter();
        body()
    };
    if result.is_err() {
        log::mark_failed(&span);
    }
    result
}

/// The base class of every machine (upstream's `BaseMachine`), for typing and `isinstance`.
#[pyclass(subclass, frozen, module = "ntd._native")]
pub struct BaseMachine;

/// A QEMU virtual machine (upstream's `QemuMachine`).
#[pyclass(extends = BaseMachine, frozen, module = "ntd._native")]
pub struct QemuMachine {
    core: Machine,
    /// Upstream's `callbacks`: called before every command (the driver's polling conditions).
    callbacks: Py<PyList>,
}

impl QemuMachine {
    /// The Python side of a core machine: the core runs this object's `callbacks` list.
    fn from_core(py: Python<'_>, core: Machine) -> QemuMachine {
        let callbacks = PyList::empty(py).unbind();
        let list = callbacks.clone_ref(py);
        core.set_callbacks(vec![Arc::new(move || {
            Python::attach(|py| {
                for callback in list.bind(py).iter() {
                    callback.call0()?;
                }
                Ok::<_, PyErr>(())
            })
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })]);
        QemuMachine { core, callbacks }
    }

    /// Wrap a core machine as a Python object.
    pub fn wrap(py: Python<'_>, core: Machine) -> PyResult<Py<QemuMachine>> {
        Py::new(py, PyClassInitializer::from(BaseMachine).add_subclass(QemuMachine::from_core(py, core)))
    }

    /// The core machine.
    pub fn core(&self) -> &Machine {
        &self.core
    }

    /// Run `body` as one method call: inside its span, which records the command, timeout
    /// and, on an exception, the status ERROR with its message.
    fn traced<T>(&self, traced: Traced<'_>, body: impl FnOnce(&tracing::Span) -> PyResult<T>) -> PyResult<T> {
        let span = log::method_span(self.core.name(), traced.method);
        let _tracked = log::track(&span);
        if let Some(command) = traced.command {
            span.record("command", command);
        }
        if let Some(argument) = &traced.argument {
            span.record("argument", argument.as_str());
        }
        if let Some(timeout) = traced.timeout {
            span.record("timeout_s", timeout.as_secs_f64());
        }
        let result = span.in_scope(|| body(&span));
        if let Err(error) = &result {
            log::record_error(&span, &error.to_string());
        }
        result
    }

    /// `console_interact`'s loop: the terminal's bytes to the serial console until end of
    /// file (Ctrl-D) or Ctrl-C.
    fn forward_stdin(&self, py: Python<'_>, span: &tracing::Span) -> PyResult<()> {
        self.core.log("Terminal is ready (there is no prompt):");
        let stdin = py.import("sys")?.getattr("stdin")?.getattr("buffer")?;
        loop {
            let byte: Vec<u8> = match stdin.call_method1("read", (1,)) {
                Ok(byte) => byte.extract()?,
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => break,
                Err(e) => return Err(e),
            };
            if byte.is_empty() {
                self.core.log("Closing connection to the console");
                break;
            }
            drive(py, span, self.core.send_console(&byte))?;
        }
        Ok(())
    }

    /// One core call as one method call (see [`QemuMachine::traced`]).
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        traced: Traced<'_>,
        future: impl Future<Output = Result<T, ntd_core::machine::Error>> + Send,
    ) -> PyResult<T> {
        self.traced(traced, |span| drive(py, span, future))
    }
}

#[pymethods]
impl QemuMachine {
    /// `QemuMachine(out_dir, tmp_dir, start_command, logger=None, name=None,
    /// keep_machine_state=False, callbacks=None)`, as upstream's constructor.
    #[new]
    #[pyo3(signature = (out_dir, tmp_dir, start_command, logger=None, name=None, keep_machine_state=false, callbacks=None))]
    #[allow(clippy::too_many_arguments)] // upstream's constructor signature
    fn new(
        py: Python<'_>,
        out_dir: PathBuf,
        tmp_dir: PathBuf,
        start_command: String,
        logger: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        keep_machine_state: bool,
        callbacks: Option<&Bound<'_, PyList>>,
    ) -> PyResult<PyClassInitializer<QemuMachine>> {
        let _ = logger; // ntd has one logger; upstream's argument is accepted for compatibility.
        let mut config = MachineConfig::new(start_command, tmp_dir, out_dir);
        config.name = name;
        config.keep_machine_state = keep_machine_state;
        let core = Machine::new(config).map_err(|e| machine_to_pyerr(py, e))?;
        let this = QemuMachine::from_core(py, core);
        if let Some(callbacks) = callbacks {
            for callback in callbacks.iter() {
                this.callbacks.bind(py).append(callback)?;
            }
        }
        Ok(PyClassInitializer::from(BaseMachine).add_subclass(this))
    }

    fn __repr__(&self) -> String {
        format!("<QemuMachine '{}'>", self.core.name())
    }

    // --- attributes -------------------------------------------------------------------

    #[getter]
    fn name(&self) -> &str {
        self.core.name()
    }

    #[getter]
    fn out_dir(&self) -> PathBuf {
        self.core.out_dir().to_owned()
    }

    #[getter]
    fn state_dir(&self) -> PathBuf {
        self.core.state_dir().to_owned()
    }

    #[getter]
    fn shared_dir(&self) -> PathBuf {
        self.core.shared_dir().to_owned()
    }

    #[getter]
    fn tmp_dir(&self) -> PathBuf {
        self.core.shared_dir().parent().map(PathBuf::from).unwrap_or_default()
    }

    #[getter]
    fn monitor_path(&self) -> PathBuf {
        self.core.monitor_path().to_owned()
    }

    #[getter]
    fn qmp_path(&self) -> PathBuf {
        self.core.qmp_path().to_owned()
    }

    #[getter]
    fn shell_path(&self) -> PathBuf {
        self.core.shell_path().to_owned()
    }

    #[getter]
    fn keep_machine_state(&self) -> bool {
        self.core.keep_machine_state()
    }

    /// Upstream's era-A name of `keep_machine_state`.
    #[getter]
    fn keep_vm_state(&self) -> bool {
        self.core.keep_machine_state()
    }

    #[getter]
    fn booted(&self) -> bool {
        self.core.is_booted()
    }

    #[getter]
    fn connected(&self) -> bool {
        self.core.is_connected()
    }

    #[getter]
    fn pid(&self) -> Option<u32> {
        self.core.pid()
    }

    #[getter]
    fn start_command(&self) -> &str {
        self.core.start_command()
    }

    #[getter]
    fn callbacks(&self, py: Python<'_>) -> Py<PyList> {
        self.callbacks.clone_ref(py)
    }

    // --- logging ----------------------------------------------------------------------

    /// Log a line tagged with this machine.
    fn log(&self, msg: &str) {
        self.core.log(msg);
    }

    /// Log a serial console line of this machine.
    fn log_serial(&self, msg: &str) {
        log::serial(self.core.name(), msg);
    }

    /// A nested log block tagged with this machine.
    #[pyo3(signature = (msg, attrs=None))]
    fn nested(&self, msg: String, attrs: Option<&Bound<'_, PyDict>>) -> PyResult<LogBlock> {
        let (_, attrs) = attributes(attrs)?;
        Ok(LogBlock::new(Some(self.core.name().to_owned()), msg, attrs))
    }

    /// Run the callbacks (polling conditions).
    fn run_callbacks(&self, py: Python<'_>) -> PyResult<()> {
        self.core.run_callbacks().map_err(|e| machine_to_pyerr(py, e))
    }

    /// Waits poll from the host while a polling condition is active (set by the driver).
    fn _set_host_side_waits(&self, enable: bool) {
        self.core.set_host_side_waits(enable);
    }

    // --- lifecycle --------------------------------------------------------------------

    /// Booted and connected.
    fn is_up(&self) -> bool {
        self.core.is_up()
    }

    /// Start the VM; does not wait for it to boot.
    #[pyo3(signature = (allow_reboot=false))]
    fn start(&self, py: Python<'_>, allow_reboot: bool) -> PyResult<()> {
        self.call(py, Traced::new("start"), self.core.start(allow_reboot))
    }

    /// Wait for the guest's backdoor shell, starting the VM if needed.
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("connect"), self.core.connect())
    }

    /// Power the guest off through its shell and wait for QEMU to exit.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("shutdown"), self.core.shutdown())
    }

    /// Make QEMU quit at once (a simulated power failure) and wait for it.
    fn crash(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("crash"), self.core.crash())
    }

    /// Press Ctrl+Alt+Delete; the backdoor reconnects if the VM was started with
    /// `allow_reboot=True`.
    fn reboot(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("reboot"), self.core.reboot())
    }

    /// Wait until QEMU exits (does not cause it).
    fn wait_for_shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("wait_for_shutdown"), self.core.wait_for_shutdown())
    }

    /// Stop QEMU and close everything (used by the driver's cleanup).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.release())
    }

    /// Move a guest with an initrd backdoor from stage 1 to stage 2.
    fn switch_root(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("switch_root"), self.core.switch_root())
    }

    // --- commands ---------------------------------------------------------------------

    /// Run a shell command; return `(status, stdout)`.
    #[pyo3(signature = (command, check_return=true, check_output=true, timeout=Some(DEFAULT_TIMEOUT)))]
    fn execute(
        &self,
        py: Python<'_>,
        command: &str,
        check_return: bool,
        check_output: bool,
        timeout: Option<PyDuration>,
    ) -> PyResult<(i32, String)> {
        let timeout = timeout.map(|t| t.0);
        let options = ExecuteOptions { check_return, check_output, timeout };
        let traced = Traced::new("execute").command(command).timeout(timeout);
        self.traced(traced, |span| {
            let (status, output) = drive(py, span, self.core.execute(command, options))?;
            span.record("exit_code", status);
            span.record("output.bytes", output.len() as u64);
            Ok((status, text(output)))
        })
    }

    /// Run each command; raise if one fails; return the concatenated output.
    #[pyo3(signature = (*commands, timeout=None))]
    fn succeed(&self, py: Python<'_>, commands: &Bound<'_, PyTuple>, timeout: Option<PyDuration>) -> PyResult<String> {
        let commands: Vec<String> = commands.extract()?;
        let joined = commands.join("\n");
        let timeout = timeout.map(|t| t.0);
        self.traced(Traced::new("succeed").command(&joined).timeout(timeout), |span| {
            let output = drive(py, span, self.core.succeed(&commands, timeout))?;
            span.record("exit_code", 0);
            span.record("output.bytes", output.len() as u64);
            Ok(text(output))
        })
    }

    /// Run each command; raise if one succeeds; return the concatenated output.
    #[pyo3(signature = (*commands, timeout=None))]
    fn fail(&self, py: Python<'_>, commands: &Bound<'_, PyTuple>, timeout: Option<PyDuration>) -> PyResult<String> {
        let commands: Vec<String> = commands.extract()?;
        let joined = commands.join("\n");
        let timeout = timeout.map(|t| t.0);
        self.traced(Traced::new("fail").command(&joined).timeout(timeout), |span| {
            let output = drive(py, span, self.core.fail(&commands, timeout))?;
            span.record("output.bytes", output.len() as u64);
            Ok(text(output))
        })
    }

    /// Retry a command once a second until it succeeds; return its output. Each attempt is
    /// bounded by `attempt_timeout` (default: `timeout`).
    #[pyo3(signature = (command, timeout=DEFAULT_TIMEOUT, attempt_timeout=None))]
    fn wait_until_succeeds(
        &self,
        py: Python<'_>,
        command: &str,
        timeout: PyDuration,
        attempt_timeout: Option<PyDuration>,
    ) -> PyResult<String> {
        let traced = Traced::new("wait_until_succeeds").command(command).timeout(Some(timeout.0));
        let output =
            self.call(py, traced, self.core.wait_until_succeeds(command, timeout.0, attempt_timeout.map(|t| t.0)))?;
        Ok(text(output))
    }

    /// Retry a command once a second until it fails; return its output.
    #[pyo3(signature = (command, timeout=DEFAULT_TIMEOUT, attempt_timeout=None))]
    fn wait_until_fails(
        &self,
        py: Python<'_>,
        command: &str,
        timeout: PyDuration,
        attempt_timeout: Option<PyDuration>,
    ) -> PyResult<String> {
        let traced = Traced::new("wait_until_fails").command(command).timeout(Some(timeout.0));
        let output =
            self.call(py, traced, self.core.wait_until_fails(command, timeout.0, attempt_timeout.map(|t| t.0)))?;
        Ok(text(output))
    }

    /// Sleep in guest time (`sleep N` in the guest).
    #[pyo3(signature = (secs=None, duration=None))]
    fn sleep(&self, py: Python<'_>, secs: Option<PyDuration>, duration: Option<PyDuration>) -> PyResult<()> {
        let Some(duration) = duration.or(secs) else {
            return Err(pyo3::exceptions::PyTypeError::new_err("sleep() needs a duration"));
        };
        self.call(py, Traced::new("sleep"), self.core.sleep(duration.0))
    }

    // --- systemd ----------------------------------------------------------------------

    /// Run `systemctl <q>` (as `user` with `--user`); return `(status, output)`.
    #[pyo3(signature = (q, user=None))]
    fn systemctl(&self, py: Python<'_>, q: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        let (status, output) = self.call(py, Traced::new("systemctl").argument(q), self.core.systemctl(q, user))?;
        Ok((status, text(output)))
    }

    /// `systemctl start <job>`.
    #[pyo3(signature = (jobname, user=None))]
    fn start_job(&self, py: Python<'_>, jobname: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        let (status, output) =
            self.call(py, Traced::new("start_job").argument(jobname), self.core.start_job(jobname, user))?;
        Ok((status, text(output)))
    }

    /// `systemctl stop <job>`.
    #[pyo3(signature = (jobname, user=None))]
    fn stop_job(&self, py: Python<'_>, jobname: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        let (status, output) =
            self.call(py, Traced::new("stop_job").argument(jobname), self.core.stop_job(jobname, user))?;
        Ok((status, text(output)))
    }

    /// Every property of a unit, from `systemctl show`.
    #[pyo3(signature = (unit, user=None))]
    fn get_unit_info(
        &self,
        py: Python<'_>,
        unit: &str,
        user: Option<&str>,
    ) -> PyResult<std::collections::BTreeMap<String, String>> {
        self.call(py, Traced::new("get_unit_info").argument(unit), self.core.get_unit_info(unit, user))
    }

    /// One property of a unit.
    #[pyo3(signature = (unit, property, user=None))]
    fn get_unit_property(&self, py: Python<'_>, unit: &str, property: &str, user: Option<&str>) -> PyResult<String> {
        self.call(
            py,
            Traced::new("get_unit_property").argument(format_args!("{unit} {property}")),
            self.core.get_unit_property(unit, property, user),
        )
    }

    /// Raise unless the unit is in `require_state` now.
    #[pyo3(signature = (unit, require_state="active"))]
    fn require_unit_state(&self, py: Python<'_>, unit: &str, require_state: &str) -> PyResult<()> {
        self.call(
            py,
            Traced::new("require_unit_state").argument(unit),
            self.core.require_unit_state(unit, require_state),
        )
    }

    /// Wait until a unit is active; raise if it fails or is inactive with nothing pending.
    #[pyo3(signature = (unit, user=None, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_unit(&self, py: Python<'_>, unit: &str, user: Option<&str>, timeout: PyDuration) -> PyResult<()> {
        self.call(py, Traced::new("wait_for_unit").argument(unit), self.core.wait_for_unit(unit, user, timeout.0))
    }

    /// Wait until a unit's ActiveState is `state` (e.g. `failed`, `activating`).
    #[pyo3(signature = (unit, state, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_unit_active_state(&self, py: Python<'_>, unit: &str, state: &str, timeout: PyDuration) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_unit_active_state").argument(unit),
            self.core.wait_for_unit_active_state(unit, state, timeout.0),
        )
    }

    // --- waits ------------------------------------------------------------------------

    /// Wait until a file exists in the guest.
    #[pyo3(signature = (filename, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_file(&self, py: Python<'_>, filename: &str, timeout: PyDuration) -> PyResult<()> {
        self.call(py, Traced::new("wait_for_file").argument(filename), self.core.wait_for_file(filename, timeout.0))
    }

    /// Wait until something listens on a TCP port.
    #[pyo3(signature = (port, addr="localhost", timeout=DEFAULT_TIMEOUT))]
    fn wait_for_open_port(&self, py: Python<'_>, port: u16, addr: &str, timeout: PyDuration) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_open_port").argument(format_args!("{addr}:{port}")),
            self.core.wait_for_open_port(port, addr, timeout.0),
        )
    }

    /// Wait until nothing listens on a TCP port.
    #[pyo3(signature = (port, addr="localhost", timeout=DEFAULT_TIMEOUT))]
    fn wait_for_closed_port(&self, py: Python<'_>, port: u16, addr: &str, timeout: PyDuration) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_closed_port").argument(format_args!("{addr}:{port}")),
            self.core.wait_for_closed_port(port, addr, timeout.0),
        )
    }

    /// Wait until something listens on a UNIX-domain socket.
    #[pyo3(signature = (addr, is_datagram=false, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_open_unix_socket(
        &self,
        py: Python<'_>,
        addr: &str,
        is_datagram: bool,
        timeout: PyDuration,
    ) -> PyResult<()> {
        self.call(
            py,
            Traced::new("wait_for_open_unix_socket").argument(addr),
            self.core.wait_for_open_unix_socket(addr, is_datagram, timeout.0),
        )
    }

    /// Wait until the X server is up.
    #[pyo3(signature = (timeout=DEFAULT_TIMEOUT))]
    fn wait_for_x(&self, py: Python<'_>, timeout: PyDuration) -> PyResult<()> {
        self.call(py, Traced::new("wait_for_x"), self.core.wait_for_x(timeout.0))
    }

    /// The names of the X windows.
    fn get_window_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let command = r#"xwininfo -root -tree | sed 's/.*0x[0-9a-f]* \"\([^\"]*\)\".*/\1/; t; d'"#;
        let output =
            text(self.call(py, Traced::new("get_window_names"), self.core.succeed(&[command.to_owned()], None))?);
        Ok(output.lines().map(str::to_owned).collect())
    }

    /// Wait until an X window whose name matches `regexp` appears.
    #[pyo3(signature = (regexp, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_window(&self, py: Python<'_>, regexp: &str, timeout: PyDuration) -> PyResult<()> {
        let pattern = py.import("re")?.call_method1("compile", (regexp,))?;
        let traced = Traced::new("wait_for_window").argument(regexp).timeout(Some(timeout.0));
        self.traced(traced, |_| {
            nested(self.core.name(), "waiting for a window to appear", || {
                host_retry(py, timeout.0, |py, last_try| {
                    let names = self.get_window_names(py)?;
                    if last_try {
                        self.core.log(&format!(
                            "Last chance to match {regexp} on the window list, which currently contains: {}",
                            names.join(", ")
                        ));
                    }
                    for name in &names {
                        if !pattern.call_method1("search", (name,))?.is_none() {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                })
            })
        })
    }

    // --- consoles ---------------------------------------------------------------------

    /// Everything the serial console printed since the last start.
    fn get_console_log(&self) -> String {
        self.core.console_log()
    }

    /// Type on the serial console (QEMU's stdin).
    fn send_console(&self, py: Python<'_>, chars: &str) -> PyResult<()> {
        self.call(py, Traced::new("send_console"), self.core.send_console(chars.as_bytes()))
    }

    /// Wait until `regex` matches the serial console output, as upstream: lines not yet
    /// consumed by an earlier wait are appended (without separators) to a buffer and matched
    /// after each line; the wait returns at the first line that makes it match. Unlike
    /// upstream, lines are taken as they arrive, not one per second.
    #[pyo3(signature = (regex, timeout=None))]
    fn wait_for_console_text(&self, py: Python<'_>, regex: &str, timeout: Option<PyDuration>) -> PyResult<()> {
        let pattern = py.import("re")?.call_method1("compile", (regex,))?;
        let console = Arc::clone(self.core.console());
        let traced = Traced::new("wait_for_console_text").argument(regex).timeout(timeout.map(|t| t.0));
        self.traced(traced, |_| {
            nested(self.core.name(), &format!("waiting for {regex} to appear on console"), || {
                let start = Instant::now();
                let mut buffer = String::new();
                let mut changes = console.subscribe();
                loop {
                    // Mark the current count seen first, so a line arriving later wakes the wait.
                    changes.borrow_and_update();
                    let from = console.cursor();
                    let lines = console.lines_from(from);
                    let count = lines.len();
                    for (offset, line) in lines.into_iter().enumerate() {
                        buffer.push_str(&line);
                        if !pattern.call_method1("search", (buffer.as_str(),))?.is_none() {
                            console.set_cursor(from + offset + 1);
                            return Ok(());
                        }
                    }
                    console.set_cursor(from + count);
                    let remaining = match timeout {
                        None => None,
                        Some(timeout) => match timeout.0.checked_sub(start.elapsed()) {
                            Some(remaining) if !remaining.is_zero() => Some(remaining),
                            _ => {
                                let timed_out =
                                    ntd_core::retry::TimedOut { elapsed: start.elapsed(), timeout: timeout.0 };
                                return Err(assertion_failed(py, timed_out.to_string()));
                            }
                        },
                    };
                    let changed = changes.changed();
                    block_on(py, async move {
                        match remaining {
                            Some(remaining) => drop(tokio::time::timeout(remaining, changed).await),
                            None => drop(changed.await),
                        }
                    })?;
                }
            })
        })
    }

    /// The text on virtual console `tty`.
    fn get_tty_text(&self, py: Python<'_>, tty: &Bound<'_, PyAny>) -> PyResult<String> {
        let tty = tty_name(tty)?;
        Ok(text(self.call(py, Traced::new("get_tty_text"), self.core.get_tty_text(&tty))?))
    }

    /// Wait until the text on virtual console `tty` matches `regexp`.
    #[pyo3(signature = (tty, regexp, timeout=DEFAULT_TIMEOUT))]
    fn wait_until_tty_matches(
        &self,
        py: Python<'_>,
        tty: &Bound<'_, PyAny>,
        regexp: &str,
        timeout: PyDuration,
    ) -> PyResult<()> {
        let tty = tty_name(tty)?;
        let pattern = py.import("re")?.call_method1("compile", (regexp,))?;
        let traced = Traced::new("wait_until_tty_matches").argument(regexp).timeout(Some(timeout.0));
        self.traced(traced, |span| {
            nested(self.core.name(), &format!("waiting for {regexp} to appear on tty {tty}"), || {
                host_retry(py, timeout.0, |py, last_try| {
                    let text = text(drive(py, span, self.core.get_tty_text(&tty))?);
                    if last_try {
                        self.core.log(&format!(
                            "Last chance to match /{regexp}/ on TTY{tty}, which currently contains: {text}"
                        ));
                    }
                    Ok(pattern.call_method1("findall", (text,))?.len()? > 0)
                })
            })
        })
    }

    /// Put the text of virtual console `tty` into the journal (for debugging).
    fn dump_tty_contents(&self, py: Python<'_>, tty: &Bound<'_, PyAny>) -> PyResult<()> {
        let tty = tty_name(tty)?;
        self.call(py, Traced::new("dump_tty_contents"), self.core.dump_tty_contents(&tty))
    }

    /// Forward the terminal's input to the serial console until end of file (Ctrl-D).
    fn console_interact(&self, py: Python<'_>) -> PyResult<()> {
        self.traced(Traced::new("console_interact"), |span| self.forward_stdin(py, span))
    }

    /// Connect the terminal (or a socat `address`) to the backdoor shell.
    #[pyo3(signature = (address=None))]
    fn shell_interact(&self, py: Python<'_>, address: Option<&str>) -> PyResult<()> {
        PyErr::warn(py, &py.get_type::<PyDeprecationWarning>(), c"Use the SSH backdoor instead", 1)?;
        let address = match address {
            Some(address) => address.to_owned(),
            None => {
                self.core.log("Terminal is ready (there is no initial prompt):");
                "READLINE,prompt=$ ".to_owned()
            }
        };
        match self.call(py, Traced::new("shell_interact"), self.core.shell_interact(&address)) {
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => Ok(()),
            other => other,
        }
    }

    // --- files ------------------------------------------------------------------------

    /// Copy a host file or directory into the guest (through the shared directory).
    fn copy_from_host(&self, py: Python<'_>, source: PathBuf, target: &str) -> PyResult<()> {
        self.call(
            py,
            Traced::new("copy_from_host").argument(source.display()),
            self.core.copy_from_host(&source, target),
        )
    }

    /// Copy a host file into the guest inside a shell command (no shared directory needed).
    fn copy_from_host_via_shell(&self, py: Python<'_>, source: PathBuf, target: &str) -> PyResult<()> {
        self.call(
            py,
            Traced::new("copy_from_host_via_shell").argument(source.display()),
            self.core.copy_from_host_via_shell(&source, target),
        )
    }

    /// Copy a guest file or directory to `<out_dir>/<target_dir>/`.
    #[pyo3(signature = (source, target_dir=""))]
    fn copy_from_machine(&self, py: Python<'_>, source: &str, target_dir: &str) -> PyResult<()> {
        self.call(
            py,
            Traced::new("copy_from_machine").argument(source),
            self.core.copy_from_machine(source, target_dir),
        )
        .map(drop)
    }

    /// Deprecated name of `copy_from_machine`.
    #[pyo3(signature = (source, target_dir=""))]
    fn copy_from_vm(&self, py: Python<'_>, source: &str, target_dir: &str) -> PyResult<()> {
        PyErr::warn(py, &py.get_type::<PyDeprecationWarning>(), c"Use copy_from_machine() instead", 1)?;
        self.copy_from_machine(py, source, target_dir)
    }

    // --- screen -----------------------------------------------------------------------

    /// Write a PNG of the screen (`.png` added when the name has no dot; into the output
    /// directory when it has no slash).
    fn screenshot(&self, py: Python<'_>, filename: &str) -> PyResult<()> {
        self.call(py, Traced::new("screenshot").argument(filename), self.core.screenshot(filename)).map(drop)
    }

    /// Type a string, one key per character.
    #[pyo3(signature = (chars, delay=Some(PyDuration(Duration::from_millis(10)))))]
    fn send_chars(&self, py: Python<'_>, chars: &str, delay: Option<PyDuration>) -> PyResult<()> {
        self.call(py, Traced::new("send_chars"), self.core.send_chars(chars, delay.map(|d| d.0)))
    }

    /// The text on the screen, by OCR.
    fn get_screen_text(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, Traced::new("get_screen_text"), self.core.get_screen_text())
    }

    /// Several OCR readings of the screen (order and number unspecified, as upstream).
    fn get_screen_text_variants(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.call(py, Traced::new("get_screen_text_variants"), self.core.get_screen_text_variants())
    }

    /// Wait until `regex` matches the OCR text of the screen: every reading of a fresh
    /// screenshot is tried as it finishes, the first match ends the wait, and screenshots are
    /// retaken after 0.5, 1, 2, 2, … seconds.
    #[pyo3(signature = (regex, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_text(&self, py: Python<'_>, regex: &str, timeout: PyDuration) -> PyResult<()> {
        let pattern = py.import("re")?.call_method1("compile", (regex,))?.unbind();
        let traced = Traced::new("wait_for_text").argument(regex).timeout(Some(timeout.0));
        self.traced(traced, |span| {
            nested(self.core.name(), &format!("waiting for {regex} to appear on screen"), || {
                let start = Instant::now();
                let mut pause = Duration::from_millis(500);
                loop {
                    let mut search_error: Option<PyErr> = None;
                    let race = drive(
                        py,
                        span,
                        self.core.screen_race(|text| {
                            Python::attach(|py| match pattern.bind(py).call_method1("search", (text,)) {
                                Ok(found) => !found.is_none(),
                                Err(e) => {
                                    search_error = Some(e);
                                    true
                                }
                            })
                        }),
                    )?;
                    if let Some(error) = search_error {
                        return Err(error);
                    }
                    let texts = match race {
                        ntd_core::ocr::Race::Matched(_) => return Ok(()),
                        ntd_core::ocr::Race::Texts(texts) => texts,
                    };
                    let elapsed = start.elapsed();
                    let Some(remaining) = timeout.0.checked_sub(elapsed).filter(|r| !r.is_zero()) else {
                        let shown = PyList::new(py, &texts)?.repr()?.to_string();
                        self.core.log(&format!("Last OCR attempt failed. Text was: {shown}"));
                        let timed_out = ntd_core::retry::TimedOut { elapsed, timeout: timeout.0 };
                        return Err(assertion_failed(py, timed_out.to_string()));
                    };
                    let nap = pause.min(remaining);
                    block_on(py, async move { tokio::time::sleep(nap).await })?;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            })
        })
    }

    // --- network ----------------------------------------------------------------------

    /// Unplug the first VLAN NIC (eth1).
    fn block(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("block"), self.core.block())
    }

    /// Plug the first VLAN NIC back in.
    fn unblock(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("unblock"), self.core.unblock())
    }

    /// Forward a host TCP port to a guest port through the user-mode network.
    #[pyo3(signature = (host_port=8080, guest_port=80))]
    fn forward_port(&self, py: Python<'_>, host_port: u16, guest_port: u16) -> PyResult<()> {
        self.call(py, Traced::new("forward_port"), self.core.forward_port(host_port, guest_port))
    }

    // --- monitor, QMP, keyboard -------------------------------------------------------

    /// Send one line to the backdoor shell unframed and return the first line it prints
    /// (bytes, without the newline). For the benchmarks: the channel's floor and upstream's
    /// framing on the same shell. Not for test scripts: a line that prints anything but one
    /// line desynchronises the shell.
    fn _exchange_raw_line(&self, py: Python<'_>, line: &str) -> PyResult<Py<PyBytes>> {
        let reply = self.call(py, Traced::new("_exchange_raw_line"), self.core.exchange_raw_line(line))?;
        Ok(PyBytes::new(py, &reply).unbind())
    }

    /// Send a command to QEMU's human monitor; return its reply.
    fn send_monitor_command(&self, py: Python<'_>, command: &str) -> PyResult<String> {
        self.call(py, Traced::new("send_monitor_command").argument(command), self.core.send_monitor_command(command))
    }

    /// Read the monitor until its prompt.
    fn wait_for_monitor_prompt(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, Traced::new("wait_for_monitor_prompt"), self.core.wait_for_monitor_prompt())
    }

    /// Press a key or combination (`"a"`, `"ctrl-alt-delete"`), then pause `delay` seconds.
    #[pyo3(signature = (key, delay=Some(PyDuration(Duration::from_millis(10))), log=true))]
    fn send_key(&self, py: Python<'_>, key: &str, delay: Option<PyDuration>, log: Option<bool>) -> PyResult<()> {
        self.call(
            py,
            Traced::new("send_key").argument(key),
            self.core.send_key(key, delay.map(|d| d.0), log.unwrap_or(true)),
        )
    }

    /// Wait for a QMP event for which `event_filter(event)` is true; raise `TimeoutError` after
    /// `timeout`.
    #[pyo3(signature = (event_filter, timeout=PyDuration::secs(600)))]
    fn wait_for_qmp_event(&self, py: Python<'_>, event_filter: Py<PyAny>, timeout: PyDuration) -> PyResult<Py<PyAny>> {
        self.traced(Traced::new("wait_for_qmp_event").timeout(Some(timeout.0)), |_| {
            self.qmp_event(py, event_filter, timeout)
        })
    }
}

impl QemuMachine {
    /// `wait_for_qmp_event`'s work, the filter called with the GIL for each event.
    fn qmp_event(&self, py: Python<'_>, event_filter: Py<PyAny>, timeout: PyDuration) -> PyResult<Py<PyAny>> {
        if !self.core.is_booted() {
            return Err(PyRuntimeError::new_err("QMP API is not ready yet, is the VM ready?"));
        }
        let mut filter_error: Option<PyErr> = None;
        let result = block_on(py, async {
            let filter = |event: &serde_json::Value| {
                if filter_error.is_some() {
                    return true;
                }
                Python::attach(|py| {
                    let event = json_to_py(py, event)?;
                    event_filter.bind(py).call1((event,))?.is_truthy()
                })
                .unwrap_or_else(|e| {
                    filter_error = Some(e);
                    true
                })
            };
            self.core.wait_for_qmp_event(filter, timeout.0).await
        })?;
        if let Some(error) = filter_error {
            return Err(error);
        }
        let event = result.map_err(|e| machine_to_pyerr(py, e))?;
        json_to_py(py, &event).map(Bound::unbind)
    }
}

/// A JSON value as the Python object `json.loads` would give.
pub fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let text = value.to_string();
    py.import("json")?.call_method1("loads", (text,))
}
