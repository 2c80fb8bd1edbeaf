//! The host's noVNC: where it is, and its files served as they are.
//!
//! noVNC is the page's VNC client. ntd does not carry a copy: it serves the host's, the
//! Debian `novnc` package's (`/usr/share/novnc`) or nixpkgs' (`share/webapps/novnc`), or the
//! directory `NTD_NOVNC` names. Only the client's ES modules are loaded by the page
//! (`core/rfb.js` and what it imports).

use std::path::{Path, PathBuf};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The environment variable naming a noVNC directory.
pub const ENV: &str = "NTD_NOVNC";

/// Where hosts keep noVNC: Debian's package, a NixOS system profile.
const KNOWN_PLACES: [&str; 2] = ["/usr/share/novnc", "/run/current-system/sw/share/webapps/novnc"];

/// The noVNC directory: `NTD_NOVNC` if set, else beside this program (a Nix package's
/// `share/webapps/novnc`), else a known place. `Err` says why there is none.
pub fn find() -> Result<PathBuf, String> {
    let is_novnc = |dir: &Path| dir.join("core/rfb.js").is_file();
    if let Some(dir) = std::env::var_os(ENV).map(PathBuf::from) {
        return if is_novnc(&dir) {
            Ok(dir)
        } else {
            Err(format!("{ENV}={} has no core/rfb.js (a noVNC directory has)", dir.display()))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|prefix| prefix.join("share/webapps/novnc")));
    beside.into_iter().chain(KNOWN_PLACES.iter().map(PathBuf::from)).find(|dir| is_novnc(dir)).ok_or_else(|| {
        format!(
            "no noVNC on this host (looked in {}; install Debian's novnc or nixpkgs' novnc, or set {ENV})",
            KNOWN_PLACES.join(", ")
        )
    })
}

/// The file `path` (relative, from the URL) of the noVNC directory `root`.
pub async fn serve(root: &Path, path: &str) -> Response {
    let Some(relative) = safe_relative(path) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    match tokio::fs::read(root.join(&relative)).await {
        Ok(data) => ([(header::CONTENT_TYPE, content_type(path))], data).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// `path` as a relative path below the root: plain names only, no `..`, no hidden files.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|part| part.is_empty() || part.starts_with('.') || part.contains('\\')) {
        return None;
    }
    Some(parts.iter().collect())
}

/// The `Content-Type` of a file, by its extension (browsers load modules only as JavaScript).
pub fn content_type(path: &str) -> &'static str {
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
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_served() {
        assert_eq!(safe_relative("core/rfb.js"), Some(PathBuf::from("core/rfb.js")));
        for bad in ["../etc/passwd", "core/../../x", "/etc/passwd", "core//rfb.js", ".git/config", "a\\b", ""] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn modules_are_javascript() {
        assert_eq!(content_type("core/rfb.js"), "text/javascript");
        assert_eq!(content_type("machine-command-failed-console.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
