//! What other crates' tests use: the built binary, start scripts that run it, and the fake's
//! directory in a machine's state directory (recorded commands, unit states).

use std::io;
use std::path::{Path, PathBuf};

use crate::systemd::Units;

/// The name of the binary.
pub const BINARY_NAME: &str = "ntd-fake-qemu";

/// The built `ntd-fake-qemu` next to the running test executable (`target/<profile>/`, the
/// parent of the test's `deps/`).
///
/// # Panics
///
/// When it is not there, with the command that builds it: Cargo builds it for this crate's own
/// tests (and so for `cargo test --workspace`), not for another crate's alone.
pub fn binary() -> PathBuf {
    let found = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?;
        let dir = if dir.file_name().is_some_and(|name| name == "deps") { dir.parent()? } else { dir };
        Some(dir.join(BINARY_NAME))
    });
    match found {
        Some(path) if path.is_file() => path,
        Some(path) => panic!(
            "{} is not built: run `cargo build -p ntd-fake` with this test's profile (--release for target/release) \
             first, or `cargo test --workspace`, which builds it",
            path.display()
        ),
        None => panic!("cannot locate the test executable to find {BINARY_NAME} next to it"),
    }
}

/// Quote a word for `/bin/sh`.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// A `run-<name>-vm` start script that runs the fake instead of QEMU.
///
/// ```no_run
/// let dir = tempfile::tempdir().unwrap();
/// let script = ntd_fake::StartScript::new("server").option("--fake-boot-delay").option("0.5").write(dir.path());
/// ```
#[derive(Debug, Clone)]
pub struct StartScript {
    name: String,
    options: Vec<String>,
    binary: Option<PathBuf>,
}

impl StartScript {
    /// A script for the machine `name`.
    pub fn new(name: impl Into<String>) -> StartScript {
        StartScript { name: name.into(), options: Vec::new(), binary: None }
    }

    /// Add an option for the fake (before the QEMU arguments the driver appends).
    pub fn option(mut self, option: impl Into<String>) -> StartScript {
        self.options.push(option.into());
        self
    }

    /// Add several options.
    pub fn options<I, S>(mut self, options: I) -> StartScript
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.extend(options.into_iter().map(Into::into));
        self
    }

    /// Run this binary instead of [`binary()`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> StartScript {
        self.binary = Some(path.into());
        self
    }

    /// The script's text: `#!/bin/sh` and one `exec` of the fake with the options, then the
    /// driver's arguments.
    pub fn text(&self) -> String {
        let binary = self.binary.clone().unwrap_or_else(binary);
        let mut line = format!("exec {}", sh_quote(&binary.to_string_lossy()));
        for option in &self.options {
            line.push(' ');
            line.push_str(&sh_quote(option));
        }
        format!("#!/bin/sh\n{line} \"$@\"\n")
    }

    /// Write the executable script `dir/run-<name>-vm` and return its path.
    pub fn write(&self, dir: &Path) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("run-{}-vm", self.name));
        std::fs::write(&path, self.text())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }
}

/// The fake's directory in a machine's state directory: the guest tools, the control socket,
/// the unit states and the record of what the machine was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDir {
    root: PathBuf,
}

impl FakeDir {
    /// The fake's directory in `state_dir` (the start script's `TMPDIR`).
    pub fn of(state_dir: &Path) -> FakeDir {
        FakeDir { root: state_dir.join("ntd-fake") }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The guest tools, first on the guest's `PATH`.
    pub fn tools(&self) -> PathBuf {
        self.root.join("bin")
    }

    /// The control socket the guest tools talk to.
    pub fn control(&self) -> PathBuf {
        self.root.join("control")
    }

    /// The unit state files.
    pub fn units(&self) -> PathBuf {
        self.root.join("units")
    }

    /// The record of `sendkey`, `send-key`, `set_link`, `hostfwd_add` and `screendump`, one
    /// line each.
    pub fn recorded(&self) -> PathBuf {
        self.root.join("recorded")
    }

    /// What was typed on the serial console (QEMU's stdin), byte for byte.
    pub fn console_input(&self) -> PathBuf {
        self.root.join("console-input")
    }

    /// The recorded lines so far (none if nothing was recorded).
    pub fn recorded_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.recorded())
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// A unit's `ActiveState` (`inactive` for a unit never set).
    pub fn unit_state(&self, unit: &str) -> String {
        Units::new(self.units(), &[]).state(unit).0
    }

    /// Change a unit's `ActiveState` from the host, as if the guest's systemd had.
    pub fn set_unit_state(&self, unit: &str, state: &str) -> io::Result<()> {
        Units::new(self.units(), &[]).set(unit, state)
    }

    /// Make the directory afresh (a kept state directory may have an old one), with the guest
    /// tools linked to the running binary.
    pub fn create(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(self.tools())?;
        std::fs::create_dir_all(self.units())?;
        let mut exe = std::env::current_exe()?;
        // The guest's tmpfs hides the host's /tmp: a binary there is copied where the guest
        // still sees it (the fake's directory is bound into the guest).
        if exe.starts_with("/tmp") {
            let copy = self.root.join(BINARY_NAME);
            std::fs::copy(&exe, &copy)?;
            exe = copy;
        }
        for tool in crate::control::TOOLS {
            std::os::unix::fs::symlink(&exe, self.tools().join(tool))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_script_quotes_everything() {
        let script = StartScript::new("a").binary("/b in/f'q").option("--fake-shell-garbage").option("it's $X");
        assert_eq!(script.text(), "#!/bin/sh\nexec '/b in/f'\\''q' '--fake-shell-garbage' 'it'\\''s $X' \"$@\"\n");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = script.write(dir.path()).expect("write");
        assert_eq!(path, dir.path().join("run-a-vm"));
        let output = std::process::Command::new("sh").arg("-n").arg(&path).output().expect("sh -n");
        assert!(output.status.success(), "the script parses");
    }

    #[test]
    fn unit_states_from_the_host() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = FakeDir::of(dir.path());
        std::fs::create_dir_all(fake.units()).expect("units dir");
        assert_eq!(fake.unit_state("x"), "inactive");
        fake.set_unit_state("x", "failed").expect("set");
        assert_eq!(fake.unit_state("x.service"), "failed");
        assert!(fake.recorded_lines().is_empty());
    }
}
