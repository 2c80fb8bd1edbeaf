//! Micro benchmarks of ntd's hot paths that need no VM: what the driver does with every
//! byte a guest sends (reply framing, console lines, QMP messages) and with every screenshot
//! (OCR variants, and the PPM→PNG conversion upstream runs `pnmtopng` for).
//!
//! `cargo bench -p ntd-benches` measures; `cargo test -p ntd-benches --benches` runs each once.

use std::hint::black_box;

use ntd_core::machine::console::LineSplitter;
use ntd_core::machine::qemu::frame::{Frame, Framing};
use ntd_core::machine::qemu::qmp;

fn main() {
    divan::main();
}

/// Decoding a command's reply as it arrives in 64 KiB reads (the driver's read size), on the
/// output port and on the console fallback (which checks the guest's `cksum` of the output).
#[divan::bench(args = [1 << 20, 64 << 20], consts = [true, false])]
fn decode_reply<const PORT: bool>(bencher: divan::Bencher, size: usize) {
    let framing = if PORT { Framing::Port } else { Framing::Console };
    let frame = Frame::new("head -c N /dev/zero", framing, None, None).expect("no NUL");
    let reply = frame.reply_for(&vec![b'a'; size], 0);
    bencher.counter(divan::counter::BytesCount::new(size)).bench(|| {
        let mut decoder = frame.decoder();
        for chunk in reply.chunks(64 * 1024) {
            if let Some(done) = decoder.push(chunk).expect("well-formed reply") {
                return black_box(done);
            }
        }
        panic!("the reply never ended");
    });
}

/// Framing a command (quoting, nonce, status line).
#[divan::bench]
fn encode_frame() -> Frame {
    Frame::new(black_box("systemctl show --property=ActiveState --value hello.service"), Framing::Port, None, None)
        .expect("no NUL")
}

/// Serial console bytes into lines, with colour escapes stripped, 1 MiB per iteration.
#[divan::bench]
fn console_lines(bencher: divan::Bencher) {
    let line = b"\x1b[0;32m[  OK  ]\x1b[0m Started \x1b[0;1;39mhello.service\x1b[0m - A tiny TCP service.\r\n";
    let input: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    bencher.counter(divan::counter::BytesCount::new(input.len())).bench(|| {
        let mut splitter = LineSplitter::default();
        black_box(splitter.push(&input))
    });
}

/// QMP messages as they arrive: a command's return and an event.
#[divan::bench(args = ["return", "event"])]
fn qmp_message(kind: &str) -> qmp::Message {
    let line = match kind {
        "return" => r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": "ntd-17"}"#,
        _ => {
            r#"{"timestamp": {"seconds": 1764633600, "microseconds": 125000}, "event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}"#
        }
    };
    qmp::parse_message(black_box(line)).expect("valid QMP")
}

/// A 720×400 text-console-like screenshot as PNG (QEMU's screendump format for ntd).
fn screenshot_png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(720, 400, |x, y| {
        // Light text strokes on black, as the console looks.
        let on = (x / 9 + y / 16) % 3 == 0 && x % 9 < 6 && y % 16 > 3 && y % 16 < 13;
        if on { image::Rgb([170, 170, 170]) } else { image::Rgb([0, 0, 0]) }
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode PNG");
    png
}

/// The OCR variants ntd makes in-process (upstream runs ImageMagick twice for its own).
#[divan::bench]
fn ocr_variants(bencher: divan::Bencher) {
    let png = screenshot_png();
    bencher.bench(|| ntd_core::ocr::variants(black_box(&png)).expect("variants"));
}

/// PPM → PNG, as upstream's `pnmtopng` does for every screenshot; ntd asks QEMU for PNG and
/// does not convert, so this is what converting in-process would cost.
#[divan::bench]
fn ppm_to_png(bencher: divan::Bencher) {
    let image = image::load_from_memory(&screenshot_png()).expect("decode PNG");
    let mut ppm = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut ppm), image::ImageFormat::Pnm).expect("encode PPM");
    bencher.bench(|| {
        let decoded = image::load_from_memory_with_format(black_box(&ppm), image::ImageFormat::Pnm).expect("PPM");
        let mut png = Vec::new();
        decoded.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).expect("PNG");
        png
    });
}
