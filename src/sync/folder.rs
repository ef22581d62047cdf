//! A sync folder: its root and its index store, scanned under one lock so concurrent sessions
//! share the store safely.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::fs::{scan_folder, ScanResult};
use crate::index::{FileRecord, IndexStore};

/// A folder being synced.
pub struct Folder {
    root: PathBuf,
    /// `None` when the store could not be opened (e.g. another process holds it): scans then
    /// work without a cache instead of failing.
    store: Mutex<Option<IndexStore>>,
}

impl Folder {
    /// Opens `root`, creating it if `create` and it is missing.
    pub fn open(root: &Path, create: bool) -> Result<Folder> {
        if create && !root.exists() {
            std::fs::create_dir_all(root).map_err(|e| Error::Folder {
                path: root.to_path_buf(),
                reason: format!("cannot be created: {e}"),
            })?;
        }
        crate::fs::check_folder(root)?;
        let root = root.canonicalize().context(|| root.display().to_string())?;
        let store = match IndexStore::open(&root) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("{}: working without the hash cache: {e}", root.display());
                None
            }
        };
        Ok(Folder {
            root,
            store: Mutex::new(store),
        })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Scans the folder (blocking; call from a blocking thread).
    pub fn scan(&self) -> Result<ScanResult> {
        let guard = self
            .store
            .lock()
            .map_err(|_| Error::Store("store lock poisoned".into()))?;
        scan_folder(&self.root, guard.as_ref())
    }

    /// Records files we just wrote, so the next scan does not re-hash them.
    pub fn remember(&self, records: &[FileRecord]) {
        if let Ok(guard) = self.store.lock() {
            if let Some(store) = guard.as_ref() {
                if let Err(e) = store.apply(records, &[]) {
                    tracing::warn!("could not update the index cache: {e}");
                }
            }
        }
    }
}
