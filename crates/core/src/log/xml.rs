//! The XML log: upstream's `XMLLogger` (`logger.py`), written when `LOGFILE` is set.
//!
//! The shape is upstream's: a `<logfile>` of `<line>` elements (attributes as given, e.g.
//! `machine`; serial lines with `type="serial"`) and `<nest><head …>message</head> …</nest>` for
//! nested blocks, closed by a `(finished: …)` line. Unlike upstream, a block that fails still
//! closes its `<nest>`, so the file stays well-formed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::sink::{Block, BlockEnd, Line, LineKind, Sink, SinkLayer};

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

fn attributes<'a>(attrs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    attrs.into_iter().map(|(k, v)| format!(" {}=\"{}\"", escape(k), escape(v))).collect()
}

/// The XML log file, shared by its layer and whoever closes it.
pub struct XmlLog {
    out: Mutex<Option<BufWriter<File>>>,
}

/// The `tracing` layer of an [`XmlLog`].
pub type XmlLayer = SinkLayer<Arc<XmlLog>>;

impl XmlLog {
    /// Create the file and write the document's start.
    pub fn create(path: &Path) -> std::io::Result<Arc<XmlLog>> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<logfile>")?;
        Ok(Arc::new(XmlLog { out: Mutex::new(Some(out)) }))
    }

    /// The layer that writes into this log.
    pub fn layer(self: &Arc<Self>) -> XmlLayer {
        SinkLayer::new(Arc::clone(self))
    }

    fn write(&self, text: &str) {
        if let Some(out) = super::lock(&self.out).as_mut() {
            // A full disk must not fail the test; the log is a by-product.
            let _ = out.write_all(text.as_bytes());
        }
    }

    /// End the document and flush it; later lines are dropped.
    pub fn finish(&self) -> std::io::Result<()> {
        if let Some(mut file) = super::lock(&self.out).take() {
            file.write_all(b"</logfile>\n")?;
            file.flush()?;
        }
        Ok(())
    }
}

impl Sink for XmlLog {
    type BlockState = ();

    fn line(&self, line: &Line<'_>) {
        let machine = line.machine.map(|machine| ("machine", machine));
        let kind = match line.kind {
            LineKind::Serial => Some(("type", "serial")),
            LineKind::Artifact => Some(("type", "artifact")),
            _ => None,
        };
        let attrs = attributes(machine.into_iter().chain(kind));
        self.write(&format!("<line{attrs}>{}</line>", escape(line.message)));
    }

    fn block_opened(&self, block: &Block) {
        let machine = block.machine.as_deref().map(|machine| ("machine", machine));
        let extra = block.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let attrs = attributes(machine.into_iter().chain(extra));
        self.write(&format!("<nest><head{attrs}>{}</head>", escape(&block.message)));
    }

    fn block_closed(&self, block: &Block, (): (), end: BlockEnd) {
        // Upstream logs the finished line without the block's attributes.
        if let Some(finished) = end.finished_line(block) {
            self.write(&format!("<line>{}</line>", escape(&finished)));
        }
        self.write("</nest>");
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
