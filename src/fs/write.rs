//! Writing received files inside the folder and nowhere else: every write is relative to a
//! folder descriptor held from the root (see `dir.rs`), temp files (`.ssp-part-*`) are created
//! exclusively and `0600`, and a file gets its final mode and mtime on its descriptor before
//! the atomic `renameat` onto its name. One layer for both ends of a sync.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dir::{umask, Dir, Resolve};
use super::RelPath;
use crate::error::{Error, Result};
use crate::index::Hash;

/// Names starting with this are temp files: never listed, never accepted from the wire
/// (compared ASCII-case-insensitively, for case-insensitive file systems).
pub const PART_PREFIX: &str = ".ssp-part-";

/// Mode of a temp file while it fills: nobody else reads a half-written file.
pub const PART_MODE: u32 = 0o600;

/// Mode folders are created with (`mkdirat`; the umask narrows it), as `mkdir -p` does.
pub const NEW_DIR_MODE: u32 = 0o777;

/// Whether `name` is a temp-file name (ASCII case-insensitive).
pub fn is_part_name(name: &str) -> bool {
    name.len() >= PART_PREFIX.len()
        && name.as_bytes()[..PART_PREFIX.len()].eq_ignore_ascii_case(PART_PREFIX.as_bytes())
}

/// The temp-file name for `rel` with content `hash`, in the target's own folder so the final
/// rename is atomic; named by both, so an interrupted transfer can be resumed by the next sync.
pub fn part_name(rel: &RelPath, hash: &Hash) -> String {
    let name_hash = blake3::hash(rel.as_str().as_bytes()).to_hex();
    format!("{PART_PREFIX}{}-{}", &hash.to_hex()[..24], &name_hash[..16])
}

/// The temp file of `rel` as a path relative to the root (as the scan reports them).
pub fn part_rel(rel: &RelPath, hash: &Hash) -> String {
    match rel.as_str().rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/{}", part_name(rel, hash)),
        None => part_name(rel, hash),
    }
}

/// The mode a file from a peer gets here: its permission bits (never setuid, setgid or
/// sticky), narrowed by our umask, so never wider than the source's.
pub fn local_mode(source_mode: u32) -> u32 {
    source_mode & 0o777 & !umask()
}

/// Where a test hook runs: between the steps an attacker would race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The parent folder is open; the temp file is not created yet.
    ParentOpen,
    /// The temp file is verified and has its metadata; the rename is next.
    Verified,
    /// A metadata-only fix: the parent is open, the file not yet.
    TouchParentOpen,
}

/// A test's callback at each [`Stage`] (per thread, so parallel tests do not meet).
#[cfg(test)]
type Hook = Option<Box<dyn FnMut(Stage)>>;

#[cfg(test)]
thread_local! {
    pub(crate) static HOOK: std::cell::RefCell<Hook> = const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
fn hook(stage: Stage) {
    HOOK.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f(stage)
        }
    });
}

#[cfg(not(test))]
#[inline(always)]
fn hook(_: Stage) {}

fn io_err(what: impl std::fmt::Display, e: io::Error) -> Error {
    Error::io(what.to_string(), e)
}

/// Why finishing a part file failed.
#[derive(Debug)]
pub enum FinishError {
    /// The content does not match the announced hash; the part file was removed.
    HashMismatch,
    /// Asked not to replace anything, and something is at the target now; the part file was
    /// removed.
    Taken,
    /// Anything else (I/O, a folder in the way); the part file was removed.
    Other(Error),
}

/// Metadata of a file as finally written.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    /// Permission bits as applied.
    pub mode: u32,
}

fn system_time(mtime_ns: i64) -> SystemTime {
    if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    }
}

/// Sets mode (`fchmod`) and mtime (`futimens`) on an open file; returns what it then is.
fn set_metadata(file: &File, label: &str, mtime_ns: i64, mode: u32) -> Result<Written> {
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(format_args!("setting permissions of {label}"), e))?;
    file.set_modified(system_time(mtime_ns))
        .map_err(|e| io_err(format_args!("setting mtime of {label}"), e))?;
    let md = file.metadata().map_err(|e| io_err(label, e))?;
    Ok(Written {
        size: md.len(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        inode: md.ino(),
        mode: md.mode() & 0o777,
    })
}

fn split_parent(rel: &str) -> (Vec<&str>, &str) {
    match rel.rsplit_once('/') {
        Some((parent, name)) => (parent.split('/').collect(), name),
        None => (Vec::new(), rel),
    }
}

/// The write side of one sync folder: the root's descriptor and the folders opened from it,
/// cached by relative path as descriptors (a later swap of a path for a symlink cannot
/// redirect a descriptor already held).
pub struct WriteRoot {
    root: Dir,
    resolve: Resolve,
    dirs: HashMap<String, Arc<Dir>>,
}

impl WriteRoot {
    /// Opens the sync folder `root` for writing.
    pub fn open(root: &Path) -> Result<WriteRoot> {
        Self::open_with(root, Resolve::Kernel)
    }

    /// As [`WriteRoot::open`], choosing how paths are resolved (tests force [`Resolve::Walk`]).
    pub fn open_with(root: &Path, resolve: Resolve) -> Result<WriteRoot> {
        let root = Dir::open_root(root).map_err(|e| io_err(root.display(), e))?;
        Ok(WriteRoot {
            root,
            resolve,
            dirs: HashMap::new(),
        })
    }

    /// The sync folder itself.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// The folder holding `rel`, opened without following symlinks; created (`mkdirat`) where
    /// missing if `create`. A symlink or file in the way fails.
    pub fn parent(&mut self, rel: &RelPath, create: bool) -> Result<Arc<Dir>> {
        let (parts, _) = split_parent(rel.as_str());
        self.dir(&parts, create)
    }

    fn dir(&mut self, parts: &[&str], create: bool) -> Result<Arc<Dir>> {
        let key = parts.join("/");
        if let Some(d) = self.dirs.get(&key) {
            return Ok(Arc::clone(d));
        }
        let opened = if create {
            self.root.create_dir_all(parts, self.resolve, NEW_DIR_MODE)
        } else {
            self.root.open_path(parts, self.resolve)
        };
        let dir = Arc::new(opened.map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV) => Error::io(
                format!("cannot create {key}"),
                io::Error::other("a file or symlink is in the way"),
            ),
            _ => io_err(format_args!("opening folder {key:?}"), e),
        })?);
        self.dirs.insert(key, Arc::clone(&dir));
        Ok(dir)
    }

    /// Fixes mtime and mode of the existing regular file `rel` on its descriptor (opened
    /// without following symlinks, through folders opened the same way).
    pub fn apply_metadata(&mut self, rel: &RelPath, mtime_ns: i64, mode: u32) -> Result<Written> {
        let dir = self.parent(rel, false)?;
        hook(Stage::TouchParentOpen);
        let (_, name) = split_parent(rel.as_str());
        let file = dir
            .open_file(name, false)
            .map_err(|e| io_err(format_args!("opening {rel}"), e))?;
        let md = file.metadata().map_err(|e| io_err(rel, e))?;
        if !md.is_file() {
            return Err(Error::io(
                rel.to_string(),
                io::Error::other("not a regular file"),
            ));
        }
        set_metadata(&file, rel.as_str(), mtime_ns, mode)
    }

    /// Removes the temp file at `part_rel` (as the scan reported it) if it is a regular file
    /// (or anything but a folder) last modified at least `max_age` ago. `Ok(true)` if removed.
    pub fn remove_stale_part(&mut self, part_rel: &str, max_age: Duration) -> Result<bool> {
        let (parts, name) = split_parent(part_rel);
        if !is_part_name(name) {
            return Ok(false);
        }
        let dir = self.dir(&parts, false)?;
        let st = dir.stat(name).map_err(|e| io_err(part_rel, e))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if now.saturating_sub(st.mtime_s) < max_age.as_secs() as i64 {
            return Ok(false);
        }
        dir.unlink(name).map_err(|e| io_err(part_rel, e))?;
        Ok(true)
    }
}

/// A temp file being filled sequentially, hashing as it goes. It holds its folder's
/// descriptor, so creating, renaming and removing it all happen in that folder.
pub struct PartWriter {
    dir: Arc<Dir>,
    name: String,
    file: File,
    hasher: blake3::Hasher,
    written: u64,
}

impl PartWriter {
    /// Creates the temp file `name` in `dir`, exclusively and `0600`. Whatever was at that
    /// name (a planted hard link or symlink, a stale part) is unlinked first, never written.
    pub fn create(dir: Arc<Dir>, name: &str) -> Result<PartWriter> {
        hook(Stage::ParentOpen);
        let file = match dir.create_new(name, PART_MODE) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                dir.unlink(name)
                    .map_err(|e| io_err(format_args!("removing old {name}"), e))?;
                dir.create_new(name, PART_MODE)
            }
            other => other,
        }
        .map_err(|e| io_err(format_args!("creating {name}"), e))?;
        Ok(PartWriter {
            dir,
            name: name.to_owned(),
            file,
            hasher: blake3::Hasher::new(),
            written: 0,
        })
    }

    /// Reopens the temp file `name` in `dir` if it is a regular file with one link holding
    /// exactly `offset` bytes, hashing what it has. `None` otherwise (anything else at that
    /// name is unlinked, so the caller starts afresh with [`PartWriter::create`]).
    pub fn resume(dir: Arc<Dir>, name: &str, offset: u64) -> Result<Option<PartWriter>> {
        let mut file = match dir.open_file(name, true) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let _ = dir.unlink(name);
                return Ok(None);
            }
            Err(e) => return Err(io_err(format_args!("reopening {name}"), e)),
        };
        let md = file.metadata().map_err(|e| io_err(name, e))?;
        if !md.is_file() || md.nlink() != 1 || md.len() != offset {
            drop(file);
            let _ = dir.unlink(name);
            return Ok(None);
        }
        // Parts left by older versions may be 0644.
        file.set_permissions(std::fs::Permissions::from_mode(PART_MODE))
            .map_err(|e| io_err(name, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| io_err(format_args!("reading {name}"), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        file.seek(SeekFrom::End(0)).map_err(|e| io_err(name, e))?;
        Ok(Some(PartWriter {
            dir,
            name: name.to_owned(),
            file,
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
            .map_err(|e| io_err(format_args!("writing {}", self.name), e))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Removes the temp file.
    pub fn discard(self) {
        let _ = self.dir.unlink(&self.name);
    }

    /// Checks the hash, sets `mode` and mtime on the descriptor, and renames the temp file onto
    /// `target` (a name in the same folder). With `replace` false, the target must not exist:
    /// the rename refuses atomically (`RENAME_NOREPLACE`) if anything appeared there.
    pub fn finish(
        self,
        expected: &Hash,
        mtime_ns: i64,
        mode: u32,
        target: &str,
        replace: bool,
    ) -> Result<Written, FinishError> {
        if Hash(*self.hasher.finalize().as_bytes()) != *expected {
            self.discard();
            return Err(FinishError::HashMismatch);
        }
        let mut taken = false;
        let result = (|| {
            let written = set_metadata(&self.file, target, mtime_ns, mode)?;
            hook(Stage::Verified);
            let renamed = if replace {
                self.dir.rename(&self.name, target)
            } else {
                self.dir.rename_noreplace(&self.name, &self.dir, target)
            };
            // rename(2) never replaces a folder with a file: EISDIR (or ENOTEMPTY/EEXIST).
            match renamed {
                Ok(()) => Ok(written),
                Err(e) if !replace && e.raw_os_error() == Some(libc::EEXIST) => {
                    taken = true;
                    Err(io_err(target, e))
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST)
                    ) =>
                {
                    Err(Error::io(
                        format!("cannot replace {target}"),
                        io::Error::other("a folder is in the way"),
                    ))
                }
                Err(e) => Err(io_err(format_args!("renaming onto {target}"), e)),
            }
        })();
        if result.is_err() {
            let _ = self.dir.unlink(&self.name);
        }
        result.map_err(|e| {
            if taken {
                FinishError::Taken
            } else {
                FinishError::Other(e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    const BOTH: [Resolve; 2] = [Resolve::Kernel, Resolve::Walk];

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    fn hash(data: &[u8]) -> Hash {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// Writes `rel` with `content` the way a pull does: parent, temp file, verify, rename.
    fn write_file(
        wr: &mut WriteRoot,
        path: &str,
        content: &[u8],
        mtime_ns: i64,
        mode: u32,
    ) -> Result<Written> {
        let rel = rel(path);
        let h = hash(content);
        let dir = wr.parent(&rel, true)?;
        let mut w = PartWriter::create(dir, &part_name(&rel, &h))?;
        w.write(content)?;
        let name = path.rsplit('/').next().unwrap();
        w.finish(&h, mtime_ns, mode, name, true)
            .map_err(|e| match e {
                FinishError::HashMismatch => Error::Store("hash mismatch".into()),
                FinishError::Taken => Error::Store("target taken".into()),
                FinishError::Other(e) => e,
            })
    }

    fn set_hook(f: impl FnMut(Stage) + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    fn clear_hook() {
        HOOK.with(|h| *h.borrow_mut() = None);
    }

    /// (mode, mtime_ns, content) of a file.
    fn snapshot(p: &Path) -> (u32, i64, Vec<u8>) {
        let md = std::fs::symlink_metadata(p).unwrap();
        (
            md.mode() & 0o7777,
            md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            std::fs::read(p).unwrap(),
        )
    }

    /// A local process swaps `root/sub` for a symlink to an outside folder at each step a
    /// write goes through (and before it starts): nothing is created, renamed, chmod-ed or
    /// touched outside, whichever way paths are resolved.
    #[test]
    fn a_folder_swapped_for_a_symlink_never_redirects_a_write() {
        // (stage the swap happens at (None: before the write starts), what is done)
        let table: &[(Option<Stage>, &str)] = &[
            (None, "write"),
            (None, "touch"),
            (Some(Stage::ParentOpen), "write"),
            (Some(Stage::Verified), "write"),
            (Some(Stage::TouchParentOpen), "touch"),
        ];
        for resolve in BOTH {
            for &(stage, action) in table {
                let case = format!("{resolve:?} {stage:?} {action}");
                let base = tempfile::tempdir().unwrap();
                let (root, outside) = (base.path().join("root"), base.path().join("outside"));
                std::fs::create_dir_all(root.join("sub")).unwrap();
                std::fs::create_dir_all(&outside).unwrap();
                let victim = outside.join("f");
                std::fs::write(&victim, b"outside").unwrap();
                std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
                std::fs::write(root.join("sub/f"), b"inside").unwrap();
                let before = snapshot(&victim);

                let swap = {
                    let (root, outside) = (root.clone(), outside.clone());
                    move || {
                        std::fs::rename(root.join("sub"), root.join("sub.moved")).unwrap();
                        symlink(&outside, root.join("sub")).unwrap();
                    }
                };
                let mut wr = WriteRoot::open_with(&root, resolve).unwrap();
                match stage {
                    None => swap(),
                    Some(at) => {
                        let mut swap = Some(swap);
                        set_hook(move |s| {
                            if s == at {
                                if let Some(f) = swap.take() {
                                    f()
                                }
                            }
                        })
                    }
                }
                let result = match action {
                    "write" => write_file(&mut wr, "sub/f", b"server", 1_000_000_000, 0o755),
                    _ => wr.apply_metadata(&rel("sub/f"), 1_000_000_000, 0o755),
                };
                clear_hook();
                assert_eq!(
                    snapshot(&victim),
                    before,
                    "{case}: the outside file changed"
                );
                let outside_names: Vec<_> = std::fs::read_dir(&outside)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                assert_eq!(outside_names, ["f"], "{case}: something appeared outside");
                match stage {
                    None => assert!(result.is_err(), "{case}: went through the symlink"),
                    Some(_) => {
                        // The descriptor held on to the real folder, now at sub.moved.
                        let w = result.unwrap_or_else(|e| panic!("{case}: {e}"));
                        let landed = root.join("sub.moved/f");
                        assert_eq!(snapshot(&landed).0, 0o755, "{case}");
                        assert_eq!(w.mtime_ns, 1_000_000_000, "{case}");
                        if action == "write" {
                            assert_eq!(std::fs::read(&landed).unwrap(), b"server", "{case}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn parent_dirs_never_pass_through_a_symlink_or_a_file() {
        for resolve in BOTH {
            let dir = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            symlink(outside.path(), dir.path().join("evil")).unwrap();
            std::fs::write(dir.path().join("file"), b"x").unwrap();
            let mut wr = WriteRoot::open_with(dir.path(), resolve).unwrap();
            for bad in ["evil/x/file", "evil/file", "file/x/y"] {
                assert!(wr.parent(&rel(bad), true).is_err(), "{resolve:?} {bad}");
            }
            assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
            wr.parent(&rel("good/x/file"), true).unwrap();
            assert!(dir.path().join("good/x").is_dir());
        }
    }

    /// A hard link (or symlink) planted at the temp name, pointing outside the folder: neither
    /// a fresh transfer nor a resume writes through it.
    #[test]
    fn a_link_planted_at_the_temp_name_is_never_written_through() {
        for (kind, resume) in [
            ("hard", false),
            ("hard", true),
            ("sym", false),
            ("sym", true),
        ] {
            let base = tempfile::tempdir().unwrap();
            let root = base.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let secret = base.path().join("secret");
            std::fs::write(&secret, b"outside").unwrap();
            let content = b"from the server";
            let h = hash(content);
            let name = part_name(&rel("f"), &h);
            if kind == "hard" {
                std::fs::hard_link(&secret, root.join(&name)).unwrap();
            } else {
                symlink(&secret, root.join(&name)).unwrap();
            }
            let mut wr = WriteRoot::open(&root).unwrap();
            let dir = wr.parent(&rel("f"), true).unwrap();
            if resume {
                let r = PartWriter::resume(Arc::clone(&dir), &name, 7).unwrap();
                assert!(r.is_none(), "{kind} link resumed");
                assert!(std::fs::symlink_metadata(root.join(&name)).is_err());
            }
            let mut w = PartWriter::create(dir, &name).unwrap();
            w.write(content).unwrap();
            w.finish(&h, 0, 0o644, "f", true).unwrap();
            assert_eq!(
                std::fs::read(&secret).unwrap(),
                b"outside",
                "{kind} {resume}"
            );
            assert_eq!(std::fs::read(root.join("f")).unwrap(), content);
        }
    }

    /// A new file's rename never replaces what appeared at its name meanwhile (a file, a
    /// symlink, a folder): it is refused, the temp file removed, what is there untouched.
    #[test]
    fn a_new_file_never_replaces_what_appeared_at_its_name() {
        type Plant = fn(&Path);
        let table: &[(&str, Plant)] = &[
            ("file", |p| std::fs::write(p, b"mine").unwrap()),
            ("symlink", |p| symlink("elsewhere", p).unwrap()),
            ("folder", |p| std::fs::create_dir(p).unwrap()),
        ];
        for (case, plant) in table {
            let dir = tempfile::tempdir().unwrap();
            let mut wr = WriteRoot::open(dir.path()).unwrap();
            let h = hash(b"theirs");
            let name = part_name(&rel("f"), &h);
            let mut w = PartWriter::create(wr.parent(&rel("f"), true).unwrap(), &name).unwrap();
            w.write(b"theirs").unwrap();
            let target = dir.path().join("f");
            plant(&target);
            let before = std::fs::symlink_metadata(&target).unwrap();
            assert!(
                matches!(w.finish(&h, 0, 0o644, "f", false), Err(FinishError::Taken)),
                "{case}"
            );
            let after = std::fs::symlink_metadata(&target).unwrap();
            assert_eq!(before.ino(), after.ino(), "{case}: untouched");
            assert!(
                !dir.path().join(&name).exists(),
                "{case}: temp file removed"
            );
        }
    }

    #[test]
    fn temp_files_are_0600_while_filling_and_get_their_mode_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let mut wr = WriteRoot::open(dir.path()).unwrap();
        let h = hash(b"hello");
        let name = part_name(&rel("f"), &h);
        let mut w = PartWriter::create(wr.parent(&rel("f"), true).unwrap(), &name).unwrap();
        w.write(b"hel").unwrap();
        let part = dir.path().join(&name);
        assert_eq!(snapshot(&part).0, 0o600, "while filling");
        drop(w);
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dir_fd = wr.parent(&rel("f"), true).unwrap();
        let mut w = PartWriter::resume(dir_fd, &name, 3).unwrap().unwrap();
        assert_eq!(snapshot(&part).0, 0o600, "a resumed part is narrowed again");
        w.write(b"lo").unwrap();
        let seen = std::rc::Rc::new(std::cell::Cell::new(0));
        let (seen2, part2) = (std::rc::Rc::clone(&seen), part.clone());
        set_hook(move |s| {
            if s == Stage::Verified {
                seen2.set(snapshot(&part2).0)
            }
        });
        let written = w.finish(&h, 0, 0o640, "f", true);
        clear_hook();
        assert_eq!(written.unwrap().mode, 0o640);
        assert_eq!(seen.get(), 0o640, "the final mode is set before the rename");
        assert_eq!(snapshot(&dir.path().join("f")).0, 0o640);
    }

    #[test]
    fn local_mode_is_the_source_mode_narrowed_by_the_umask_without_special_bits() {
        let u = umask();
        for src in [
            0o600, 0o644, 0o755, 0o777, 0o4755, 0o2700, 0o1777, 0o7777, 0,
        ] {
            let m = local_mode(src);
            assert_eq!(m, src & 0o777 & !u, "{src:o}");
            assert_eq!(m & !src, 0, "{src:o}: wider than the source");
        }
    }

    #[test]
    fn finish_checks_hash_and_renames_atomically() {
        for resolve in BOTH {
            let dir = tempfile::tempdir().unwrap();
            let mut wr = WriteRoot::open_with(dir.path(), resolve).unwrap();
            let good = hash(b"hello");
            let name = part_name(&rel("a/f"), &good);
            let part: PathBuf = dir.path().join("a").join(&name);
            let target = dir.path().join("a/f");
            let d = wr.parent(&rel("a/f"), true).unwrap();

            let mut w = PartWriter::create(Arc::clone(&d), &name).unwrap();
            w.write(b"hellx").unwrap();
            assert!(matches!(
                w.finish(&good, 0, 0o644, "f", true),
                Err(FinishError::HashMismatch)
            ));
            assert!(!target.exists() && !part.exists(), "nothing left");

            let mut w = PartWriter::create(Arc::clone(&d), &name).unwrap();
            w.write(b"hel").unwrap();
            drop(w);
            assert!(
                PartWriter::resume(Arc::clone(&d), &name, 2)
                    .unwrap()
                    .is_none(),
                "wrong length is not resumed"
            );
            let mut w = PartWriter::create(Arc::clone(&d), &name).unwrap();
            w.write(b"hel").unwrap();
            drop(w);
            let mut w = PartWriter::resume(Arc::clone(&d), &name, 3)
                .unwrap()
                .expect("resumable");
            w.write(b"lo").unwrap();
            let written = w
                .finish(&good, 1_500_000_000_123_456_789, 0o755, "f", true)
                .unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"hello");
            assert_eq!(written.mtime_ns, 1_500_000_000_123_456_789);
            assert_eq!(snapshot(&target).0, 0o755);
            assert!(!part.exists());
        }
    }

    #[test]
    fn a_folder_in_the_way_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let h = hash(b"file");
        let target = dir.path().join("d");
        for keep in ["", "kept.txt"] {
            std::fs::create_dir_all(&target).unwrap();
            if !keep.is_empty() {
                std::fs::write(target.join(keep), b"mine").unwrap();
            }
            let mut wr = WriteRoot::open(dir.path()).unwrap();
            let name = part_name(&rel("d"), &h);
            let mut w = PartWriter::create(wr.parent(&rel("d"), true).unwrap(), &name).unwrap();
            w.write(b"file").unwrap();
            match w.finish(&h, 0, 0o644, "d", true) {
                Err(FinishError::Other(e)) => {
                    assert!(e.to_string().contains("folder is in the way"), "{e}")
                }
                other => panic!("replaced a folder ({keep:?}): {:?}", other.is_ok()),
            }
            assert!(target.is_dir() && !dir.path().join(&name).exists());
            if !keep.is_empty() {
                assert_eq!(std::fs::read(target.join(keep)).unwrap(), b"mine");
            }
        }
    }

    #[test]
    fn stale_parts_are_removed_by_descriptor_only_when_old_enough() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let name = format!("{PART_PREFIX}abc");
        std::fs::write(root.join("sub").join(&name), b"x").unwrap();
        std::fs::write(outside.join(&name), b"x").unwrap();
        symlink(&outside, root.join("link")).unwrap();
        let mut wr = WriteRoot::open(&root).unwrap();
        let day = Duration::from_secs(86_400);
        assert!(!wr.remove_stale_part(&format!("sub/{name}"), day).unwrap());
        assert!(wr
            .remove_stale_part(&format!("link/{name}"), Duration::ZERO)
            .is_err());
        assert!(!wr
            .remove_stale_part("sub/not-a-part", Duration::ZERO)
            .unwrap());
        assert!(wr
            .remove_stale_part(&format!("sub/{name}"), Duration::ZERO)
            .unwrap());
        assert!(!root.join("sub").join(&name).exists());
        assert!(outside.join(&name).exists(), "never through a symlink");
    }
}
