//! The `Content-Type` of a served file, by its extension: browsers load modules only as
//! JavaScript, and `nosniff` makes them trust what is said.

/// The type of the file `path`.
pub fn of(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("js") => "text/javascript",
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn modules_are_javascript() {
        assert_eq!(super::of("core/rfb.js"), "text/javascript");
        assert_eq!(super::of("machine-command-failed-console.txt"), "text/plain; charset=utf-8");
        assert_eq!(super::of("README"), "application/octet-stream");
    }
}
