//! `QemuMachine` for Python: what only a QEMU VM has (upstream's `QemuMachine`), over
//! [`ntd_core::machine::qemu::QemuMachine`]; the shared methods are inherited from
//! [`BaseMachine`]. The few waits whose condition is a Python regular expression (console
//! text, tty text, window names, OCR text) match with Python's `re` here, so patterns mean what
//! they mean upstream.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ntd_core::machine::qemu::{QemuConfig, QemuMachine as CoreQemu};
use pyo3::exceptions::{PyAssertionError, PyDeprecationWarning, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::traced::{Traced, drive, nested, text};
use super::{BaseMachine, DEFAULT_TIMEOUT};
use crate::duration::PyDuration;
use crate::efi::{self, EfiVars};
use crate::errors::{machine_error, machine_to_pyerr};
use crate::retry::retry_python;
use crate::runtime::block_on;

/// Whether Python's compiled `pattern` finds a match in `text` (`re.search`). An exception
/// stops the wait: it is kept in `error` and the search counts as a match.
fn python_search(pattern: &Py<PyAny>, text: &str, error: &mut Option<PyErr>) -> bool {
    Python::attach(|py| match pattern.bind(py).call_method1("search", (text,)) {
        Ok(found) => !found.is_none(),
        Err(e) => {
            *error = Some(e);
            true
        }
    })
}

/// The command of a `start_command` argument: a string, or upstream's `QemuStartCommand`
/// (whose script is `_cmd`). A subclass that overrides `cmd()` or `run()` is refused: ntd
/// builds and runs QEMU's command line itself, and would silently ignore them.
fn start_command_text(start_command: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(text) = start_command.extract::<String>() {
        return Ok(text);
    }
    let py = start_command.py();
    let base = py.import("test_driver.machine")?.getattr("QemuStartCommand")?;
    if !start_command.is_instance(&base)? {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "start_command must be a string or a QemuStartCommand, not {}",
            start_command.get_type().name()?
        )));
    }
    let class = start_command.get_type();
    for method in ["cmd", "run"] {
        if !class.getattr(method)?.is(&base.getattr(method)?) {
            return Err(machine_error(
                py,
                format!(
                    "{}.{method}() cannot be used: ntd builds and runs QEMU's command line itself (with its control \
                     ports); pass the start script instead",
                    class.name()?
                ),
            ));
        }
    }
    start_command.getattr("_cmd")?.extract()
}

/// Anything a test script passes as a tty number (`1` or `"1"`).
fn tty_name(tty: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(tty.str()?.to_string())
}

/// A QEMU virtual machine (upstream's `QemuMachine`).
#[pyclass(extends = BaseMachine, subclass, frozen, module = "ntd._native")]
pub struct QemuMachine {
    /// Set once by `__init__` (or when the driver wraps a machine).
    qemu: OnceLock<CoreQemu>,
}

impl QemuMachine {
    /// Wrap a core machine as a Python object.
    pub fn wrap(py: Python<'_>, core: CoreQemu) -> PyResult<Py<QemuMachine>> {
        let base = BaseMachine::empty(py);
        base.init(py, core.machine().clone())?;
        Py::new(py, PyClassInitializer::from(base).add_subclass(QemuMachine { qemu: OnceLock::from(core) }))
    }

    /// The core machine; an error until `__init__` ran.
    pub fn qemu(&self) -> PyResult<&CoreQemu> {
        self.qemu.get().ok_or_else(|| {
            Python::attach(|py| {
                machine_error(py, "the machine is not initialized: its __init__ was not called".to_owned())
            })
        })
    }

    /// Run `body` as one method call (see [`Traced::run`]).
    fn traced<T>(&self, traced: Traced<'_>, body: impl FnOnce(&tracing::Span) -> PyResult<T>) -> PyResult<T> {
        traced.run(self.qemu()?.name(), body)
    }

    /// One core call as one method call.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        traced: Traced<'_>,
        future: impl Future<Output = Result<T, ntd_core::machine::Error>> + Send,
    ) -> PyResult<T> {
        self.traced(traced, |span| drive(py, span, future))
    }

    /// `console_interact`'s loop: the terminal's bytes to the serial console until end of
    /// file (Ctrl-D) or Ctrl-C.
    fn forward_stdin(&self, py: Python<'_>, span: &tracing::Span) -> PyResult<()> {
        self.qemu()?.log("Terminal is ready (there is no prompt):");
        let stdin = py.import("sys")?.getattr("stdin")?.getattr("buffer")?;
        loop {
            let byte: Vec<u8> = match stdin.call_method1("read", (1,)) {
                Ok(byte) => byte.extract()?,
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => break,
                Err(e) => return Err(e),
            };
            if byte.is_empty() {
                self.qemu()?.log("Closing connection to the console");
                break;
            }
            drive(py, span, self.qemu()?.send_console(&byte))?;
        }
        Ok(())
    }
}

#[pymethods]
impl QemuMachine {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyClassInitializer<QemuMachine> {
        PyClassInitializer::from(BaseMachine::empty(py)).add_subclass(QemuMachine { qemu: OnceLock::new() })
    }

    /// `QemuMachine(out_dir, tmp_dir, start_command, logger=None, name=None,
    /// keep_machine_state=False, callbacks=None)`, as upstream's constructor.
    #[pyo3(signature = (out_dir, tmp_dir, start_command, logger=None, name=None, keep_machine_state=false, callbacks=None))]
    #[allow(clippy::too_many_arguments)] // upstream's constructor signature
    fn __init__(
        slf: &Bound<'_, Self>,
        out_dir: PathBuf,
        tmp_dir: PathBuf,
        start_command: &Bound<'_, PyAny>,
        logger: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        keep_machine_state: bool,
        callbacks: Option<&Bound<'_, PyList>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let _ = logger; // ntd has one logger; upstream's argument is accepted for compatibility.
        let start_command = start_command_text(start_command)?;
        let mut config = QemuConfig::new(start_command, tmp_dir, out_dir);
        config.name = name;
        config.keep_machine_state = keep_machine_state;
        let core = CoreQemu::new(config).map_err(|e| machine_to_pyerr(py, e))?;
        let base = slf.as_super().get();
        base.init(py, core.machine().clone())?;
        if let Some(callbacks) = callbacks {
            for callback in callbacks.iter() {
                base.callbacks.bind(py).append(callback)?;
            }
        }
        slf.get().qemu.set(core).map_err(|_| machine_error(py, "the machine is already initialized".to_owned()))
    }

    // --- attributes -------------------------------------------------------------------

    #[getter]
    fn monitor_path(&self) -> PyResult<PathBuf> {
        Ok(self.qemu()?.monitor_path().to_owned())
    }

    #[getter]
    fn qmp_path(&self) -> PyResult<PathBuf> {
        Ok(self.qemu()?.qmp_path().to_owned())
    }

    #[getter]
    fn shell_path(&self) -> PyResult<PathBuf> {
        Ok(self.qemu()?.shell_path().to_owned())
    }

    #[getter]
    fn booted(&self) -> PyResult<bool> {
        Ok(self.qemu()?.is_booted())
    }

    /// Scripts set `booted = False` after they made the VM go away themselves (upstream's
    /// `start()` would otherwise do nothing). ntd knows when QEMU exits; if it still runs,
    /// it is stopped here rather than left running next to the next one.
    #[setter]
    fn set_booted(&self, py: Python<'_>, booted: bool) -> PyResult<()> {
        let qemu = self.qemu()?;
        match (booted, qemu.is_booted()) {
            (false, true) => {
                qemu.log("booted = False while QEMU still runs: stopping it");
                block_on(py, qemu.machine().release())
            }
            (true, false) => {
                qemu.log("booted = True has no effect: start() starts the machine");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    #[getter]
    fn connected(&self) -> PyResult<bool> {
        Ok(self.qemu()?.is_connected())
    }

    /// Scripts set `connected = False` when they made the backdoor go away (a reboot from a
    /// command): the next command waits for the guest's shell again.
    #[setter]
    fn set_connected(&self, connected: bool) -> PyResult<()> {
        let qemu = self.qemu()?;
        if !connected {
            qemu.machine().mark_disconnected();
        } else if !qemu.is_connected() {
            qemu.log("connected = True has no effect: the next command waits for the backdoor shell");
        }
        Ok(())
    }

    /// Upstream's QMP session (`QMPSession`: `send(cmd, args)`, `wait_for_event(timeout)`)
    /// while the machine runs; `None` before.
    #[getter]
    fn qmp_client<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Self::view_while_booted(slf, "ntd.qmp", "QMPSession")
    }

    /// The backdoor shell as upstream's socket attribute offers it to scripts
    /// (`machine.shell.send(b"…")`) while the machine runs; `None` before.
    #[getter]
    fn shell<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Self::view_while_booted(slf, "ntd.handles", "BackdoorShell")
    }

    /// QEMU's process, as far as ntd shares it (`pid`, `wait()`); `None` when not running.
    #[getter]
    fn process<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Self::view_while_booted(slf, "ntd.handles", "QemuProcess")
    }

    /// The test's logger (ntd has one: the script's `log`).
    #[getter]
    fn logger(&self) -> crate::logger::Logger {
        crate::logger::Logger
    }

    /// Every line the serial console printed since the machine started.
    #[getter]
    fn full_console_log(&self) -> PyResult<Vec<String>> {
        Ok(self.qemu()?.console_log().lines().map(str::to_owned).collect())
    }

    #[getter]
    fn pid(&self) -> PyResult<Option<u32>> {
        Ok(self.qemu()?.pid())
    }

    #[getter]
    fn start_command(&self) -> PyResult<String> {
        Ok(self.qemu()?.start_command().to_owned())
    }

    /// The SSH backdoor's vhost-user socket (QEMU's side), if the machine has the backdoor.
    #[getter]
    fn vsock_guest(&self) -> PyResult<Option<PathBuf>> {
        Ok(self.qemu()?.vsock().map(|pair| pair.guest.clone()))
    }

    /// The SSH backdoor's host socket (`ssh vsock-mux/<it>`), if the machine has the backdoor.
    #[getter]
    fn vsock_host(&self) -> PyResult<Option<PathBuf>> {
        Ok(self.qemu()?.vsock().map(|pair| pair.host.clone()))
    }

    /// The VNC server's unix socket (`vncviewer <it>`), if the driver gave the machine one
    /// (`vnc=True`, `--vnc`); it exists while QEMU runs.
    #[getter]
    fn vnc_socket(&self) -> PyResult<Option<PathBuf>> {
        Ok(self.qemu()?.vnc_socket().map(Path::to_path_buf))
    }

    /// Upstream's `ssh_backdoor_command()`: `ssh -o User=root vsock-mux/<host socket>`.
    /// Upstream asserts that the machine has the backdoor; so does this, saying why not.
    fn ssh_backdoor_command(&self) -> PyResult<String> {
        let qemu = self.qemu()?;
        qemu.ssh_backdoor_command().ok_or_else(|| {
            PyAssertionError::new_err(format!(
                "{} has no SSH backdoor: the driver's enable_ssh_backdoor (nixpkgs' sshBackdoor.enable) is off, or \
                 the machine was made by create_machine, which upstream gives none either",
                qemu.name()
            ))
        })
    }

    /// The UEFI variable store, `NIX_EFI_VARS` of the start script.
    #[getter]
    fn efi_vars_path(&self) -> PyResult<PathBuf> {
        Ok(self.qemu()?.efi_vars_path().to_owned())
    }

    /// The machine's variable store (upstream's `EfiVars`).
    #[getter]
    fn efi_vars(slf: &Bound<'_, Self>) -> PyResult<EfiVars> {
        EfiVars::of(slf, slf.get().qemu()?.efi_vars_path().to_owned())
    }

    // --- UEFI variables -----------------------------------------------------------------

    /// Write an empty UEFI variable store; raises if one exists or the VM runs.
    fn create_efi_vars(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("create_efi_vars"), self.qemu()?.create_efi_vars())
    }

    /// The variables in the store (`ntd.efi.EfiVariable`s); none without a store. Raises
    /// while the VM runs.
    fn read_efi_vars<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let variables = self.call(py, Traced::new("read_efi_vars"), self.qemu()?.read_efi_vars())?;
        efi::variables_to_py(py, &variables)
    }

    /// Add or replace variables in the store, creating it if needed. Raises while the VM
    /// runs.
    fn write_efi_vars(&self, py: Python<'_>, add: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        let add = efi::variables_from_py(&add)?;
        self.call(py, Traced::new("write_efi_vars"), self.qemu()?.write_efi_vars(add))
    }

    /// Print every variable in the store to stdout, as upstream (ovmfvartool's format). Reads
    /// through `self.read_efi_vars()`, as upstream, so a subclass's override is used.
    fn dump_efi_vars(slf: &Bound<'_, Self>) -> PyResult<()> {
        for variable in slf.call_method0("read_efi_vars")?.try_iter()? {
            variable?.call_method0("print")?;
        }
        Ok(())
    }

    // --- lifecycle --------------------------------------------------------------------

    /// Start the VM; does not wait for it to boot.
    #[pyo3(signature = (allow_reboot=false))]
    fn start(&self, py: Python<'_>, allow_reboot: bool) -> PyResult<()> {
        self.call(py, Traced::new("start"), self.qemu()?.start(allow_reboot))
    }

    /// Wait for the guest's backdoor shell, starting the VM if needed.
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("connect"), self.qemu()?.connect())
    }

    /// Power the guest off through its shell and wait for QEMU to exit.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("shutdown"), self.qemu()?.shutdown())
    }

    /// Make QEMU quit at once (a simulated power failure) and wait for it.
    fn crash(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("crash"), self.qemu()?.crash())
    }

    /// Press Ctrl+Alt+Delete; the backdoor reconnects if the VM was started with
    /// `allow_reboot=True`.
    fn reboot(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("reboot"), self.qemu()?.reboot())
    }

    /// Move a guest with an initrd backdoor from stage 1 to stage 2.
    fn switch_root(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("switch_root"), self.qemu()?.switch_root())
    }

    // --- the guest's screen, through commands ------------------------------------------

    /// Wait until the X server is up.
    #[pyo3(signature = (timeout=DEFAULT_TIMEOUT))]
    fn wait_for_x(&self, py: Python<'_>, timeout: PyDuration) -> PyResult<()> {
        self.call(py, Traced::new("wait_for_x").timeout(Some(timeout.0)), self.qemu()?.wait_for_x(timeout.0))
    }

    /// The names of the X windows.
    fn get_window_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let command = r#"xwininfo -root -tree | sed 's/.*0x[0-9a-f]* \"\([^\"]*\)\".*/\1/; t; d'"#;
        let output =
            text(self.call(py, Traced::new("get_window_names"), self.qemu()?.succeed(&[command.to_owned()], None))?);
        Ok(output.lines().map(str::to_owned).collect())
    }

    /// Wait until an X window whose name matches `regexp` appears.
    #[pyo3(signature = (regexp, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_window(&self, py: Python<'_>, regexp: &str, timeout: PyDuration) -> PyResult<()> {
        let pattern = py.import("re")?.call_method1("compile", (regexp,))?;
        let traced = Traced::new("wait_for_window").argument(regexp).timeout(Some(timeout.0));
        self.traced(traced, |_| {
            nested(self.qemu()?.name(), "waiting for a window to appear", || {
                retry_python(py, timeout.0, |py, last_try| {
                    let names = self.get_window_names(py)?;
                    if last_try {
                        self.qemu()?.log(&format!(
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
    fn get_console_log(&self) -> PyResult<String> {
        Ok(self.qemu()?.console_log())
    }

    /// Type on the serial console (QEMU's stdin).
    fn send_console(&self, py: Python<'_>, chars: &str) -> PyResult<()> {
        self.call(py, Traced::new("send_console"), self.qemu()?.send_console(chars.as_bytes()))
    }

    /// Wait until `regex` matches the serial console output, as upstream: lines not yet
    /// consumed by an earlier wait are appended (without separators) to a buffer and matched
    /// after each line; the wait returns at the first line that makes it match. Unlike
    /// upstream, lines are taken as they arrive, not one per second.
    #[pyo3(signature = (regex, timeout=None))]
    fn wait_for_console_text(&self, py: Python<'_>, regex: &str, timeout: Option<PyDuration>) -> PyResult<()> {
        let pattern = py.import("re")?.call_method1("compile", (regex,))?.unbind();
        let timeout = timeout.map(|t| t.0);
        let traced = Traced::new("wait_for_console_text").argument(regex).timeout(timeout);
        let mut search_error = None;
        let matches = |text: &str| python_search(&pattern, text, &mut search_error);
        let result = self.call(py, traced, self.qemu()?.wait_for_console_text(regex, matches, timeout));
        search_error.map_or(result, Err)
    }

    /// The text on virtual console `tty`.
    fn get_tty_text(&self, py: Python<'_>, tty: &Bound<'_, PyAny>) -> PyResult<String> {
        let tty = tty_name(tty)?;
        Ok(text(self.call(py, Traced::new("get_tty_text"), self.qemu()?.get_tty_text(&tty))?))
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
            nested(self.qemu()?.name(), &format!("waiting for {regexp} to appear on tty {tty}"), || {
                retry_python(py, timeout.0, |py, last_try| {
                    let text = text(drive(py, span, self.qemu()?.get_tty_text(&tty))?);
                    if last_try {
                        self.qemu()?.log(&format!(
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
        self.call(py, Traced::new("dump_tty_contents"), self.qemu()?.dump_tty_contents(&tty))
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
                self.qemu()?.log("Terminal is ready (there is no initial prompt):");
                "READLINE,prompt=$ ".to_owned()
            }
        };
        match self.call(py, Traced::new("shell_interact"), self.qemu()?.shell_interact(&address)) {
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => Ok(()),
            other => other,
        }
    }

    // --- screen -----------------------------------------------------------------------

    /// Write a PNG of the screen (`.png` added when the name has no dot; into the output
    /// directory when it has no slash).
    fn screenshot(&self, py: Python<'_>, filename: &str) -> PyResult<()> {
        self.call(py, Traced::new("screenshot").argument(filename), self.qemu()?.screenshot(filename)).map(drop)
    }

    /// Type a string, one key per character.
    #[pyo3(signature = (chars, delay=Some(PyDuration(Duration::from_millis(10)))))]
    fn send_chars(&self, py: Python<'_>, chars: &str, delay: Option<PyDuration>) -> PyResult<()> {
        self.call(py, Traced::new("send_chars"), self.qemu()?.send_chars(chars, delay.map(|d| d.0)))
    }

    /// The text on the screen, by OCR.
    fn get_screen_text(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, Traced::new("get_screen_text"), self.qemu()?.get_screen_text())
    }

    /// Several OCR readings of the screen (order and number unspecified, as upstream).
    fn get_screen_text_variants(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.call(py, Traced::new("get_screen_text_variants"), self.qemu()?.get_screen_text_variants())
    }

    /// Wait until `regex` matches the OCR text of the screen: every reading of a fresh
    /// screenshot is tried as it finishes, the first match ends the wait, and screenshots are
    /// retaken after 0.5, 1, 2, 2, … seconds.
    #[pyo3(signature = (regex, timeout=DEFAULT_TIMEOUT))]
    fn wait_for_text(&self, py: Python<'_>, regex: &str, timeout: PyDuration) -> PyResult<()> {
        let pattern = py.import("re")?.call_method1("compile", (regex,))?.unbind();
        let traced = Traced::new("wait_for_text").argument(regex).timeout(Some(timeout.0));
        let mut search_error = None;
        let accept = |text: &str| python_search(&pattern, text, &mut search_error);
        let result = self.call(py, traced, self.qemu()?.wait_for_text(regex, accept, timeout.0));
        search_error.map_or(result, Err)
    }

    // --- network ----------------------------------------------------------------------

    /// Unplug the first VLAN NIC (eth1).
    fn block(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("block"), self.qemu()?.block())
    }

    /// Plug the first VLAN NIC back in.
    fn unblock(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, Traced::new("unblock"), self.qemu()?.unblock())
    }

    /// Forward a host TCP port to a guest port through the user-mode network.
    #[pyo3(signature = (host_port=8080, guest_port=80))]
    fn forward_port(&self, py: Python<'_>, host_port: u16, guest_port: u16) -> PyResult<()> {
        self.call(py, Traced::new("forward_port"), self.qemu()?.forward_port(host_port, guest_port))
    }

    // --- monitor, QMP, keyboard -------------------------------------------------------

    /// Send one line to the backdoor shell unframed and return the first line it prints
    /// (bytes, without the newline). For the benchmarks: the channel's floor and upstream's
    /// framing on the same shell. Not for test scripts: a line that prints anything but one
    /// line desynchronises the shell.
    fn _exchange_raw_line(&self, py: Python<'_>, line: &str) -> PyResult<Py<PyBytes>> {
        let reply = self.call(py, Traced::new("_exchange_raw_line"), self.qemu()?.exchange_raw_line(line))?;
        Ok(PyBytes::new(py, &reply).unbind())
    }

    /// One QMP exchange for `ntd.qmp.QMPSession.send`: QEMU's answer as a dict,
    /// `{"return": …}` or `{"error": {"class": …, "desc": …}}`.
    #[pyo3(signature = (command, arguments=None))]
    fn _qmp_send<'py>(
        &self,
        py: Python<'py>,
        command: &str,
        arguments: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let arguments: Option<serde_json::Map<String, serde_json::Value>> = match arguments {
            Some(arguments) if !arguments.is_empty() => {
                let text: String = py.import("json")?.call_method1("dumps", (arguments,))?.extract()?;
                Some(serde_json::from_str(&text).map_err(|e| PyRuntimeError::new_err(e.to_string()))?)
            }
            _ => None,
        };
        let reply =
            self.call(py, Traced::new("qmp").argument(command), self.qemu()?.qmp_message(command, arguments.as_ref()))?;
        json_to_py(py, &reply)
    }

    /// Write bytes to the backdoor shell as they are (`machine.shell.send`).
    fn _send_to_shell(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.call(py, Traced::new("shell.send"), self.qemu()?.send_to_shell(data))
    }

    /// Send a command to QEMU's human monitor; return its reply.
    fn send_monitor_command(&self, py: Python<'_>, command: &str) -> PyResult<String> {
        self.call(py, Traced::new("send_monitor_command").argument(command), self.qemu()?.send_monitor_command(command))
    }

    /// Read the monitor until its prompt.
    fn wait_for_monitor_prompt(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, Traced::new("wait_for_monitor_prompt"), self.qemu()?.wait_for_monitor_prompt())
    }

    /// Press a key or combination (`"a"`, `"ctrl-alt-delete"`), then pause `delay` seconds.
    #[pyo3(signature = (key, delay=Some(PyDuration(Duration::from_millis(10))), log=true))]
    fn send_key(&self, py: Python<'_>, key: &str, delay: Option<PyDuration>, log: Option<bool>) -> PyResult<()> {
        self.call(
            py,
            Traced::new("send_key").argument(key),
            self.qemu()?.send_key(key, delay.map(|d| d.0), log.unwrap_or(true)),
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
    /// A Python view of this machine (`module.class(machine)`) while it runs, `None` before:
    /// what `qmp_client`, `shell` and `process` give.
    fn view_while_booted<'py>(
        slf: &Bound<'py, Self>,
        module: &str,
        class: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !slf.get().qemu()?.is_booted() {
            return Ok(None);
        }
        Ok(Some(slf.py().import(module)?.getattr(class)?.call1((slf,))?))
    }

    /// `wait_for_qmp_event`'s work, the filter called with the GIL for each event.
    fn qmp_event(&self, py: Python<'_>, event_filter: Py<PyAny>, timeout: PyDuration) -> PyResult<Py<PyAny>> {
        if !self.qemu()?.is_booted() {
            return Err(PyRuntimeError::new_err("QMP API is not ready yet, is the VM ready?"));
        }
        let qemu = self.qemu()?;
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
            qemu.wait_for_qmp_event(filter, timeout.0).await
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
