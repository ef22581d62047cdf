//! Opening files strictly inside a folder, whatever the tree does meanwhile.
//!
//! The sender opens every requested file relative to a handle on the folder, refusing symlinks
//! in every component. On Linux ≥ 5.6 that is one `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` call, enforced by the kernel; elsewhere (or where a sandbox refuses
//! `openat2`) it walks the components with `openat(O_NOFOLLOW)`. Either way there is no window
//! between a check and the open, unlike canonicalize-then-open.

use std::fs::File;
use std::io;
use std::path::Path;

use super::dir::{Dir, Resolve};
use super::RelPath;

/// A handle on a folder to open files beneath (reads; writes go through `write::WriteRoot`,
/// both on the same [`Dir`] resolution).
pub struct Beneath {
    dir: Dir,
    /// Always `Kernel` (with its own fallback) except in tests that force the portable walk.
    resolve: Resolve,
}

impl Beneath {
    /// Opens `root` (itself may be reached through symlinks: the user chose it).
    pub fn new(root: &Path) -> io::Result<Beneath> {
        Ok(Beneath {
            dir: Dir::open_root(root)?,
            resolve: Resolve::Kernel,
        })
    }

    /// Opens `rel` read-only (non-blocking: a FIFO opens at once; check it is a regular file).
    /// Fails (ELOOP, EXDEV, ENOTDIR, ...) if any component is a symlink or the path would leave
    /// the folder.
    pub fn open_read(&self, rel: &RelPath) -> io::Result<File> {
        let parts: Vec<&str> = rel.as_str().split('/').collect();
        self.dir.open_file_at(&parts, self.resolve)
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

        for use_walk in [true, false] {
            let mut b = Beneath::new(&root).unwrap();
            if use_walk {
                b.resolve = Resolve::Walk;
            }
            let open = |p: &str| b.open_read(&rel(p));
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
