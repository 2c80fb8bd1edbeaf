//! The tokio runtime behind every Python call, and the one way Python waits on it.
//!
//! Each blocking method extracts its arguments, then calls [`block_on`], which releases the
//! GIL (so other Python threads run, e.g. two machines waited on at once) and drives the core
//! future. On the main thread it also polls Python's signal handlers every 100 ms, so Ctrl-C
//! (and the global timeout, which sends SIGINT to the main thread) interrupts a wait with
//! `KeyboardInterrupt` instead of waiting for it to end.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::pthread::{Pthread, pthread_self};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// How often a blocked main thread checks for signals.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// The runtime, created on first use; an error when the threads cannot be started.
pub fn runtime() -> PyResult<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ntd-worker")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start ntd's tokio runtime: {e}")))?;
    // Two threads may race here; one runtime stays, the other is dropped unused.
    Ok(RUNTIME.get_or_init(|| built))
}

static MAIN_THREAD: OnceLock<Pthread> = OnceLock::new();

/// Remember the calling thread as Python's main thread (where signal handlers run).
pub fn set_main_thread() {
    let _ = MAIN_THREAD.set(pthread_self());
}

/// The main thread, if known.
pub fn main_thread() -> Option<Pthread> {
    MAIN_THREAD.get().copied()
}

fn on_main_thread() -> bool {
    // pthread_t is an integer on Linux, so equality is pthread_equal.
    main_thread().is_some_and(|main| main == pthread_self())
}

/// Run `future` to completion with the GIL released, whatever signals arrive (for cleanup,
/// which must finish even after Ctrl-C).
pub fn block_on_uninterrupted<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = runtime()?;
    Ok(py.detach(|| drive(runtime, future)))
}

/// Drive a future on the runtime from a thread that may already be inside it.
fn drive<F: Future>(runtime: &Runtime, future: F) -> F::Output {
    // A Python callback run from inside a core future (a polling condition calling a machine
    // method) lands here while the runtime is already being driven on this thread.
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(|| runtime.block_on(future))
    } else {
        runtime.block_on(future)
    }
}

/// Run `future` to completion with the GIL released. On the main thread, a pending Python
/// signal (Ctrl-C) aborts it and its exception is returned.
pub fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = runtime()?;
    let check_signals = on_main_thread();
    py.detach(|| {
        let drive_checking_signals = async {
            if !check_signals {
                return Ok(future.await);
            }
            tokio::pin!(future);
            loop {
                tokio::select! {
                    output = &mut future => return Ok(output),
                    _ = tokio::time::sleep(SIGNAL_POLL) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        };
        drive(runtime, drive_checking_signals)
    })
}
