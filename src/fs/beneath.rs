//! Opening files strictly inside a folder, whatever the tree does meanwhile.
//!
//! The sender opens every requested file relative to a handle on the folder, refusing symlinks
//! in every component. On Linux ≥ 5.6 that is one `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` call, enforced by the kernel; elsewhere (or where a sandbox refuses
//! `openat2`) it walks the components with `openat(O_NOFOLLOW)`. Either way there is no window
//! between a check and the open, unlike canonicalize-then-open.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

use super::RelPath;

/// A handle on a folder to open files beneath.
pub struct Beneath {
    dir: OwnedFd,
}

/// Flags of the final open: never a symlink, and never blocking on a FIFO or device swapped in
/// (regular files ignore `O_NONBLOCK`; callers `fstat` and refuse anything else).
const FILE_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;

#[cfg(target_os = "linux")]
static OPENAT2_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// `openat(dir, name, flags)` as an owned descriptor.
fn openat(dir: RawFd, name: &CString, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string; the returned descriptor is ours.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Beneath {
    /// Opens `root` (itself may be reached through symlinks: the user chose it).
    pub fn new(root: &Path) -> io::Result<Beneath> {
        let path = cstring(root.as_os_str().as_bytes())?;
        let dir = openat(libc::AT_FDCWD, &path, libc::O_DIRECTORY | libc::O_PATH)?;
        Ok(Beneath { dir })
    }

    /// Opens `rel` read-only (non-blocking: a FIFO opens at once; check it is a regular file).
    /// Fails (ELOOP, EXDEV, ENOTDIR, ...) if any component is a symlink or the path would leave
    /// the folder.
    pub fn open_read(&self, rel: &RelPath) -> io::Result<File> {
        let name = cstring(rel.as_str().as_bytes())?;
        #[cfg(target_os = "linux")]
        if !OPENAT2_UNAVAILABLE.load(Ordering::Relaxed) {
            match self.openat2(&name) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    OPENAT2_UNAVAILABLE.store(true, Ordering::Relaxed);
                }
                other => return other.map(File::from),
            }
        }
        self.walk(rel).map(File::from)
    }

    #[cfg(target_os = "linux")]
    fn openat2(&self, name: &CString) -> io::Result<OwnedFd> {
        // SAFETY: `open_how` is plain data; all-zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (FILE_FLAGS | libc::O_CLOEXEC) as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid descriptor, NUL-terminated path and a correctly sized `open_how`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
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

    /// Component by component: every folder with `O_NOFOLLOW | O_DIRECTORY`, the file with
    /// `O_NOFOLLOW`. `RelPath` has no `.`, `..` or empty components.
    fn walk(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        let mut parts = rel.as_str().split('/').peekable();
        let mut dir: Option<OwnedFd> = None;
        while let Some(part) = parts.next() {
            let at = dir.as_ref().map_or(self.dir.as_raw_fd(), |d| d.as_raw_fd());
            let name = cstring(part.as_bytes())?;
            if parts.peek().is_some() {
                dir = Some(openat(
                    at,
                    &name,
                    libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH,
                )?);
            } else {
                return openat(at, &name, FILE_FLAGS);
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn opens_inside_and_refuses_symlinks_anywhere() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f.txt"), b"inside").unwrap();
        std::fs::write(base.path().join("secret"), b"outside").unwrap();
        std::fs::create_dir(base.path().join("outdir")).unwrap();
        std::fs::write(base.path().join("outdir/f.txt"), b"outside").unwrap();
        symlink(base.path().join("secret"), root.join("link")).unwrap();
        symlink(base.path().join("outdir"), root.join("dirlink")).unwrap();
        symlink("b", root.join("a/inner")).unwrap();

        let b = Beneath::new(&root).unwrap();
        let both = [true, false];
        for use_walk in both {
            let open = |p: &str| {
                if use_walk {
                    b.walk(&rel(p)).map(File::from)
                } else {
                    b.open_read(&rel(p))
                }
            };
            let mut s = String::new();
            use std::io::Read;
            open("a/b/f.txt").unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, "inside");
            for bad in ["link", "dirlink/f.txt", "a/inner/f.txt", "missing"] {
                assert!(open(bad).is_err(), "{bad} opened (walk: {use_walk})");
            }
        }
    }
}
