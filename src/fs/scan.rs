//! Scanning: walk a folder (never following symlinks), reuse cached hashes of unchanged files,
//! hash the rest with BLAKE3 from a descriptor opened beneath the root that must be the very
//! file the walk saw, and refresh the cache in one commit.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use walkdir::WalkDir;

use super::{is_part_name, Beneath, RelPath, METADATA_DIR};
use crate::error::{Error, Result};
use crate::index::{FileRecord, Hash, IndexStore, VersionVector};

/// Read size while hashing: large enough for BLAKE3's SIMD paths to pay off.
const HASH_BUFFER_BYTES: usize = 1024 * 1024;
/// Most files hashed at once (one thread each, at most one per core): enough to keep an SSD
/// and a few cores busy on a first scan without thrashing a spinning disk too hard.
const MAX_HASHERS: usize = 4;

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Live files, sorted by path.
    pub files: Vec<FileRecord>,
    /// Leftover temp files of interrupted transfers (`.ssp-part-*`).
    pub parts: Vec<PartFile>,
    /// How many files had to be (re-)hashed.
    pub hashed: usize,
    /// Entries skipped (unreadable, non-UTF-8 or unacceptable names).
    pub skipped: usize,
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

fn hash_open(mut file: File) -> io::Result<Hash> {
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
    Known(FileRecord),
    ToHash {
        rel: RelPath,
        size: u64,
        mtime_ns: i64,
        dev: u64,
        inode: u64,
        mode: u32,
    },
}

/// Hashes `files` (path, device, inode) on up to [`MAX_HASHERS`] threads; results come back
/// in the same order.
fn hash_all(beneath: &Beneath, files: &[(&RelPath, u64, u64)]) -> Vec<io::Result<Hash>> {
    let hash = |&(rel, dev, ino): &(&RelPath, u64, u64)| hash_file_beneath(beneath, rel, dev, ino);
    let paths = files;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_HASHERS)
        .min(paths.len());
    if threads <= 1 {
        return paths.iter().map(hash).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<io::Result<Hash>>> = paths.iter().map(|_| None).collect();
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

/// Scans `root`, using and refreshing `store` when given. Vanished files become tombstones.
/// Files that need hashing are hashed in parallel (see [`MAX_HASHERS`]).
pub fn scan_folder(root: &Path, store: Option<&IndexStore>) -> Result<ScanResult> {
    check_folder(root)?;
    let beneath = Beneath::new(root).map_err(|e| Error::Folder {
        path: root.to_path_buf(),
        reason: format!("cannot be opened: {e}"),
    })?;
    let mut cache = match store.map(IndexStore::load) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            tracing::warn!("index cache unreadable, re-hashing everything: {e}");
            HashMap::new()
        }
        None => HashMap::new(),
    };
    let mut out = ScanResult::default();
    let mut changed = Vec::new();
    let mut found = Vec::new();
    let walker = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == METADATA_DIR));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("skipping unreadable entry: {e}");
                out.skipped += 1;
                continue;
            }
        };
        let ft = entry.file_type();
        if !ft.is_file() {
            if !ft.is_dir() {
                tracing::debug!("skipping non-regular file {}", entry.path().display());
            }
            continue;
        }
        if entry.file_name().to_str().is_some_and(is_part_name) {
            if let (Some(rel), Ok(md)) = (rel_string(root, entry.path()), entry.metadata()) {
                out.parts.push(PartFile {
                    rel,
                    len: md.len(),
                    resumable: md.is_file() && md.nlink() == 1,
                });
            }
            continue;
        }
        let Some(rel) = rel_string(root, entry.path()).and_then(|r| RelPath::parse(&r).ok()) else {
            tracing::warn!("skipping {}: name cannot be synced", entry.path().display());
            out.skipped += 1;
            continue;
        };
        let md = match entry.metadata() {
            Ok(md) => md,
            Err(e) => {
                tracing::warn!("skipping {rel}: {e}");
                out.skipped += 1;
                continue;
            }
        };
        let (size, mtime, inode) = (md.len(), mtime_ns(&md), md.ino());
        let mode = md.mode() & 0o777;
        let cached = cache
            .remove(rel.as_str())
            .filter(|c| !c.deleted && c.size == size && c.mtime_ns == mtime && c.inode == inode);
        found.push(match cached {
            Some(c) if c.mode == mode => Found::Known(c),
            Some(mut c) => {
                c.set_mode(mode);
                changed.push(c.clone());
                Found::Known(c)
            }
            None => Found::ToHash {
                rel,
                size,
                mtime_ns: mtime,
                dev: md.dev(),
                inode,
                mode,
            },
        });
    }
    let to_hash: Vec<(&RelPath, u64, u64)> = found
        .iter()
        .filter_map(|f| match f {
            Found::ToHash {
                rel, dev, inode, ..
            } => Some((rel, *dev, *inode)),
            Found::Known(_) => None,
        })
        .collect();
    let hashes = hash_all(&beneath, &to_hash);
    drop(to_hash);
    let mut hashes = hashes.into_iter();
    for f in found {
        let (rel, size, mtime_ns, inode, mode) = match f {
            Found::Known(rec) => {
                out.files.push(rec);
                continue;
            }
            Found::ToHash {
                rel,
                size,
                mtime_ns,
                inode,
                mode,
                ..
            } => (rel.as_str().to_owned(), size, mtime_ns, inode, mode),
        };
        match hashes.next() {
            Some(Ok(hash)) => {
                out.hashed += 1;
                let rec = FileRecord {
                    path: rel,
                    size,
                    mtime_ns,
                    executable: mode & 0o111 != 0,
                    mode,
                    hash,
                    inode,
                    deleted: false,
                    version: VersionVector::default(),
                    blocks: Vec::new(),
                    kind: Default::default(),
                    target: None,
                    sequence: 0,
                    modified_by: None,
                };
                changed.push(rec.clone());
                out.files.push(rec);
            }
            Some(Err(e)) => {
                tracing::warn!("skipping {rel}: cannot read: {e}");
                out.skipped += 1;
            }
            None => {
                tracing::warn!("skipping {rel}: not hashed");
                out.skipped += 1;
            }
        }
    }
    // What the cache still holds was not seen: deleted since the last scan.
    for (_, mut rec) in cache.into_iter().filter(|(_, r)| !r.deleted) {
        rec.deleted = true;
        changed.push(rec);
    }
    if let Some(store) = store {
        if let Err(e) = store.apply(&changed, &[]) {
            tracing::warn!("could not update the index cache: {e}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn scan_reuses_cached_hashes_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/one"), b"1").unwrap();
        std::fs::write(root.join("two"), b"22").unwrap();
        std::fs::write(root.join(".ssp-part-xyz"), b"partial").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let store = IndexStore::open(root).unwrap();

        let first = scan_folder(root, Some(&store)).unwrap();
        let paths: Vec<_> = first.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["a/b/one", "two"],
            "symlinks, temp files and .ssp are not listed"
        );
        assert_eq!(first.hashed, 2);
        assert_eq!(first.parts.len(), 1);
        assert_eq!(first.files[0].hash, Hash(*blake3::hash(b"1").as_bytes()));

        let second = scan_folder(root, Some(&store)).unwrap();
        assert_eq!(second.hashed, 0, "unchanged files are not re-hashed");

        std::fs::write(root.join("two"), b"333").unwrap();
        std::fs::set_permissions(root.join("a/b/one"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let third = scan_folder(root, Some(&store)).unwrap();
        assert_eq!(third.hashed, 1);
        assert!(third.files[0].executable);

        std::fs::remove_file(root.join("two")).unwrap();
        let fourth = scan_folder(root, Some(&store)).unwrap();
        assert_eq!(fourth.files.len(), 1);
        let tomb = &store.load().unwrap()["two"];
        assert!(tomb.deleted, "a vanished file leaves a tombstone");
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
