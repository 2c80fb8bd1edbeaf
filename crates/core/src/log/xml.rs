//! The XML log: upstream's `XMLLogger`, written when `LOGFILE` is set.
//!
//! The shape is upstream's: a `<logfile>` of `<line>` elements (attributes as given, e.g.
//! `machine`; serial lines with `type="serial"`) and `<nest><head …>message</head> …</nest>` for
//! nested blocks, closed by a `(finished: …)` line. Unlike upstream, a block that fails still
//! closes its `<nest>`, so the file stays well-formed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{Fields, TARGET, field};

/// Escape text for XML character data or attribute values, dropping the control characters
/// XML 1.0 cannot carry (upstream strips them from serial lines).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

fn attributes(attrs: &[(String, String)]) -> String {
    attrs.iter().map(|(k, v)| format!(" {}=\"{}\"", escape(k), escape(v))).collect()
}

/// The XML log file, shared by its layer and whoever closes it.
pub struct XmlLog {
    out: Mutex<Option<BufWriter<File>>>,
}

struct Block {
    message: String,
    start: Instant,
    failed: bool,
}

impl XmlLog {
    /// Create the file and write the document's start.
    pub fn create(path: &Path) -> std::io::Result<Arc<XmlLog>> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<logfile>")?;
        Ok(Arc::new(XmlLog { out: Mutex::new(Some(out)) }))
    }

    /// The layer that writes into this log.
    pub fn layer(self: &Arc<Self>) -> XmlLayer {
        XmlLayer { log: Arc::clone(self) }
    }

    fn write(&self, text: &str) {
        let mut out = match self.out.lock() {
            Ok(out) => out,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(out) = out.as_mut() {
            // A full disk must not fail the test; the log is a by-product.
            let _ = out.write_all(text.as_bytes());
        }
    }

    /// End the document and flush it; later lines are dropped.
    pub fn finish(&self) -> std::io::Result<()> {
        let mut out = match self.out.lock() {
            Ok(out) => out,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(mut file) = out.take() {
            file.write_all(b"</logfile>\n")?;
            file.flush()?;
        }
        Ok(())
    }
}

/// The `tracing` layer of an [`XmlLog`].
pub struct XmlLayer {
    log: Arc<XmlLog>,
}

impl<S> Layer<S> for XmlLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let Some(message) = fields.block.clone() else { return };
        let mut head = fields.attributes();
        if let Some(machine) = &fields.machine {
            head.insert(0, ("machine".to_owned(), machine.clone()));
        }
        self.log.write(&format!("<nest><head{}>{}</head>", attributes(&head), escape(&message)));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Block { message, start: Instant::now(), failed: fields.failed });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if fields.failed
            && let Some(span) = ctx.span(id)
            && let Some(block) = span.extensions_mut().get_mut::<Block>()
        {
            block.failed = true;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(block) = extensions.get::<Block>() else { return };
        if !block.failed {
            let elapsed = block.start.elapsed().as_secs_f64();
            self.log.write(&format!(
                "<line>{}</line>",
                escape(&format!("(finished: {}, in {elapsed:.2} seconds)", block.message))
            ));
        }
        self.log.write("</nest>");
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if !fields.passes_level(event.metadata().level()) {
            return;
        }
        let message = fields.message.unwrap_or_default();
        let mut attrs = Vec::new();
        if let Some(machine) = fields.machine {
            attrs.push(("machine".to_owned(), machine));
        }
        if fields.kind.as_deref() == Some(field::KIND_SERIAL) {
            if !super::print_serial() {
                return;
            }
            attrs.push(("type".to_owned(), "serial".to_owned()));
        }
        self.log.write(&format!("<line{}>{}</line>", attributes(&attrs), escape(&message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn writes_upstreams_shape_and_stays_well_formed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _settings = crate::log::testing::defaults();
        let path = dir.path().join("log.xml");
        let log = XmlLog::create(&path).expect("create");
        let subscriber = tracing_subscriber::registry().with(log.layer());
        tracing::subscriber::with_default(subscriber, || {
            crate::log::log(Some("m"), "a <line> & more");
            {
                let _ok = crate::log::block(Some("m"), "making screenshot x.png", &[("image", "x.png")]).entered();
                crate::log::serial("m", "boot\u{1b}[0m");
            }
            let failed = crate::log::block(None, "doomed", &[]);
            crate::log::mark_failed(&failed);
            drop(failed);
        });
        log.finish().expect("finish");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<logfile><line machine=\"m\">a &lt;line&gt; &amp; more</line>"), "{text}");
        assert!(text.contains("<nest><head machine=\"m\" image=\"x.png\">making screenshot x.png</head><line machine=\"m\" type=\"serial\">boot[0m</line><line>(finished: making screenshot x.png, in "), "{text}");
        assert!(text.contains("<nest><head>doomed</head></nest>"), "{text}");
        assert!(text.ends_with("</logfile>\n"), "{text}");
    }
}
