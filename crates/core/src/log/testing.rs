//! Test support for the sinks: a captured writer and a guard over the process-wide settings.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use super::LogLevel;

/// A writer whose bytes a test reads back.
#[derive(Clone, Default)]
pub(crate) struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    /// What was written so far, as text.
    pub(crate) fn text(&self) -> String {
        let bytes = super::lock(&self.0).clone();
        String::from_utf8(bytes).expect("utf-8 log")
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        super::lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static SETTINGS: Mutex<()> = Mutex::new(());

/// Holds the process-wide level and serial switch for one test and restores the defaults
/// (info, serial on) when dropped. The settings are global, and tests run in parallel: a test
/// that reads them must not see another test's.
pub(crate) struct Settings {
    _guard: MutexGuard<'static, ()>,
}

/// Take the settings, starting from `level` and `print_serial`.
pub(crate) fn settings(level: LogLevel, print_serial: bool) -> Settings {
    let guard = super::lock(&SETTINGS);
    super::set_level(level);
    super::set_print_serial(print_serial);
    Settings { _guard: guard }
}

/// Take the settings at their defaults.
pub(crate) fn defaults() -> Settings {
    settings(LogLevel::Info, true)
}

impl Drop for Settings {
    fn drop(&mut self) {
        super::set_level(LogLevel::Info);
        super::set_print_serial(true);
    }
}

/// What the three sinks wrote for one run of a test's code.
pub(crate) struct Outputs {
    pub(crate) terminal: String,
    pub(crate) xml: String,
    pub(crate) junit: String,
}

/// Run `f` with the terminal, XML and JUnit sinks on one registry, and return what each
/// wrote. The caller holds the [`Settings`].
pub(crate) fn all_sinks(f: impl FnOnce()) -> Outputs {
    use tracing_subscriber::layer::SubscriberExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log.xml");
    let xml = super::xml::XmlLog::create(&path).expect("create the XML log");
    let junit = super::junit::JunitReport::new();
    let terminal = Buffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(super::terminal::TerminalLayer::to_writer(terminal.clone()))
        .with(xml.layer())
        .with(junit.layer());
    tracing::subscriber::with_default(subscriber, f);
    xml.finish().expect("finish the XML log");
    Outputs {
        terminal: terminal.text(),
        xml: std::fs::read_to_string(&path).expect("read the XML log"),
        junit: junit.render(),
    }
}
