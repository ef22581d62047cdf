//! The peer's index for one round, in path order: in memory while it is small, and in a
//! scratch table of the folder's store once it passes [`PeerConfig::segment_entries`]
//! entries, so a million-file index never sits in memory. A round reads it as a sorted
//! stream (forward to plan and fetch, backward to delete) or path by path.
//!
//! [`PeerConfig::segment_entries`]: super::PeerConfig::segment_entries

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::folder::Folder;
use crate::error::Result;
use crate::index::{FileRecord, Snapshot};

/// Records written to the scratch table together.
const SPILL_BATCH: usize = 4096;

/// Names scratch tables apart (two rounds of one folder may run at once on a server).
static NEXT_TABLE: AtomicU64 = AtomicU64::new(0);

/// The peer's index (see the module doc).
pub(crate) struct Remote {
    folder: Arc<Folder>,
    /// Records not in the scratch table, in path order.
    kept: Vec<FileRecord>,
    /// The scratch table, once the index outgrew memory.
    table: Option<String>,
    /// It, read once the whole index is in.
    spilled: Option<Snapshot>,
    spill_after: usize,
    len: usize,
    /// The last path taken (every path must sort after it).
    last: Option<String>,
}

impl Remote {
    pub fn new(folder: &Arc<Folder>, spill_after: usize) -> Remote {
        Remote {
            folder: Arc::clone(folder),
            kept: Vec::new(),
            table: None,
            spilled: None,
            spill_after: spill_after.max(1),
            len: 0,
            last: None,
        }
    }

    /// The last path taken.
    pub fn last_path(&self) -> Option<&str> {
        self.last.as_deref()
    }

    /// Takes the next record (its path sorts after [`Remote::last_path`]).
    pub fn push(&mut self, rec: FileRecord) -> Result<()> {
        match &mut self.last {
            Some(l) => {
                l.clear();
                l.push_str(&rec.path);
            }
            None => self.last = Some(rec.path.clone()),
        }
        self.len += 1;
        self.kept.push(rec);
        let spill = match self.table {
            Some(_) => self.kept.len() >= SPILL_BATCH,
            None => self.kept.len() > self.spill_after,
        };
        if spill {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        let name = self.table.get_or_insert_with(|| {
            format!(
                "incoming-{}-{}",
                std::process::id(),
                NEXT_TABLE.fetch_add(1, Ordering::Relaxed)
            )
        });
        self.folder.store().scratch_put(name, &self.kept)?;
        self.kept.clear();
        Ok(())
    }

    /// The whole index is in: what is still in memory joins the scratch table, if any.
    pub fn finish(&mut self) -> Result<()> {
        if self.table.is_some() {
            if !self.kept.is_empty() {
                self.spill()?;
            }
            self.kept = Vec::new();
            let name = self.table.as_deref().unwrap_or_default();
            self.spilled = Some(self.folder.store().scratch_snapshot(name)?);
        }
        Ok(())
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the index went to the store (more than one segment of entries).
    pub fn spilled(&self) -> bool {
        self.table.is_some()
    }

    /// Every record in path order.
    pub fn iter(&self) -> Result<Box<dyn Iterator<Item = Result<FileRecord>> + '_>> {
        Ok(match &self.spilled {
            Some(s) => Box::new(s.records()?),
            None => Box::new(self.kept.iter().cloned().map(Ok)),
        })
    }

    /// Up to `n` records after `cursor` in path order (`rev`: before it, in reverse order;
    /// `None`: from the start, or the end).
    pub fn chunk(&self, cursor: Option<&str>, n: usize, rev: bool) -> Result<Vec<FileRecord>> {
        if let Some(s) = &self.spilled {
            return s.records_from(cursor, rev)?.take(n).collect();
        }
        let kept = &self.kept;
        let at = |p: &str| kept.partition_point(|r| r.path.as_str() <= p);
        Ok(match (cursor, rev) {
            (None, false) => kept.iter().take(n).cloned().collect(),
            (Some(c), false) => kept[at(c)..].iter().take(n).cloned().collect(),
            (None, true) => kept.iter().rev().take(n).cloned().collect(),
            (Some(c), true) => {
                let end = kept.partition_point(|r| r.path.as_str() < c);
                kept[..end].iter().rev().take(n).cloned().collect()
            }
        })
    }

    /// Whether the index has a record at `path`.
    pub fn contains(&self, path: &str) -> Result<bool> {
        Ok(match &self.spilled {
            Some(s) => s.get(path)?.is_some(),
            None => self
                .kept
                .binary_search_by(|r| r.path.as_str().cmp(path))
                .is_ok(),
        })
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.spilled = None;
        if let Some(name) = self.table.take() {
            if let Err(e) = self.folder.store().scratch_drop(&name) {
                tracing::warn!("dropping the peer's index from the store: {e}");
            }
        }
    }
}
