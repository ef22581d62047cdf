//! The crash-safe index cache (redb, in `<folder>/.ssp/index.redb`): path → JSON `FileRecord`.
//!
//! redb was chosen over SQLite: pure Rust (no C build), ACID with copy-on-write commits, and a
//! typed key-value API that fits path → record exactly.

use std::collections::HashMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::FileRecord;
use crate::error::{Error, IoContext, Result};
use crate::fs::METADATA_DIR;

const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
const STORE_FILE: &str = "index.redb";

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

/// An open index store. One process holds it at a time (redb locks the file).
pub struct IndexStore {
    db: Database,
}

impl IndexStore {
    /// Opens (creating if needed) the store of the folder at `root`.
    pub fn open(root: &Path) -> Result<IndexStore> {
        let dir = root.join(METADATA_DIR);
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let db = Database::create(dir.join(STORE_FILE)).map_err(store_err)?;
        Ok(IndexStore { db })
    }

    /// Every record, keyed by path.
    pub fn load(&self) -> Result<HashMap<String, FileRecord>> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = match txn.open_table(FILES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
            Err(e) => return Err(store_err(e)),
        };
        let mut out = HashMap::new();
        for item in table.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            // A record we cannot read is only a cache miss: the file gets re-hashed.
            if let Ok(rec) = serde_json::from_slice::<FileRecord>(v.value()) {
                out.insert(k.value().to_owned(), rec);
            }
        }
        Ok(out)
    }

    /// Writes `upserts` and removes `removals` in one atomic commit.
    pub fn apply(&self, upserts: &[FileRecord], removals: &[String]) -> Result<()> {
        if upserts.is_empty() && removals.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(FILES).map_err(store_err)?;
            for rec in upserts {
                let v = serde_json::to_vec(rec).map_err(store_err)?;
                table
                    .insert(rec.path.as_str(), v.as_slice())
                    .map_err(store_err)?;
            }
            for path in removals {
                table.remove(path.as_str()).map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Hash, VersionVector};

    fn rec(path: &str, size: u64) -> FileRecord {
        FileRecord {
            path: path.into(),
            size,
            mtime_ns: 1,
            executable: false,
            hash: Hash([size as u8; 32]),
            inode: 9,
            deleted: false,
            version: VersionVector::default(),
            blocks: vec![],
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = IndexStore::open(dir.path()).unwrap();
            assert!(s.load().unwrap().is_empty());
            s.apply(&[rec("a", 1), rec("b/c", 2)], &[]).unwrap();
            s.apply(&[rec("a", 3)], &["b/c".into()]).unwrap();
        }
        let s = IndexStore::open(dir.path()).unwrap();
        let all = s.load().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all["a"], rec("a", 3));
    }

    #[test]
    fn a_second_open_of_the_same_store_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = IndexStore::open(dir.path()).unwrap();
        assert!(matches!(IndexStore::open(dir.path()), Err(Error::Store(_))));
    }
}
