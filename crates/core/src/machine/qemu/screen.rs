//! The screen and the keyboard's text input: screenshots over QMP `screendump`, OCR of the
//! screen, `send_chars` (upstream's `screenshot`, `get_screen_text*`, `send_chars`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};

use super::QemuMachine;
use crate::machine::{Error, Result};
use crate::{log, ocr};

/// Screendumps of one process get distinct names.
static DUMPS: AtomicU64 = AtomicU64::new(0);

impl QemuMachine {
    fn screen_error(&self, action: &str, source: std::io::Error) -> Error {
        Error::HostFile { machine: self.name().to_owned(), action: action.to_owned(), source }
    }

    /// Ask QEMU to write the screen to `path` as PPM (absolute; QEMU runs in the state
    /// directory).
    async fn screendump(&self, path: &Path) -> Result<()> {
        let mut arguments = Map::new();
        arguments.insert("filename".into(), Value::from(path.to_string_lossy().into_owned()));
        self.qmp("screendump", Some(&arguments)).await.map(drop)
    }

    /// The screen as QEMU's PPM.
    pub async fn screen_ppm(&self) -> Result<Vec<u8>> {
        let n = DUMPS.fetch_add(1, Ordering::Relaxed);
        let path = self.state_dir().join(format!("screendump-{}-{n}.ppm", std::process::id()));
        self.screendump(&path).await?;
        let data = tokio::fs::read(&path).await.map_err(|e| self.screen_error("read QEMU's screendump", e));
        let _ = tokio::fs::remove_file(&path).await;
        data
    }

    /// Upstream's `screenshot(filename)`: a PNG of the screen. A name without a `.` gets
    /// `.png`; a name without a `/` goes into the output directory. QEMU writes a PPM, which
    /// is converted here: QEMU's own PNG encoder takes about 20 ms for a 720×400 console
    /// under TCG, its PPM about 5 ms, the conversion well under a millisecond
    /// (benches/micro, `ppm_to_png`).
    pub async fn screenshot(&self, filename: &str) -> Result<PathBuf> {
        let mut name = filename.to_owned();
        if !name.contains('.') {
            name.push_str(".png");
        }
        let path = if name.contains('/') { PathBuf::from(&name) } else { self.out_dir().join(&name) };
        let path = std::path::absolute(&path).map_err(|e| self.screen_error("resolve the screenshot's path", e))?;
        let image = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let span =
            log::block(Some(self.name()), &format!("making screenshot {}", path.display()), &[("image", &image)]);
        let result = async {
            let ppm = self.screen_ppm().await?;
            let png = tokio::task::spawn_blocking(move || -> std::result::Result<Vec<u8>, image::ImageError> {
                let decoded = image::load_from_memory_with_format(&ppm, image::ImageFormat::Pnm)?;
                let mut out = std::io::Cursor::new(Vec::new());
                decoded.write_to(&mut out, image::ImageFormat::Png)?;
                Ok(out.into_inner())
            })
            .await
            .map_err(|e| self.screen_error("convert the screenshot", std::io::Error::other(e)))?
            .map_err(|e| self.screen_error("convert the screenshot", std::io::Error::other(e)))?;
            tokio::fs::write(&path, png).await.map_err(|e| self.screen_error("write the screenshot", e))
        };
        let result = tracing::Instrument::instrument(result, span.clone()).await;
        if result.is_err() {
            log::mark_failed(&span);
        }
        result.map(|()| path)
    }

    /// OCR variants of the current screen.
    pub async fn screen_variants(&self) -> Result<Vec<ocr::Variant>> {
        let ppm = self.screen_ppm().await?;
        let name = self.name().to_owned();
        tokio::task::spawn_blocking(move || ocr::variants(&ppm))
            .await
            .map_err(|e| Error::Ocr { machine: name.clone(), source: ocr::Error::Tesseract(e.to_string()) })?
            .map_err(|source| Error::Ocr { machine: name, source })
    }

    /// Upstream's `get_screen_text()`: the screen's text, from the first variant (normalized
    /// grayscale, dark text on light, twice the size).
    pub async fn get_screen_text(&self) -> Result<String> {
        let variants = self.screen_variants().await?;
        let first = variants.into_iter().next().map(|v| v.data).unwrap_or_default();
        ocr::recognise(first).await.map_err(|source| Error::Ocr { machine: self.name().to_owned(), source })
    }

    /// Upstream's `get_screen_text_variants()`: the texts of every variant, recognised at once.
    pub async fn get_screen_text_variants(&self) -> Result<Vec<String>> {
        let variants = self.screen_variants().await?;
        match ocr::race(variants, |_| false).await {
            Ok(ocr::Race::Texts(texts)) => Ok(texts),
            Ok(ocr::Race::Matched(text)) => Ok(vec![text]),
            Err(source) => Err(Error::Ocr { machine: self.name().to_owned(), source }),
        }
    }

    /// Recognise the current screen's variants at once, handing each text to `accept`; stops
    /// at the first accepted text (for `wait_for_text`).
    pub async fn screen_race(&self, accept: impl FnMut(&str) -> bool) -> Result<ocr::Race> {
        let variants = self.screen_variants().await?;
        ocr::race(variants, accept).await.map_err(|source| Error::Ocr { machine: self.name().to_owned(), source })
    }

    /// Upstream's `wait_for_text(regex, timeout=900)`: wait until `accept` holds for one of
    /// the OCR readings of the screen. Every reading of a fresh screenshot is tried as it
    /// finishes and the first accepted one ends the wait; screenshots are retaken after 0.5, 1,
    /// 2, 2, … seconds. `accept` is the regular expression's search (Python's `re` from the
    /// bindings); `pattern` is its text, for the log.
    pub async fn wait_for_text(
        &self,
        pattern: &str,
        mut accept: impl FnMut(&str) -> bool + Send,
        timeout: Duration,
    ) -> Result<()> {
        log::nested(Some(self.name()), &format!("waiting for {pattern} to appear on screen"), async {
            let start = std::time::Instant::now();
            let mut pause = Duration::from_millis(500);
            loop {
                let texts = match self.screen_race(&mut accept).await? {
                    ocr::Race::Matched(_) => return Ok(()),
                    ocr::Race::Texts(texts) => texts,
                };
                let elapsed = start.elapsed();
                let Some(remaining) = timeout.checked_sub(elapsed).filter(|left| !left.is_zero()) else {
                    // Upstream logs the readings as a Python list.
                    let shown: Vec<String> = texts.iter().map(|text| log::str_repr(text)).collect();
                    self.log(&format!("Last OCR attempt failed. Text was: [{}]", shown.join(", ")));
                    return Err(crate::retry::TimedOut { elapsed, timeout }.into());
                };
                tokio::time::sleep(pause.min(remaining)).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        })
        .await
    }

    /// Upstream's `send_chars(chars, delay=0.01)`: type a string, one key per character.
    pub async fn send_chars(&self, chars: &str, delay: Option<Duration>) -> Result<()> {
        log::nested(Some(self.name()), &format!("sending keys {}", log::str_repr(chars)), async {
            let mut buf = [0u8; 4];
            for c in chars.chars() {
                self.send_key(c.encode_utf8(&mut buf), delay, false).await?;
            }
            Ok(())
        })
        .await
    }
}
