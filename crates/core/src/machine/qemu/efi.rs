//! A QEMU machine's UEFI variables: upstream's `EfiVars` and the machine's EFI helpers
//! (`create_efi_vars`, `read_efi_vars`, `write_efi_vars`).
//!
//! The store is the flash image the start script gets as `NIX_EFI_VARS`
//! (`<state dir>/<name>-efi-vars.fd`). QEMU writes it while the VM runs, so it is only read or
//! written while the machine is off; the lifecycle lock is held meanwhile, so a `start()` from
//! another thread waits for the store to be complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Qemu, QemuMachine};
use crate::efi::{self, VarStore, Variable};
use crate::machine::{Error, Result};

/// The variable store of a machine (upstream's `EfiVars(state_path, machine)`): a store file
/// that may only be used while the machine is off.
#[derive(Clone)]
pub struct EfiVars {
    store: VarStore,
    qemu: Arc<Qemu>,
}

impl std::fmt::Debug for EfiVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EfiVars").field("path", &self.store.path()).field("machine", &self.qemu.name()).finish()
    }
}

impl EfiVars {
    /// The store at `path`, guarded by `machine`'s state (upstream lets a test name any path).
    pub fn new(path: impl Into<PathBuf>, machine: &QemuMachine) -> EfiVars {
        EfiVars { store: VarStore::new(path), qemu: Arc::clone(&machine.qemu) }
    }

    /// The store file (upstream's `state_path`).
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Upstream's `read_content()`: the live variables, `None` if there is no store.
    pub async fn read_content(&self) -> Result<Option<Vec<Variable>>> {
        let _off = self.off().await?;
        self.store.read().map_err(|source| self.error(source))
    }

    /// Upstream's `create_empty()`: write an empty store; an assertion failure if one exists.
    pub async fn create_empty(&self) -> Result<()> {
        let _off = self.off().await?;
        self.store.create_empty().map_err(|source| self.error(source))
    }

    /// Upstream's `write(add)`: add or replace variables.
    pub async fn write(&self, add: Vec<Variable>) -> Result<()> {
        let _off = self.off().await?;
        self.store.write(add).map_err(|source| self.error(source))
    }

    /// Hold the machine's lifecycle while it is off; an assertion failure while it runs, as
    /// upstream's `_assert_stopped()`. Never waits: a lifecycle step under way (a start, a
    /// connect, a wait for shutdown) means the machine runs or is about to.
    async fn off(&self) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        match self.qemu.lifecycle.try_lock() {
            Ok(guard) if !self.qemu.is_booted() => Ok(guard),
            _ => Err(Error::EfiVarsWhileRunning),
        }
    }

    fn error(&self, source: efi::Error) -> Error {
        match source {
            efi::Error::Exists { .. } => Error::EfiVarsExist,
            source => Error::EfiVars { machine: self.qemu.name().to_owned(), source },
        }
    }
}

impl QemuMachine {
    /// `<state dir>/<name>-efi-vars.fd`: the UEFI variable store, given to the start script
    /// as `NIX_EFI_VARS` (upstream's `efi_vars_path`).
    pub fn efi_vars_path(&self) -> &Path {
        &self.qemu.efi_vars_path
    }

    /// The machine's variable store (upstream's `efi_vars`).
    pub fn efi_vars(&self) -> EfiVars {
        EfiVars::new(self.efi_vars_path(), self)
    }

    /// Write an empty variable store; an assertion failure if the machine runs or the store
    /// exists (upstream's `create_efi_vars()`).
    pub async fn create_efi_vars(&self) -> Result<()> {
        self.efi_vars().create_empty().await
    }

    /// The variables in the store, grouped by vendor; none if there is no store (upstream's
    /// `read_efi_vars()`). An assertion failure while the machine runs.
    pub async fn read_efi_vars(&self) -> Result<Vec<Variable>> {
        Ok(self.efi_vars().read_content().await?.unwrap_or_default())
    }

    /// Add or replace variables in the store, creating it if needed (upstream's
    /// `write_efi_vars(add)`). An assertion failure while the machine runs.
    pub async fn write_efi_vars(&self, add: Vec<Variable>) -> Result<()> {
        self.efi_vars().write(add).await
    }
}
