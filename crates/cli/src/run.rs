//! One test run: resolve the arguments, set up the log sinks, start the driver, run the script
//! in the embedded interpreter, clean up, write the reports, and turn the outcome into an exit
//! status.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use ntd_core::driver::{DriverOptions, Stop};
use ntd_core::log;
use ntd_core::log::junit::JunitReport;
use ntd_core::log::progress::Progress;
use ntd_core::log::terminal::TerminalLayer;
use ntd_core::log::xml::XmlLog;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tracing_subscriber::layer::SubscriberExt;

use crate::args::{Args, Resolved};
use crate::exit;
use crate::outputs::{self, Outputs};
use crate::telemetry::Telemetry;

/// How the test script ended, for the exit status and the run span.
enum Outcome {
    Passed,
    /// Failed, with the exit status (1, or what `sys.exit` asked for).
    Failed(i32),
    /// Stopped by the global timeout, with the exit status that says so (143, as upstream).
    TimedOut(i32),
    Interrupted,
    /// Stopped by a signal other than SIGINT (SIGTERM), with the exit status that says so.
    Terminated(i32),
}

impl Outcome {
    fn status(&self) -> i32 {
        match self {
            Outcome::Passed => exit::SUCCESS,
            Outcome::Failed(status) => *status,
            Outcome::TimedOut(status) => *status,
            Outcome::Interrupted => exit::INTERRUPTED,
            Outcome::Terminated(status) => *status,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::TimedOut(_) => "timed out",
            Outcome::Interrupted => "interrupted",
            Outcome::Terminated(_) => "terminated",
        }
    }
}

/// Run the command line; returns the exit status.
pub fn main() -> i32 {
    let args = Args::parse_from(crate::args::attach_web_view_port(std::env::args_os()));
    let resolved = match args.resolve() {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("nixos-test-driver: error: {e}");
            return exit::USAGE;
        }
    };
    // Bound first: a port that is taken is a usage error before anything starts.
    let web_view = match resolved.web_view.map(ntd_web_view::Listener::bind).transpose() {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("nixos-test-driver: error: --web-view: {}", ntd_core::full_message(&e));
            return exit::USAGE;
        }
    };
    let progress = match install_sinks(&resolved, web_view.is_some()) {
        Ok(progress) => progress,
        Err(message) => {
            eprintln!("nixos-test-driver: error: {message}");
            return exit::USAGE;
        }
    };
    log::set_level(resolved.log_level);
    for notice in &resolved.notices {
        log::warning(None, notice);
    }
    let web_view = web_view.zip(progress);
    let status = run(resolved, web_view);
    outputs::finish();
    status
}

/// The log sinks: the terminal always; OpenTelemetry, the JUnit report and the XML log when
/// asked for (`OTEL_*`, `--junit-xml`, `LOGFILE`); the progress the web view shows, with it.
fn install_sinks(resolved: &Resolved, web_view: bool) -> Result<Option<Arc<Progress>>, String> {
    let telemetry = Telemetry::from_env().map_err(|e| e.to_string())?;
    let junit = resolved.junit_xml.clone().map(|path| (JunitReport::new(), path));
    let xml = match std::env::var_os("LOGFILE") {
        Some(path) => Some(
            XmlLog::create(std::path::Path::new(&path))
                .map_err(|e| format!("cannot write the XML log {}: {e}", path.to_string_lossy()))?,
        ),
        None => None,
    };
    let (progress, progress_layer) = if web_view {
        let (progress, layer) = Progress::new();
        (Some(progress), Some(layer))
    } else {
        (None, None)
    };
    let subscriber = tracing_subscriber::registry()
        .with(TerminalLayer::stderr())
        .with(progress_layer)
        .with(telemetry.as_ref().map(Telemetry::layer))
        .with(junit.as_ref().map(|(report, _)| report.layer()))
        .with(xml.as_ref().map(XmlLog::layer));
    tracing::subscriber::set_global_default(subscriber).map_err(|_| "cannot install the logger".to_owned())?;
    Outputs::install(junit, xml, telemetry);
    ntd_python::driver::set_abandon_hook(abandon);
    Ok(progress)
}

/// A test script that does not stop after the global timeout or SIGTERM (it swallows the
/// interruption): the watchdog has killed the machines and switches and removed their state;
/// end the process with the reports written and the open spans exported, as the test's outcome.
fn abandon(stop: &Stop) {
    let reason = stop.abandon_message();
    log::error(None, &format!("{reason}; exiting"));
    log::end_open_spans(&reason, stop.outcome());
    outputs::finish();
    std::process::exit(stop.exit_status());
}

fn run(resolved: Resolved, web_view: Option<(ntd_web_view::Listener, Arc<Progress>)>) -> i32 {
    let tests = match std::fs::read_to_string(&resolved.test_script) {
        Ok(tests) => tests,
        Err(e) => {
            eprintln!("nixos-test-driver: error: cannot read test script {}: {e}", resolved.test_script.display());
            return exit::USAGE;
        }
    };
    let run_span = log::run_span(&resolved.test_name);
    let _tracked = log::track(&run_span);
    let entered = run_span.enter();
    if !resolved.keep_machine_state {
        log::info(None, "Machine state will be reset. To keep it, pass --keep-machine-state");
    }
    if let Err(e) = ntd_python::embed::initialize() {
        eprintln!("nixos-test-driver: error: cannot start the Python interpreter: {e}");
        return exit::USAGE;
    }
    let interactive = resolved.interactive;
    let debug_hook_attach = resolved.debug_hook_attach;
    let mut options = DriverOptions::new(resolved.spec.machines, resolved.output_directory);
    options.containers = resolved.spec.containers;
    options.vlans = resolved.spec.vlans;
    options.keep_machine_state = resolved.keep_machine_state;
    options.connect_timeout = resolved.connect_timeout;
    options.global_timeout = resolved.spec.global_timeout;
    options.ssh_backdoor = resolved.spec.enable_ssh_backdoor;
    options.failure_artifacts = resolved.failure_artifacts;
    options.vnc = resolved.vnc;
    if options.ssh_backdoor {
        options.ssh_proxy = ssh_proxy_command();
    }
    let dump_vsocks = resolved.dump_vsocks;
    let test_name = resolved.test_name.clone();
    let outcome = Python::attach(|py| {
        let native = match ntd_python::driver::Driver::start(py, options) {
            Ok(native) => native,
            Err(e) => {
                log::error(None, &format!("cannot start the driver: {e}"));
                return Outcome::Failed(exit::TEST_FAILED);
            }
        };
        if let Err(e) = native.get().terminate_on_sigterm(interactive) {
            log::error(None, &e.to_string());
        }
        let web_view = web_view.and_then(|(listener, progress)| {
            start_web_view(listener, native.get().core().clone(), progress, test_name)
        });
        let outcome = run_script(py, &native, &tests, interactive, debug_hook_attach.as_deref(), dump_vsocks);
        if let Some(web_view) = &web_view {
            web_view.finish(outcome.name());
        }
        if let Err(e) = native.call_method0(py, "cleanup") {
            log::error(None, &format!("cleanup failed: {e}"));
        }
        flush_python_output(py);
        say_where_the_artifacts_are(native.get().core(), &run_span);
        if let Some(web_view) = web_view {
            // An open page gets to show the outcome before the server goes.
            py.detach(|| web_view.wait_until_shown());
        }
        outcome
    });
    run_span.record("test.outcome", outcome.name());
    if !matches!(outcome, Outcome::Passed) {
        log::record_error(&run_span, &format!("the test {}", outcome.name()));
    }
    drop(entered);
    drop(run_span);
    outcome.status()
}

/// Serve the web view for `driver`, and say where. Without noVNC the page still shows the
/// progress and the artifacts; the log says why it shows no screens.
fn start_web_view(
    listener: ntd_web_view::Listener,
    driver: ntd_core::Driver,
    progress: Arc<Progress>,
    test_name: String,
) -> Option<ntd_web_view::WebView> {
    let novnc = match ntd_web_view::novnc::find() {
        Ok(dir) => Some(dir),
        Err(why) => {
            log::warning(None, &format!("web view: no live screens: {why}"));
            None
        }
    };
    let runtime = match ntd_python::runtime::runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error(None, &format!("web view: {e}"));
            return None;
        }
    };
    let config = ntd_web_view::WebViewConfig { driver, progress, test_name, novnc };
    match ntd_web_view::WebView::start(runtime.handle(), listener, config) {
        Ok(web_view) => {
            log::log(None, &format!("web view: {} (every machine's screen and the test's progress)", web_view.url()));
            Some(web_view)
        }
        Err(e) => {
            log::error(None, &format!("web view: {}", ntd_core::full_message(&e)));
            None
        }
    }
}

/// The last lines of a failed run's log: where its failure artifacts are. The run's span
/// lists them too (`ntd.failure.artifacts`, one path per line).
fn say_where_the_artifacts_are(driver: &ntd_core::Driver, run_span: &tracing::Span) {
    let artifacts = driver.failure_artifacts();
    if artifacts.is_empty() {
        return;
    }
    let paths: Vec<String> = artifacts.iter().map(|artifact| artifact.path.display().to_string()).collect();
    run_span.record("ntd.failure.artifacts", paths.join("\n"));
    log::log(None, &format!("the failure left {} file(s) in {}:", artifacts.len(), driver.out_dir().display()));
    for artifact in &artifacts {
        let file = artifact.path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
        log::log(None, &format!("    {file}  ({}'s {})", artifact.machine, artifact.what));
    }
}

/// ntd's ssh proxy for the SSH backdoor's ssh configuration: `ntd-ssh-proxy` beside this
/// program (as cargo and the Nix package install it), else on `PATH`. Without one, the listing
/// gives upstream's commands only, which need systemd-ssh-proxy 258 or newer; the log says so.
fn ssh_proxy_command() -> Option<Vec<String>> {
    const PROXY: &str = "ntd-ssh-proxy";
    let beside = std::env::current_exe().ok().map(|exe| exe.with_file_name(PROXY)).filter(|p| p.is_file());
    match beside.or_else(|| ntd_core::process::find_program(PROXY)) {
        Some(path) => Some(vec![path.display().to_string()]),
        None => {
            log::warning(
                None,
                &format!(
                    "{PROXY} is neither beside nixos-test-driver nor on PATH: the SSH backdoor is reachable only \
                     through systemd-ssh-proxy 258 or newer, where this host has it"
                ),
            );
            None
        }
    }
}

/// Run the test script through `ntd.driver.Driver.run_tests()` (or open the interactive
/// prompt) and map its outcome. With a debug hook, breakpoints pause the test.
fn run_script(
    py: Python<'_>,
    native: &Py<ntd_python::driver::Driver>,
    tests: &str,
    interactive: bool,
    debug_hook_attach: Option<&str>,
    dump_vsocks: Option<u32>,
) -> Outcome {
    let start = Instant::now();
    let result = (|| -> PyResult<()> {
        let logger = py.import("ntd._native")?.getattr("Logger")?.call0()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("native", native.clone_ref(py))?;
        kwargs.set_item("tests", tests)?;
        if let Some(attach) = debug_hook_attach {
            let debug = py.import("ntd.debug")?.getattr("Debug")?.call1((&logger, attach))?;
            kwargs.set_item("debug", debug)?;
        }
        kwargs.set_item("logger", logger)?;
        let driver = py.import("ntd.driver")?.getattr("Driver")?.call((), Some(&kwargs))?;
        // As upstream's main: how to reach the machines over the SSH backdoor, before the
        // script or the prompt (prints nothing without the backdoor).
        match dump_vsocks {
            Some(offset) => driver.call_method1("dump_machine_ssh", (offset,))?,
            None => driver.call_method0("dump_machine_ssh")?,
        };
        driver.call_method0(if interactive { "interactive" } else { "run_tests" })?;
        Ok(())
    })();
    let stop = native.get().core().stop_reason();
    match &stop {
        // A switch died or the global timeout fired, and interrupted the script: its
        // KeyboardInterrupt is not the story. The interruption may still be pending.
        Some(stop @ Stop::SwitchFailed(_)) => {
            let _ = py.check_signals();
            log::test_error(&stop.message());
            return Outcome::Failed(exit::TEST_FAILED);
        }
        Some(stop @ Stop::GlobalTimeout(_)) => {
            let _ = py.check_signals();
            log::test_error(&stop.message());
            return Outcome::TimedOut(stop.exit_status());
        }
        Some(Stop::Signal(_)) | None => {}
    }
    match result {
        Ok(()) if interactive => Outcome::Passed,
        Ok(()) => {
            log::info(None, &format!("test script finished in {:.2}s", start.elapsed().as_secs_f64()));
            Outcome::Passed
        }
        Err(e) if e.is_instance_of::<PySystemExit>(py) => match system_exit_status(py, &e) {
            exit::SUCCESS => Outcome::Passed,
            status => Outcome::Failed(status),
        },
        Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => match stop {
            Some(stop @ Stop::Signal(_)) => {
                log::test_error(&stop.message());
                Outcome::Terminated(stop.exit_status())
            }
            _ => {
                log::test_error("interrupted");
                Outcome::Interrupted
            }
        },
        Err(e) => {
            // Not an assertion nor a machine error: upstream lets Python print the traceback.
            e.print(py);
            if let Some(hint) = undefined_name_hint(py, native, &e) {
                log::test_error(&hint);
            }
            Outcome::Failed(exit::TEST_FAILED)
        }
    }
}

/// For a `NameError` naming something close to a machine's name, that name: a misspelt
/// machine is a common mistake, and the traceback does not say which names exist.
fn undefined_name_hint(py: Python<'_>, native: &Py<ntd_python::driver::Driver>, error: &PyErr) -> Option<String> {
    if !error.is_instance_of::<pyo3::exceptions::PyNameError>(py) {
        return None;
    }
    let name: String = error.value(py).getattr("name").ok()?.extract().ok()?;
    let machine = native
        .get()
        .core()
        .machines()
        .iter()
        .map(|m| ntd_core::config::pythonize_name(m.name()))
        .filter(|machine| edit_distance(&name, machine) <= 2)
        .min_by_key(|machine| edit_distance(&name, machine))?;
    Some(format!("`{name}` is not defined in the test script; did you mean the machine `{machine}`?"))
}

/// Levenshtein distance, over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The status a `SystemExit` asks for, as Python computes it.
fn system_exit_status(py: Python<'_>, error: &PyErr) -> i32 {
    let code = error.value(py).getattr("code").ok();
    match code {
        None => exit::TEST_FAILED,
        Some(code) if code.is_none() => exit::SUCCESS,
        Some(code) => match code.extract::<i32>() {
            Ok(status) => status,
            Err(_) => {
                // sys.exit("message"): Python prints the message and exits 1.
                eprintln!("{code}");
                exit::TEST_FAILED
            }
        },
    }
}

fn flush_python_output(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for stream in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(stream) {
                let _ = stream.call_method0("flush");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("servr", "server"), 1);
        assert_eq!(edit_distance("client1", "client2"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("os", "server"), 6);
    }
}
