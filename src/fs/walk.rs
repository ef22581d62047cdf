//! The scan's walk: every folder opened beneath the root without following a symlink
//! (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or component by component), listed and
//! stat'ed through its own descriptor (`fstatat`, never a path lookup from the root), on a
//! few threads. The result comes back in path order, the order of the store.

use std::sync::{Condvar, Mutex};

use super::{is_metadata_name, is_part_name, Dir, EntryStat, PartFile, RelPath, Resolve, Skipped};

/// Most threads walking at once: stat calls are cheap, a few threads hide their latency.
const MAX_WALKERS: usize = 4;

/// What the walk found at a path.
pub(crate) enum Found {
    File(EntryStat),
    Dir(EntryStat),
    /// A symlink and its target when that is UTF-8.
    Symlink(EntryStat, Option<String>),
    /// Something the index cannot hold (a FIFO, socket or device), or an entry that cannot be
    /// stat'ed: whatever the store knew of the path stays.
    Unsynced(String),
}

/// One entry of the walk.
pub(crate) struct Walked {
    pub rel: RelPath,
    pub found: Found,
}

/// Everything the walk found.
#[derive(Default)]
pub(crate) struct Walk {
    /// Entries in path order (bytewise, as the store orders them).
    pub entries: Vec<Walked>,
    /// Temp files of interrupted transfers.
    pub parts: Vec<PartFile>,
    /// Names that cannot be synced at all (not UTF-8, not a valid relative path).
    pub skipped: Vec<Skipped>,
    /// Folders whose contents could not be listed, in path order: what the store knew below
    /// them stays (it is not taken for deleted).
    pub unlisted: Vec<String>,
}

/// Shared work of the walkers: folders still to list, and how many are being listed.
struct Queue {
    folders: Vec<String>,
    busy: usize,
}

/// Walks everything below `root` except `.ssp` and what `ignored(rel, is_dir)` excludes
/// (temp files are always listed, in [`Walk::parts`]).
pub(crate) fn walk(root: &Dir, ignored: &(dyn Fn(&str, bool) -> bool + Sync)) -> Walk {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WALKERS);
    let queue = Mutex::new(Queue {
        folders: vec![String::new()],
        busy: 0,
    });
    let wake = Condvar::new();
    let lock = || queue.lock().unwrap_or_else(|e| e.into_inner());
    let worker = || {
        let mut mine = Walk::default();
        loop {
            let folder = {
                let mut q = lock();
                loop {
                    if let Some(f) = q.folders.pop() {
                        q.busy += 1;
                        break Some(f);
                    }
                    if q.busy == 0 {
                        break None;
                    }
                    q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            let Some(folder) = folder else {
                wake.notify_all();
                return mine;
            };
            let subfolders = list(root, &folder, ignored, &mut mine);
            let mut q = lock();
            q.folders.extend(subfolders);
            q.busy -= 1;
            wake.notify_all();
        }
    };
    let mut all = Walk::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        let mut parts = vec![worker()];
        // A walker that panicked lost its folders: they count as unlisted, nothing is deleted.
        for w in workers {
            match w.join() {
                Ok(w) => parts.push(w),
                Err(_) => all.unlisted.push(String::new()),
            }
        }
        for w in parts {
            all.entries.extend(w.entries);
            all.parts.extend(w.parts);
            all.skipped.extend(w.skipped);
            all.unlisted.extend(w.unlisted);
        }
    });
    all.entries
        .sort_unstable_by(|a, b| a.rel.as_str().cmp(b.rel.as_str()));
    all.unlisted.sort_unstable();
    all.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    all
}

/// Lists the folder `rel` ("" for the root) into `out`; returns its subfolders to walk.
fn list(
    root: &Dir,
    rel: &str,
    ignored: &(dyn Fn(&str, bool) -> bool + Sync),
    out: &mut Walk,
) -> Vec<String> {
    let mut unlisted = |why: std::io::Error| {
        out.skipped.push(Skipped {
            path: rel.to_owned(),
            reason: format!("folder cannot be read: {why}"),
        });
        out.unlisted.push(rel.to_owned());
        Vec::new()
    };
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let dir = match root.open_path(&parts, Resolve::Kernel) {
        Ok(d) => d,
        Err(e) => return unlisted(e),
    };
    let mut subfolders = Vec::new();
    let listed = dir.each_entry(|c_name| {
        let Ok(name) = c_name.to_str() else {
            out.skipped.push(Skipped {
                path: format!("{rel}/{}", c_name.to_string_lossy())
                    .trim_start_matches('/')
                    .to_owned(),
                reason: "name is not valid UTF-8".into(),
            });
            return;
        };
        if rel.is_empty() && is_metadata_name(name) {
            return;
        }
        let path = if rel.is_empty() {
            name.to_owned()
        } else {
            let mut p = String::with_capacity(rel.len() + 1 + name.len());
            p.push_str(rel);
            p.push('/');
            p.push_str(name);
            p
        };
        let st = match dir.stat_entry(c_name) {
            Ok(st) => st,
            // Gone since the listing: it is not there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                if let Ok(rel) = RelPath::parse_owned(path) {
                    let found = Found::Unsynced(format!("cannot be read: {e}"));
                    out.entries.push(Walked { rel, found });
                }
                return;
            }
        };
        // Temp files are never synced, but listed (to resume or remove them).
        let part = is_part_name(name);
        if part && st.is_file {
            out.parts.push(PartFile {
                rel: path,
                len: st.len,
                resumable: st.nlink == 1,
            });
            return;
        }
        if !part && ignored(&path, st.is_dir) {
            return;
        }
        let rel = match RelPath::parse_owned(path) {
            Ok(r) => r,
            Err(e) => {
                let path = format!("{rel}/{name}").trim_start_matches('/').to_owned();
                out.skipped.push(Skipped {
                    path,
                    reason: format!("name cannot be synced ({e})"),
                });
                return;
            }
        };
        let found = if st.is_dir {
            subfolders.push(rel.as_str().to_owned());
            Found::Dir(st)
        } else if st.is_symlink {
            let target = dir
                .read_link(name)
                .ok()
                .and_then(|t| String::from_utf8(t).ok());
            Found::Symlink(st, target)
        } else if st.is_file {
            Found::File(st)
        } else {
            Found::Unsynced("not a regular file, folder or symlink".into())
        };
        out.entries.push(Walked { rel, found });
    });
    if let Err(e) = listed {
        // What was listed before the error stands; the rest of the folder is unknown.
        out.skipped.push(Skipped {
            path: rel.to_owned(),
            reason: format!("folder cannot be read: {e}"),
        });
        out.unlisted.push(rel.to_owned());
    }
    subfolders
}
