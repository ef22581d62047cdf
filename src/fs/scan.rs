//! Scanning: walk a folder (never following symlinks), reuse cached hashes of unchanged files,
//! hash the rest with BLAKE3 from a descriptor opened beneath the root that must be the very
//! file the walk saw, and refresh the cache in one commit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::walk::Found;
use super::{Beneath, RelPath};
use crate::error::{Error, Result};
use crate::index::{DeviceId, FileRecord, Hash, IndexStore, VersionVector};

/// Read size while hashing: large enough for BLAKE3's SIMD paths to pay off.
const HASH_BUFFER_BYTES: usize = 1024 * 1024;
/// Most files hashed at once (one thread each, at most one per core): enough to keep an SSD
/// and a few cores busy on a first scan without thrashing a spinning disk too hard.
const MAX_HASHERS: usize = 4;
/// Files hashed together: the scan holds at most this many waiting for their hashes.
const HASH_BATCH: usize = 4096;
/// Changed records committed together during a scan ([`ScanContext::flush`]).
const FLUSH_RECORDS: usize = 8192;

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// With [`ScanContext::list`] only: every path the folder knows, sorted: live files,
    /// folders and symlinks as they are now, and tombstones of what was deleted (from this
    /// scan or earlier ones). A folder model lists nothing: the store, once `changed` is
    /// committed, holds exactly this.
    pub files: Vec<FileRecord>,
    /// The records that differ from what the store held (new versions and refreshed cache
    /// entries): what the caller commits.
    pub changed: Vec<FileRecord>,
    /// Leftover temp files of interrupted transfers (`.ssp-part-*`).
    pub parts: Vec<PartFile>,
    /// How many files had to be (re-)hashed.
    pub hashed: usize,
    /// Entries not synced, each with why (unsupported type, unreadable, a name that cannot be
    /// synced, a symlink pointing outside, changing while scanned).
    pub skipped: Vec<Skipped>,
    /// The folder's sequence number once this scan's changes were committed: `files` is
    /// complete up to it.
    pub sequence: u64,
    /// How many local changes this scan found (records given a new version).
    pub versioned: usize,
    /// How many live files the store held before this scan.
    pub known_files: usize,
    /// How many live files there are now.
    pub live_files: usize,
    /// Tombstones older than [`ScanContext::tombstone_keep_ns`]: what the caller removes.
    pub expired: Vec<String>,
    /// Live paths (with their sequences) whose names may not travel as they are: not NFC,
    /// with uppercase or non-ASCII letters (they may clash in case or form with another), or
    /// not allowed on Windows. Everything else passes every name check; see
    /// `sync::session::check_local_names`.
    pub odd_names: Vec<(String, u64)>,
}

/// An entry the scan did not take into the index, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The path relative to the root (lossy for names that are not UTF-8).
    pub path: String,
    pub reason: String,
}

/// What a scan compares the disk with, and who is scanning.
pub struct ScanContext<'a> {
    /// The records the store holds, in path order (bytewise): [`IndexStore::records`].
    pub previous: Box<dyn Iterator<Item = Result<FileRecord>> + 'a>,
    /// The scanning replica: changes get a version bumped for it. `None` for a listing that
    /// records nothing.
    pub device: Option<DeviceId>,
    /// Paths (relative, and whether a folder) that the folder's ignore rules exclude: neither
    /// listed nor tombstoned.
    pub ignored: &'a (dyn Fn(&str, bool) -> bool + Sync),
    /// The folder's last sequence number; advanced for each new version.
    pub sequence: &'a mut u64,
    /// Time stamp given to tombstones made by this scan (nanoseconds since the epoch).
    pub now_ns: i64,
    /// Keep every record in [`ScanResult::files`] (a listing); otherwise they are only counted.
    pub list: bool,
    /// Tombstones older than this (nanoseconds before `now_ns`) go into
    /// [`ScanResult::expired`], not into `files`.
    pub tombstone_keep_ns: i64,
    /// Commits a batch of `changed` records (and the sequence so far) while the scan goes on,
    /// so a first scan of a big folder never holds all its records. Called only once a live
    /// file was found: a scan that finds none (a vanished folder) commits nothing before its
    /// caller's mass-deletion guard sees it.
    pub flush: Option<&'a mut Flush<'a>>,
}

/// Commits a batch of a scan's changed records with the sequence so far
/// ([`ScanContext::flush`]).
pub type Flush<'a> = dyn FnMut(&[FileRecord], u64) -> Result<()> + 'a;

/// A temp file found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFile {
    /// Path relative to the root, `/`-separated (its last component is a temp-file name).
    pub rel: String,
    /// Length in bytes when scanned.
    pub len: u64,
    /// A regular file with a single link: the only kind a transfer may resume (a planted hard
    /// link to a file elsewhere must never be appended to).
    pub resumable: bool,
}

/// BLAKE3 of the regular file at `path` (not following a final symlink, not blocking on a
/// FIFO: both are errors).
pub fn hash_file(path: &Path) -> io::Result<Hash> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    hash_open(file)
}

/// BLAKE3 of `rel` under `beneath`, which must still be the regular file the walk saw (same
/// device and inode): opened without following symlinks anywhere and without blocking, so a
/// file swapped for a symlink, a FIFO or another file between walk and hash is refused.
pub fn hash_file_beneath(beneath: &Beneath, rel: &RelPath, dev: u64, ino: u64) -> io::Result<Hash> {
    let file = beneath.open_read(rel)?;
    let md = file.metadata()?;
    if !md.is_file() || md.dev() != dev || md.ino() != ino {
        return Err(io::Error::other(
            "replaced since the walk (no longer the regular file it found)",
        ));
    }
    hash_open(file)
}

/// A hash and the (size, mtime) the file had once it was read: a file whose size or mtime
/// moved while it was read was being written, and its hash may be of torn content.
type Hashed = (Hash, (u64, i64));

fn hash_checked(beneath: &Beneath, rel: &RelPath, dev: u64, ino: u64) -> io::Result<Hashed> {
    let file = beneath.open_read(rel)?;
    let md = file.metadata()?;
    if !md.is_file() || md.dev() != dev || md.ino() != ino {
        return Err(io::Error::other(
            "replaced since the walk (no longer the regular file it found)",
        ));
    }
    let mut file = file;
    let hash = hash_reader(&mut file)?;
    let after = file.metadata()?;
    Ok((hash, (after.len(), mtime_ns(&after))))
}

fn hash_open(mut file: File) -> io::Result<Hash> {
    hash_reader(&mut file)
}

fn hash_reader(file: &mut File) -> io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Hash(*hasher.finalize().as_bytes()))
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

/// Checks that `root` is a readable folder.
pub(crate) fn check_folder(root: &Path) -> Result<()> {
    let folder_err = |reason: String| Error::Folder {
        path: root.to_path_buf(),
        reason,
    };
    match std::fs::metadata(root) {
        Ok(md) if md.is_dir() => std::fs::read_dir(root)
            .map(|_| ())
            .map_err(|e| folder_err(format!("cannot be read: {e}"))),
        Ok(_) => Err(folder_err("is not a folder".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(folder_err("does not exist".into())),
        Err(e) => Err(folder_err(e.to_string())),
    }
}

/// Hashes `files` (path, device, inode) on up to [`MAX_HASHERS`] threads; results come back
/// in the same order.
fn hash_all(beneath: &Beneath, files: &[(&RelPath, u64, u64)]) -> Vec<io::Result<Hashed>> {
    let hash = |&(rel, dev, ino): &(&RelPath, u64, u64)| hash_checked(beneath, rel, dev, ino);
    let paths = files;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_HASHERS)
        .min(paths.len());
    if threads <= 1 {
        return paths.iter().map(hash).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<io::Result<Hashed>>> = paths.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break mine };
                        mine.push((i, hash(path)));
                    }
                })
            })
            .collect();
        for worker in workers {
            // A worker that panicked leaves its files unhashed: they are reported below.
            for (i, hash) in worker.join().unwrap_or_default() {
                results[i] = Some(hash);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("hashing thread failed"))))
        .collect()
}

/// Lists `root` without a store or versions (the web page's file list): live files only.
pub fn scan_folder(root: &Path, store: Option<&IndexStore>) -> Result<ScanResult> {
    let previous: Box<dyn Iterator<Item = Result<FileRecord>>> =
        match store.map(IndexStore::records) {
            Some(Ok(records)) => Box::new(records),
            Some(Err(e)) => {
                tracing::warn!("index cache unreadable, re-hashing everything: {e}");
                Box::new(std::iter::empty())
            }
            None => Box::new(std::iter::empty()),
        };
    let mut sequence = 0;
    let mut scan = scan_versioned(
        root,
        ScanContext {
            previous,
            device: None,
            ignored: &|_, _| false,
            sequence: &mut sequence,
            now_ns: 0,
            list: true,
            tombstone_keep_ns: i64::MAX,
            flush: None,
        },
    )?;
    scan.files
        .retain(|r| !r.deleted && r.kind == crate::index::EntryKind::File);
    Ok(scan)
}

/// Scans `root` against `ctx.previous`: unchanged files keep their record (and hash) when
/// size, mtime and inode agree; the rest are hashed in parallel ([`MAX_HASHERS`]). Each local
/// change (new, changed content or permission bits, deleted) gets a new version: the record's
/// version vector bumped for `ctx.device`, the next sequence number, `modified_by` the device.
/// Folders and symlinks inside the folder are records too. Commits nothing: the caller commits
/// `changed`. Unreadable or changing entries keep their previous record (they are never taken
/// for deleted), and so does everything below a folder that cannot be listed; all are listed
/// in `skipped`.
///
/// The walk and the store are both in path order, so they are compared as two sorted streams.
pub fn scan_versioned(root: &Path, ctx: ScanContext<'_>) -> Result<ScanResult> {
    use crate::index::EntryKind;
    check_folder(root)?;
    let opened = |e: io::Error| Error::Folder {
        path: root.to_path_buf(),
        reason: format!("cannot be opened: {e}"),
    };
    let beneath = Beneath::new(root).map_err(opened)?;
    let dir = super::Dir::open_root(root).map_err(opened)?;
    let ignored = ctx.ignored;
    let walk = super::walk::walk(&dir, ignored);
    drop(dir);
    let mut out = ScanResult {
        parts: walk.parts,
        ..Default::default()
    };
    for s in walk.skipped {
        tracing::warn!(
            "not synced: {}: {}",
            crate::protocol::peer_text(&s.path),
            s.reason
        );
        out.skipped.push(s);
    }
    let unlisted = walk.unlisted;
    let below_unlisted = |path: &str| {
        unlisted.iter().any(|u| {
            u.is_empty()
                || (path.starts_with(u.as_str()) && path.as_bytes().get(u.len()) == Some(&b'/'))
        })
    };
    let mut previous = Previous {
        records: ctx.previous.peekable(),
        live_files: 0,
    };
    let mut versioned = Versioner {
        flush: ctx.flush,
        files: Vec::with_capacity(if ctx.list { walk.entries.len() } else { 0 }),
        list: ctx.list,
        expire_before: ctx.now_ns.saturating_sub(ctx.tombstone_keep_ns),
        device: ctx.device,
        sequence: ctx.sequence,
        out: &mut out,
    };
    // Files to hash, each with the index its record takes in `files` (a placeholder until
    // then): everything else is settled as the walk and the store are merged.
    let mut pending: Vec<Pending> = Vec::new();
    let mut unfilled = false;
    let gone = |versioned: &mut Versioner<'_, '_>, mut rec: FileRecord| {
        // Ignored paths are neither listed nor deleted; below a folder that could not be
        // listed, nothing is known to be gone.
        if ignored(&rec.path, rec.kind == EntryKind::Dir) {
            return;
        }
        if !rec.deleted && versioned.device.is_some() && !below_unlisted(&rec.path) {
            rec.deleted = true;
            rec.origin = None;
            rec.size = 0;
            rec.mtime_ns = ctx.now_ns;
            rec.inode = 0;
            versioned.bump(&mut rec);
            versioned.out.changed.push(rec.clone());
        }
        versioned.emit(rec);
    };
    for w in walk.entries {
        versioned.flush()?;
        while let Some(rec) = previous.before(w.rel.as_str())? {
            gone(&mut versioned, rec);
        }
        let prev = previous.at(w.rel.as_str())?;
        let rel = w.rel;
        let (st, kind, target) = match w.found {
            Found::Unsynced(reason) => {
                versioned.unsynced(rel.as_str(), reason, prev);
                continue;
            }
            Found::File(st) => (st, EntryKind::File, None),
            Found::Dir(st) => (st, EntryKind::Dir, None),
            Found::Symlink(st, target) => {
                let checked = match &target {
                    Some(t) => super::symlink_target_inside(rel.as_str(), t),
                    None => Err("its target cannot be read as UTF-8"),
                };
                match checked {
                    Ok(t) => (st, EntryKind::Symlink, Some(t)),
                    Err(why) => {
                        versioned.unsynced(
                            rel.as_str(),
                            format!("symlink not synced: {why}"),
                            prev,
                        );
                        continue;
                    }
                }
            }
        };
        let mode = st.mode & 0o777;
        if kind != EntryKind::File {
            let hash = match &target {
                Some(t) => Hash(*blake3::hash(t.as_bytes()).as_bytes()),
                None => Hash([0; 32]),
            };
            let rec = FileRecord {
                path: rel.as_str().to_owned(),
                size: 0,
                mtime_ns: if kind == EntryKind::Dir {
                    0
                } else {
                    st.mtime_ns
                },
                executable: mode & 0o111 != 0,
                mode: if kind == EntryKind::Symlink {
                    0o777
                } else {
                    mode
                },
                hash,
                inode: st.ino,
                deleted: false,
                version: VersionVector::default(),
                blocks: Vec::new(),
                kind,
                target,
                sequence: 0,
                modified_by: None,
                origin: None,
            };
            versioned.keep(rec, prev);
            continue;
        }
        let (size, mtime, inode) = (st.len, st.mtime_ns, st.ino);
        let cached = prev.as_ref().is_some_and(|c| {
            !c.deleted
                && c.kind == EntryKind::File
                && c.size == size
                && c.mtime_ns == mtime
                && c.inode == inode
        });
        match prev {
            // Most files of a re-scan: exactly the record stored (no copy made).
            Some(prev) if cached && prev.mode == mode && !prev.version.is_empty() => {
                versioned.emit(prev);
            }
            Some(prev) if cached => {
                let mut c = prev.clone();
                c.set_mode(mode);
                versioned.keep(c, Some(prev));
            }
            prev => {
                pending.push(Pending {
                    slot: versioned.files.len(),
                    rel,
                    size,
                    mtime_ns: mtime,
                    dev: st.dev,
                    inode,
                    mode,
                    prev,
                });
                if versioned.list {
                    versioned.files.push(placeholder());
                }
                if pending.len() == HASH_BATCH {
                    unfilled |=
                        settle_hashed(&mut versioned, &beneath, std::mem::take(&mut pending))?;
                }
            }
        }
    }
    while let Some(rec) = previous.before_end()? {
        gone(&mut versioned, rec);
    }
    versioned.out.known_files = previous.live_files;
    let unfilled =
        settle_hashed(&mut versioned, &beneath, std::mem::take(&mut pending))? || unfilled;
    if unfilled && versioned.list {
        versioned.files.retain(|r| !r.path.is_empty());
    }
    let files = std::mem::take(&mut versioned.files);
    out.files = files;
    // Pending files were settled after the others.
    out.odd_names.sort_unstable();
    Ok(out)
}

/// Hashes the files in `pending` and settles their records. Returns whether one of them has
/// no record (it could not be read and the store knew nothing of it).
fn settle_hashed(
    versioned: &mut Versioner<'_, '_>,
    beneath: &Beneath,
    pending: Vec<Pending>,
) -> Result<bool> {
    let to_hash: Vec<(&RelPath, u64, u64)> =
        pending.iter().map(|p| (&p.rel, p.dev, p.inode)).collect();
    let hashes = hash_all(beneath, &to_hash);
    drop(to_hash);
    let mut unfilled = false;
    for (p, hashed) in pending.into_iter().zip(hashes) {
        match hashed {
            Ok((hash, after)) if after == (p.size, p.mtime_ns) => {
                versioned.out.hashed += 1;
                let rec = FileRecord {
                    path: p.rel.as_str().to_owned(),
                    size: p.size,
                    mtime_ns: p.mtime_ns,
                    executable: p.mode & 0o111 != 0,
                    mode: p.mode,
                    hash,
                    inode: p.inode,
                    deleted: false,
                    version: VersionVector::default(),
                    blocks: Vec::new(),
                    kind: crate::index::EntryKind::File,
                    target: None,
                    sequence: 0,
                    modified_by: None,
                    origin: None,
                };
                let rec = versioned.settle(rec, p.prev);
                versioned.emit_at(p.slot, rec);
            }
            other => {
                let reason = match other {
                    Ok(_) => "changed while it was scanned; it syncs once it settles".into(),
                    Err(e) => format!("cannot be read: {e}"),
                };
                versioned.out.skipped.push(Skipped {
                    path: p.rel.as_str().to_owned(),
                    reason,
                });
                // Never taken for deleted: the last known record stands.
                match p.prev {
                    Some(prev) => versioned.emit_at(p.slot, prev),
                    None => unfilled = true,
                }
            }
        }
    }
    versioned.flush()?;
    Ok(unfilled)
}

/// The store's records in path order, taken as the walk passes them.
struct Previous<'a> {
    records: std::iter::Peekable<Box<dyn Iterator<Item = Result<FileRecord>> + 'a>>,
    /// Live files among the records taken so far.
    live_files: usize,
}

impl Previous<'_> {
    /// The next record if `take` says so of it (or an error reading it).
    fn take_if(&mut self, take: impl Fn(&str) -> bool) -> Result<Option<FileRecord>> {
        match self.records.peek() {
            Some(Ok(r)) if take(&r.path) => {}
            Some(Err(_)) => {}
            _ => return Ok(None),
        }
        let rec = self.records.next().transpose()?;
        if let Some(r) = &rec {
            if !r.deleted && r.kind == crate::index::EntryKind::File {
                self.live_files += 1;
            }
        }
        Ok(rec)
    }

    /// The next record if it sorts before `path` (seen by the store, not by the walk).
    fn before(&mut self, path: &str) -> Result<Option<FileRecord>> {
        self.take_if(|p| p < path)
    }

    /// The next record if it is at `path`.
    fn at(&mut self, path: &str) -> Result<Option<FileRecord>> {
        self.take_if(|p| p == path)
    }

    /// The next record, once the walk is done.
    fn before_end(&mut self) -> Result<Option<FileRecord>> {
        self.take_if(|_| true)
    }
}

/// A file to hash before its record is known.
struct Pending {
    /// Where its record goes in [`ScanResult::files`].
    slot: usize,
    rel: RelPath,
    size: u64,
    mtime_ns: i64,
    dev: u64,
    inode: u64,
    mode: u32,
    /// What the store held.
    prev: Option<FileRecord>,
}

/// What stands in `files` for a file being hashed (an empty path: no record has one).
fn placeholder() -> FileRecord {
    FileRecord {
        path: String::new(),
        size: 0,
        mtime_ns: 0,
        executable: false,
        mode: 0,
        hash: Hash([0; 32]),
        inode: 0,
        deleted: false,
        version: VersionVector::default(),
        blocks: Vec::new(),
        kind: crate::index::EntryKind::File,
        target: None,
        sequence: 0,
        modified_by: None,
        origin: None,
    }
}

/// Gives local changes their versions as the scan finds them.
struct Versioner<'a, 'b> {
    flush: Option<&'b mut Flush<'b>>,
    /// Every record, as [`ScanResult::files`] (when listing).
    files: Vec<FileRecord>,
    list: bool,
    /// Tombstones made before this (ns since the epoch) expire.
    expire_before: i64,
    device: Option<DeviceId>,
    sequence: &'b mut u64,
    out: &'a mut ScanResult,
}

impl Versioner<'_, '_> {
    fn bump(&mut self, rec: &mut FileRecord) {
        if let Some(device) = self.device {
            self.out.versioned += 1;
            rec.version.bump(device);
            rec.modified_by = Some(device);
            *self.sequence += 1;
            rec.sequence = *self.sequence;
        }
    }

    /// Takes `now` (as found on disk) against `prev` (what the store held), in order.
    fn keep(&mut self, now: FileRecord, prev: Option<FileRecord>) {
        let rec = self.settle(now, prev);
        self.emit(rec);
    }

    /// Commits the changes so far through [`ScanContext::flush`] once they make a batch.
    fn flush(&mut self) -> Result<()> {
        if self.out.changed.len() < FLUSH_RECORDS || self.out.live_files == 0 {
            return Ok(());
        }
        if let Some(flush) = self.flush.as_mut() {
            flush(&self.out.changed, *self.sequence)?;
            self.out.changed.clear();
        }
        Ok(())
    }

    /// Counts (and, when listing, keeps) one record of the folder as the scan leaves it.
    fn emit(&mut self, rec: FileRecord) {
        if let Some(rec) = self.tally(rec) {
            self.files.push(rec);
        }
    }

    /// [`Versioner::emit`] for a file that was hashed: its place in `files` was kept.
    fn emit_at(&mut self, slot: usize, rec: FileRecord) {
        if let Some(rec) = self.tally(rec) {
            self.files[slot] = rec;
        }
    }

    /// Counts `rec`; returns it if it is to be listed.
    fn tally(&mut self, rec: FileRecord) -> Option<FileRecord> {
        if rec.deleted {
            if rec.mtime_ns < self.expire_before {
                self.out.expired.push(rec.path);
                return None;
            }
        } else {
            if rec.kind == crate::index::EntryKind::File {
                self.out.live_files += 1;
            }
            if super::names::is_odd(&rec.path) {
                self.out.odd_names.push((rec.path.clone(), rec.sequence));
            }
        }
        self.list.then_some(rec)
    }

    /// Found, not synced (why): what the store knew of it stays, neither taken nor deleted.
    fn unsynced(&mut self, rel: &str, reason: String, prev: Option<FileRecord>) {
        tracing::warn!("not synced: {}: {reason}", crate::protocol::peer_text(rel));
        self.out.skipped.push(Skipped {
            path: rel.to_owned(),
            reason,
        });
        if let Some(prev) = prev {
            self.emit(prev);
        }
    }

    /// The record `now` (as found on disk) takes against `prev` (what the store held): the
    /// same version, or a new one (then also in `changed`).
    fn settle(&mut self, mut now: FileRecord, prev: Option<FileRecord>) -> FileRecord {
        match prev {
            Some(prev)
                if !prev.deleted
                    && !prev.version.is_empty()
                    && prev.same_content(&now)
                    && (prev.mode == now.mode || now.kind == crate::index::EntryKind::Dir) =>
            {
                // The same version; only cache fields may have moved (mtime, inode).
                let refreshed = prev.mtime_ns != now.mtime_ns || prev.inode != now.inode;
                now.version = prev.version;
                now.sequence = prev.sequence;
                now.modified_by = prev.modified_by;
                now.origin = prev.origin;
                if now.kind == crate::index::EntryKind::Dir {
                    // Folder permission bits do not travel: a change of them is no new version.
                    now.mode = prev.mode;
                }
                if refreshed {
                    self.out.changed.push(now.clone());
                }
                now
            }
            prev => {
                now.version = prev.map(|p| p.version).unwrap_or_default();
                now.origin = None;
                self.bump(&mut now);
                self.out.changed.push(now.clone());
                now
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Scans as a folder model does: against the store, committing what changed.
    fn scan_commit(root: &Path, store: &IndexStore, device: DeviceId) -> ScanResult {
        let mut seq = store.sequence().unwrap();
        let scan = scan_versioned(
            root,
            ScanContext {
                previous: Box::new(store.records().unwrap()),
                device: Some(device),
                ignored: &|_, _| false,
                sequence: &mut seq,
                now_ns: 99,
                list: true,
                tombstone_keep_ns: i64::MAX,
                flush: None,
            },
        )
        .unwrap();
        store.commit(&scan.changed, &[], seq).unwrap();
        scan
    }

    /// Scans with a flush that commits, as a folder model does; returns the scan and how
    /// many records were flushed during it.
    fn scan_flushing(root: &Path, store: &IndexStore) -> (ScanResult, usize, u64) {
        let mut seq = store.sequence().unwrap();
        let mut flushed = 0;
        let mut flush = |batch: &[FileRecord], sequence: u64| {
            flushed += batch.len();
            store.commit(batch, &[], sequence)
        };
        let scan = scan_versioned(
            root,
            ScanContext {
                previous: Box::new(store.records().unwrap()),
                device: Some(DeviceId(7)),
                ignored: &|_, _| false,
                sequence: &mut seq,
                now_ns: 99,
                list: false,
                tombstone_keep_ns: i64::MAX,
                flush: Some(&mut flush),
            },
        )
        .unwrap();
        (scan, flushed, seq)
    }

    #[test]
    fn a_big_scan_commits_in_batches_but_never_before_it_found_a_live_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("f");
        let n = FLUSH_RECORDS + 808;
        for i in 0..n {
            let sub = root.join(format!("d{:02}", i % 50));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("{i}")), i.to_string()).unwrap();
        }
        let store = IndexStore::open(&root).unwrap();
        let (scan, flushed, seq) = scan_flushing(&root, &store);
        assert!(
            flushed >= FLUSH_RECORDS,
            "flushed {flushed} of {n} files during the scan"
        );
        assert!(
            scan.files.is_empty(),
            "a scan that does not list keeps no records"
        );
        assert_eq!(scan.live_files, n);
        store.commit(&scan.changed, &[], seq).unwrap();
        assert_eq!(
            store.records().unwrap().count(),
            n + 50,
            "every file and folder is in the store once the rest is committed"
        );
        // Every file gone: thousands of tombstones, and not one may reach the store before
        // the caller's mass-deletion guard has seen that no live file is left.
        for i in 0..50 {
            std::fs::remove_dir_all(root.join(format!("d{i:02}"))).unwrap();
        }
        let (scan, flushed, _) = scan_flushing(&root, &store);
        assert_eq!(flushed, 0, "a scan that found no live file flushed nothing");
        assert_eq!(scan.live_files, 0);
        assert_eq!(scan.known_files, n);
        assert_eq!(
            scan.changed.len(),
            n + 50,
            "the deletions wait for the caller"
        );
        assert!(
            store.records().unwrap().all(|r| !r.unwrap().deleted),
            "the store still holds every file as live"
        );
    }

    #[test]
    fn scan_reuses_cached_hashes_and_versions_each_local_change() {
        use crate::index::EntryKind;
        let me = DeviceId(7);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/one"), b"1").unwrap();
        std::fs::write(root.join("two"), b"22").unwrap();
        std::fs::write(root.join(".ssp-part-xyz"), b"partial").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        std::os::unix::fs::symlink("two", root.join("inside")).unwrap();
        let store = IndexStore::open(root).unwrap();
        let by_path = |s: &ScanResult, p: &str| s.files.iter().find(|r| r.path == p).cloned();

        let first = scan_commit(root, &store, me);
        let paths: Vec<_> = first
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.kind))
            .collect();
        assert_eq!(
            paths,
            [
                ("a", EntryKind::Dir),
                ("a/b", EntryKind::Dir),
                ("a/b/one", EntryKind::File),
                ("inside", EntryKind::Symlink),
                ("two", EntryKind::File),
            ],
            "folders and inside symlinks are records; outside symlinks, temp files and .ssp not"
        );
        assert_eq!(
            first.skipped.len(),
            1,
            "the outside symlink is named: {:?}",
            first.skipped
        );
        assert_eq!(first.hashed, 2);
        assert_eq!(first.parts.len(), 1);
        let one = by_path(&first, "a/b/one").unwrap();
        assert_eq!(one.hash, Hash(*blake3::hash(b"1").as_bytes()));
        assert_eq!(
            one.version.counter(me),
            1,
            "a new file gets a first version"
        );
        assert_eq!(one.modified_by, Some(me));

        let second = scan_commit(root, &store, me);
        assert_eq!(second.hashed, 0, "unchanged files are not re-hashed");
        assert!(second.changed.is_empty(), "and get no new version");

        std::fs::write(root.join("two"), b"333").unwrap();
        std::fs::set_permissions(root.join("a/b/one"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let third = scan_commit(root, &store, me);
        assert_eq!(third.hashed, 1);
        let one_now = by_path(&third, "a/b/one").unwrap();
        assert!(one_now.executable);
        assert!(
            one_now.version.counter(me) > one.version.counter(me),
            "a mode change is a change"
        );
        let two = by_path(&third, "two").unwrap();
        assert!(two.sequence > one.sequence, "sequence numbers grow");

        std::fs::remove_file(root.join("two")).unwrap();
        let fourth = scan_commit(root, &store, me);
        let tomb = by_path(&fourth, "two").unwrap();
        assert!(tomb.deleted, "a vanished file leaves a tombstone");
        assert!(
            tomb.version.counter(me) > two.version.counter(me),
            "with its own version"
        );
        assert!(store.load().unwrap()["two"].deleted, "committed");
        assert_eq!(
            scan_folder(root, Some(&store)).unwrap().files.len(),
            1,
            "listing: live files only"
        );
    }

    /// The walk and the store are merged as sorted streams: names that sort around `/`
    /// (`a.txt` < `a/b` < `a0` bytewise, while a folder-first walk would give `a/b` first) must
    /// meet their own records, or an unchanged tree would look deleted and new again.
    #[test]
    fn names_sorting_around_the_separator_meet_their_records() {
        let me = DeviceId(7);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a", "a/b", "a-b", "a0", "A", "é"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "a.txt", "a/b/c", "a/b.x", "a-b/z", "a0/y", "a!", "A/q", "é/r", "z",
        ] {
            std::fs::write(root.join(f), f.as_bytes()).unwrap();
        }
        let store = IndexStore::open(root).unwrap();
        let first = scan_commit(root, &store, me);
        assert_eq!(first.files.len(), 15);
        let paths: Vec<&str> = first.files.iter().map(|f| f.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_unstable();
        assert_eq!(paths, sorted, "in bytewise order");
        let again = scan_commit(root, &store, me);
        assert!(again.changed.is_empty(), "unchanged: {:?}", again.changed);
        assert_eq!(again.known_files, 9);
        assert_eq!(again.files, first.files);
    }

    /// Hashing runs on several threads; every record must still get its own file's hash.
    #[test]
    fn parallel_hashing_keeps_each_hash_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..300 {
            let content = vec![(i % 251) as u8; i * 37];
            std::fs::write(root.join(format!("f{i:03}")), content).unwrap();
        }
        let scan = scan_folder(root, None).unwrap();
        assert_eq!(scan.hashed, 300);
        for (i, rec) in scan.files.iter().enumerate() {
            assert_eq!(rec.path, format!("f{i:03}"));
            let content = vec![(i % 251) as u8; i * 37];
            assert_eq!(
                rec.hash,
                Hash(*blake3::hash(&content).as_bytes()),
                "{}",
                rec.path
            );
            assert_eq!(rec.size, content.len() as u64);
        }
    }

    /// Between walk and hash, `f` is replaced by a symlink to a file outside, a FIFO, or
    /// another regular file: the hash is refused (never blocks, never hashes the outside file).
    #[test]
    fn a_file_swapped_after_the_walk_is_not_hashed() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let secret = base.path().join("secret");
        std::fs::write(&secret, b"outside").unwrap();
        let f = root.join("f");
        let beneath = Beneath::new(&root).unwrap();
        let rel = RelPath::parse("f").unwrap();
        type Swap = fn(&Path, &Path);
        let table: &[(&str, Swap)] = &[
            ("symlink", |f, secret| {
                std::os::unix::fs::symlink(secret, f).unwrap()
            }),
            ("fifo", |f, _| {
                let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }),
            ("other file", |f, _| std::fs::write(f, b"inside").unwrap()),
            ("hard link to outside", |f, secret| {
                std::fs::hard_link(secret, f).unwrap()
            }),
        ];
        for (case, swap) in table {
            std::fs::write(&f, b"inside").unwrap();
            let md = std::fs::symlink_metadata(&f).unwrap();
            let (dev, ino) = (md.dev(), md.ino());
            assert!(
                hash_file_beneath(&beneath, &rel, dev, ino).is_ok(),
                "{case}: baseline"
            );
            // Keep the walked inode alive, so the file system cannot hand its number out again.
            let keep = base.path().join("keep");
            std::fs::rename(&f, &keep).unwrap();
            swap(&f, &secret);
            // A blocking open of the FIFO would hang here: the test thread would never return.
            assert!(
                hash_file_beneath(&beneath, &rel, dev, ino).is_err(),
                "{case}"
            );
            assert!(
                hash_file(&f).is_err() || *case != "fifo",
                "{case}: hash_file"
            );
            std::fs::remove_file(&f).unwrap();
            std::fs::remove_file(&keep).unwrap();
        }
        for special in ["fifo", "link"] {
            let p = root.join(special);
            if special == "fifo" {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            } else {
                std::os::unix::fs::symlink(&secret, &p).unwrap();
            }
            assert!(hash_file(&p).is_err(), "hash_file opened a {special}");
        }
        let scan = scan_folder(&root, None).unwrap();
        assert!(scan.files.is_empty(), "a FIFO and a symlink are not listed");
    }

    #[test]
    fn missing_folder_and_file_as_folder_are_folder_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        for p in [dir.path().join("missing"), file] {
            assert!(matches!(scan_folder(&p, None), Err(Error::Folder { .. })));
        }
    }
}
