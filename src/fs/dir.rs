//! Folder descriptors: handles on folders reached from the sync root without any symlink, and
//! the `*at` calls (mkdir, exclusive create, open, rename, unlink, stat) relative to them.
//!
//! A descriptor stays bound to the folder it opened: once a `Dir` is held, swapping its path
//! for a symlink (or a file) cannot redirect what is done through it. Every component of a path
//! is resolved with `O_NOFOLLOW`, either by the kernel in one `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` call (Linux ≥ 5.6) or component by component with
//! `openat(O_DIRECTORY | O_NOFOLLOW)` (macOS, older kernels, sandboxes that refuse `openat2`).
//!
//! Plain `libc` rather than `rustix`: the crate already uses it for the read side
//! (`beneath.rs`), the calls are few and each wrapper below is a handful of lines with its
//! safety argument, and it keeps the dependency tree (and `Cargo.lock`) unchanged.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// How paths below a `Dir` are resolved. Both refuse symlinks in every component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it, else `Walk`.
    Kernel,
    /// Always component by component with `openat(O_DIRECTORY | O_NOFOLLOW)` (the portable
    /// path; tests force it so it is exercised on Linux too).
    Walk,
}

#[cfg(target_os = "linux")]
static OPENAT2_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Flags of every folder open: read-only (portable: `O_PATH` is Linux-only), never a symlink.
const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
/// Flags of a file opened for reading through a path: never a symlink, and never blocking on a
/// FIFO or device swapped in (regular files ignore `O_NONBLOCK`; callers `fstat` and refuse
/// anything else).
const READ_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;

pub(crate) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// A single path component: no `/`, not empty, not `.` or `..`.
fn component(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a single path component: {name:?}"),
        ));
    }
    cstring(name.as_bytes())
}

/// `openat(dir, name, flags, mode)` as an owned descriptor.
fn openat(dir: RawFd, name: &CString, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string; the returned descriptor is ours.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What `fstatat(AT_SYMLINK_NOFOLLOW)` says about a name in a folder.
#[derive(Debug, Clone, Copy)]
pub struct EntryStat {
    /// A regular file (not a symlink, folder, FIFO, ...).
    pub is_file: bool,
    /// A folder (never true for a symlink to one).
    pub is_dir: bool,
    /// A symlink (not followed).
    pub is_symlink: bool,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub len: u64,
    pub nlink: u64,
    pub mtime_s: i64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// The file system's device number (with `ino`, the file's identity).
    pub dev: u64,
}

/// A folder reached without symlinks (or the sync root, which the user chose).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens the sync root itself. It may be reached through symlinks: the user chose it.
    pub fn open_root(root: &Path) -> io::Result<Dir> {
        let path = cstring(root.as_os_str().as_bytes())?;
        let fd = openat(libc::AT_FDCWD, &path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(Dir { fd })
    }

    /// Another handle on the same folder.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens the child folder `name` (ELOOP or ENOTDIR if it is a symlink or not a folder).
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        let fd = openat(self.raw(), &component(name)?, DIR_FLAGS, 0)?;
        Ok(Dir { fd })
    }

    /// `parts` opened with `flags` in one `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` call,
    /// or `None` where the caller must walk instead (asked to, or no `openat2` here).
    fn kernel_open(
        &self,
        parts: &[&str],
        flags: libc::c_int,
        resolve: Resolve,
    ) -> Option<io::Result<OwnedFd>> {
        #[cfg(target_os = "linux")]
        if resolve == Resolve::Kernel && !OPENAT2_UNAVAILABLE.load(Ordering::Relaxed) {
            let joined = parts
                .iter()
                .try_for_each(|p| component(p).map(drop))
                .and_then(|()| cstring(parts.join("/").as_bytes()));
            let joined = match joined {
                Ok(j) => j,
                Err(e) => return Some(Err(e)),
            };
            match self.openat2(&joined, flags) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    OPENAT2_UNAVAILABLE.store(true, Ordering::Relaxed);
                }
                other => return Some(other),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (parts, flags, resolve);
        None
    }

    /// Opens the folder `parts` below this one, refusing symlinks in every component.
    pub fn open_path(&self, parts: &[&str], resolve: Resolve) -> io::Result<Dir> {
        if parts.is_empty() {
            return self.try_clone();
        }
        if let Some(opened) = self.kernel_open(parts, DIR_FLAGS, resolve) {
            return opened.map(|fd| Dir { fd });
        }
        let mut dir = self.open_dir(parts[0])?;
        for p in &parts[1..] {
            dir = dir.open_dir(p)?;
        }
        Ok(dir)
    }

    /// Opens the existing file `parts` below this one read-only, refusing symlinks in every
    /// component (resolved as `resolve` says) and never blocking on a FIFO or device; callers
    /// `fstat` the result before trusting it.
    pub fn open_file_at(&self, parts: &[&str], resolve: Resolve) -> io::Result<File> {
        let Some((name, folders)) = parts.split_last() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        };
        if let Some(opened) = self.kernel_open(parts, READ_FLAGS, resolve) {
            return opened.map(File::from);
        }
        let fd = if folders.is_empty() {
            openat(self.raw(), &component(name)?, READ_FLAGS, 0)?
        } else {
            let dir = self.open_path(folders, Resolve::Walk)?;
            openat(dir.raw(), &component(name)?, READ_FLAGS, 0)?
        };
        Ok(File::from(fd))
    }

    #[cfg(target_os = "linux")]
    fn openat2(&self, name: &CString, flags: libc::c_int) -> io::Result<OwnedFd> {
        // SAFETY: `open_how` is plain data; all-zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid descriptor, NUL-terminated path and a correctly sized `open_how`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.raw(),
                name.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new descriptor that nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// Opens (creating what is missing with `mkdirat(mode)`, masked by the umask) the folder
    /// `parts` below this one. A symlink or a file in the way is an error, never followed.
    pub fn create_dir_all(&self, parts: &[&str], resolve: Resolve, mode: u32) -> io::Result<Dir> {
        match self.open_path(parts, resolve) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        let mut dir = self.try_clone()?;
        for p in parts {
            dir = match dir.open_dir(p) {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    dir.mkdir(p, mode)?;
                    dir.open_dir(p)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }

    /// `mkdirat(name, mode)`; an existing entry is fine (the open that follows checks it).
    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        let c = component(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        match check(unsafe { libc::mkdirat(self.raw(), c.as_ptr(), mode as libc::mode_t) }) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Creates `name` exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`: fails if anything, even a
    /// dangling symlink or a hard link, is already there), read-write, with exactly `mode`.
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let fd = openat(
            self.raw(),
            &component(name)?,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            mode,
        )?;
        let file = File::from(fd);
        // The umask may have narrowed `mode` further; make it exactly what was asked (no call
        // needed when it has none of the bits asked for, as with 0600 and the usual umasks).
        if mode & umask() != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        Ok(file)
    }

    /// Opens the existing `name` without following a symlink (ELOOP) and without blocking on a
    /// FIFO or device; callers `fstat` the result before trusting it.
    pub fn open_file(&self, name: &str, write: bool) -> io::Result<File> {
        let access = if write { libc::O_RDWR } else { libc::O_RDONLY };
        let fd = openat(
            self.raw(),
            &component(name)?,
            access | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )?;
        let file = File::from(fd);
        // Regular files ignore O_NONBLOCK, but clear it so nothing downstream sees EAGAIN.
        // SAFETY: valid descriptor; F_SETFL with plain flags.
        check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, access) })?;
        Ok(file)
    }

    /// `renameat(self, from, self, to)`: atomic within this folder.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (component(from)?, component(to)?);
        // SAFETY: valid descriptors and NUL-terminated names.
        check(unsafe { libc::renameat(self.raw(), f.as_ptr(), self.raw(), t.as_ptr()) })
    }

    /// `linkat(self, from, to_dir, to, 0)`: a second name for the same file (a symlink is
    /// linked itself, never followed).
    pub fn link_to(&self, from: &str, to_dir: &Dir, to: &str) -> io::Result<()> {
        let (f, t) = (component(from)?, component(to)?);
        // SAFETY: valid descriptors and NUL-terminated names.
        check(unsafe { libc::linkat(self.raw(), f.as_ptr(), to_dir.raw(), t.as_ptr(), 0) })
    }

    /// `unlinkat(self, name, 0)`: removes a name (a hard link's other names are untouched).
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        let c = component(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), 0) })
    }

    /// `fstatat(self, name, AT_SYMLINK_NOFOLLOW)`.
    pub fn stat(&self, name: &str) -> io::Result<EntryStat> {
        self.stat_entry(&component(name)?)
    }

    /// [`Dir::stat`] of a name as [`Dir::each_entry`] gives it (a single component).
    pub fn stat_entry(&self, name: &std::ffi::CStr) -> io::Result<EntryStat> {
        // SAFETY: `stat` is plain data; all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name and a valid out-pointer.
        check(unsafe {
            libc::fstatat(
                self.raw(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        let kind = st.st_mode & libc::S_IFMT;
        Ok(EntryStat {
            is_file: kind == libc::S_IFREG,
            is_dir: kind == libc::S_IFDIR,
            is_symlink: kind == libc::S_IFLNK,
            mode: st.st_mode as u32 & 0o7777,
            len: st.st_size as u64,
            nlink: st.st_nlink as u64,
            mtime_s: st.st_mtime as i64,
            mtime_ns: (st.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
        })
    }

    /// Sets this folder's permission bits (`fchmod` on the descriptor).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        // SAFETY: valid descriptor.
        check(unsafe { libc::fchmod(self.raw(), mode as libc::mode_t) })
    }

    /// `renameat(self, from, to_dir, to)`: moves a name into another folder (atomic; both
    /// folders must be on one file system, else EXDEV). Replaces what is at `to`.
    pub fn rename_to(&self, from: &str, to_dir: &Dir, to: &str) -> io::Result<()> {
        let (f, t) = (component(from)?, component(to)?);
        // SAFETY: valid descriptors and NUL-terminated names.
        check(unsafe { libc::renameat(self.raw(), f.as_ptr(), to_dir.raw(), t.as_ptr()) })
    }

    /// As [`Dir::rename_to`], but fails with EEXIST instead of replacing anything at `to`:
    /// `renameat2(RENAME_NOREPLACE)` on Linux (atomic); elsewhere, or where the file system
    /// refuses the flag, a `fstatat` check before `renameat` (a race with another writer of
    /// `to` could still replace it there).
    pub fn rename_noreplace(&self, from: &str, to_dir: &Dir, to: &str) -> io::Result<()> {
        let (f, t) = (component(from)?, component(to)?);
        if let Some(done) = self.renameat2(&f, to_dir, &t, false) {
            return done;
        }
        match to_dir.stat(to) {
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::EEXIST)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        // SAFETY: valid descriptors and NUL-terminated names.
        check(unsafe { libc::renameat(self.raw(), f.as_ptr(), to_dir.raw(), t.as_ptr()) })
    }

    /// Swaps `from` (here) and `to` (in `to_dir`) atomically: `renameat2(RENAME_EXCHANGE)`.
    /// Both must exist (ENOENT otherwise). Fails with `ErrorKind::Unsupported` off Linux and
    /// where the file system refuses the flag.
    pub fn rename_exchange(&self, from: &str, to_dir: &Dir, to: &str) -> io::Result<()> {
        let (f, t) = (component(from)?, component(to)?);
        if let Some(done) = self.renameat2(&f, to_dir, &t, true) {
            return done;
        }
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// `renameat2` with `RENAME_EXCHANGE` (`exchange`) or `RENAME_NOREPLACE`: `None` off Linux
    /// or where the file system refuses the flag (`EINVAL`, `ENOSYS`, `EPERM`), for the caller
    /// to fall back.
    fn renameat2(
        &self,
        from: &std::ffi::CStr,
        to_dir: &Dir,
        to: &std::ffi::CStr,
        exchange: bool,
    ) -> Option<io::Result<()>> {
        #[cfg(target_os = "linux")]
        {
            let flags = if exchange {
                libc::RENAME_EXCHANGE
            } else {
                libc::RENAME_NOREPLACE
            };
            // SAFETY: valid descriptors and NUL-terminated names; the syscall takes plain ints.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    self.raw(),
                    from.as_ptr(),
                    to_dir.raw(),
                    to.as_ptr(),
                    flags,
                )
            };
            if ret == 0 {
                return Some(Ok(()));
            }
            let e = io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EPERM)
            ) {
                return Some(Err(e));
            }
            None
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (from, to_dir, to, exchange);
            None
        }
    }

    /// `unlinkat(self, name, AT_REMOVEDIR)`: removes an empty folder (ENOTEMPTY otherwise).
    pub fn remove_dir(&self, name: &str) -> io::Result<()> {
        let c = component(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), libc::AT_REMOVEDIR) })
    }

    /// `readlinkat(self, name)`: the target of the symlink `name`, as bytes (never followed).
    pub fn read_link(&self, name: &str) -> io::Result<Vec<u8>> {
        let c = component(name)?;
        // PATH_MAX: Linux refuses to create longer targets; one more byte tells truncation.
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: valid descriptor, NUL-terminated name, and a buffer of `buf.len()` bytes.
        let n =
            unsafe { libc::readlinkat(self.raw(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n >= buf.len() {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// `symlinkat(target, self, name)`: creates the symlink `name` (EEXIST if anything is
    /// there). The target is stored as given, never resolved.
    pub fn symlink(&self, target: &[u8], name: &str) -> io::Result<()> {
        let (t, c) = (cstring(target)?, component(name)?);
        // SAFETY: NUL-terminated strings and a valid descriptor.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.raw(), c.as_ptr()) })
    }

    /// Sets the mtime of `name` itself (a symlink's own time: `AT_SYMLINK_NOFOLLOW`), leaving
    /// its access time alone.
    pub fn set_mtime_nofollow(&self, name: &str, mtime_ns: i64) -> io::Result<()> {
        let c = component(name)?;
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
                tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
            },
        ];
        // SAFETY: valid descriptor, NUL-terminated name, and an array of two timespecs.
        check(unsafe {
            libc::utimensat(
                self.raw(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// The names in this folder (without `.` and `..`), read through the descriptor so a
    /// swapped path cannot redirect the listing. Order is the file system's.
    pub fn entries(&self) -> io::Result<Vec<std::ffi::OsString>> {
        use std::os::unix::ffi::OsStringExt;
        let mut names = Vec::new();
        self.each_entry(|name| names.push(std::ffi::OsString::from_vec(name.to_bytes().to_vec())))?;
        Ok(names)
    }

    /// Calls `f` with each name in this folder (without `.` and `..`), as [`Dir::entries`]
    /// lists them, without copying them.
    pub fn each_entry(&self, mut f: impl FnMut(&std::ffi::CStr)) -> io::Result<()> {
        // fdopendir takes ownership of its descriptor: give it a duplicate of ours, opened
        // on `.` so it has its own file offset (a dup would share it with `self`).
        let own = openat(self.raw(), &cstring(b".")?, DIR_FLAGS, 0)?;
        let raw = own.as_raw_fd();
        // SAFETY: `raw` is a valid folder descriptor; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(own);
        let result = loop {
            // readdir reports errors only through errno; clear it to tell them from the end.
            set_errno(0);
            // SAFETY: `stream` is a valid, open directory stream.
            let ent = unsafe { libc::readdir(stream) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                break match e.raw_os_error() {
                    Some(0) | None => Ok(()),
                    _ => Err(e),
                };
            }
            // SAFETY: `d_name` is a NUL-terminated string inside the entry readdir returned,
            // valid until the next readdir on this stream.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            if !matches!(name.to_bytes(), b"." | b"..") {
                f(name);
            }
        };
        // SAFETY: `stream` is open and closed exactly once here (closing its descriptor).
        unsafe { libc::closedir(stream) };
        result
    }
}

fn set_errno(value: libc::c_int) {
    // SAFETY: the errno location is valid for the calling thread.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    unsafe {
        *libc::__errno_location() = value
    };
    // SAFETY: as above.
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    unsafe {
        *libc::__error() = value
    };
}

/// The process umask, read once. Files we create get `source mode & !umask`, as `open(2)`
/// would give them, even though we set modes with `fchmod` (which ignores the umask).
pub fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        // Linux ≥ 4.7 reports it without changing it (no window for other threads).
        #[cfg(target_os = "linux")]
        if let Some(m) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
        {
            return m & 0o777;
        }
        // Elsewhere read it by setting it: the probe value is restrictive, so a file another
        // thread creates in that instant comes out narrower, never wider.
        // SAFETY: umask(2) cannot fail.
        let old = unsafe { libc::umask(0o077) };
        // SAFETY: as above; restores the value read.
        unsafe { libc::umask(old) };
        old as u32 & 0o777
    })
}
