//! Optical character recognition of screenshots, with tesseract.
//!
//! Upstream converts with ImageMagick and runs three tesseract passes one after the other,
//! with as many threads each as tesseract likes. ntd prepares the variants in-process (the
//! `image` crate: grayscale, dark text on a light background, twice the size), runs them at
//! the same time with one thread each (`OMP_THREAD_LIMIT=1`: OpenMP oversubscription costs
//! more than it gives), and lets the caller stop at the first text that matches; the others
//! are killed.

use std::process::{Command, Stdio};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageFormat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::process;

/// An OCR failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The screenshot cannot be read.
    #[error("cannot decode the screenshot")]
    Decode(#[source] image::ImageError),
    /// tesseract is not installed.
    #[error("OCR needs tesseract, which is not on PATH (NixOS tests: set enableOCR = true)")]
    Missing,
    /// tesseract could not be run or failed.
    #[error("tesseract failed: {0}")]
    Tesseract(String),
}

/// One image to recognise, and what it is.
#[derive(Debug, Clone)]
pub struct Variant {
    /// A short name for logs: `gray`, `gray-2x`, `raw`.
    pub name: &'static str,
    /// The image, encoded (PGM or PPM; tesseract reads both).
    pub data: Vec<u8>,
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, Error> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, format).map_err(Error::Decode)?;
    Ok(out.into_inner())
}

/// Grayscale with dark text on a light background, what tesseract reads best: a screen
/// whose average is dark (a text console) is inverted.
pub fn normalized_gray(image: &DynamicImage) -> GrayImage {
    let mut gray = image.to_luma8();
    let pixels = u64::from(gray.width()) * u64::from(gray.height());
    let sum: u64 = gray.pixels().map(|p| u64::from(p.0[0])).sum();
    if pixels > 0 && sum / pixels < 128 {
        image::imageops::invert(&mut gray);
    }
    gray
}

/// The variants of a screenshot (any format the `image` crate decodes, e.g. QEMU's PPM), in
/// the order they are most likely to read well: normalized grayscale at twice the size (a
/// console's 8×16 font reads best so: `0`/`o` and `l`/`1` are told apart), the same at its
/// size, and the screenshot as it is.
pub fn variants(screenshot: &[u8]) -> Result<Vec<Variant>, Error> {
    let image = image::load_from_memory(screenshot).map_err(Error::Decode)?;
    let gray = DynamicImage::ImageLuma8(normalized_gray(&image));
    let (width, height) = (gray.width(), gray.height());
    let large = gray.resize_exact(width * 2, height * 2, FilterType::Triangle);
    Ok(vec![
        Variant { name: "gray-2x", data: encode(&large, ImageFormat::Pnm)? },
        Variant { name: "gray", data: encode(&gray, ImageFormat::Pnm)? },
        Variant { name: "raw", data: screenshot.to_vec() },
    ])
}

/// Whether tesseract is on PATH.
pub fn tesseract_available() -> bool {
    crate::process::find_program("tesseract").is_some()
}

/// Recognise one image: `tesseract stdin stdout --psm 11` (sparse text, as upstream), one
/// OpenMP thread. The child is killed if the future is dropped.
pub async fn recognise(image: Vec<u8>) -> Result<String, Error> {
    if !tesseract_available() {
        return Err(Error::Missing);
    }
    let mut command = Command::new("tesseract");
    command
        .args(["stdin", "stdout", "--psm", "11", "-c", "debug_file=/dev/null"])
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = process::Child::spawn(command).await.map_err(|e| Error::Tesseract(e.to_string()))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Error::Tesseract("no pipes to tesseract".into()));
    };
    let feed = async move {
        let written = stdin.write_all(&image).await;
        drop(stdin);
        written
    };
    let mut text = String::new();
    let mut errors = String::new();
    let (written, read, _) = tokio::join!(feed, stdout.read_to_string(&mut text), stderr.read_to_string(&mut errors));
    let status = child.wait().await;
    if !status.success() || written.is_err() || read.is_err() {
        let detail = errors.lines().last().unwrap_or("").to_owned();
        return Err(Error::Tesseract(format!("{} {detail}", process::describe_status(status))));
    }
    Ok(text)
}

/// Recognise every variant at once; the texts in the variants' order (for a script that OCRs
/// a screenshot file itself: upstream's `perform_ocr_variants_on_screenshot`).
pub async fn recognise_all(variants: Vec<Variant>) -> Result<Vec<String>, Error> {
    let mut running = JoinSet::new();
    for (index, variant) in variants.into_iter().enumerate() {
        running.spawn(async move { (index, recognise(variant.data).await) });
    }
    let mut texts = vec![String::new(); running.len()];
    while let Some(joined) = running.join_next().await {
        let (index, text) = joined.map_err(|e| Error::Tesseract(e.to_string()))?;
        texts[index] = text?;
    }
    Ok(texts)
}

/// How a race of variants ended.
#[derive(Debug)]
pub enum Race {
    /// A variant's text was accepted.
    Matched(String),
    /// No variant was accepted; every text, in the order they finished.
    Texts(Vec<String>),
}

/// Recognise all variants at once and hand each text to `accept` as it comes; the first
/// accepted text ends the race and kills the remaining tesseract processes.
pub async fn race(variants: Vec<Variant>, mut accept: impl FnMut(&str) -> bool) -> Result<Race, Error> {
    let mut running = JoinSet::new();
    for variant in variants {
        running.spawn(recognise(variant.data));
    }
    let mut texts = Vec::new();
    while let Some(joined) = running.join_next().await {
        let text = joined.map_err(|e| Error::Tesseract(e.to_string()))??;
        if accept(&text) {
            running.abort_all();
            return Ok(Race::Matched(text));
        }
        texts.push(text);
    }
    Ok(Race::Texts(texts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb, RgbImage};

    #[test]
    fn dark_screens_are_inverted_light_ones_kept() {
        let dark = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb([10, 10, 10])));
        assert_eq!(normalized_gray(&dark).get_pixel(0, 0), &Luma([245]));
        let light = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb([250, 250, 250])));
        assert_eq!(normalized_gray(&light).get_pixel(0, 0), &Luma([250]));
    }

    #[test]
    fn variants_of_a_ppm() {
        let mut ppm = b"P6\n4 2\n255\n".to_vec();
        ppm.extend(std::iter::repeat_n(0u8, 4 * 2 * 3));
        let variants = variants(&ppm).expect("decodes");
        let names: Vec<&str> = variants.iter().map(|v| v.name).collect();
        assert_eq!(names, ["gray-2x", "gray", "raw"]);
        let large = image::load_from_memory(&variants[0].data).expect("PGM");
        assert_eq!((large.width(), large.height()), (8, 4));
        assert!(super::variants(b"not an image").is_err());
    }
}
