//! Test support for the sinks: a captured writer and a guard over the process-wide settings.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::LogLevel;

/// A writer whose bytes a test reads back.
#[derive(Clone, Default)]
pub(crate) struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    /// What was written so far, as text.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        String::from_utf8(bytes).expect("utf-8 log")
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
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
    let guard = SETTINGS.lock().unwrap_or_else(PoisonError::into_inner);
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
