//! The native driver behind a test run: machines, VLANs, `start_all`, the global timeout and
//! cleanup (the Rust half of upstream's `Driver`; the script-facing half is `ntd/driver.py`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ntd_core::config::MachineSpec;
use ntd_core::driver::DriverOptions;
use ntd_core::log;
use ntd_core::machine::Machine;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::duration::PyDuration;
use crate::errors::{machine_error, to_pyerr};
use crate::machine::QemuMachine;
use crate::runtime::{block_on, block_on_uninterrupted, main_thread};

/// After the global timeout has killed the machines and interrupted the script, how long the
/// script gets to wind down before the process exits regardless (a script may swallow
/// `KeyboardInterrupt`).
const TIMEOUT_GRACE: Duration = Duration::from_secs(30);

/// A VLAN switch, as the script's `vlans` and `vlan<N>` see it.
#[pyclass(frozen, module = "ntd._native")]
pub struct VLan {
    #[pyo3(get)]
    nr: u32,
    #[pyo3(get)]
    socket_dir: std::path::PathBuf,
    #[pyo3(get)]
    pid: u32,
}

#[pymethods]
impl VLan {
    fn __repr__(&self) -> String {
        format!("<Vlan Nr. {}>", self.nr)
    }
}

/// A cancellable one-shot timer thread.
#[derive(Default)]
struct Timer {
    cancelled: Mutex<bool>,
    wake: Condvar,
}

impl Timer {
    /// Wait up to `timeout`; true if it elapsed without being cancelled.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = match self.cancelled.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (guard, _) = match self.wake.wait_timeout_while(guard, timeout, |cancelled| !*cancelled) {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        !*guard
    }

    fn cancel(&self) {
        let mut cancelled = match self.cancelled.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *cancelled = true;
        self.wake.notify_all();
    }
}

/// The machines and VLANs of a test run.
#[pyclass(frozen, module = "ntd._native")]
pub struct Driver {
    core: Arc<ntd_core::Driver>,
    machines: Py<PyList>,
    vlans: Py<PyList>,
    /// Machines made by `create_machine`, stopped at cleanup too.
    extra: Arc<Mutex<Vec<Machine>>>,
    global_timeout: Duration,
    timer: Arc<Timer>,
    timer_started: AtomicBool,
    timed_out: Arc<AtomicBool>,
    /// Why the run was stopped from outside the script (a VLAN switch died), if it was.
    fault: Arc<std::sync::OnceLock<String>>,
}

impl Driver {
    /// Start the driver (VLAN switches, machine state directories) for a test run.
    pub fn start(py: Python<'_>, options: DriverOptions, global_timeout: Duration) -> PyResult<Py<Driver>> {
        let core = block_on_uninterrupted(py, ntd_core::Driver::start(options)).map_err(|e| to_pyerr(py, e))?;
        let machines = PyList::empty(py);
        for machine in core.machines() {
            machines.append(QemuMachine::wrap(py, machine.clone())?)?;
        }
        let vlans = PyList::empty(py);
        for vlan in core.vlans() {
            vlans.append(Py::new(
                py,
                VLan { nr: vlan.nr(), socket_dir: vlan.socket_dir().to_owned(), pid: vlan.pid() },
            )?)?;
        }
        Py::new(
            py,
            Driver {
                core: Arc::new(core),
                machines: machines.unbind(),
                vlans: vlans.unbind(),
                extra: Arc::new(Mutex::new(Vec::new())),
                global_timeout,
                timer: Arc::new(Timer::default()),
                timer_started: AtomicBool::new(false),
                timed_out: Arc::new(AtomicBool::new(false)),
                fault: Arc::new(std::sync::OnceLock::new()),
            },
        )
    }

    /// The core driver.
    pub fn core(&self) -> &ntd_core::Driver {
        &self.core
    }

    /// The global timeout.
    pub fn global_timeout_duration(&self) -> Duration {
        self.global_timeout
    }

    /// Whether the global timeout fired.
    pub fn has_timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// Why the run was stopped from outside the script, if it was (a VLAN switch died).
    pub fn fault(&self) -> Option<String> {
        self.fault.get().cloned()
    }

    /// Watch the VLAN switches: one that dies takes every machine's network with it, so the
    /// test is stopped at once with the switch named, rather than failing later in some
    /// unrelated-looking network wait.
    fn watch_switches(&self) {
        let core = Arc::clone(&self.core);
        let fault = Arc::clone(&self.fault);
        crate::runtime::runtime().spawn(async move {
            let message = core.switch_failure().await;
            log::error(None, &message);
            let _ = fault.set(message);
            interrupt_main_thread();
        });
    }

    fn extra_machines(&self) -> Vec<Machine> {
        match self.extra.lock() {
            Ok(extra) => extra.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

static EXIT_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Set what runs before the process exits on its own (the global timeout giving up on a
/// script that does not stop): the embedding program's reports and telemetry flush.
pub fn set_exit_hook(hook: fn()) {
    let _ = EXIT_HOOK.set(hook);
}

/// The signal (SIGTERM) that asked the run to stop, once one has.
static TERMINATED_BY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signal that asked the run to stop, if one did (see [`stop_on_sigterm`]).
pub fn terminated_by() -> Option<i32> {
    match TERMINATED_BY.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Make SIGTERM stop a test run as Ctrl-C does: the script is interrupted where it is (in a
/// boot, a command or `time.sleep`), then the machines are stopped, state directories
/// cleaned and reports written, and the process exits 143. Without it, SIGTERM would end
/// the process at once: the machines die with it (parent-death signal) but nothing is
/// written. A script that swallows the interruption (the interactive prompt does) is given
/// [`TIMEOUT_GRACE`], or until a second SIGTERM; then the reports are written and the process
/// exits 143 regardless, its children dying with it. For the `nixos-test-driver` binary; a
/// library user owns their signals.
pub fn stop_on_sigterm(interactive: bool) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terms = {
        let _guard = crate::runtime::runtime().enter();
        signal(SignalKind::terminate())?
    };
    crate::runtime::runtime().spawn(async move {
        if terms.recv().await.is_none() {
            return;
        }
        TERMINATED_BY.store(libc::SIGTERM, Ordering::SeqCst);
        log::warning(None, "received SIGTERM; stopping the test");
        if !interactive {
            interrupt_main_thread();
            tokio::select! {
                _ = terms.recv() => {}
                _ = tokio::time::sleep(TIMEOUT_GRACE) => {}
            }
            log::error(None, "the test did not stop after SIGTERM; exiting");
        }
        log::end_open_spans("terminated by SIGTERM", "terminated");
        if let Some(hook) = EXIT_HOOK.get() {
            hook();
        }
        std::process::exit(128 + libc::SIGTERM);
    });
    Ok(())
}

/// Send SIGINT to Python's main thread: its handler raises `KeyboardInterrupt` there, also
/// inside `time.sleep` and inside a blocked machine call.
pub fn interrupt_main_thread() {
    if let Some(main) = main_thread() {
        // SAFETY: pthread_kill on a thread id obtained from pthread_self in this process; the
        // main thread lives as long as the process.
        unsafe {
            libc::pthread_kill(main, libc::SIGINT);
        }
    }
}

#[pymethods]
impl Driver {
    /// Start a driver for library use: VLAN switches up, machines created (not booted).
    /// `machines` pairs an optional name with a start command, as `driverConfiguration.json`
    /// and `--start-scripts` give them.
    #[staticmethod]
    #[pyo3(signature = (machines, vlans=Vec::new(), out_dir=None, keep_machine_state=false, global_timeout=None, connect_timeout=None))]
    fn create(
        py: Python<'_>,
        machines: Vec<(Option<String>, String)>,
        vlans: Vec<u32>,
        out_dir: Option<std::path::PathBuf>,
        keep_machine_state: bool,
        global_timeout: Option<PyDuration>,
        connect_timeout: Option<PyDuration>,
    ) -> PyResult<Py<Driver>> {
        let out_dir = match out_dir {
            Some(dir) => dir,
            None => std::env::current_dir().map_err(|e| machine_error(py, format!("no current directory: {e}")))?,
        };
        let options = DriverOptions {
            machines: machines.into_iter().map(|(name, start_command)| MachineSpec { name, start_command }).collect(),
            vlans,
            out_dir,
            keep_machine_state,
            connect_timeout: connect_timeout.map_or(ntd_core::machine::DEFAULT_CONNECT_TIMEOUT, |t| t.0),
        };
        Driver::start(py, options, global_timeout.map_or(ntd_core::config::DEFAULT_GLOBAL_TIMEOUT, |t| t.0))
    }

    /// The machines, sorted by name.
    #[getter]
    fn machines(&self, py: Python<'_>) -> Py<PyList> {
        self.machines.clone_ref(py)
    }

    /// The VLAN switches.
    #[getter]
    fn vlans(&self, py: Python<'_>) -> Py<PyList> {
        self.vlans.clone_ref(py)
    }

    /// The global timeout in seconds.
    #[getter]
    fn global_timeout(&self) -> f64 {
        self.global_timeout.as_secs_f64()
    }

    /// Whether the global timeout fired.
    #[getter]
    fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// Start every machine at once; raise `MachineError` naming each that failed.
    fn start_all(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.start_all())?.map_err(|e| to_pyerr(py, e))
    }

    /// Wait for every machine to shut down.
    fn join_all(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.join_all())?.map_err(|e| to_pyerr(py, e))
    }

    /// A machine from any start command, outside `machines`.
    #[pyo3(signature = (start_command, name=None, keep_machine_state=false))]
    fn create_machine(
        &self,
        py: Python<'_>,
        start_command: &str,
        name: Option<String>,
        keep_machine_state: bool,
    ) -> PyResult<Py<QemuMachine>> {
        let machine = self.core.create_machine(start_command, name, keep_machine_state).map_err(|e| to_pyerr(py, e))?;
        match self.extra.lock() {
            Ok(mut extra) => extra.push(machine.clone()),
            Err(p) => p.into_inner().push(machine.clone()),
        }
        QemuMachine::wrap(py, machine)
    }

    /// Start the global timeout (once): when it fires, log upstream's message, kill every
    /// machine and switch, and interrupt the test script. Also start watching the switches.
    fn start_timer(&self) {
        if self.timer_started.swap(true, Ordering::SeqCst) {
            return;
        }
        self.watch_switches();
        let timer = Arc::clone(&self.timer);
        let timed_out = Arc::clone(&self.timed_out);
        let core = Arc::clone(&self.core);
        let extra = Arc::clone(&self.extra);
        let timeout = self.global_timeout;
        let spawned = std::thread::Builder::new().name("ntd-global-timeout".into()).spawn(move || {
            if !timer.wait(timeout) {
                return;
            }
            timed_out.store(true, Ordering::SeqCst);
            {
                let _block = log::block(None, "timeout reached; test terminating...", &[]).entered();
                core.kill_now();
                let extra = match extra.lock() {
                    Ok(extra) => extra.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                for machine in extra {
                    machine.kill_now();
                }
            }
            interrupt_main_thread();
            if timer.wait(TIMEOUT_GRACE) {
                log::error(None, "the test script did not stop after the global timeout; exiting");
                log::end_open_spans("the test script did not stop after the global timeout", "timed out");
                if let Some(hook) = EXIT_HOOK.get() {
                    hook();
                }
                std::process::exit(1);
            }
        });
        if spawned.is_err() {
            log::error(None, "cannot start the global timeout thread; the test has no global timeout");
        }
    }

    /// Stop the global timeout.
    fn cancel_timer(&self) {
        self.timer.cancel();
    }

    /// Release every machine (created ones too) and stop every switch. Not interruptible.
    fn cleanup(&self, py: Python<'_>) -> PyResult<()> {
        let extra = self.extra_machines();
        block_on_uninterrupted(py, self.core.cleanup(&extra));
        Ok(())
    }

    /// Kill every machine and switch now, without waiting.
    fn kill_now(&self) {
        self.core.kill_now();
        for machine in self.extra_machines() {
            machine.kill_now();
        }
    }
}
