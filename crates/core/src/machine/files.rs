//! Files between host and guest (upstream's `copy_from_host`, `copy_from_host_via_shell`,
//! `copy_from_machine`): through a fresh directory in the shared `shared-xchg` directory,
//! which the guest sees as `/tmp/shared`, with the guest side done by `succeed` commands
//! built exactly as upstream builds them (so the log shows the same lines).

use std::path::{Path, PathBuf};

use super::quote::make_command;
use super::{Error, Machine, Result};

/// Where the guest mounts the shared directory.
const GUEST_SHARED: &str = "/tmp/shared";

/// Copy a file (keeping its permission bits, like `shutil.copy`) or a directory tree (like
/// `shutil.copytree`, following symlinks).
fn copy_path(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir(to)?;
        std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_path(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(drop)
    }
}

/// The last component of a path as upstream's `Path(p).name` gives it.
fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Standard base64 with padding, as `base64.b64encode`.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Machine {
    fn copy_error(&self, action: String, source: std::io::Error) -> Error {
        Error::HostFile { machine: self.name().to_owned(), action, source }
    }

    /// A fresh directory in `shared-xchg`, removed when dropped.
    fn shared_temp(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("tmp")
            .tempdir_in(self.shared_dir())
            .map_err(|e| self.copy_error(format!("create a directory in {}", self.shared_dir().display()), e))
    }

    /// Upstream's `copy_from_host(source, target)`: copy a host file or directory to `target`
    /// in the guest, with its permission bits; the guest copy is owned by root.
    pub async fn copy_from_host(&self, source: &Path, target: &str) -> Result<()> {
        let shared = self.shared_temp()?;
        let name = file_name(source);
        let host_intermediate = shared.path().join(&name);
        let vm_shared_temp = format!("{GUEST_SHARED}/{}", file_name(shared.path()));
        let vm_intermediate = format!("{vm_shared_temp}/{name}");
        self.succeed(&[make_command(&["mkdir", "-p", &vm_shared_temp])], None).await?;
        let (from, to) = (source.to_owned(), host_intermediate.clone());
        tokio::task::spawn_blocking(move || copy_path(&from, &to))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| self.copy_error(format!("copy {} into the shared directory", source.display()), e))?;
        let vm_target = Path::new(target);
        let parent = vm_target.parent().map(|p| p.to_string_lossy().into_owned());
        let parent = match parent.as_deref() {
            Some("") | None => ".".to_owned(),
            Some(parent) => parent.to_owned(),
        };
        self.succeed(&[make_command(&["mkdir", "-p", &parent])], None).await?;
        self.succeed(&[make_command(&["cp", "-r", &vm_intermediate, target])], None).await?;
        drop(shared);
        Ok(())
    }

    /// Upstream's `copy_from_host_via_shell(source, target)`: send the file as base64 inside
    /// a shell command (no shared directory needed; the command grows with the file).
    pub async fn copy_from_host_via_shell(&self, source: &Path, target: &str) -> Result<()> {
        let content =
            tokio::fs::read(source).await.map_err(|e| self.copy_error(format!("read {}", source.display()), e))?;
        let encoded = base64_encode(&content);
        self.succeed(
            &[format!("mkdir -p $(dirname {target})"), format!("echo -n {encoded} | base64 -d > {target}")],
            None,
        )
        .await?;
        Ok(())
    }

    /// Upstream's `copy_from_machine(source, target_dir="")`: copy a guest file or directory
    /// to `<out_dir>/<target_dir>/<name>`.
    pub async fn copy_from_machine(&self, source: &str, target_dir: &str) -> Result<PathBuf> {
        let shared = self.shared_temp()?;
        let name = file_name(Path::new(source));
        let vm_shared_temp = format!("{GUEST_SHARED}/{}", file_name(shared.path()));
        let vm_intermediate = format!("{vm_shared_temp}/{name}");
        let intermediate = shared.path().join(&name);
        self.succeed(&[make_command(&["mkdir", "-p", &vm_shared_temp])], None).await?;
        self.succeed(&[make_command(&["cp", "-r", source, &vm_intermediate])], None).await?;
        let target = self.out_dir().join(target_dir).join(&name);
        let to = target.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            copy_path(&intermediate, &to)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| self.copy_error(format!("copy {source} to {}", target.display()), e))?;
        drop(shared);
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_like_python() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn copies_trees_with_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        std::fs::write(src.join("sub/run.sh"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(src.join("sub/run.sh"), std::fs::Permissions::from_mode(0o751)).expect("chmod");
        copy_path(&src, &dir.path().join("dst")).expect("copy");
        let copied = dir.path().join("dst/sub/run.sh");
        assert_eq!(std::fs::read_to_string(&copied).expect("read"), "#!/bin/sh\n");
        assert_eq!(std::fs::metadata(&copied).expect("stat").permissions().mode() & 0o777, 0o751);
    }
}
