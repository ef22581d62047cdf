//! Scanning: walk a folder (never following symlinks), reuse cached hashes of unchanged files,
//! hash the rest with BLAKE3 from a descriptor opened beneath the root that must be the very
//! file the walk saw, and refresh the cache in one commit.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use walkdir::WalkDir;

use super::{is_part_name, Beneath, RelPath};
use crate::error::{Error, Result};
use crate::index::{DeviceId, FileRecord, Hash, IndexStore, VersionVector};

/// Read size while hashing: large enough for BLAKE3's SIMD paths to pay off.
const HASH_BUFFER_BYTES: usize = 1024 * 1024;
/// Most files hashed at once (one thread each, at most one per core): enough to keep an SSD
/// and a few cores busy on a first scan without thrashing a spinning disk too hard.
const MAX_HASHERS: usize = 4;

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Every path the folder knows, sorted: live files, folders and symlinks as they are now,
    /// and tombstones of what was deleted (from this scan or earlier ones).
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
    /// The records the store holds, by path (consumed).
    pub previous: HashMap<String, FileRecord>,
    /// The scanning replica: changes get a version bumped for it. `None` for a listing that
    /// records nothing.
    pub device: Option<DeviceId>,
    /// Paths (relative, and whether a folder) that the folder's ignore rules exclude: neither
    /// listed nor tombstoned.
    pub ignored: &'a dyn Fn(&str, bool) -> bool,
    /// The folder's last sequence number; advanced for each new version.
    pub sequence: &'a mut u64,
    /// Time stamp given to tombstones made by this scan (nanoseconds since the epoch).
    pub now_ns: i64,
}

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

fn rel_string(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// A file found by the walk: its record, or what is known before hashing it.
enum Found {
    /// Its record as found, and what the store held.
    Known(FileRecord, Option<FileRecord>),
    ToHash {
        rel: RelPath,
        size: u64,
        mtime_ns: i64,
        dev: u64,
        inode: u64,
        mode: u32,
        prev: Option<FileRecord>,
    },
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
    let previous = match store.map(IndexStore::load) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            tracing::warn!("index cache unreadable, re-hashing everything: {e}");
            HashMap::new()
        }
        None => HashMap::new(),
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
/// for deleted) and are listed in `skipped`.
pub fn scan_versioned(root: &Path, mut ctx: ScanContext<'_>) -> Result<ScanResult> {
    use crate::index::EntryKind;
    check_folder(root)?;
    let beneath = Beneath::new(root).map_err(|e| Error::Folder {
        path: root.to_path_buf(),
        reason: format!("cannot be opened: {e}"),
    })?;
    let cache = &mut ctx.previous;
    let mut out = ScanResult::default();
    let mut found = Vec::new();
    let ignored = ctx.ignored;
    let walker = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 1 && e.file_name().to_str().is_some_and(super::is_metadata_name) {
                return false;
            }
            // Temp files are never synced, but the scan lists them (to resume or remove them).
            if e.file_name().to_str().is_some_and(is_part_name) {
                return true;
            }
            match rel_string(root, e.path()) {
                Some(rel) => !ignored(&rel, e.file_type().is_dir()),
                None => true,
            }
        });
    let shown = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    // Not taken into the index, and not deleted either: whatever the store knew of it stays.
    let skip_keeping = |out: &mut ScanResult,
                        cache: &mut HashMap<String, FileRecord>,
                        rel: &RelPath,
                        reason: String| {
        tracing::warn!(
            "not synced: {}: {reason}",
            crate::protocol::peer_text(rel.as_str())
        );
        out.skipped.push(Skipped {
            path: rel.as_str().to_owned(),
            reason,
        });
        if let Some(prev) = cache.remove(rel.as_str()) {
            out.files.push(prev);
        }
    };
    let skip = |out: &mut ScanResult, path: String, reason: String| {
        tracing::warn!(
            "not synced: {}: {reason}",
            crate::protocol::peer_text(&path)
        );
        out.skipped.push(Skipped { path, reason });
    };
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(shown).unwrap_or_default();
                skip(&mut out, path, format!("cannot be read: {e}"));
                continue;
            }
        };
        let ft = entry.file_type();
        if ft.is_file() && entry.file_name().to_str().is_some_and(is_part_name) {
            if let (Some(rel), Ok(md)) = (rel_string(root, entry.path()), entry.metadata()) {
                out.parts.push(PartFile {
                    rel,
                    len: md.len(),
                    resumable: md.is_file() && md.nlink() == 1,
                });
            }
            continue;
        }
        let rel = match rel_string(root, entry.path()).map(|r| RelPath::parse(&r)) {
            Some(Ok(rel)) => rel,
            Some(Err(e)) => {
                skip(
                    &mut out,
                    shown(entry.path()),
                    format!("name cannot be synced ({e})"),
                );
                continue;
            }
            None => {
                skip(
                    &mut out,
                    shown(entry.path()),
                    "name is not valid UTF-8".into(),
                );
                continue;
            }
        };
        if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
            skip_keeping(
                &mut out,
                cache,
                &rel,
                "not a regular file, folder or symlink".into(),
            );
            continue;
        }
        let md = match entry.metadata() {
            Ok(md) => md,
            Err(e) => {
                skip_keeping(&mut out, cache, &rel, format!("cannot be read: {e}"));
                continue;
            }
        };
        let mode = md.mode() & 0o777;
        if ft.is_dir() || ft.is_symlink() {
            let (kind, target) = if ft.is_dir() {
                (EntryKind::Dir, None)
            } else {
                let target = std::fs::read_link(entry.path())
                    .ok()
                    .and_then(|t| t.to_str().map(str::to_owned));
                let checked = match &target {
                    Some(t) => super::symlink_target_inside(rel.as_str(), t),
                    None => Err("its target cannot be read as UTF-8"),
                };
                match checked {
                    Ok(t) => (EntryKind::Symlink, Some(t)),
                    Err(why) => {
                        skip_keeping(&mut out, cache, &rel, format!("symlink not synced: {why}"));
                        continue;
                    }
                }
            };
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
                    mtime_ns(&md)
                },
                executable: mode & 0o111 != 0,
                mode: if kind == EntryKind::Symlink {
                    0o777
                } else {
                    mode
                },
                hash,
                inode: md.ino(),
                deleted: false,
                version: VersionVector::default(),
                blocks: Vec::new(),
                kind,
                target,
                sequence: 0,
                modified_by: None,
                origin: None,
            };
            found.push(Found::Known(rec, cache.remove(rel.as_str())));
            continue;
        }
        let (size, mtime, inode) = (md.len(), mtime_ns(&md), md.ino());
        let prev = cache.remove(rel.as_str());
        let cached = prev
            .as_ref()
            .filter(|c| {
                !c.deleted
                    && c.kind == EntryKind::File
                    && c.size == size
                    && c.mtime_ns == mtime
                    && c.inode == inode
            })
            .cloned();
        found.push(match cached {
            Some(mut c) => {
                c.set_mode(mode);
                Found::Known(c, prev)
            }
            None => Found::ToHash {
                rel,
                size,
                mtime_ns: mtime,
                dev: md.dev(),
                inode,
                mode,
                prev,
            },
        });
    }
    let to_hash: Vec<(&RelPath, u64, u64)> = found
        .iter()
        .filter_map(|f| match f {
            Found::ToHash {
                rel, dev, inode, ..
            } => Some((rel, *dev, *inode)),
            Found::Known(..) => None,
        })
        .collect();
    let hashes = hash_all(&beneath, &to_hash);
    drop(to_hash);
    let mut hashes = hashes.into_iter();
    let mut versioned = Versioner {
        device: ctx.device,
        sequence: ctx.sequence,
        out: &mut out,
    };
    for f in found {
        match f {
            Found::Known(rec, prev) => versioned.keep(rec, prev),
            Found::ToHash {
                rel,
                size,
                mtime_ns,
                inode,
                mode,
                prev,
                ..
            } => {
                let path = rel.as_str().to_owned();
                match hashes.next() {
                    Some(Ok((hash, after))) if after == (size, mtime_ns) => {
                        versioned.out.hashed += 1;
                        let rec = FileRecord {
                            path,
                            size,
                            mtime_ns,
                            executable: mode & 0o111 != 0,
                            mode,
                            hash,
                            inode,
                            deleted: false,
                            version: VersionVector::default(),
                            blocks: Vec::new(),
                            kind: EntryKind::File,
                            target: None,
                            sequence: 0,
                            modified_by: None,
                            origin: None,
                        };
                        versioned.keep(rec, prev);
                    }
                    other => {
                        let reason = match other {
                            Some(Ok(_)) => {
                                "changed while it was scanned; it syncs once it settles".into()
                            }
                            Some(Err(e)) => format!("cannot be read: {e}"),
                            None => "not hashed".into(),
                        };
                        versioned.out.skipped.push(Skipped {
                            path: path.clone(),
                            reason,
                        });
                        // Never taken for deleted: the last known record stands.
                        if let Some(prev) = prev {
                            versioned.out.files.push(prev);
                        }
                    }
                }
            }
        }
    }
    // What the store still holds was not seen: deleted since the last scan (ignored paths are
    // neither listed nor deleted).
    let mut gone: Vec<FileRecord> = std::mem::take(cache).into_values().collect();
    gone.sort_by(|a, b| a.path.cmp(&b.path));
    for mut rec in gone {
        if ignored(&rec.path, rec.kind == EntryKind::Dir) {
            continue;
        }
        if !rec.deleted && versioned.device.is_some() {
            rec.deleted = true;
            rec.origin = None;
            rec.size = 0;
            rec.mtime_ns = ctx.now_ns;
            rec.inode = 0;
            versioned.bump(&mut rec);
            versioned.out.changed.push(rec.clone());
        }
        versioned.out.files.push(rec);
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Gives local changes their versions as the scan finds them.
struct Versioner<'a, 'b> {
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

    /// Takes `now` (as found on disk) against `prev` (what the store held).
    fn keep(&mut self, mut now: FileRecord, prev: Option<FileRecord>) {
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
                self.out.files.push(now);
            }
            prev => {
                now.version = prev.map(|p| p.version).unwrap_or_default();
                now.origin = None;
                self.bump(&mut now);
                self.out.changed.push(now.clone());
                self.out.files.push(now);
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
                previous: store.load().unwrap(),
                device: Some(device),
                ignored: &|_, _| false,
                sequence: &mut seq,
                now_ns: 99,
            },
        )
        .unwrap();
        store.commit(&scan.changed, &[], seq).unwrap();
        scan
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
