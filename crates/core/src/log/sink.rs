//! The sink side: what the terminal, XML and JUnit sinks share.

use std::fmt;

use super::{LogLevel, field};

/// The fields of an ntd event or span that the sinks need.
#[derive(Default)]
pub(crate) struct Fields {
    pub(crate) message: Option<String>,
    pub(crate) machine: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) block: Option<String>,
    pub(crate) subtest: Option<String>,
    pub(crate) attrs: Option<String>,
    pub(crate) failed: bool,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let slot = match field.name() {
            "message" => &mut self.message,
            field::MACHINE => &mut self.machine,
            field::KIND => &mut self.kind,
            field::BLOCK => &mut self.block,
            field::ATTRS => &mut self.attrs,
            "ntd.subtest" => &mut self.subtest,
            _ => return,
        };
        *slot = Some(value.to_owned());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == field::FAILED {
            self.failed = value;
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        // `message` arrives as fmt::Arguments, whose Debug is its Display.
        self.record_str(field, &format!("{value:?}"));
    }
}

impl Fields {
    /// The sink's view of a leveled event's level, or `None` if the line is always shown.
    pub(crate) fn shown_at(&self, level: &tracing::Level) -> Option<LogLevel> {
        match self.kind.as_deref() {
            Some(field::KIND_LEVELED) => Some(match *level {
                tracing::Level::ERROR => LogLevel::Error,
                tracing::Level::WARN => LogLevel::Warning,
                tracing::Level::INFO => LogLevel::Info,
                _ => LogLevel::Debug,
            }),
            _ => None,
        }
    }

    /// Whether a leveled line passes the current level (errors always do).
    pub(crate) fn passes_level(&self, level: &tracing::Level) -> bool {
        match self.shown_at(level) {
            Some(shown) => shown >= super::level() || shown == LogLevel::Error,
            None => true,
        }
    }

    /// The extra attributes of a block, parsed back from JSON.
    pub(crate) fn attributes(&self) -> Vec<(String, String)> {
        let Some(attrs) = &self.attrs else { return Vec::new() };
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(attrs) {
            Ok(map) => map
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
