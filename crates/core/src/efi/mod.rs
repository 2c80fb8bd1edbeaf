//! UEFI variables in OVMF's variable store: what upstream's `test_driver.efi` reads and writes
//! with the `ovmfvartool` Python library, written anew.
//!
//! A NixOS test VM booted with `virtualisation.useEFIBoot` keeps its UEFI variables in a flash
//! image, `$NIX_EFI_VARS`, which the driver names `<state dir>/<machine>-efi-vars.fd`. While
//! the VM is off, a test may create that image, put variables in it for the firmware and the
//! OS to find, and read back what they wrote ([`crate::machine::qemu::EfiVars`] holds that
//! policy). This module is the image's format:
//!
//! - [`Guid`]: vendor GUIDs in their on-disk byte order, and upstream's names for the known
//!   ones;
//! - [`Variable`]: one variable (edk2's authenticated variable header, name and data), its
//!   encoding and upstream's printed form;
//! - [`store`]: the flash layout (firmware volume, variable store, fault-tolerant write
//!   blocks): an empty store, a store built from variables, the variables of a store;
//! - [`VarStore`]: a store file: read, create, add variables.

mod guid;
pub mod store;
mod variable;

use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use guid::{Guid, InvalidGuid};
pub use variable::{MAGIC, UefiTime, Variable, VariableError, VariableHeader, attributes, state};

/// A file that is not a variable store, or variables that do not fit in one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// No firmware volume header.
    #[error("expected magic, not a EFI_FIRMWARE_VOLUME_HEADER")]
    NotFirmwareVolume,
    /// A firmware volume of another kind.
    #[error("unexpected UUID, not a EFI_FIRMWARE_VOLUME_HEADER: {0}")]
    UnexpectedVolume(Guid),
    /// A variable store of another kind (not authenticated variables).
    #[error("unexpected UUID, not a VARIABLE_STORE_HEADER: {0}")]
    UnexpectedStore(Guid),
    /// The variable store is not formatted.
    #[error("VARIABLE_STORE_HEADER format is not set to FORMATTED (0x5A) but 0x{0:02X}")]
    NotFormatted(u8),
    /// The variable store is not healthy.
    #[error("VARIABLE_STORE_HEADER state is not set to HEALTHY (0xFE) but 0x{0:02X}")]
    NotHealthy(u8),
    /// A header runs past the end of the file.
    #[error("the file ends inside the header at offset 0x{offset:x}")]
    Truncated {
        /// Where the header starts.
        offset: usize,
    },
    /// A variable cannot be decoded.
    #[error("bad variable at offset 0x{offset:x}")]
    Variable {
        /// Where its header starts.
        offset: usize,
        /// What is wrong with it.
        #[source]
        source: VariableError,
    },
    /// The variables do not fit.
    #[error("the variables do not fit in the {capacity} bytes of the variable store")]
    Full {
        /// The bytes the variables' region holds.
        capacity: usize,
    },
}

/// What can go wrong with a store file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create_empty` found a store already there (upstream's message, word for word).
    #[error("OVMF variables store exists")]
    Exists {
        /// The store.
        path: PathBuf,
    },
    /// Reading or writing the file failed.
    #[error("cannot {action} the OVMF variables store {}", path.display())]
    Io {
        /// `read`, `write`, …
        action: &'static str,
        /// The store.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a store, or the variables do not fit in one.
    #[error("OVMF variables store {}", path.display())]
    Format {
        /// The store.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
}

/// A variable store file (upstream's `EfiVars`, without the machine: see
/// [`crate::machine::qemu::EfiVars`] for the check that the VM is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarStore {
    path: PathBuf,
}

impl VarStore {
    /// The store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> VarStore {
        VarStore { path: path.into() }
    }

    /// Where the store is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live variables (see [`store::live`]), or `None` if there is no file, as upstream's
    /// `read_content()`.
    pub fn read(&self) -> Result<Option<Vec<Variable>>, Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { action: "read", path: self.path.clone(), source }),
        };
        let all = store::parse(&bytes).map_err(|source| Error::Format { path: self.path.clone(), source })?;
        Ok(Some(store::live(all)))
    }

    /// Write an empty store; an error if one exists (upstream's `create_empty()`).
    pub fn create_empty(&self) -> Result<(), Error> {
        // A dangling symlink counts as existing too: upstream's os.path.exists would say no
        // and write through it, but the driver's own path is never one.
        if self.path.symlink_metadata().is_ok() {
            return Err(Error::Exists { path: self.path.clone() });
        }
        self.replace(&store::empty())
    }

    /// Add `variables` to the store, creating it if there is none, as upstream's `write()`:
    /// see [`store::merge`]. The variables already there are kept as they were read; the
    /// store is rewritten compacted, without the deleted ones.
    pub fn write(&self, variables: impl IntoIterator<Item = Variable>) -> Result<(), Error> {
        let mut all = self.read()?.unwrap_or_default();
        store::merge(&mut all, variables);
        let bytes = store::build(&all).map_err(|source| Error::Format { path: self.path.clone(), source })?;
        self.replace(&bytes)
    }

    /// Replace the file's contents at once (a new file renamed over it), so that a failure
    /// never leaves half a store for the firmware.
    fn replace(&self, bytes: &[u8]) -> Result<(), Error> {
        let io_error = |source| Error::Io { action: "write", path: self.path.clone(), source };
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
        file.write_all(bytes).map_err(io_error)?;
        // The mode the start scripts of qemu-vm.nix give a store they copy.
        use std::os::unix::fs::PermissionsExt;
        file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io_error)?;
        file.persist(&self.path).map_err(|e| io_error(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store OVMF wrote: Debian's 2022.11 build booted the test guest's kernel from a store
    /// ntd created with one variable, `Demo`, which Linux then rewrote, and where it created
    /// `FromGuest` (tests/e2e/efi.py, after its second subtest). Only the flash up to the end
    /// of its variables is kept: the rest was byte for byte that of an empty store.
    const OVMF_WRITTEN: &[u8] = include_bytes!("testdata/ovmf-written-vars.bin");

    fn ovmf_written() -> Vec<u8> {
        let mut image = store::empty();
        image[..OVMF_WRITTEN.len()].copy_from_slice(OVMF_WRITTEN);
        image
    }

    fn demo_vendor() -> Guid {
        Guid::parse("a19f72f8-b554-4bd7-a0c2-2762bd854691").expect("guid")
    }

    #[test]
    fn reads_a_store_ovmf_wrote() {
        let all = store::parse(&ovmf_written()).expect("parse");
        let live = store::live(all.clone());
        assert!(all.iter().any(Variable::is_deleted), "OVMF leaves replaced variables deleted in place");
        assert!(live.len() < all.len());
        let demo: Vec<&Variable> = live.iter().filter(|v| v.name == "Demo").collect();
        assert_eq!(demo.len(), 1);
        assert_eq!(demo[0].vendor, demo_vendor());
        assert_eq!(demo[0].data, [0x2b], "the value Linux wrote");
        let from_guest = live.iter().find(|v| v.name == "FromGuest").expect("the variable Linux created");
        assert_eq!((from_guest.vendor, from_guest.data.as_slice()), (demo_vendor(), &b"from the guest"[..]));
        assert_eq!(demo[0].attributes, 7);
        let global = Guid::GLOBAL_VARIABLE;
        let boot_order = live.iter().find(|v| v.name == "BootOrder").expect("OVMF's BootOrder");
        assert_eq!((boot_order.vendor, boot_order.attributes), (global, 7));
        // Every live variable encodes back to the bytes OVMF wrote.
        let mut at = 100;
        for variable in &all {
            let bytes = variable.encode();
            assert_eq!(&OVMF_WRITTEN[at..at + bytes.len()], bytes.as_slice(), "{}", variable.name);
            at = (at + bytes.len()).next_multiple_of(4);
        }
    }

    #[test]
    fn a_rewritten_store_keeps_every_live_variable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m-efi-vars.fd");
        std::fs::write(&path, ovmf_written()).expect("write");
        let store = VarStore::new(&path);
        let before = store.read().expect("read").expect("a store");
        store.write([]).expect("rewrite");
        assert_eq!(store.read().expect("read").expect("a store"), before);
        let added = Variable::new(demo_vendor(), "Added", *b"x", 7);
        store.write([added.clone()]).expect("add");
        let after = store.read().expect("read").expect("a store");
        assert_eq!(after.len(), before.len() + 1);
        let demo_group: Vec<&str> =
            after.iter().filter(|v| v.vendor == demo_vendor()).map(|v| v.name.as_str()).collect();
        assert_eq!(demo_group, ["Demo", "FromGuest", "Added"]);
    }

    #[test]
    fn create_read_write_a_store_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = VarStore::new(dir.path().join("m-efi-vars.fd"));
        assert_eq!(store.read().expect("read"), None, "no file: no store");
        store.create_empty().expect("create");
        assert_eq!(store.read().expect("read"), Some(Vec::new()));
        let exists = store.create_empty().expect_err("exists");
        assert_eq!(exists.to_string(), "OVMF variables store exists");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path()).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);

        let demo = Variable::new(demo_vendor(), "Demo", [0x2a], 7);
        store.write([demo.clone()]).expect("write");
        let mut changed = demo.clone();
        changed.data = vec![0x2b];
        store.write([changed.clone()]).expect("write again");
        assert_eq!(store.read().expect("read"), Some(vec![changed]));

        // Without a store, write creates one.
        let fresh = VarStore::new(dir.path().join("fresh.fd"));
        fresh.write([demo.clone()]).expect("write");
        assert_eq!(fresh.read().expect("read"), Some(vec![demo]));
    }

    #[test]
    fn errors_name_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk.fd");
        std::fs::write(&path, b"not a store").expect("write");
        let error = VarStore::new(&path).read().expect_err("junk");
        assert_eq!(
            crate::full_message(&error),
            format!("OVMF variables store {}: expected magic, not a EFI_FIRMWARE_VOLUME_HEADER", path.display())
        );
        let error = VarStore::new(dir.path().join("no/such/dir.fd")).create_empty().expect_err("no dir");
        assert!(matches!(error, Error::Io { action: "write", .. }), "{error:?}");
    }
}
