//! Writing received files safely: parent folders that never pass through a symlink, temp files
//! (`.ssp-part-*`) in the target's folder, hash check, then an atomic rename.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::RelPath;
use crate::error::{Error, IoContext, Result};
use crate::index::Hash;

/// Names starting with this are temp files: never listed, never accepted from the wire.
pub const PART_PREFIX: &str = ".ssp-part-";

/// The temp file for `rel` with content `hash`: same folder as the target, so the final rename
/// is atomic; named by both, so an interrupted transfer can be resumed by the next sync.
pub fn part_path(root: &Path, rel: &RelPath, hash: &Hash) -> PathBuf {
    let name_hash = blake3::hash(rel.as_str().as_bytes()).to_hex();
    let name = format!("{PART_PREFIX}{}-{}", &hash.to_hex()[..24], &name_hash[..16]);
    let target = rel.under(root);
    target.parent().unwrap_or(root).join(name)
}

/// Creates the folders above `rel` under `root`, refusing to pass through a symlink or a file.
/// `known` remembers folders already checked during this sync.
pub fn ensure_parent_dirs(root: &Path, rel: &RelPath, known: &mut HashSet<PathBuf>) -> Result<()> {
    let mut dir = root.to_path_buf();
    for comp in rel.parent_components() {
        dir.push(comp);
        if known.contains(&dir) {
            continue;
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(Error::io(
                    format!("cannot create {}", dir.display()),
                    io::Error::other("a file or symlink is in the way"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let md =
                        std::fs::symlink_metadata(&dir).context(|| dir.display().to_string())?;
                    if !md.is_dir() {
                        return Err(Error::io(dir.display().to_string(), e));
                    }
                }
                Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
            },
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        }
        known.insert(dir.clone());
    }
    Ok(())
}

/// Why finishing a part file failed.
#[derive(Debug)]
pub enum FinishError {
    /// The content does not match the announced hash; the part file was removed.
    HashMismatch,
    Other(Error),
}

/// Metadata of a file as finally written.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

fn system_time(mtime_ns: i64) -> SystemTime {
    if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    }
}

/// Sets mtime and the executable bit on an open file; returns what it then is.
fn set_metadata(file: &File, path: &Path, mtime_ns: i64, executable: bool) -> Result<Written> {
    file.set_modified(system_time(mtime_ns))
        .context(|| format!("setting mtime of {}", path.display()))?;
    let md = file.metadata().context(|| path.display().to_string())?;
    let mode = md.mode() & 0o7777;
    let want = if executable {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode & !0o111
    };
    if want != mode {
        file.set_permissions(std::fs::Permissions::from_mode(want))
            .context(|| format!("setting permissions of {}", path.display()))?;
    }
    Ok(Written {
        size: md.len(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        inode: md.ino(),
    })
}

/// Fixes mtime and executable bit of an existing regular file without following symlinks.
pub fn apply_metadata(path: &Path, mtime_ns: i64, executable: bool) -> Result<Written> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .context(|| format!("opening {}", path.display()))?;
    set_metadata(&file, path, mtime_ns, executable)
}

/// A temp file being filled sequentially, hashing as it goes.
pub struct PartWriter {
    file: File,
    path: PathBuf,
    hasher: blake3::Hasher,
    written: u64,
}

fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    // Never follow a symlink planted at the temp name.
    o.custom_flags(libc::O_NOFOLLOW).mode(0o666);
    o
}

impl PartWriter {
    /// Creates (or truncates) the temp file at `path`.
    pub fn create(path: &Path) -> Result<PartWriter> {
        let file = open_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .context(|| format!("creating {}", path.display()))?;
        Ok(PartWriter {
            file,
            path: path.to_path_buf(),
            hasher: blake3::Hasher::new(),
            written: 0,
        })
    }

    /// Reopens a temp file that holds exactly `offset` bytes, hashing what it has.
    /// `None` when it is missing or of another length.
    pub fn resume(path: &Path, offset: u64) -> Result<Option<PartWriter>> {
        let mut file = match open_options().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reopening {}", path.display()), e)),
        };
        let md = file.metadata().context(|| path.display().to_string())?;
        if !md.is_file() || md.len() != offset {
            return Ok(None);
        }
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        file.seek(SeekFrom::End(0))
            .context(|| path.display().to_string())?;
        Ok(Some(PartWriter {
            file,
            path: path.to_path_buf(),
            hasher,
            written: offset,
        }))
    }

    /// Bytes in the temp file so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .context(|| format!("writing {}", self.path.display()))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Removes the temp file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Checks the hash, applies mtime and executable bit, and renames onto `target`.
    pub fn finish(
        self,
        expected: &Hash,
        mtime_ns: i64,
        executable: bool,
        target: &Path,
    ) -> Result<Written, FinishError> {
        if Hash(*self.hasher.finalize().as_bytes()) != *expected {
            self.discard();
            return Err(FinishError::HashMismatch);
        }
        let path = self.path.clone();
        let result = (|| {
            let written = set_metadata(&self.file, &path, mtime_ns, executable)?;
            // rename(2) never replaces a folder with a file: EISDIR (or ENOTEMPTY/EEXIST).
            match std::fs::rename(&path, target) {
                Ok(()) => Ok(written),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST)
                    ) =>
                {
                    Err(Error::io(
                        format!("cannot replace {}", target.display()),
                        io::Error::other("a folder is in the way"),
                    ))
                }
                Err(e) => Err(Error::io(format!("renaming onto {}", target.display()), e)),
            }
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result.map_err(FinishError::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_dirs_never_pass_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("evil")).unwrap();
        let mut known = HashSet::new();
        let rel = RelPath::parse("evil/x/file").unwrap();
        assert!(ensure_parent_dirs(dir.path(), &rel, &mut known).is_err());
        assert!(!outside.path().join("x").exists());
        let ok = RelPath::parse("good/x/file").unwrap();
        ensure_parent_dirs(dir.path(), &ok, &mut known).unwrap();
        assert!(dir.path().join("good/x").is_dir());
    }

    #[test]
    fn finish_checks_hash_and_renames_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let rel = RelPath::parse("f").unwrap();
        let good = Hash(*blake3::hash(b"hello").as_bytes());
        let part = part_path(dir.path(), &rel, &good);
        let target = rel.under(dir.path());

        let mut w = PartWriter::create(&part).unwrap();
        w.write(b"hellx").unwrap();
        assert!(matches!(
            w.finish(&good, 0, false, &target),
            Err(FinishError::HashMismatch)
        ));
        assert!(
            !target.exists() && !part.exists(),
            "nothing left after a bad hash"
        );

        let mut w = PartWriter::create(&part).unwrap();
        w.write(b"hel").unwrap();
        drop(w);
        let mut w = PartWriter::resume(&part, 3).unwrap().expect("resumable");
        assert!(
            PartWriter::resume(&part, 2).unwrap().is_none(),
            "wrong length is not resumed"
        );
        w.write(b"lo").unwrap();
        let written = w
            .finish(&good, 1_500_000_000_123_456_789, true, &target)
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        assert_eq!(written.mtime_ns, 1_500_000_000_123_456_789);
        assert!(std::fs::metadata(&target).unwrap().mode() & 0o100 != 0);
        assert!(!part.exists());
    }

    #[test]
    fn a_folder_in_the_way_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let rel = RelPath::parse("d").unwrap();
        let hash = Hash(*blake3::hash(b"file").as_bytes());
        let target = rel.under(dir.path());
        for keep in ["", "kept.txt"] {
            std::fs::create_dir_all(&target).unwrap();
            if !keep.is_empty() {
                std::fs::write(target.join(keep), b"mine").unwrap();
            }
            let part = part_path(dir.path(), &rel, &hash);
            let mut w = PartWriter::create(&part).unwrap();
            w.write(b"file").unwrap();
            match w.finish(&hash, 0, false, &target) {
                Err(FinishError::Other(e)) => {
                    assert!(e.to_string().contains("folder is in the way"), "{e}")
                }
                other => panic!("replaced a folder ({keep:?}): {:?}", other.is_ok()),
            }
            assert!(target.is_dir() && !part.exists());
            if !keep.is_empty() {
                assert_eq!(std::fs::read(target.join(keep)).unwrap(), b"mine");
            }
        }
    }
}
