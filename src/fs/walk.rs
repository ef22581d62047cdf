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
pub(crate) struct Walk {
    /// Entries in path order (bytewise, as the store orders them).
    pub entries: PathOrder,
    /// Temp files of interrupted transfers.
    pub parts: Vec<PartFile>,
    /// Names that cannot be synced at all (not UTF-8, not a valid relative path).
    pub skipped: Vec<Skipped>,
    /// Folders whose contents could not be listed, in path order: what the store knew below
    /// them stays (it is not taken for deleted).
    pub unlisted: Vec<String>,
}

/// What one walker found.
#[derive(Default)]
struct Listed {
    /// What each folder listed (its path, its entries).
    listings: Vec<(String, Vec<Walked>)>,
    /// The entries of the folder being listed.
    entries: Vec<Walked>,
    parts: Vec<PartFile>,
    skipped: Vec<Skipped>,
    unlisted: Vec<String>,
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
        let mut mine = Listed::default();
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
            let listed = std::mem::take(&mut mine.entries);
            mine.listings.push((folder, listed));
            let mut q = lock();
            q.folders.extend(subfolders);
            q.busy -= 1;
            wake.notify_all();
        }
    };
    let mut all = Listed::default();
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
            all.listings.extend(w.listings);
            all.parts.extend(w.parts);
            all.skipped.extend(w.skipped);
            all.unlisted.extend(w.unlisted);
        }
    });
    all.unlisted.sort_unstable();
    all.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Walk {
        entries: PathOrder::new(all.listings),
        parts: all.parts,
        skipped: all.skipped,
        unlisted: all.unlisted,
    }
}

/// The folders' listings as one sequence in bytewise path order, produced as it is taken
/// (each listing's memory goes once its folder is passed), without comparing full paths: each
/// folder's entries are sorted by name, and a subfolder's contents go where its name followed
/// by `/` sorts among its siblings (`a` < `a.txt` < `a/x` < `a0`).
pub(crate) struct PathOrder {
    by_folder: std::collections::HashMap<String, Vec<Walked>>,
    /// An explicit stack: folders nest as deep as paths allow, deeper than a thread's stack.
    stack: Vec<Frame>,
    /// Entries not yet produced.
    left: usize,
    #[cfg(debug_assertions)]
    last: Option<String>,
}

/// A folder being produced: its entries, the paths of those that are folders (whose
/// contents are produced in turn), and the order of its items (`(entry, its contents?)`).
struct Frame {
    entries: Vec<Option<Walked>>,
    folders: Vec<Option<String>>,
    items: Vec<(usize, bool)>,
    next: usize,
}

impl Frame {
    fn new(entries: Vec<Walked>) -> Frame {
        let folders: Vec<Option<String>> = entries
            .iter()
            .map(|w| matches!(w.found, Found::Dir(_)).then(|| w.rel.as_str().to_owned()))
            .collect();
        let mut items: Vec<(usize, bool)> = (0..entries.len())
            .flat_map(|i| {
                std::iter::once((i, false)).chain(folders[i].is_some().then_some((i, true)))
            })
            .collect();
        // A folder's contents sort as its name followed by `/`.
        let key = |i: usize, inside: bool| {
            let name = entries[i].rel.file_name().as_bytes();
            name.iter().copied().chain(inside.then_some(b'/'))
        };
        items.sort_unstable_by(|&(a, a_in), &(b, b_in)| key(a, a_in).cmp(key(b, b_in)));
        Frame {
            entries: entries.into_iter().map(Some).collect(),
            folders,
            items,
            next: 0,
        }
    }
}

impl PathOrder {
    fn new(listings: Vec<(String, Vec<Walked>)>) -> PathOrder {
        let left = listings.iter().map(|(_, e)| e.len()).sum();
        let mut by_folder: std::collections::HashMap<String, Vec<Walked>> =
            listings.into_iter().collect();
        let stack = by_folder.remove("").map(Frame::new).into_iter().collect();
        PathOrder {
            by_folder,
            stack,
            left,
            #[cfg(debug_assertions)]
            last: None,
        }
    }

    /// How many entries are still to come.
    pub fn len(&self) -> usize {
        self.left
    }
}

impl Iterator for PathOrder {
    type Item = Walked;

    fn next(&mut self) -> Option<Walked> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                debug_assert!(
                    self.by_folder.is_empty(),
                    "every listing is reached from the root"
                );
                return None;
            };
            let Some(&(i, inside)) = top.items.get(top.next) else {
                self.stack.pop();
                continue;
            };
            top.next += 1;
            if !inside {
                let Some(w) = top.entries[i].take() else {
                    continue;
                };
                self.left -= 1;
                #[cfg(debug_assertions)]
                {
                    let path = w.rel.as_str();
                    assert!(
                        self.last.as_deref().map_or(true, |l| l < path),
                        "bytewise path order"
                    );
                    self.last = Some(path.to_owned());
                }
                return Some(w);
            }
            // A subfolder whose listing failed has none: what the store knew below it stays.
            if let Some(listed) = top.folders[i]
                .take()
                .and_then(|f| self.by_folder.remove(&f))
            {
                self.stack.push(Frame::new(listed));
            }
        }
    }
}

/// Lists the folder `rel` ("" for the root) into `out`; returns its subfolders to walk.
fn list(
    root: &Dir,
    rel: &str,
    ignored: &(dyn Fn(&str, bool) -> bool + Sync),
    out: &mut Listed,
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
