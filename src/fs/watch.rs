//! The OS's recursive watch of a folder root (the `notify` crate): whether anything in the
//! folder changed since the last look, with a barrier that makes "nothing changed" a proven
//! answer rather than a guess about events still in flight.
//!
//! # Why a barrier
//! Events are delivered asynchronously, on notify's own thread: a file written a moment before
//! a round may not have been reported yet when the round asks "changed?". So each question
//! first creates a marker file `.ssp/watch-barrier-N` (a new token N each time) and waits until
//! the watcher thread reports it. inotify queues one instance's events in order and notify
//! hands them to us in that order on one thread, so once the marker's event is seen, every
//! event of a change made before the marker was created has been seen too: the flag then
//! tells the whole truth about everything before the question. The token is in the name (not
//! the content): a late event of an earlier marker can never pass for this one, and two
//! markers are never merged into one event by the kernel. The marker is removed at once; its
//! events live in `.ssp/`, which never counts as a change.
//!
//! # Why a fence after "changed"
//! notify adds the watch of a new folder only after it has handed out the whole batch of
//! events it read, so a walk started the moment the folder's creation was seen could list it
//! empty while a file made in it just after, before its watch exists, is never reported. So a
//! "changed" answer first makes one round trip to notify's thread (a no-op `configure`): it is
//! served after that batch, so every folder whose creation was seen is watched before the
//! caller walks, and the walk sees what was made before the watch.
//!
//! When the marker is not seen within the caller's patience, the queue overflowed or the
//! watcher failed, the answer is "changed" (the caller walks): the watch only ever saves work,
//! never decides what is true.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{is_metadata_name, is_part_name, Dir, METADATA_DIR};
use crate::error::{Error, Result};

/// Name prefix of the barrier markers in the metadata folder; a token follows.
pub const BARRIER_PREFIX: &str = "watch-barrier-";

/// Mode of a barrier marker: like everything in `.ssp/`, its owner's only.
const BARRIER_MODE: u32 = 0o600;

/// Markers not seen in time, in a row, after which the watch counts as failed (its events come
/// late or not at all, and waiting for them would cost every round the caller's patience).
const LATE_BARRIERS_TO_FAIL: u32 = 3;

/// A recursive OS watch of a folder root (see the module doc). Dropping it stops the watch.
pub struct Watch {
    /// The root as given to the watcher (events name paths below it).
    root: PathBuf,
    /// What the watcher thread reports into, shared with its event handler.
    shared: Arc<Shared>,
    /// The OS watch itself; locked for the fence round trip.
    watcher: Mutex<RecommendedWatcher>,
    /// The last barrier token given out.
    token: Mutex<u64>,
}

/// The state the event handler updates and `changed_since_last` reads.
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a barrier is seen, the queue overflowed or the watch failed.
    wake: Condvar,
    /// Test-only: how long the handler sleeps before each event, to stand for a busy watcher
    /// thread (so that the barrier and the fence are proven needed).
    #[cfg(test)]
    delay: Duration,
}

#[derive(Default)]
struct State {
    /// Something outside `.ssp/` and temp files changed since the flag was last taken.
    changed: bool,
    /// The highest barrier token the handler has seen.
    barrier_seen: u64,
    /// How many queue overflows (lost events) were reported.
    overflows: u64,
    /// Why the watch no longer works; then it counts as changed forever.
    failed: Option<String>,
    /// Barriers not seen in time, in a row.
    late_barriers: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The event handler, on notify's thread. Never blocks beyond the state lock.
    fn observe(&self, root: &Path, event: notify::Result<Event>) {
        #[cfg(test)]
        std::thread::sleep(self.delay);
        match event {
            Ok(event) => {
                let barrier = event
                    .paths
                    .iter()
                    .filter_map(|p| barrier_token(root, p))
                    .max();
                let counts = counts_as_change(root, &event);
                if barrier.is_none() && !counts {
                    return;
                }
                let mut st = lock(&self.state);
                if counts {
                    st.changed = true;
                }
                if event.need_rescan() {
                    st.overflows += 1;
                }
                if let Some(t) = barrier {
                    st.barrier_seen = st.barrier_seen.max(t);
                }
                drop(st);
                self.wake.notify_all();
            }
            Err(e) => self.fail(root, describe(&e)),
        }
    }

    /// Marks the watch failed (the first reason stands), logged once.
    fn fail(&self, root: &Path, reason: String) {
        let mut st = lock(&self.state);
        st.changed = true;
        if st.failed.is_none() {
            tracing::warn!(
                "{}: the folder watch stopped working ({reason}); the folder is rescanned every \
                 round instead",
                root.display()
            );
            st.failed = Some(reason);
        }
        drop(st);
        self.wake.notify_all();
    }
}

/// Whether an event from the watch of `root` is a change of the folder's content: everything
/// is, except access without writing (our own scans and uploads read files), anything inside
/// the metadata folder (our store, versions and barrier writes) and temp files (our transfers
/// in progress; the rename to the final name counts). An overflow always counts.
pub fn counts_as_change(root: &Path, event: &Event) -> bool {
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    // An event without a path says something happened, not where.
    event.paths.is_empty() || event.paths.iter().any(|p| path_counts(root, p))
}

/// Whether a change at `path` (absolute, as the watcher reports it) is a change of the folder.
fn path_counts(root: &Path, path: &Path) -> bool {
    // Outside the root (a moved root, a path we cannot place): count it, to be safe.
    let Ok(rel) = path.strip_prefix(root) else {
        return true;
    };
    let mut parts = rel.components();
    let first = match parts.next() {
        Some(Component::Normal(first)) => first,
        // The root itself (its mode, its deletion).
        _ => return true,
    };
    if first.to_str().is_some_and(is_metadata_name) {
        return false;
    }
    let last = parts.next_back().map_or(first, |c| c.as_os_str());
    !last.to_str().is_some_and(is_part_name)
}

/// The token of a barrier marker at `path`, if it is one (directly in `root/.ssp/`).
fn barrier_token(root: &Path, path: &Path) -> Option<u64> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = rel.components();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Component::Normal(dir)), Some(Component::Normal(name)), None)
            if dir == METADATA_DIR =>
        {
            name.to_str()?.strip_prefix(BARRIER_PREFIX)?.parse().ok()
        }
        _ => None,
    }
}

/// One line for a watcher error, naming the limit to raise when it is one.
fn describe(e: &notify::Error) -> String {
    let os = match &e.kind {
        notify::ErrorKind::MaxFilesWatch => Some(libc::ENOSPC),
        notify::ErrorKind::Io(io) => io.raw_os_error(),
        _ => None,
    };
    match os {
        Some(libc::ENOSPC) => "the inotify watch limit is reached (fs.inotify.max_user_watches); \
             raise it, e.g. `sysctl fs.inotify.max_user_watches=524288`, and in \
             /etc/sysctl.d/ to keep it"
            .into(),
        Some(libc::EMFILE) => "too many inotify instances (fs.inotify.max_user_instances); \
             raise it, e.g. `sysctl fs.inotify.max_user_instances=1024`"
            .into(),
        _ => e.to_string(),
    }
}

/// How a barrier ended.
enum Barrier {
    /// Its event was seen: every event before it has been handled.
    Seen,
    /// Not seen: too late, lost in an overflow, the watch failed, or it could not be written.
    NotSeen,
}

impl Watch {
    /// Starts a recursive watch of `root` (blocking: it walks the tree to watch each folder).
    /// Fails in one line when the OS refuses, naming the limit to raise when it is one.
    pub fn start(root: &Path) -> Result<Watch> {
        Self::start_inner(
            root,
            #[cfg(test)]
            Duration::ZERO,
        )
    }

    fn start_inner(root: &Path, #[cfg(test)] delay: Duration) -> Result<Watch> {
        let shared = Arc::new(Shared {
            // Nothing was looked at yet: the first question is answered "changed".
            state: Mutex::new(State {
                changed: true,
                ..State::default()
            }),
            wake: Condvar::new(),
            #[cfg(test)]
            delay,
        });
        let failed = |e: &notify::Error| Error::Folder {
            path: root.to_path_buf(),
            reason: format!(
                "cannot be watched ({}); it is rescanned every round instead",
                describe(e)
            ),
        };
        let handler = {
            let (shared, root) = (Arc::clone(&shared), root.to_path_buf());
            move |event: notify::Result<Event>| shared.observe(&root, event)
        };
        let mut watcher =
            RecommendedWatcher::new(handler, notify::Config::default()).map_err(|e| failed(&e))?;
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| failed(&e))?;
        Ok(Watch {
            root: root.to_path_buf(),
            shared,
            watcher: Mutex::new(watcher),
            token: Mutex::new(0),
        })
    }

    /// Whether anything in the folder changed since the last call (the first call: true), and
    /// the flag cleared. Waits up to `patience` for the barrier (see the module doc); true when
    /// it is not seen in time or the watch failed, so the caller then walks the folder. Callers
    /// ask BEFORE they walk: a change made while walking then dirties the next answer.
    pub fn changed_since_last(&self, patience: Duration) -> bool {
        let barrier = self.barrier(patience);
        let (changed, failed) = {
            let mut st = lock(&self.shared.state);
            // Taken even when the barrier was not seen: the caller walks now, which covers
            // everything reported so far; what is still in flight sets the flag again.
            let changed = std::mem::take(&mut st.changed);
            (changed, st.failed.is_some())
        };
        let changed = changed || failed || matches!(barrier, Barrier::NotSeen);
        if changed && !failed {
            self.fence();
        }
        changed
    }

    /// `None` while watching; `Some(reason)` once the watch failed.
    pub fn health(&self) -> Option<String> {
        lock(&self.shared.state).failed.clone()
    }

    /// Marks the watch failed, as a watcher error would (for tests of the fallback).
    #[doc(hidden)]
    pub fn fail(&self, reason: &str) {
        self.shared.fail(&self.root, reason.to_owned());
    }

    /// Creates a new marker in `.ssp/` and waits until the watcher thread reports it.
    fn barrier(&self, patience: Duration) -> Barrier {
        let token = {
            let mut t = lock(&self.token);
            *t += 1;
            *t
        };
        let overflows = {
            let st = lock(&self.shared.state);
            if st.failed.is_some() {
                return Barrier::NotSeen;
            }
            st.overflows
        };
        if let Err(e) = self.write_marker(token) {
            tracing::debug!("{}: no watch barrier: {e}", self.root.display());
            return Barrier::NotSeen;
        }
        let deadline = Instant::now() + patience;
        let mut st = lock(&self.shared.state);
        loop {
            if st.barrier_seen >= token {
                st.late_barriers = 0;
                return Barrier::Seen;
            }
            if st.failed.is_some() || st.overflows != overflows {
                return Barrier::NotSeen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .shared
                .wake
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.late_barriers += 1;
        let late = st.late_barriers;
        drop(st);
        tracing::debug!(
            "{}: the watch barrier was not reported within {patience:?}",
            self.root.display()
        );
        if late >= LATE_BARRIERS_TO_FAIL {
            self.shared.fail(
                &self.root,
                format!(
                    "its events come late or not at all: its own marker was not reported \
                     within {patience:?} {late} times in a row"
                ),
            );
        }
        Barrier::NotSeen
    }

    /// Creates and removes `.ssp/watch-barrier-<token>` through the root's descriptor (the
    /// metadata folder is never reached through a symlink).
    fn write_marker(&self, token: u64) -> std::io::Result<()> {
        let meta = Dir::open_root(&self.root)?.open_dir(METADATA_DIR)?;
        let name = format!("{BARRIER_PREFIX}{token}");
        // A marker left by a process killed between these two lines: replaced.
        if let Err(e) = meta.create_new(&name, BARRIER_MODE) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            meta.unlink(&name)?;
            meta.create_new(&name, BARRIER_MODE)?;
        }
        // Its creation event is queued already; the removal's is ignored like the rest of .ssp.
        meta.unlink(&name)
    }

    /// One round trip to the watcher thread: served after the batch of events it is handing
    /// out, so the folders whose creation was seen are watched by the time it returns.
    fn fence(&self) {
        let done = lock(&self.watcher).configure(notify::Config::default());
        if let Err(e) = done {
            self.shared.fail(&self.root, describe(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, Flag, MetadataKind, ModifyKind, RemoveKind};

    const PATIENCE: Duration = Duration::from_secs(10);

    #[test]
    fn which_events_count_as_changes() {
        let root = Path::new("/r");
        let create = EventKind::Create(CreateKind::File);
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let closed_read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let closed_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let attrib = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
        let remove = EventKind::Remove(RemoveKind::Any);
        // (case, event kind, paths, counts as a change)
        let table: &[(&str, EventKind, &[&str], bool)] = &[
            ("a new file", create, &["/r/a.txt"], true),
            ("a new file deep down", create, &["/r/d/e/f"], true),
            ("a write", data, &["/r/a.txt"], true),
            ("a mode change", attrib, &["/r/a.txt"], true),
            ("a deletion", remove, &["/r/d"], true),
            ("closed after writing", closed_write, &["/r/a.txt"], true),
            ("opened (our scan hashing)", open, &["/r/a.txt"], false),
            (
                "closed after reading (an upload)",
                closed_read,
                &["/r/a.txt"],
                false,
            ),
            ("the root itself", attrib, &["/r"], true),
            ("our store", data, &["/r/.ssp/index.redb"], false),
            ("our versions", create, &["/r/.ssp/versions/a.txt"], false),
            (
                "a barrier marker",
                create,
                &["/r/.ssp/watch-barrier-7"],
                false,
            ),
            ("the metadata folder itself", remove, &["/r/.ssp"], false),
            (
                "the metadata folder in capitals",
                create,
                &["/r/.SSP/x"],
                false,
            ),
            (
                "a folder named .ssp deeper down",
                create,
                &["/r/d/.ssp/x"],
                true,
            ),
            ("a temp file", data, &["/r/d/.ssp-part-abc-x"], false),
            (
                "a temp file at the top",
                create,
                &["/r/.ssp-part-abc-x"],
                false,
            ),
            (
                "a name merely containing the prefix",
                create,
                &["/r/x.ssp-part-"],
                true,
            ),
            (
                "a folder named like a temp file, a file in it",
                create,
                &["/r/.ssp-part-d/f"],
                true,
            ),
            (
                "a temp file renamed into place",
                EventKind::Modify(ModifyKind::Any),
                &["/r/.ssp-part-abc-x", "/r/x"],
                true,
            ),
            (
                "a temp file renamed away",
                EventKind::Modify(ModifyKind::Any),
                &["/r/.ssp-part-abc-x", "/r/.ssp-part-abc-y"],
                false,
            ),
            ("outside the root", create, &["/elsewhere/x"], true),
            ("no path", EventKind::Other, &[], true),
            ("any kind", EventKind::Any, &["/r/a"], true),
        ];
        for (case, kind, paths, want) in table {
            let mut event = Event::new(*kind);
            for p in *paths {
                event = event.add_path(PathBuf::from(p));
            }
            assert_eq!(counts_as_change(root, &event), *want, "{case}");
        }
        // An overflow counts whatever else it says.
        let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert!(counts_as_change(root, &overflow), "an overflow");
        let overflow_in_ssp = Event::new(open)
            .add_path("/r/.ssp/x".into())
            .set_flag(Flag::Rescan);
        assert!(
            counts_as_change(root, &overflow_in_ssp),
            "an overflow in .ssp"
        );
    }

    #[test]
    fn barrier_tokens_are_read_from_the_marker_name_only() {
        let root = Path::new("/r");
        // (path, token)
        let table = [
            ("/r/.ssp/watch-barrier-1", Some(1)),
            ("/r/.ssp/watch-barrier-18446744073709551615", Some(u64::MAX)),
            ("/r/.ssp/watch-barrier-", None),
            ("/r/.ssp/watch-barrier-1x", None),
            ("/r/.ssp/versions/watch-barrier-1", None),
            ("/r/watch-barrier-1", None),
            ("/r/d/.ssp/watch-barrier-1", None),
            ("/other/.ssp/watch-barrier-1", None),
        ];
        for (path, want) in table {
            assert_eq!(barrier_token(root, Path::new(path)), want, "{path}");
        }
    }

    /// Something done in a watched folder.
    type Act = fn(&Path);

    fn write(root: &Path, rel: &str, content: &str) {
        std::fs::write(root.join(rel), content).unwrap();
    }

    fn remove(root: &Path, rel: &str) {
        std::fs::remove_file(root.join(rel)).unwrap();
    }

    /// A folder with its metadata folder, as a synced folder has, watched by a watcher thread
    /// that takes `delay` over each event.
    fn watched(delay: Duration) -> (tempfile::TempDir, Watch) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(METADATA_DIR)).unwrap();
        let root = dir.path().canonicalize().unwrap();
        let watch = Watch::start_inner(&root, delay).unwrap();
        (dir, watch)
    }

    #[test]
    fn a_change_just_before_the_question_is_never_missed() {
        // A slow watcher thread: without the barrier the flag would still be clear when asked.
        let (dir, watch) = watched(Duration::from_millis(30));
        assert!(watch.changed_since_last(PATIENCE), "the first question");
        assert!(!watch.changed_since_last(PATIENCE), "nothing happened");
        // (case, what is done right before asking, counts)
        let table: [(&str, Act, bool); 8] = [
            ("a file created", |r| write(r, "a", "1"), true),
            ("a file modified", |r| write(r, "a", "2"), true),
            ("a file read", |r| drop(std::fs::read(r.join("a"))), false),
            (
                "a temp file written",
                |r| write(r, ".ssp-part-x", "t"),
                false,
            ),
            ("a temp file removed", |r| remove(r, ".ssp-part-x"), false),
            ("the store written", |r| write(r, ".ssp/store", "s"), false),
            ("a file deleted", |r| remove(r, "a"), true),
            (
                "a folder created",
                |r| std::fs::create_dir(r.join("d")).unwrap(),
                true,
            ),
        ];
        for (case, act, want) in table {
            act(dir.path());
            assert_eq!(watch.changed_since_last(PATIENCE), want, "{case}");
            assert!(!watch.changed_since_last(PATIENCE), "{case}: asked again");
        }
        assert_eq!(watch.health(), None);
    }

    #[test]
    fn a_file_made_in_a_new_folder_right_after_the_walk_began_is_reported() {
        // The watcher thread is still handing out the batch with the folder's creation (slowly)
        // when the answer "changed" is given; notify watches the new folder only after that
        // batch. Without the fence, the file made next (the walk having listed the folder
        // empty) would never be reported.
        let (dir, watch) = watched(Duration::from_millis(30));
        assert!(watch.changed_since_last(PATIENCE), "the first question");
        std::fs::create_dir(dir.path().join("new")).unwrap();
        assert!(watch.changed_since_last(PATIENCE), "the new folder");
        std::fs::write(dir.path().join("new/f"), b"x").unwrap();
        assert!(watch.changed_since_last(PATIENCE), "the file in it");
    }

    #[test]
    fn a_failed_watch_counts_as_changed_forever() {
        let (_dir, watch) = watched(Duration::ZERO);
        assert!(watch.changed_since_last(PATIENCE), "the first question");
        assert!(!watch.changed_since_last(PATIENCE));
        watch.fail("gone");
        assert_eq!(watch.health().as_deref(), Some("gone"));
        for _ in 0..3 {
            assert!(watch.changed_since_last(PATIENCE));
        }
        watch.fail("another reason");
        assert_eq!(
            watch.health().as_deref(),
            Some("gone"),
            "the first reason stands"
        );
    }

    #[test]
    fn a_barrier_that_cannot_be_written_answers_changed() {
        let (dir, watch) = watched(Duration::ZERO);
        assert!(watch.changed_since_last(PATIENCE));
        std::fs::remove_dir(dir.path().join(METADATA_DIR)).unwrap();
        let started = Instant::now();
        assert!(watch.changed_since_last(PATIENCE), "no .ssp/");
        assert!(started.elapsed() < PATIENCE, "without waiting for it");
    }

    #[test]
    fn a_watch_that_cannot_start_says_so_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let e = Watch::start(&dir.path().join("missing"))
            .err()
            .expect("no folder to watch");
        let line = e.to_string();
        assert!(matches!(e, Error::Folder { .. }), "{line}");
        assert!(line.contains("cannot be watched"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn watch_errors_name_the_limit_to_raise() {
        // (case, error, text it names)
        let table = [
            (
                "watch limit",
                notify::Error::new(notify::ErrorKind::MaxFilesWatch),
                "fs.inotify.max_user_watches",
            ),
            (
                "instance limit",
                notify::Error::io(std::io::Error::from_raw_os_error(libc::EMFILE)),
                "fs.inotify.max_user_instances",
            ),
            ("anything else", notify::Error::generic("boom"), "boom"),
        ];
        for (case, e, names) in table {
            assert!(describe(&e).contains(names), "{case}: {}", describe(&e));
        }
    }
}
