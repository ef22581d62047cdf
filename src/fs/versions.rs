//! The versions archive, so that nothing sync removes is gone: a file or symlink about to be
//! deleted or overwritten because of a remote change is first moved (`renameat`, never
//! copied) to `.ssp/versions/<its folders>/<stem>~YYYYMMDD-HHMMSS.<ext>` (Syncthing's simple
//! versioning names, UTC time of archiving; `-1`, `-2`... on a clash), from where it can be
//! listed, restored and, after the keep time, pruned.
//!
//! Every access goes through descriptors: `.ssp`, `versions` and each folder below are opened
//! with `O_NOFOLLOW` (or `openat2(RESOLVE_NO_SYMLINKS)`), so a symlink planted anywhere in the
//! archive is never followed; an archived symlink is listed and restored as a link.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dir::{Dir, EntryStat, Resolve};
use super::{RelPath, METADATA_DIR, NEW_DIR_MODE, PART_PREFIX};
use crate::error::{Error, Result};

/// The archive's folder inside the metadata folder.
pub const VERSIONS_DIR: &str = "versions";

/// Mode of every folder of the archive (and of `.ssp` if the archive creates it): old
/// versions are as private as the index.
pub const VERSIONS_DIR_MODE: u32 = 0o700;

/// How long versions are kept unless configured otherwise.
pub const DEFAULT_VERSIONS_KEEP_DAYS: u64 = 30;

/// Most clash suffixes tried for one name and second before giving up (a bound, not a limit
/// anyone meets: it takes that many archivings of one path within one second).
const MAX_CLASH_SUFFIX: u32 = 10_000;

/// One archived version of a file or symlink.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Version {
    /// The path it had in the folder (relative to the root).
    pub path: String,
    /// Where it is stored, relative to `.ssp/versions`.
    pub stored: String,
    /// When it was archived (from its name: whole seconds), in ns since the epoch.
    pub archived_ns: i64,
    /// Its size in bytes (a symlink's: the target's length).
    pub size: u64,
    /// Its own modification time (kept by the move), in ns since the epoch.
    pub mtime_ns: i64,
}

/// The versions archive of one folder.
#[derive(Debug)]
pub struct Versions {
    /// The sync root: `.ssp` is opened from it, and restores write below it.
    root: Dir,
    /// `.ssp/versions`, opened (created if need be) by the first archive and kept, since a
    /// sync archives many files.
    dir: Option<Dir>,
}

/// An entry of an archive folder whose name parses as a version.
struct Found {
    version: Version,
    /// The clash suffix (0 for none): orders versions archived within one second.
    clash: u32,
    /// The stored file's name in its folder.
    name: String,
}

impl Versions {
    /// The archive of the folder whose root is `root`. Opens nothing yet: a folder that never
    /// archives anything gets no `.ssp/versions`.
    pub fn open(root: &Dir) -> io::Result<Versions> {
        Ok(Versions {
            root: root.try_clone()?,
            dir: None,
        })
    }

    /// Moves `name` in `parent` (the open folder of `rel`, whose last component `name` must be)
    /// into the archive, returning where it went (relative to `.ssp/versions`); `Ok(None)` if
    /// nothing was there. A folder is not archived (an error). Fails rather than copies when
    /// the archive is on another file system (EXDEV) or the archived name would be too long:
    /// the caller must then not remove the file.
    pub fn archive(
        &mut self,
        parent: &Dir,
        name: &str,
        rel: &RelPath,
        now: SystemTime,
    ) -> io::Result<Option<String>> {
        self.keep(parent, name, rel, now, false)
    }

    /// As [`Versions::archive`], but keeps the file where it is too (a hard link into the
    /// archive): called just before the file is replaced by a rename, so its path holds the old
    /// or the new content at every moment.
    pub fn preserve(
        &mut self,
        parent: &Dir,
        name: &str,
        rel: &RelPath,
        now: SystemTime,
    ) -> io::Result<Option<String>> {
        self.keep(parent, name, rel, now, true)
    }

    fn keep(
        &mut self,
        parent: &Dir,
        name: &str,
        rel: &RelPath,
        now: SystemTime,
        link: bool,
    ) -> io::Result<Option<String>> {
        if rel.file_name() != name {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not the file name of {rel}"),
            ));
        }
        self.keep_entry(parent, name, rel, now, link)
    }

    /// Keeps the entry `name` of `parent` as a version of `rel` (whose file name it need not
    /// have: a file swapped out to a temp name).
    fn keep_entry(
        &mut self,
        parent: &Dir,
        name: &str,
        rel: &RelPath,
        now: SystemTime,
        link: bool,
    ) -> io::Result<Option<String>> {
        let st = match parent.stat(name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        if st.is_dir {
            return Err(io::Error::other(format!(
                "{rel} is a folder; folders are not archived"
            )));
        }
        let folders: Vec<&str> = rel.parent_components().collect();
        let into = make_dirs(self.versions_dir()?, &folders)?;
        let stamp = format_utc_stamp(unix_secs(now));
        for clash in 0..=MAX_CLASH_SUFFIX {
            let stored_name = version_name(rel.file_name(), &stamp, clash);
            let kept = if link {
                parent.link_to(name, &into, &stored_name)
            } else {
                parent.rename_noreplace(name, &into, &stored_name)
            };
            match kept {
                Ok(()) => return Ok(Some(join(&folders.join("/"), &stored_name))),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                // Gone since the stat: nothing left to keep.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "more than {MAX_CLASH_SUFFIX} versions of {rel} archived within one second"
        )))
    }

    /// The versions of `rel` (all versions when `None`), newest first.
    pub fn list(&self, rel: Option<&RelPath>) -> io::Result<Vec<Version>> {
        let Some(versions) = self.existing_versions_dir()? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        match rel {
            Some(rel) => {
                let folders: Vec<&str> = rel.parent_components().collect();
                let dir = match versions.open_path(&folders, Resolve::Kernel) {
                    Ok(d) => d,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                        return Ok(Vec::new())
                    }
                    Err(e) => return Err(e),
                };
                let folder = folders.join("/");
                for (name, st) in files_in(&dir)? {
                    if let Some(f) = parse_found(&folder, &name, &st) {
                        if f.version.path == rel.as_str() {
                            found.push(f);
                        }
                    }
                }
            }
            None => {
                walk(&versions, |folder, _, files| {
                    found.extend(
                        files
                            .iter()
                            .filter_map(|(name, st)| parse_found(folder, name, st)),
                    );
                    Ok(())
                })?;
            }
        }
        sort_newest_first(&mut found);
        Ok(found.into_iter().map(|f| f.version).collect())
    }

    /// Puts version `at` (the newest archived at or before it; the newest if `None`) back at
    /// `rel` and returns it. The copy is written to a temp file beside `rel` and gets the
    /// version's content (or link target), mode and mtime; then whatever is at `rel` is
    /// archived and the copy renamed onto it. The version stays in the archive.
    pub fn restore(
        &mut self,
        rel: &RelPath,
        at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Version> {
        let ctx = |what: &str| format!("restoring {rel}: {what}");
        let listed = self
            .list(Some(rel))
            .map_err(|e| Error::io(ctx("listing its versions"), e))?;
        let at_ns = at.map(|t| unix_secs(t).saturating_mul(1_000_000_000));
        let Some(version) = listed
            .into_iter()
            .find(|v| at_ns.map_or(true, |t| v.archived_ns <= t))
        else {
            let when = match at {
                Some(t) => format!(" archived at or before {}", format_utc_stamp(unix_secs(t))),
                None => String::new(),
            };
            return Err(Error::io(
                format!("no version of {rel}{when}"),
                io::Error::from(io::ErrorKind::NotFound),
            ));
        };
        let folders: Vec<&str> = rel.parent_components().collect();
        let versions = self
            .versions_dir()
            .map_err(|e| Error::io(ctx("opening the archive"), e))?;
        let (stored_folder, stored_name) = split_last(&version.stored);
        let from = versions
            .open_path(&split_parts(stored_folder), Resolve::Kernel)
            .map_err(|e| Error::io(ctx("opening its version's folder"), e))?;
        let parent = self
            .root
            .create_dir_all(&folders, Resolve::Kernel, NEW_DIR_MODE)
            .map_err(|e| Error::io(ctx("opening its folder"), e))?;
        let temp = temp_name();
        copy_version(&from, stored_name, &parent, &temp)
            .map_err(|e| Error::io(ctx("copying the version"), e))?;
        let placed = self.replace_with(&parent, &temp, &parent, rel, now);
        if placed.is_err() {
            let _ = parent.unlink(&temp);
        }
        placed.map_err(|e| Error::io(ctx("putting it in place"), e))?;
        Ok(version)
    }

    /// Puts `from` (an entry of `from_dir`) at `rel` (in `parent`, its folder), archiving what
    /// was there, without ever replacing something that appeared in between unarchived.
    pub fn replace_with(
        &mut self,
        from_dir: &Dir,
        temp: &str,
        parent: &Dir,
        rel: &RelPath,
        now: SystemTime,
    ) -> io::Result<()> {
        let name = rel.file_name();
        // Swapped in at once where the system can: the path holds the old or the restored
        // content at every moment, and whatever was there at that instant (at `temp` now) is
        // archived, so nothing that appeared meanwhile is replaced unarchived.
        match parent.stat(name) {
            Ok(st) if st.is_dir => {
                return Err(io::Error::other(format!(
                    "{rel} is a folder; folders are not archived"
                )))
            }
            Ok(_) => match from_dir.rename_exchange(temp, parent, name) {
                Ok(()) => {
                    return match self.keep_entry(from_dir, temp, rel, now, false) {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            // Not kept: swapped back, so nothing is lost.
                            let _ = from_dir.rename_exchange(temp, parent, name);
                            Err(e)
                        }
                    };
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Unsupported | io::ErrorKind::NotFound
                    ) => {}
                Err(e) => return Err(e),
            },
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        for _ in 0..3 {
            self.archive(parent, name, rel, now)?;
            match from_dir.rename_noreplace(temp, parent, name) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                other => return other,
            }
        }
        Err(io::Error::other(format!(
            "{rel} keeps being recreated while it is restored"
        )))
    }

    /// Deletes the versions archived before `now - keep` and the folders that leaves empty;
    /// returns how many versions it deleted.
    pub fn prune(&mut self, keep: Duration, now: SystemTime) -> io::Result<usize> {
        let Some(versions) = self.existing_versions_dir()? else {
            return Ok(0);
        };
        let keep_s = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
        let cutoff_ns = unix_secs(now)
            .saturating_sub(keep_s)
            .saturating_mul(1_000_000_000);
        let mut removed = 0;
        let folders = walk(&versions, |folder, dir, files| {
            for (name, st) in files {
                match parse_found(folder, name, st) {
                    Some(f) if f.version.archived_ns < cutoff_ns => match dir.unlink(name) {
                        Ok(()) => removed += 1,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(e) => return Err(e),
                    },
                    _ => {}
                }
            }
            Ok(())
        })?;
        // Deepest first (the walk lists a folder before its subfolders), so a parent emptied by
        // removing its children goes too; a folder still holding something stays.
        for folder in folders.iter().rev() {
            let (up, name) = split_last(folder);
            let removed_dir = versions
                .open_path(&split_parts(up), Resolve::Kernel)
                .and_then(|d| d.remove_dir(name));
            match removed_dir {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOENT | libc::ENOTDIR)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// `.ssp/versions`, opened once and created (0700) where missing.
    fn versions_dir(&mut self) -> io::Result<&Dir> {
        let dir = match self.dir.take() {
            Some(d) => d,
            None => make_dirs(&make_dirs(&self.root, &[METADATA_DIR])?, &[VERSIONS_DIR])?,
        };
        Ok(self.dir.insert(dir))
    }

    /// `.ssp/versions` if it exists (reading never creates it).
    fn existing_versions_dir(&self) -> io::Result<Option<Dir>> {
        if let Some(d) = &self.dir {
            return d.try_clone().map(Some);
        }
        match self
            .root
            .open_path(&[METADATA_DIR, VERSIONS_DIR], Resolve::Kernel)
        {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Opens the folders `parts` below `dir`, creating the missing ones with exactly
/// [`VERSIONS_DIR_MODE`] (set on the descriptor: the umask does not narrow it further).
/// A symlink or a file in the way fails (ELOOP, ENOTDIR), never followed.
fn make_dirs(dir: &Dir, parts: &[&str]) -> io::Result<Dir> {
    let mut dir = dir.try_clone()?;
    for part in parts {
        dir = match dir.open_dir(part) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                dir.mkdir(part, VERSIONS_DIR_MODE)?;
                let made = dir.open_dir(part)?;
                made.set_mode(VERSIONS_DIR_MODE)?;
                made
            }
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

/// The non-folder entries of `dir` with their `lstat`, names that are not UTF-8 left out (the
/// archive only makes names from UTF-8 paths).
fn files_in(dir: &Dir) -> io::Result<Vec<(String, EntryStat)>> {
    let mut files = Vec::new();
    for name in dir.entries()? {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match dir.stat(&name) {
            Ok(st) if !st.is_dir => files.push((name, st)),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(files)
}

/// Calls `each(folder, its descriptor, its non-folder entries)` for every folder of the
/// archive (`""` for the top), opening each from `versions` without following symlinks (a
/// folder swapped for a symlink meanwhile is skipped). Iterative, so a deep tree holds one
/// descriptor at a time. Returns the folders below the top, each before its subfolders.
fn walk(
    versions: &Dir,
    mut each: impl FnMut(&str, &Dir, &[(String, EntryStat)]) -> io::Result<()>,
) -> io::Result<Vec<String>> {
    let mut seen = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(folder) = pending.pop() {
        let dir = match versions.open_path(&split_parts(&folder), Resolve::Kernel) {
            Ok(d) => d,
            Err(e)
                if !folder.is_empty()
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)
                    ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for name in dir.entries()? {
            let Ok(name) = name.into_string() else {
                continue;
            };
            match dir.stat(&name) {
                Ok(st) if st.is_dir => pending.push(join(&folder, &name)),
                Ok(st) => files.push((name, st)),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        each(&folder, &dir, &files)?;
        if !folder.is_empty() {
            seen.push(folder);
        }
    }
    Ok(seen)
}

/// The version stored as `name` in the archive folder `folder`, if it is a file or symlink
/// whose name parses.
fn parse_found(folder: &str, name: &str, st: &EntryStat) -> Option<Found> {
    if !(st.is_file || st.is_symlink) {
        return None;
    }
    let (original, secs, clash) = parse_version_name(name)?;
    Some(Found {
        version: Version {
            path: join(folder, &original),
            stored: join(folder, name),
            archived_ns: secs.saturating_mul(1_000_000_000),
            size: st.len,
            mtime_ns: st.mtime_ns,
        },
        clash,
        name: name.to_owned(),
    })
}

/// Newest first: by archiving time, then by clash suffix (a higher suffix was archived
/// later), then by name so the order is total.
fn sort_newest_first(found: &mut [Found]) {
    found.sort_by(|a, b| {
        (b.version.archived_ns, b.clash, &b.version.path, &b.name).cmp(&(
            a.version.archived_ns,
            a.clash,
            &a.version.path,
            &a.name,
        ))
    });
}

/// Copies the stored version `name` in `from` to the new `temp` in `to`: a regular file with
/// its content, permission bits and mtime, or a symlink with its target and mtime.
fn copy_version(from: &Dir, name: &str, to: &Dir, temp: &str) -> io::Result<()> {
    let st = from.stat(name)?;
    if st.is_symlink {
        let target = from.read_link(name)?;
        to.symlink(&target, temp)?;
        let timed = to.set_mtime_nofollow(temp, st.mtime_ns);
        if timed.is_err() {
            let _ = to.unlink(temp);
        }
        return timed;
    }
    let mut src = from.open_file(name, false)?;
    let md = src.metadata()?;
    if !md.is_file() {
        return Err(io::Error::other("the stored version is not a regular file"));
    }
    let mut dst = to.create_new(temp, super::PART_MODE)?;
    let copied = (|| {
        io::copy(&mut src, &mut dst)?;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        dst.set_permissions(std::fs::Permissions::from_mode(md.mode() & 0o777))?;
        dst.set_modified(system_time(md.mtime() * 1_000_000_000 + md.mtime_nsec()))?;
        dst.sync_all()
    })();
    if copied.is_err() {
        let _ = to.unlink(temp);
    }
    copied
}

/// A fresh temp-file name for a restore: a temp-file name (so scans skip it and stale-part
/// cleanup removes it if we die), random so two restores never meet.
fn temp_name() -> String {
    let mut b = [0u8; 8];
    // A fixed name would only risk meeting a leftover, which `create_new` refuses.
    let _ = getrandom::fill(&mut b);
    format!("{PART_PREFIX}restore-{}", hex::encode(b))
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Whole seconds since the epoch (negative before it).
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

fn split_last(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn split_parts(folder: &str) -> Vec<&str> {
    folder.split('/').filter(|p| !p.is_empty()).collect()
}

/// `name` split at its extension's dot, as `Path::extension` does: the last dot, unless it
/// starts the name (`.bashrc` has no extension).
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    }
}

/// The archived name of `name`: `<stem>~<stamp>[-<clash>]<.ext>`.
fn version_name(name: &str, stamp: &str, clash: u32) -> String {
    let (stem, ext) = split_ext(name);
    if clash == 0 {
        format!("{stem}~{stamp}{ext}")
    } else {
        format!("{stem}~{stamp}-{clash}{ext}")
    }
}

/// `(original name, archived at in seconds, clash suffix)` of an archived name, if it is one
/// [`version_name`] makes (checked by making it again, so odd names cannot parse two ways).
fn parse_version_name(stored: &str) -> Option<(String, i64, u32)> {
    let (before_ext, ext) = split_ext(stored);
    // The extension is split off first; a name with none has its tag at the end.
    for (tagged, ext) in [(before_ext, ext), (stored, "")] {
        let Some((stem, tag)) = tagged.rsplit_once('~') else {
            continue;
        };
        let (stamp, clash) = match tag.get(15..) {
            Some("") => (tag, 0),
            Some(rest) => match rest.strip_prefix('-').and_then(|n| n.parse::<u32>().ok()) {
                Some(n) if n > 0 => (&tag[..15], n),
                _ => continue,
            },
            None => continue,
        };
        let Some(secs) = parse_utc_stamp(stamp) else {
            continue;
        };
        let original = format!("{stem}{ext}");
        if !stem.is_empty() && version_name(&original, stamp, clash) == stored {
            return Some((original, secs, clash));
        }
    }
    None
}

/// Latest second a four-digit year can name (9999-12-31 23:59:59 UTC).
const MAX_STAMP_SECS: i64 = 253_402_300_799;

/// `secs` since the epoch as `YYYYMMDD-HHMMSS` in UTC (the time format of version and
/// conflict names), clamped to years 1970..=9999 so it always has that shape.
pub fn format_utc_stamp(secs: i64) -> String {
    let secs = secs.clamp(0, MAX_STAMP_SECS);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The seconds since the epoch a `YYYYMMDD-HHMMSS` UTC stamp names; `None` unless it has
/// exactly that shape and is a real date and time.
pub fn parse_utc_stamp(stamp: &str) -> Option<i64> {
    let b = stamp.as_bytes();
    if b.len() != 15 || b[8] != b'-' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = &stamp[range];
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())
            .flatten()
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || d < 1 || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // A day past the month's end comes back as another date.
    if civil_from_days(days) != (y, m, d) {
        return None;
    }
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day count since 1970-01-01 of a proleptic Gregorian date (inverse of
/// [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::Path;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    /// 2024-02-29 12:34:56 UTC.
    const LEAP_DAY: i64 = 1_709_210_096;

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    fn open(root: &Path) -> (Dir, Versions) {
        let dir = Dir::open_root(root).unwrap();
        let v = Versions::open(&dir).unwrap();
        (dir, v)
    }

    /// Archives `path` (relative to `root`) through its parent's descriptor.
    fn archive(v: &mut Versions, root: &Dir, path: &str, now: SystemTime) -> Option<String> {
        let r = rel(path);
        let folders: Vec<&str> = r.parent_components().collect();
        let parent = root.open_path(&folders, Resolve::Kernel).unwrap();
        v.archive(&parent, r.file_name(), &r, now).unwrap()
    }

    fn write(path: &Path, content: &[u8], mode: u32, mtime_ns: i64) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .unwrap();
        f.set_modified(system_time(mtime_ns)).unwrap();
    }

    fn mode_mtime(path: &Path) -> (u32, i64) {
        let md = std::fs::symlink_metadata(path).unwrap();
        (
            md.mode() & 0o7777,
            md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        )
    }

    #[test]
    fn stamps_table() {
        // (seconds since the epoch, stamp)
        let table = [
            (0, "19700101-000000"),
            (LEAP_DAY, "20240229-123456"),
            (951_782_400, "20000229-000000"),
            (1_735_689_599, "20241231-235959"),
            (1_735_689_600, "20250101-000000"),
            (4_107_542_400, "21000301-000000"),
            (MAX_STAMP_SECS, "99991231-235959"),
        ];
        for (secs, stamp) in table {
            assert_eq!(format_utc_stamp(secs), stamp, "{secs}");
            assert_eq!(parse_utc_stamp(stamp), Some(secs), "{stamp}");
        }
        assert_eq!(format_utc_stamp(-5), "19700101-000000", "clamped");
        assert_eq!(format_utc_stamp(i64::MAX), "99991231-235959", "clamped");
        for bad in [
            "20230229-000000", // not a leap year
            "21000229-000000", // nor is 2100
            "20240431-000000",
            "20241301-000000",
            "20240001-000000",
            "20240100-000000",
            "20240101-240000",
            "20240101-006000",
            "20240101-000060",
            "20240101000000",
            "2024-0101-00000",
            "20240101-00000a",
            "+2024101-000000",
            "20240101-0000000",
            "",
        ] {
            assert_eq!(parse_utc_stamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn version_names_table() {
        // (original, clash, archived name)
        let table = [
            ("report.txt", 0, "report~20240229-123456.txt"),
            ("report.txt", 2, "report~20240229-123456-2.txt"),
            ("archive.tar.gz", 0, "archive.tar~20240229-123456.gz"),
            ("Makefile", 0, "Makefile~20240229-123456"),
            ("Makefile", 1, "Makefile~20240229-123456-1"),
            (".bashrc", 0, ".bashrc~20240229-123456"),
            (".config.json", 0, ".config~20240229-123456.json"),
            ("trailing.", 0, "trailing~20240229-123456."),
            ("a~b.txt", 0, "a~b~20240229-123456.txt"),
            // A name that already looks archived is archived again, and still parses back.
            (
                "x~20200101-000000.txt",
                0,
                "x~20200101-000000~20240229-123456.txt",
            ),
            (
                "x~20200101-000000",
                3,
                "x~20200101-000000~20240229-123456-3",
            ),
        ];
        let stamp = format_utc_stamp(LEAP_DAY);
        for (original, clash, stored) in table {
            assert_eq!(version_name(original, &stamp, clash), stored);
            assert_eq!(
                parse_version_name(stored),
                Some((original.to_owned(), LEAP_DAY, clash)),
                "{stored}"
            );
        }
        for not_a_version in [
            "plain.txt",
            "~20240229-123456.txt",
            "x~20240229-123456-0.txt",
            "x~20240229-123456-01.txt",
            "x~20240229-123456-a.txt",
            "x~20240230-123456.txt",
            "x~2024022-123456.txt",
            "x~20240229-123456x",
        ] {
            assert_eq!(parse_version_name(not_a_version), None, "{not_a_version}");
        }
    }

    #[test]
    fn archive_list_restore_round_trip_keeps_content_mode_and_mtime() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        let mtime = 1_500_000_000_123_456_789;
        write(&root.join("a/b/doc.txt"), b"first", 0o640, mtime);
        let (dir, mut v) = open(root);

        let stored = archive(&mut v, &dir, "a/b/doc.txt", at(LEAP_DAY)).unwrap();
        assert_eq!(stored, "a/b/doc~20240229-123456.txt");
        assert!(!root.join("a/b/doc.txt").exists(), "moved, not copied");
        let on_disk = root.join(".ssp/versions").join(&stored);
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"first");
        assert_eq!(mode_mtime(&on_disk), (0o640, mtime), "the move keeps both");
        for d in [".ssp/versions", ".ssp/versions/a", ".ssp/versions/a/b"] {
            assert_eq!(mode_mtime(&root.join(d)).0, 0o700, "{d}");
        }

        let listed = v.list(Some(&rel("a/b/doc.txt"))).unwrap();
        let want = Version {
            path: "a/b/doc.txt".into(),
            stored: stored.clone(),
            archived_ns: LEAP_DAY * 1_000_000_000,
            size: 5,
            mtime_ns: mtime,
        };
        assert_eq!(listed, vec![want.clone()]);
        assert_eq!(v.list(None).unwrap(), vec![want.clone()]);

        // A newer file at the path: restoring archives it first, then puts the old one back.
        write(&root.join("a/b/doc.txt"), b"second", 0o600, 0);
        let later = at(LEAP_DAY + 60);
        let restored = v.restore(&rel("a/b/doc.txt"), None, later).unwrap();
        assert_eq!(restored, want);
        assert_eq!(std::fs::read(root.join("a/b/doc.txt")).unwrap(), b"first");
        assert_eq!(mode_mtime(&root.join("a/b/doc.txt")), (0o640, mtime));
        let all = v.list(Some(&rel("a/b/doc.txt"))).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0].stored, "a/b/doc~20240229-123556.txt", "newest first");
        assert_eq!(all[0].size, 6);
        assert_eq!(all[1], want, "the restored version stays archived");
        let leftovers: Vec<_> = std::fs::read_dir(root.join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("doc.txt")],
            "no temp file left"
        );

        // `at` picks the newest at or before it.
        let r = v
            .restore(
                &rel("a/b/doc.txt"),
                Some(at(LEAP_DAY + 30)),
                at(LEAP_DAY + 120),
            )
            .unwrap();
        assert_eq!(r.stored, want.stored);
        let r = v
            .restore(&rel("a/b/doc.txt"), Some(later), at(LEAP_DAY + 180))
            .unwrap();
        assert_eq!(r.stored, "a/b/doc~20240229-123556.txt");
        assert_eq!(std::fs::read(root.join("a/b/doc.txt")).unwrap(), b"second");
        assert_eq!(v.list(Some(&rel("a/b/doc.txt"))).unwrap().len(), 4);
        let e = v
            .restore(&rel("a/b/doc.txt"), Some(at(LEAP_DAY - 1)), later)
            .unwrap_err();
        assert!(e.to_string().contains("no version"), "{e}");
    }

    #[test]
    fn a_restore_leaves_the_path_holding_the_old_or_the_new_content_at_every_moment() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        let path = root.join("f");
        write(&path, b"old", 0o644, 1_000_000_000);
        let (dir, mut v) = open(root);
        archive(&mut v, &dir, "f", at(LEAP_DAY));
        write(&path, b"new", 0o644, 2_000_000_000);
        // A reader that looks at the path all the time the restores run.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (stop, path) = (std::sync::Arc::clone(&stop), path.clone());
            std::thread::spawn(move || {
                let (mut looks, mut missing) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    looks += 1;
                    if std::fs::symlink_metadata(&path).is_err() {
                        missing += 1;
                    }
                }
                (looks, missing)
            })
        };
        for i in 0..300 {
            // Each restore archives what was there, so the newest version alternates.
            v.restore(&rel("f"), None, at(LEAP_DAY + 1 + i)).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (looks, missing) = reader.join().unwrap();
        assert!(looks > 300, "the reader looked {looks} times");
        assert_eq!(
            missing, 0,
            "the path was missing in {missing} of {looks} looks"
        );
        assert_eq!(
            v.list(Some(&rel("f"))).unwrap().len(),
            301,
            "every replaced file was kept"
        );
    }

    #[test]
    fn restore_recreates_a_missing_path_and_its_folders() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        write(&root.join("gone/deep/f"), b"keep me", 0o755, 42_000_000_000);
        let (dir, mut v) = open(root);
        archive(&mut v, &dir, "gone/deep/f", at(LEAP_DAY));
        std::fs::remove_dir_all(root.join("gone")).unwrap();
        v.restore(&rel("gone/deep/f"), None, at(LEAP_DAY)).unwrap();
        assert_eq!(std::fs::read(root.join("gone/deep/f")).unwrap(), b"keep me");
        assert_eq!(
            mode_mtime(&root.join("gone/deep/f")),
            (0o755, 42_000_000_000)
        );
        assert_eq!(
            v.list(None).unwrap().len(),
            1,
            "nothing was there to archive"
        );
    }

    #[test]
    fn clashes_within_one_second_get_suffixes_newest_first() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        let (dir, mut v) = open(root);
        let now = at(LEAP_DAY);
        let mut stored = Vec::new();
        for i in 0..4 {
            write(&root.join("n.txt"), format!("v{i}").as_bytes(), 0o644, 0);
            stored.push(archive(&mut v, &dir, "n.txt", now).unwrap());
        }
        assert_eq!(
            stored,
            [
                "n~20240229-123456.txt",
                "n~20240229-123456-1.txt",
                "n~20240229-123456-2.txt",
                "n~20240229-123456-3.txt"
            ]
        );
        let listed: Vec<String> = v
            .list(Some(&rel("n.txt")))
            .unwrap()
            .into_iter()
            .map(|x| x.stored)
            .collect();
        let mut newest_first = stored.clone();
        newest_first.reverse();
        assert_eq!(listed, newest_first);
        for (i, s) in stored.iter().enumerate() {
            let content = std::fs::read(root.join(".ssp/versions").join(s)).unwrap();
            assert_eq!(
                content,
                format!("v{i}").as_bytes(),
                "no version was replaced"
            );
        }
        // The newest (highest suffix) is what a plain restore brings back.
        v.restore(&rel("n.txt"), None, now).unwrap();
        assert_eq!(std::fs::read(root.join("n.txt")).unwrap(), b"v3");
    }

    #[test]
    fn prune_deletes_by_age_and_the_folders_it_empties() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        let (dir, mut v) = open(root);
        let day = 86_400;
        // (path, archived days before "now")
        let table = [
            ("old/x", 40),
            ("old/deeper/y", 31),
            ("mixed/a", 45),
            ("mixed/b", 29),
            ("top", 30),
        ];
        let now = LEAP_DAY + 100 * day;
        for (path, age) in table {
            write(&root.join(path), path.as_bytes(), 0o644, 0);
            archive(&mut v, &dir, path, at(now - age * day));
        }
        let keep = Duration::from_secs(DEFAULT_VERSIONS_KEEP_DAYS * day as u64);
        assert_eq!(v.prune(keep, at(now)).unwrap(), 3);
        let mut left: Vec<String> = v.list(None).unwrap().into_iter().map(|x| x.path).collect();
        left.sort();
        assert_eq!(left, ["mixed/b", "top"], "exactly 30 days old is kept");
        assert!(
            !root.join(".ssp/versions/old").exists(),
            "emptied folders go"
        );
        assert!(root.join(".ssp/versions/mixed").is_dir());
        assert_eq!(v.prune(keep, at(now)).unwrap(), 0);
        assert_eq!(v.prune(Duration::ZERO, at(now)).unwrap(), 2);
        assert!(
            root.join(".ssp/versions").is_dir(),
            "the archive itself stays"
        );
    }

    #[test]
    fn nothing_to_archive_and_nothing_archived() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        let (dir, mut v) = open(root);
        assert_eq!(archive(&mut v, &dir, "missing.txt", at(LEAP_DAY)), None);
        assert!(v.list(None).unwrap().is_empty());
        assert!(v.list(Some(&rel("no/such/file"))).unwrap().is_empty());
        assert_eq!(v.prune(Duration::ZERO, at(LEAP_DAY)).unwrap(), 0);
        assert!(v.restore(&rel("missing.txt"), None, at(LEAP_DAY)).is_err());
        write(&root.join("other"), b"x", 0o644, 0);
        archive(&mut v, &dir, "other", at(LEAP_DAY));
        assert!(v.list(Some(&rel("missing.txt"))).unwrap().is_empty());
        assert!(
            v.list(Some(&rel("oth"))).unwrap().is_empty(),
            "no prefix match"
        );
    }

    #[test]
    fn folders_are_not_archived_and_the_name_must_match() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        write(&root.join("f"), b"x", 0o644, 0);
        let (dir, mut v) = open(root);
        let e = v.archive(&dir, "d", &rel("d"), at(LEAP_DAY)).unwrap_err();
        assert!(e.to_string().contains("folder"), "{e}");
        assert!(root.join("d/sub").is_dir());
        assert!(v.archive(&dir, "f", &rel("g"), at(LEAP_DAY)).is_err());
        assert!(root.join("f").exists());
    }

    #[test]
    fn symlinks_are_archived_and_restored_as_links() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        symlink("target/elsewhere", root.join("link")).unwrap();
        let (dir, mut v) = open(root);
        let stored = archive(&mut v, &dir, "link", at(LEAP_DAY)).unwrap();
        let on_disk = root.join(".ssp/versions").join(&stored);
        assert!(std::fs::symlink_metadata(&on_disk)
            .unwrap()
            .file_type()
            .is_symlink());
        let listed = v.list(Some(&rel("link"))).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, "target/elsewhere".len() as u64);
        v.restore(&rel("link"), None, at(LEAP_DAY)).unwrap();
        assert_eq!(
            std::fs::read_link(root.join("link")).unwrap(),
            Path::new("target/elsewhere")
        );
        assert_eq!(mode_mtime(&root.join("link")).1, listed[0].mtime_ns);
    }

    /// A symlink planted at `.ssp`, `.ssp/versions` or a folder inside the archive, pointing
    /// outside: archiving fails (the file stays), listing and pruning never look through it,
    /// and nothing outside is touched.
    #[test]
    fn a_symlink_planted_in_the_archive_is_never_followed() {
        for planted in [".ssp", ".ssp/versions", ".ssp/versions/a"] {
            let base = tempfile::tempdir().unwrap();
            let root = base.path().join("root");
            let outside = base.path().join("outside");
            std::fs::create_dir_all(&outside).unwrap();
            // Something there that looks like a version, to be listed or pruned if followed.
            write(&outside.join("a/f~20000101-000000"), b"outside", 0o644, 0);
            write(&outside.join("f~20000101-000000"), b"outside", 0o644, 0);
            let link = root.join(planted);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            let target = if planted.ends_with("/a") {
                outside.join("a")
            } else if planted == ".ssp" {
                std::fs::create_dir_all(outside.join("versions")).unwrap();
                outside.clone()
            } else {
                outside.clone()
            };
            symlink(&target, &link).unwrap();
            write(&root.join("a/f"), b"mine", 0o644, 0);
            let (dir, mut v) = open(&root);

            let r = rel("a/f");
            let parent = dir.open_path(&["a"], Resolve::Kernel).unwrap();
            assert!(
                v.archive(&parent, "f", &r, at(LEAP_DAY)).is_err(),
                "{planted}"
            );
            assert_eq!(
                std::fs::read(root.join("a/f")).unwrap(),
                b"mine",
                "{planted}"
            );
            // Refusing to list is fine too; listing what is outside is not.
            for l in [v.list(None), v.list(Some(&r))].into_iter().flatten() {
                assert!(l.is_empty(), "{planted}: listed {l:?}");
            }
            let _ = v.prune(Duration::ZERO, at(LEAP_DAY));
            assert!(v.restore(&r, None, at(LEAP_DAY)).is_err(), "{planted}");
            assert_eq!(
                std::fs::read(root.join("a/f")).unwrap(),
                b"mine",
                "{planted}"
            );
            let outside_files: Vec<_> = walkdir::WalkDir::new(&outside)
                .into_iter()
                .map(|e| e.unwrap().path().to_path_buf())
                .filter(|p| p.is_file())
                .collect();
            assert_eq!(outside_files.len(), 2, "{planted}: {outside_files:?}");
            for p in outside_files {
                assert_eq!(std::fs::read(&p).unwrap(), b"outside", "{planted}");
                assert_eq!(mode_mtime(&p), (0o644, 0), "{planted}: touched");
            }
        }
    }

    /// An archived symlink named like a version is a version of a link: listing reports it
    /// (its own size) without reading through it.
    #[test]
    fn an_archived_symlink_to_outside_is_listed_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir_all(root.join(".ssp/versions")).unwrap();
        std::fs::write(base.path().join("secret"), b"0123456789abcdef").unwrap();
        let planted = root.join(".ssp/versions/s~20240229-123456");
        symlink(base.path().join("secret"), &planted).unwrap();
        let (_dir, v) = open(&root);
        let listed = v.list(None).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].size,
            base.path().join("secret").as_os_str().len() as u64,
            "the link's size, not the secret's"
        );
    }

    proptest! {
        /// Every second from 1970 to 9999 prints and parses back to itself.
        #[test]
        fn stamps_round_trip(secs in 0..=MAX_STAMP_SECS) {
            let s = format_utc_stamp(secs);
            prop_assert_eq!(s.len(), 15);
            prop_assert_eq!(parse_utc_stamp(&s), Some(secs));
        }

        /// Every name parses back from its archived name, whatever dots and tildes it holds.
        #[test]
        fn version_names_round_trip(
            name in "[a.~0-9-]{1,20}",
            secs in 0..=MAX_STAMP_SECS,
            clash in 0u32..5,
        ) {
            prop_assume!(name != "." && name != "..");
            let stored = version_name(&name, &format_utc_stamp(secs), clash);
            prop_assert_eq!(parse_version_name(&stored), Some((name, secs, clash)));
        }
    }
}
