//! The crash-safe index store (redb, in `<folder>/.ssp/index.redb`): path → `FileRecord` in
//! the compact binary form of [`super::encoding`].
//!
//! redb was chosen over SQLite: pure Rust (no C build), ACID with copy-on-write commits, and a
//! typed key-value API that fits path → record exactly.

use std::collections::HashMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::FileRecord;
use crate::error::{Error, IoContext, Result};
use crate::fs::{Dir, Resolve, METADATA_DIR, METADATA_DIR_MODE};

const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
/// The folder's own facts: `device` (its ID, 8 bytes) and `sequence` (its change counter).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STORE_FILE: &str = "index.redb";
/// Tables named so hold a round's scratch data (a peer's big index): never kept past the
/// round, and dropped at the next open if a crash left one.
const SCRATCH_PREFIX: &str = "scratch:";
/// redb's page cache (its default is 1 GiB, which a full pass over a big index fills and
/// keeps): the interior pages of a million-record index fit many times over, and a scan's
/// one sequential pass over the leaves gains nothing from keeping them.
const STORE_CACHE_BYTES: usize = 32 << 20;
/// The record form this version writes (`format` in `meta`; 1 or absent: JSON records).
const RECORD_FORMAT: u64 = 2;
/// Mode of the store file: it lists every path and hash of the folder.
pub const STORE_FILE_MODE: u32 = 0o600;

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

/// An open index store. One process holds it at a time (redb locks the file).
pub struct IndexStore {
    db: Database,
}

impl IndexStore {
    /// Opens (creating if needed) the store of the folder at `root`: `.ssp/` is made `0700` and
    /// the store file `0600` (also when an older version left them wider). A symlink at
    /// `.ssp` is refused, never followed.
    pub fn open(root: &Path) -> Result<IndexStore> {
        let dir = root.join(METADATA_DIR);
        let what = || format!("creating {}", dir.display());
        let meta = Dir::open_root(root)
            .and_then(|r| r.create_dir_all(&[METADATA_DIR], Resolve::Walk, METADATA_DIR_MODE))
            .context(what)?;
        meta.set_mode(METADATA_DIR_MODE).context(what)?;
        // redb would create the file 0644: create it first, exclusively and 0600.
        match meta.create_new(STORE_FILE, STORE_FILE_MODE) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let file = meta.open_file(STORE_FILE, false).context(what)?;
                if file.metadata().context(what)?.is_file() {
                    use std::os::unix::fs::PermissionsExt;
                    file.set_permissions(std::fs::Permissions::from_mode(STORE_FILE_MODE))
                        .context(what)?;
                }
            }
            Err(e) => return Err(Error::io(what(), e)),
        }
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(dir.join(STORE_FILE))
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::FolderBusy {
                    path: root.to_path_buf(),
                    holder: Some("its index store is open in another process".into()),
                },
                e => store_err(e),
            })?;
        let store = IndexStore { db };
        store.upgrade()?;
        store.drop_scratch_tables()?;
        Ok(store)
    }

    /// Drops scratch tables a crashed round left.
    fn drop_scratch_tables(&self) -> Result<()> {
        let names: Vec<String> = {
            let txn = self.db.begin_read().map_err(store_err)?;
            let names = txn
                .list_tables()
                .map_err(store_err)?
                .map(|t| redb::TableHandle::name(&t).to_owned())
                .filter(|n| n.starts_with(SCRATCH_PREFIX))
                .collect();
            names
        };
        if names.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(store_err)?;
        for n in &names {
            txn.delete_table(TableDefinition::<&str, &[u8]>::new(n))
                .map_err(store_err)?;
        }
        txn.commit().map_err(store_err)
    }

    /// Appends `records` to the scratch table `name` (made on first use), without a disk sync:
    /// scratch data need not survive a crash.
    pub fn scratch_put(&self, name: &str, records: &[FileRecord]) -> Result<()> {
        let table = format!("{SCRATCH_PREFIX}{name}");
        let mut txn = self.db.begin_write().map_err(store_err)?;
        txn.set_durability(redb::Durability::None)
            .map_err(store_err)?;
        {
            let mut t = txn
                .open_table(TableDefinition::<&str, &[u8]>::new(&table))
                .map_err(store_err)?;
            for rec in records {
                let v = super::encoding::encode(rec);
                t.insert(rec.path.as_str(), v.as_slice())
                    .map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)
    }

    /// The scratch table `name` as it is now.
    pub fn scratch_snapshot(&self, name: &str) -> Result<Snapshot> {
        self.snapshot_of(&format!("{SCRATCH_PREFIX}{name}"))
    }

    /// Drops the scratch table `name`.
    pub fn scratch_drop(&self, name: &str) -> Result<()> {
        let table = format!("{SCRATCH_PREFIX}{name}");
        let mut txn = self.db.begin_write().map_err(store_err)?;
        txn.set_durability(redb::Durability::None)
            .map_err(store_err)?;
        txn.delete_table(TableDefinition::<&str, &[u8]>::new(&table))
            .map_err(store_err)?;
        txn.commit().map_err(store_err)
    }

    /// Rewrites the JSON records of an older store in the binary form, once (a later open
    /// finds `format` recorded and does nothing).
    fn upgrade(&self) -> Result<()> {
        if self.meta("format")?.unwrap_or(0) >= RECORD_FORMAT {
            return Ok(());
        }
        let json: Vec<FileRecord> = {
            let txn = self.db.begin_read().map_err(store_err)?;
            match txn.open_table(FILES) {
                Ok(t) => {
                    let mut out = Vec::new();
                    for item in t.range::<&str>(..).map_err(store_err)? {
                        let (k, v) = item.map_err(store_err)?;
                        if v.value().first() == Some(&b'{') {
                            out.extend(super::encoding::decode(k.value(), v.value()));
                        }
                    }
                    out
                }
                Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
                Err(e) => return Err(store_err(e)),
            }
        };
        let txn = self.db.begin_write().map_err(store_err)?;
        Self::write_records(&txn, &json, &[])?;
        txn.open_table(META)
            .map_err(store_err)?
            .insert("format", RECORD_FORMAT)
            .map_err(store_err)?;
        txn.commit().map_err(store_err)
    }

    /// Every record, keyed by path.
    pub fn load(&self) -> Result<HashMap<String, FileRecord>> {
        self.records()?
            .map(|r| r.map(|rec| (rec.path.clone(), rec)))
            .collect()
    }

    /// Every record in path order (bytewise), read as it is iterated: a folder of any size is
    /// compared with it without holding it all. A record that cannot be read is left out (a
    /// cache miss: its file is hashed again).
    pub fn records(&self) -> Result<Records> {
        self.snapshot()?.records()
    }

    /// The records as the last commit left them, for as long as the snapshot is kept: later
    /// commits do not change what it reads.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.snapshot_of(redb::TableHandle::name(&FILES))
    }

    fn snapshot_of(&self, table: &str) -> Result<Snapshot> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let files = match txn.open_table(TableDefinition::<&str, &[u8]>::new(table)) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(store_err(e)),
        };
        Ok(Snapshot { files })
    }

    /// A fact of the folder's `meta` table.
    fn meta(&self, key: &str) -> Result<Option<u64>> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(store_err(e)),
        };
        Ok(table.get(key).map_err(store_err)?.map(|v| v.value()))
    }

    /// The folder's device ID, made (randomly) and kept on first use.
    pub fn device_id(&self) -> Result<super::DeviceId> {
        if let Some(id) = self.meta("device")? {
            return Ok(super::DeviceId(id));
        }
        let id = super::DeviceId::random();
        let txn = self.db.begin_write().map_err(store_err)?;
        txn.open_table(META)
            .map_err(store_err)?
            .insert("device", id.0)
            .map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        Ok(id)
    }

    /// The sequence up to which we applied `peer`'s index (0: never synced with it).
    pub fn peer_sequence(&self, peer: super::DeviceId) -> Result<u64> {
        Ok(self.meta(&format!("peer:{peer}"))?.unwrap_or(0))
    }

    /// Every peer's sequence we know (see [`IndexStore::peer_sequence`]).
    pub fn peer_sequences(&self) -> Result<Vec<(super::DeviceId, u64)>> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(store_err(e)),
        };
        let mut out = Vec::new();
        for item in table.range("peer:".."peer;").map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            if let Some(d) = k
                .value()
                .strip_prefix("peer:")
                .and_then(super::DeviceId::parse)
            {
                out.push((d, v.value()));
            }
        }
        Ok(out)
    }

    /// Forgets every peer's sequence (each sends its whole index next time) and records
    /// `ignore`, the ignore rules' fingerprint they were applied under.
    pub fn reset_peer_sequences(&self, ignore: u64) -> Result<()> {
        let peers = self.peer_sequences()?;
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(META).map_err(store_err)?;
            for (d, _) in peers {
                table
                    .remove(format!("peer:{d}").as_str())
                    .map_err(store_err)?;
            }
            table.insert("ignore", ignore).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)
    }

    /// The ignore rules' fingerprint peer sequences were recorded under (0: none).
    pub fn ignore_fingerprint(&self) -> Result<u64> {
        Ok(self.meta("ignore")?.unwrap_or(0))
    }

    /// Records that `peer`'s index is applied up to `sequence` (no commit if it already was).
    pub fn set_peer_sequence(&self, peer: super::DeviceId, sequence: u64) -> Result<()> {
        if self.meta(&format!("peer:{peer}"))? == Some(sequence) {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(store_err)?;
        txn.open_table(META)
            .map_err(store_err)?
            .insert(format!("peer:{peer}").as_str(), sequence)
            .map_err(store_err)?;
        txn.commit().map_err(store_err)
    }

    /// The last sequence number given to a change (0 for a new folder).
    pub fn sequence(&self) -> Result<u64> {
        Ok(self.meta("sequence")?.unwrap_or(0))
    }

    /// Writes `upserts`, removes `removals` and sets the sequence counter in one atomic commit.
    pub fn commit(&self, upserts: &[FileRecord], removals: &[String], sequence: u64) -> Result<()> {
        let txn = self.db.begin_write().map_err(store_err)?;
        txn.open_table(META)
            .map_err(store_err)?
            .insert("sequence", sequence)
            .map_err(store_err)?;
        Self::write_records(&txn, upserts, removals)?;
        txn.commit().map_err(store_err)
    }

    fn write_records(
        txn: &redb::WriteTransaction,
        upserts: &[FileRecord],
        removals: &[String],
    ) -> Result<()> {
        let mut table = txn.open_table(FILES).map_err(store_err)?;
        for rec in upserts {
            let v = super::encoding::encode(rec);
            table
                .insert(rec.path.as_str(), v.as_slice())
                .map_err(store_err)?;
        }
        for path in removals {
            table.remove(path.as_str()).map_err(store_err)?;
        }
        Ok(())
    }

    /// Writes `upserts` and removes `removals` in one atomic commit.
    pub fn apply(&self, upserts: &[FileRecord], removals: &[String]) -> Result<()> {
        if upserts.is_empty() && removals.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(store_err)?;
        Self::write_records(&txn, upserts, removals)?;
        txn.commit().map_err(store_err)
    }
}

/// The store's records as one commit left them ([`IndexStore::snapshot`]): a round reads
/// its own index from here, as a sorted stream or path by path, instead of holding it.
#[derive(Default)]
pub struct Snapshot {
    files: Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>,
}

impl Snapshot {
    /// Every record in path order (bytewise); see [`IndexStore::records`].
    pub fn records(&self) -> Result<Records> {
        let range = match &self.files {
            Some(t) => Some(t.range::<&str>(..).map_err(store_err)?),
            None => None,
        };
        Ok(Records { range, rev: false })
    }

    /// The records after `after` in path order (`rev`: those before it, in reverse order;
    /// `None`: from the first, or the last).
    pub fn records_from(&self, after: Option<&str>, rev: bool) -> Result<Records> {
        use std::ops::Bound::{Excluded, Unbounded};
        let bounds = match (after, rev) {
            (None, _) => (Unbounded, Unbounded),
            (Some(a), false) => (Excluded(a), Unbounded),
            (Some(a), true) => (Unbounded, Excluded(a)),
        };
        let range = match &self.files {
            Some(t) => Some(t.range::<&str>(bounds).map_err(store_err)?),
            None => None,
        };
        Ok(Records { range, rev })
    }

    /// The record at `path` (`None` also for a record that cannot be read).
    pub fn get(&self, path: &str) -> Result<Option<FileRecord>> {
        let Some(t) = &self.files else {
            return Ok(None);
        };
        let v = t.get(path).map_err(store_err)?;
        Ok(v.and_then(|v| super::encoding::decode(path, v.value())))
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").finish_non_exhaustive()
    }
}

/// The store's records in path order; see [`IndexStore::records`].
pub struct Records {
    range: Option<redb::Range<'static, &'static str, &'static [u8]>>,
    /// From the last record back.
    rev: bool,
}

impl Iterator for Records {
    type Item = Result<FileRecord>;

    fn next(&mut self) -> Option<Result<FileRecord>> {
        loop {
            let range = self.range.as_mut()?;
            let item = if self.rev {
                range.next_back()?
            } else {
                range.next()?
            };
            match item {
                Ok((k, v)) => {
                    if let Some(rec) = super::encoding::decode(k.value(), v.value()) {
                        return Some(Ok(rec));
                    }
                }
                Err(e) => return Some(Err(store_err(e))),
            }
        }
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
            mode: 0o644,
            hash: Hash([size as u8; 32]),
            inode: 9,
            deleted: false,
            version: VersionVector::default(),
            blocks: vec![],
            kind: Default::default(),
            target: None,
            sequence: 0,
            modified_by: None,
            origin: None,
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

    /// A store written by an older version (JSON records) is read, and rewritten in the
    /// binary form on open.
    #[test]
    fn json_records_of_an_older_store_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let old = rec("a/b", 5);
        {
            let s = IndexStore::open(dir.path()).unwrap();
            let txn = s.db.begin_write().unwrap();
            {
                let json = serde_json::to_vec(&old).unwrap();
                txn.open_table(FILES)
                    .unwrap()
                    .insert("a/b", json.as_slice())
                    .unwrap();
                txn.open_table(META).unwrap().remove("format").unwrap();
            }
            txn.commit().unwrap();
            let raw = |s: &IndexStore| {
                let txn = s.db.begin_read().unwrap();
                let t = txn.open_table(FILES).unwrap();
                let v = t.get("a/b").unwrap().unwrap().value().to_vec();
                v
            };
            assert_eq!(raw(&s)[0], b'{', "written as an older version did");
            drop(s);
            let s = IndexStore::open(dir.path()).unwrap();
            assert_ne!(raw(&s)[0], b'{', "rewritten");
            assert_eq!(s.load().unwrap()["a/b"], old);
        }
    }

    #[test]
    fn the_device_id_and_sequence_persist() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let s = IndexStore::open(dir.path()).unwrap();
            assert_eq!(s.sequence().unwrap(), 0);
            let id = s.device_id().unwrap();
            assert_eq!(s.device_id().unwrap(), id, "made once");
            s.commit(&[rec("a", 1)], &[], 41).unwrap();
            id
        };
        let s = IndexStore::open(dir.path()).unwrap();
        assert_eq!((s.device_id().unwrap(), s.sequence().unwrap()), (id, 41));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            IndexStore::open(other.path()).unwrap().device_id().unwrap(),
            id
        );
    }

    /// `.ssp/` is 0700 and the store 0600, whether new or left wider by an older version.
    #[test]
    fn the_metadata_folder_is_0700_and_the_store_0600() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let (meta, file) = (dir.path().join(".ssp"), dir.path().join(".ssp/index.redb"));
        drop(IndexStore::open(dir.path()).unwrap());
        assert_eq!((mode(&meta), mode(&file)), (0o700, 0o600), "new");
        std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(IndexStore::open(dir.path()).unwrap());
        assert_eq!((mode(&meta), mode(&file)), (0o700, 0o600), "narrowed");
    }

    #[test]
    fn a_symlink_at_the_metadata_folder_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join(".ssp")).unwrap();
        assert!(IndexStore::open(dir.path()).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_second_open_of_the_same_store_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = IndexStore::open(dir.path()).unwrap();
        assert!(matches!(
            IndexStore::open(dir.path()),
            Err(Error::FolderBusy { .. })
        ));
    }
}
