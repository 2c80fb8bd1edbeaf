//! The host's noVNC: where it is, and its files served as they are.
//!
//! noVNC is the page's VNC client. ntd does not carry a copy: it serves the host's, the
//! Debian `novnc` package's (`/usr/share/novnc`) or nixpkgs' (`share/webapps/novnc`), or the
//! directory `NTD_NOVNC` names. Only the client's ES modules are served (`core/` and
//! `vendor/`, what `core/rfb.js` imports): noVNC's own pages, which take their settings from
//! the URL (view-only among them), are not.

use std::path::{Path, PathBuf};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The environment variable naming a noVNC directory.
pub const ENV: &str = "NTD_NOVNC";

/// Where hosts keep noVNC: Debian's package, a NixOS system profile.
const KNOWN_PLACES: [&str; 2] = ["/usr/share/novnc", "/run/current-system/sw/share/webapps/novnc"];

/// Why there is no noVNC to serve.
#[derive(Debug, thiserror::Error)]
pub enum NotFound {
    /// `NTD_NOVNC` names something else.
    #[error("{ENV}={} has no core/rfb.js (a noVNC directory has)", .0.display())]
    NotNoVnc(PathBuf),
    /// None of the places noVNC is kept has it.
    #[error("no noVNC on this host (looked in {}; install Debian's novnc or nixpkgs' novnc, or set {ENV})", KNOWN_PLACES.join(", "))]
    NotInstalled,
}

/// The noVNC directory: `NTD_NOVNC` if set, else beside this program (a Nix package's
/// `share/webapps/novnc`), else a known place.
pub fn find() -> Result<PathBuf, NotFound> {
    let is_novnc = |dir: &Path| dir.join("core/rfb.js").is_file();
    if let Some(dir) = std::env::var_os(ENV).map(PathBuf::from) {
        return if is_novnc(&dir) { Ok(dir) } else { Err(NotFound::NotNoVnc(dir)) };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|prefix| prefix.join("share/webapps/novnc")));
    beside
        .into_iter()
        .chain(KNOWN_PLACES.iter().map(PathBuf::from))
        .find(|dir| is_novnc(dir))
        .ok_or(NotFound::NotInstalled)
}

/// The file `path` (relative, from the URL) of the noVNC directory `root`.
pub async fn serve(root: &Path, path: &str) -> Response {
    let Some(relative) = safe_relative(path) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    match tokio::fs::read(root.join(&relative)).await {
        Ok(data) => ([(header::CONTENT_TYPE, crate::content_type::of(path))], data).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// `path` as a relative path below the root: in `core/` or `vendor/`, plain names only, no
/// `..`, no hidden files.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|part| part.is_empty() || part.starts_with('.') || part.contains('\\'))
        || !matches!(parts.first(), Some(&"core" | &"vendor"))
        || parts.len() < 2
    {
        return None;
    }
    Some(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_served() {
        assert_eq!(safe_relative("core/rfb.js"), Some(PathBuf::from("core/rfb.js")));
        assert_eq!(
            safe_relative("vendor/pako/lib/zlib/inflate.js"),
            Some(PathBuf::from("vendor/pako/lib/zlib/inflate.js"))
        );
        for bad in [
            "../etc/passwd",
            "core/../../x",
            "/etc/passwd",
            "core//rfb.js",
            ".git/config",
            "a\\b",
            "",
            "vnc.html",
            "app/ui.js",
            "core",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }
}
