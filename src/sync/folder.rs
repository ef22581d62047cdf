//! The folder model: ONE service per sync folder in the process. It owns the folder's store
//! (its history: records, tombstones, device ID, sequence counter), scans, and serialises
//! every change to the folder's index; server sessions and client syncs of a folder share it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext, Result};
use crate::fs::{scan_versioned, ScanContext, ScanResult, Watch};
use crate::index::{DeviceId, EntryKind, FileRecord, IndexStore, Snapshot};

/// Default time a tombstone is kept: a replica that was away longer than this may bring a
/// deleted file back (Syncthing keeps them for months too).
pub const DEFAULT_TOMBSTONE_KEEP_DAYS: u64 = 180;

/// Every open folder model of the process, by canonical root.
static FOLDERS: Mutex<Vec<(PathBuf, Weak<Folder>)>> = Mutex::new(Vec::new());

/// A folder being synced (see the module doc). Open it with [`Folder::open`]: one instance per
/// root in the process.
pub struct Folder {
    root: PathBuf,
    device: DeviceId,
    /// The folder's history. Without it the folder does not sync (it would resurrect deletes).
    store: IndexStore,
    /// Serialises scans and record commits; the last sequence number given out.
    state: Mutex<u64>,
    /// One client sync of this folder at a time.
    sync_running: tokio::sync::Mutex<()>,
    /// Temp files (relative paths) that rounds of this folder are writing now: never stale.
    writing: Mutex<HashMap<String, usize>>,
    /// When versions were last pruned (at most once per [`PRUNE_INTERVAL_S`]).
    pruned: Mutex<Option<std::time::Instant>>,
    /// The OS watch of the folder once [`Folder::watch`] was called: the watch, or why it could
    /// not be started (then every round walks, as without one).
    watch: OnceLock<std::result::Result<Watch, String>>,
    /// The last full scan's result while watched: what a round gets again while nothing
    /// changed. Locked after `state`.
    last_scan: Mutex<Option<LastScan>>,
    /// How many times this model walked the folder.
    full_scans: AtomicU64,
}

/// How long a cached scan stands at most (each with its own jitter of ±10%, so that folders
/// watched since the same moment do not all walk at once): the watch saves walks, and a full
/// walk now and then catches what any watch may miss (a network file system, a bug).
pub const FULL_RESCAN_INTERVAL: Duration = Duration::from_secs(3600);

/// How long a scan waits for the watch's barrier before it walks anyway.
const WATCH_BARRIER_PATIENCE: Duration = Duration::from_secs(1);

/// A full scan's result, kept while the folder is watched.
struct LastScan {
    result: ScanResult,
    /// When it stops standing in for a walk.
    expires: Instant,
}

/// What a scan finds when nothing changed since `last`: the same folder, nothing to commit.
/// (Every field by name: a field added to [`ScanResult`] must be decided on here.)
fn unchanged(last: &ScanResult) -> ScanResult {
    ScanResult {
        files: Vec::new(),
        changed: Vec::new(),
        parts: last.parts.clone(),
        hashed: 0,
        skipped: last.skipped.clone(),
        sequence: last.sequence,
        versioned: 0,
        known_files: last.known_files,
        live_files: last.live_files,
        expired: Vec::new(),
        odd_names: last.odd_names.clone(),
    }
}

/// `base` stretched by `r` (uniform over `u64`) into `base` ± 10%.
fn jittered(base: Duration, r: u64) -> Duration {
    base.mul_f64(0.9 + 0.2 * (r as f64 / u64::MAX as f64))
}

/// Longest an open waits for a model of the same folder that is being dropped.
const DROP_WAIT: Duration = Duration::from_secs(2);
const DROP_POLL: Duration = Duration::from_millis(5);

/// How often old versions are pruned (at the start of a round, when due).
const PRUNE_INTERVAL_S: u64 = 3600;

/// Temp files a round is writing, registered with the folder until dropped.
pub(crate) struct Writing<'a> {
    folder: &'a Folder,
    parts: Vec<String>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut w = self
            .folder
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for p in &self.parts {
            if let Some(n) = w.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    w.remove(p);
                }
            }
        }
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Folder {
    /// The model of `root` (shared when already open in this process), creating the folder if
    /// `create` and it is missing. Fails (one line) when the store cannot be opened, e.g. when
    /// another process syncs the folder.
    pub fn open(root: &Path, create: bool) -> Result<Arc<Folder>> {
        if create && !root.exists() {
            std::fs::create_dir_all(root).map_err(|e| Error::Folder {
                path: root.to_path_buf(),
                reason: format!("cannot be created: {e}"),
            })?;
        }
        crate::fs::check_folder(root)?;
        let root = root.canonicalize().context(|| root.display().to_string())?;
        // A model of this folder that is being dropped (its last user just let go, maybe on
        // another thread) still holds the store for a moment: wait for it, briefly, rather
        // than report the folder busy.
        let mut being_dropped = false;
        let mut waited = Duration::ZERO;
        let (mut open, store) = loop {
            let mut open = FOLDERS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = open
                .iter()
                .find(|(r, _)| *r == root)
                .and_then(|(_, w)| w.upgrade())
            {
                return Ok(f);
            }
            being_dropped |= open.iter().any(|(r, _)| *r == root);
            open.retain(|(_, w)| w.strong_count() > 0);
            match IndexStore::open(&root) {
                Err(Error::FolderBusy { .. }) if being_dropped && waited < DROP_WAIT => {
                    drop(open);
                    std::thread::sleep(DROP_POLL);
                    waited += DROP_POLL;
                }
                store => break (open, store?),
            }
        };
        let device = store.device_id()?;
        let sequence = store.sequence()?;
        let folder = Arc::new(Folder {
            root: root.clone(),
            device,
            store,
            state: Mutex::new(sequence),
            sync_running: tokio::sync::Mutex::new(()),
            writing: Mutex::default(),
            pruned: Mutex::new(None),
            watch: OnceLock::new(),
            last_scan: Mutex::new(None),
            full_scans: AtomicU64::new(0),
        });
        open.push((root, Arc::downgrade(&folder)));
        Ok(folder)
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This replica's device ID.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Registers temp files a round is about to write (until the guard drops).
    pub(crate) fn writing(&self, parts: Vec<String>) -> Writing<'_> {
        let mut w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        for p in &parts {
            *w.entry(p.clone()).or_insert(0) += 1;
        }
        Writing {
            folder: self,
            parts,
        }
    }

    /// Whether a round of this folder is writing the temp file `part`.
    pub(crate) fn is_writing(&self, part: &str) -> bool {
        let w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        w.contains_key(part)
    }

    /// Takes the folder for one client sync, or fails at once if another sync has it.
    pub(crate) fn try_begin_sync(&self) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        self.sync_running.try_lock().map_err(|_| Error::FolderBusy {
            path: self.root.clone(),
            holder: Some("in this process".into()),
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, u64> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scans the folder (blocking; call from a blocking thread) and commits what changed
    /// locally as new versions. Stops with [`Error::MassDeletion`], committing nothing, when
    /// every file the store knew is gone (an unmounted drive, a wrong path) unless
    /// `allow_mass_delete`. Tombstones older than `tombstone_keep` are forgotten.
    ///
    /// While the folder is watched ([`Folder::watch`]) and the watch says nothing changed since
    /// the last walk, no record was committed since and that walk is younger than
    /// [`FULL_RESCAN_INTERVAL`], the last walk's result is returned again (with nothing
    /// `changed`) instead of walking.
    ///
    /// Returns the scan and a snapshot of the store as the scan left it: the folder's index,
    /// which [`ScanResult::files`] does not hold.
    pub fn scan(
        &self,
        allow_mass_delete: bool,
        tombstone_keep: Duration,
    ) -> Result<(ScanResult, Snapshot)> {
        let mut seq = self.lock_state();
        self.check_root()?;
        // A watch that failed says "changed" forever: walk as without one, and hold nothing.
        let watch = self.watch.get().and_then(|w| w.as_ref().ok());
        let watch = watch.filter(|w| w.health().is_none());
        match watch {
            None => self.forget_last_scan(),
            Some(watch) => {
                // Asked BEFORE the walk: a change made while walking dirties the next round.
                let changed = watch.changed_since_last(WATCH_BARRIER_PATIENCE);
                let mut last = self.lock_last_scan();
                // Taken out: gone until this walk succeeds, so a failed walk (a mass
                // deletion) leaves nothing to stand in for the folder as it was before.
                if let Some(l) = last.take() {
                    if !changed && Instant::now() < l.expires {
                        let out = unchanged(&l.result);
                        *last = Some(l);
                        return Ok((out, self.store.snapshot()?));
                    }
                }
            }
        }
        let scan = self.walk(&mut seq, allow_mass_delete, tombstone_keep)?;
        // Only while watched: without a watch nothing would ever tell it is stale.
        if watch.is_some() {
            let mut r = [0u8; 8];
            let _ = getrandom::fill(&mut r);
            *self.lock_last_scan() = Some(LastScan {
                result: unchanged(&scan),
                expires: Instant::now() + jittered(FULL_RESCAN_INTERVAL, u64::from_le_bytes(r)),
            });
        }
        Ok((scan, self.store.snapshot()?))
    }

    /// The full scan: walks the folder and commits what changed.
    fn walk(
        &self,
        seq: &mut u64,
        allow_mass_delete: bool,
        tombstone_keep: Duration,
    ) -> Result<ScanResult> {
        self.full_scans.fetch_add(1, Ordering::Relaxed);
        let ignore = crate::fs::IgnoreRules::load(&self.root)?;
        let mut next = *seq;
        let now = now_ns();
        let store = &self.store;
        let mut flush = |batch: &[FileRecord], sequence: u64| store.commit(batch, &[], sequence);
        let mut scan = scan_versioned(
            &self.root,
            ScanContext {
                previous: Box::new(self.store.records()?),
                device: Some(self.device),
                ignored: &|rel, dir| ignore.is_ignored(rel, dir),
                sequence: &mut next,
                now_ns: now,
                list: false,
                tombstone_keep_ns: i64::try_from(tombstone_keep.as_nanos()).unwrap_or(i64::MAX),
                flush: Some(&mut flush),
            },
        )?;
        let live_before = scan.known_files;
        let live_after = scan.live_files;
        if live_before > 0 && live_after == 0 && !allow_mass_delete {
            return Err(Error::MassDeletion {
                path: self.root.clone(),
                reason: format!(
                    "all {live_before} files are gone since the last sync (an unmounted drive or \
                     a wrong path?)"
                ),
            });
        }
        let expired = std::mem::take(&mut scan.expired);
        if !expired.is_empty() {
            let gone: std::collections::HashSet<&str> =
                expired.iter().map(String::as_str).collect();
            scan.changed.retain(|r| !gone.contains(r.path.as_str()));
        }
        // A scan that found nothing new writes nothing (a commit is a disk sync).
        if !(scan.changed.is_empty() && expired.is_empty() && next == *seq) {
            self.store.commit(&scan.changed, &expired, next)?;
        }
        *seq = next;
        scan.sequence = next;
        Ok(scan)
    }

    /// Starts watching the folder with the OS's notifications, once (later calls return what
    /// the first did): then a round walks the folder only when something changed (see
    /// [`Folder::scan`]). A failure is logged once as a warning and returned; the folder is
    /// then walked every round, as without a watch. Blocking (it walks the tree once).
    pub fn watch(&self) -> Result<()> {
        let started = self.watch.get_or_init(|| {
            Watch::start(&self.root).map_err(|e| {
                tracing::warn!("{e}");
                match e {
                    Error::Folder { reason, .. } => reason,
                    e => e.to_string(),
                }
            })
        });
        match started {
            Ok(_) => Ok(()),
            Err(reason) => Err(Error::Folder {
                path: self.root.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// How many times this model walked the folder (a scan that reused the last walk does not
    /// count).
    pub fn full_scans(&self) -> u64 {
        self.full_scans.load(Ordering::Relaxed)
    }

    /// Marks the folder's watch failed, as a watcher error would (for tests of the fallback).
    #[doc(hidden)]
    pub fn fail_watch(&self, reason: &str) {
        if let Some(Ok(w)) = self.watch.get() {
            w.fail(reason);
        }
    }

    fn lock_last_scan(&self) -> MutexGuard<'_, Option<LastScan>> {
        self.last_scan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the cached scan: records were committed (or the folder was changed here) since.
    fn forget_last_scan(&self) {
        *self.lock_last_scan() = None;
    }

    /// Stores records of changes applied here; see [`Held::commit`].
    pub fn commit(&self, records: Vec<FileRecord>, local: bool) -> Result<Vec<FileRecord>> {
        self.hold().commit(records, local)
    }

    /// The root is still there: a synced folder whose root vanished (an unmounted drive, a
    /// folder moved away) stops every sync with one line, and nothing is recorded as deleted.
    fn check_root(&self) -> Result<()> {
        crate::fs::check_folder(&self.root).map_err(|e| match e {
            Error::Folder { path, reason } => Error::Folder {
                path,
                reason: format!("{reason} (it was synced before: is a drive unmounted?)"),
            },
            e => e,
        })
    }

    /// For each peer: the sequence up to which its index is applied here. Forgotten when the
    /// ignore rules changed since: entries skipped as ignored must then be offered again.
    pub fn known_peers(&self) -> Result<std::collections::BTreeMap<DeviceId, u64>> {
        self.check_root()?;
        let rules = self.ignore_rules()?.fingerprint();
        if self.store.ignore_fingerprint()? != rules {
            self.store.reset_peer_sequences(rules)?;
        }
        Ok(self.store.peer_sequences()?.into_iter().collect())
    }

    /// Records that `peer`'s index is applied here up to `sequence`.
    pub fn set_known(&self, peer: DeviceId, sequence: u64) -> Result<()> {
        self.store.set_peer_sequence(peer, sequence)
    }

    /// The last sequence number given to a change here.
    pub fn sequence(&self) -> u64 {
        *self.lock_state()
    }

    /// The folder's ignore rules (`.sspignore` and the built-in ones), read now.
    pub fn ignore_rules(&self) -> Result<crate::fs::IgnoreRules> {
        crate::fs::IgnoreRules::load(&self.root)
    }

    /// The stored records, by path.
    pub fn records(&self) -> Result<HashMap<String, FileRecord>> {
        let _seq = self.lock_state();
        self.store.load()
    }

    /// Holds the folder's index still while a change is checked and applied on disk (the
    /// finish step: the target is still what the plan saw) and its record stored.
    /// The folder's store, for a round's scratch tables ([`super::incoming::Remote`]).
    pub(crate) fn store(&self) -> &IndexStore {
        &self.store
    }

    pub(crate) fn hold(&self) -> Held<'_> {
        Held {
            folder: self,
            sequence: self.lock_state(),
        }
    }
}

/// The folder held still (no scan, no other commit) while changes are applied and stored.
pub(crate) struct Held<'a> {
    folder: &'a Folder,
    sequence: MutexGuard<'a, u64>,
}

impl Held<'_> {
    /// Stores records of changes applied here (adopted from a peer, or local ones such as
    /// conflict copies when `local`), each with the next sequence number; `local` records get
    /// a version bumped for this device. Returns them as stored.
    pub fn commit(&mut self, records: Vec<FileRecord>, local: bool) -> Result<Vec<FileRecord>> {
        if records.is_empty() {
            return Ok(records);
        }
        let device = self.folder.device;
        let mut next = *self.sequence;
        let records: Vec<FileRecord> = records
            .into_iter()
            .map(|mut r| {
                if local {
                    r.version.bump(device);
                    r.modified_by = Some(device);
                    r.origin = None;
                }
                next += 1;
                r.sequence = next;
                r
            })
            .collect();
        // Whatever the commit's outcome, the cached scan may no longer be the store's state.
        self.folder.forget_last_scan();
        self.folder.store.commit(&records, &[], next)?;
        *self.sequence = next;
        Ok(records)
    }
}

/// Which version of a conflict to keep (the page's keep-this / keep-that / keep-both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The file at the original name; the conflict copy goes (into versions).
    Original,
    /// The conflict copy's content, at the original name (the other goes into versions).
    Copy,
    /// Both: the copy is renamed so it is no longer a conflict.
    Both,
}

impl Keep {
    /// Parses "original", "copy" or "both".
    pub fn parse(s: &str) -> Option<Keep> {
        match s {
            "original" => Some(Keep::Original),
            "copy" => Some(Keep::Copy),
            "both" => Some(Keep::Both),
            _ => None,
        }
    }
}

/// A conflict copy in the folder and the file it is a copy of.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConflictCopy {
    /// The original path.
    pub path: String,
    /// The conflict copy (the version that lost the name).
    pub copy: String,
    /// The device that made the copy's version (from its name).
    pub copy_device: String,
    pub copy_size: u64,
    pub copy_mtime_ns: i64,
    /// The version at the original path: size, mtime, device; `None` if it was deleted since.
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
    pub device: Option<String>,
}

/// Splits `dir/stem.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext` into the original path
/// (`dir/stem.ext`), the date-time text and the device.
pub fn parse_conflict_name(path: &str) -> Option<(String, String, String)> {
    const MARK: &str = ".sync-conflict-";
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, path),
    };
    let at = name.find(MARK)?;
    let (stem, rest) = (&name[..at], &name[at + MARK.len()..]);
    // YYYYMMDD-HHMMSS-DEVICE, then the extension if any.
    let (tag, ext) = match rest.get(23..) {
        Some("") => (rest, ""),
        Some(e) if e.starts_with('.') => (&rest[..23], e),
        _ => return None,
    };
    let b = tag.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if stem.is_empty()
        || b.len() != 23
        || !digits(0..8)
        || b[8] != b'-'
        || !digits(9..15)
        || b[15] != b'-'
    {
        return None;
    }
    let original = format!("{stem}{ext}");
    let original = match dir {
        Some(d) => format!("{d}/{original}"),
        None => original,
    };
    Some((original, tag[..15].to_owned(), tag[16..].to_owned()))
}

impl Folder {
    /// The conflict copies in the folder (from the store as the last scan left it), each with
    /// the file it is a copy of.
    pub fn conflicts(&self) -> Result<Vec<ConflictCopy>> {
        let records = self.records()?;
        let mut out: Vec<ConflictCopy> = records
            .values()
            .filter(|r| !r.deleted && r.kind == EntryKind::File)
            .filter_map(|r| {
                let (path, _, device) = parse_conflict_name(&r.path)?;
                let original = records.get(&path).filter(|o| !o.deleted);
                Some(ConflictCopy {
                    copy: r.path.clone(),
                    copy_device: device,
                    copy_size: r.size,
                    copy_mtime_ns: r.mtime_ns,
                    size: original.map(|o| o.size),
                    mtime_ns: original.map(|o| o.mtime_ns),
                    device: original.and_then(|o| o.modified_by).map(|d| d.short()),
                    path,
                })
            })
            .collect();
        out.sort_by(|a, b| a.copy.cmp(&b.copy));
        Ok(out)
    }

    /// Resolves the conflict copy `copy` by keeping one version or both. A local change: the
    /// next sync carries it to the other devices; nothing is lost (what goes, goes into
    /// versions).
    pub fn resolve(&self, copy: &str, keep: Keep) -> Result<()> {
        let (original, when, device) = parse_conflict_name(copy).ok_or_else(|| Error::BadPath {
            path: copy.to_owned(),
            reason: "not a conflict copy's name",
        })?;
        let copy_rel = crate::fs::RelPath::parse(copy)?;
        let orig_rel = crate::fs::RelPath::parse(&original)?;
        let _held = self.hold();
        // The folder changes here: the next round walks without waiting on the watch to say so.
        self.forget_last_scan();
        let missing = || Error::Folder {
            path: self.root.join(copy),
            reason: "no such conflict copy (resolved already?)".into(),
        };
        let writes = crate::fs::WriteRoot::open(&self.root)?;
        let root = writes.root();
        let parent = |rel: &crate::fs::RelPath| {
            let parts: Vec<&str> = rel.parent_components().collect();
            root.open_path(&parts, crate::fs::Resolve::Kernel)
                .map_err(|e| Error::io(rel.to_string(), e))
        };
        let (cdir, odir) = (
            parent(&copy_rel).map_err(|_| missing())?,
            parent(&orig_rel)?,
        );
        match cdir.stat(copy_rel.file_name()) {
            Ok(st) if !st.is_dir => {}
            _ => return Err(missing()),
        }
        let mut versions = self.archive()?;
        let now = SystemTime::now();
        let io = |what: &str, e| Error::io(what.to_owned(), e);
        match keep {
            Keep::Original => {
                versions
                    .archive(&cdir, copy_rel.file_name(), &copy_rel, now)
                    .map_err(|e| io(copy, e))?;
            }
            Keep::Copy => {
                // The original path holds one of the two at every moment; the original goes
                // into versions.
                versions
                    .replace_with(&cdir, copy_rel.file_name(), &odir, &orig_rel, now)
                    .map_err(|e| io(&original, e))?;
            }
            Keep::Both => {
                let name = orig_rel.file_name();
                let (stem, ext) = match name.rfind('.') {
                    Some(i) if i > 0 => (&name[..i], &name[i..]),
                    _ => (name, ""),
                };
                let kept = format!("{stem} ({device} {when}){ext}");
                match cdir.stat(&kept) {
                    Ok(_) => {
                        return Err(Error::io(
                            kept,
                            std::io::Error::other("that name is taken; rename the copy by hand"),
                        ))
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(io(&kept, e)),
                }
                cdir.rename(copy_rel.file_name(), &kept)
                    .map_err(|e| io(copy, e))?;
            }
        }
        Ok(())
    }

    /// The folder's versions archive, reached through the root's descriptor.
    fn archive(&self) -> Result<crate::fs::Versions> {
        let writes = crate::fs::WriteRoot::open(&self.root)?;
        crate::fs::Versions::open(writes.root()).map_err(|e| Error::io("opening .ssp/versions", e))
    }

    /// The versions kept of `rel` (of every path when `None`), newest first.
    pub fn versions(&self, rel: Option<&str>) -> Result<Vec<crate::fs::Version>> {
        let rel = rel.map(crate::fs::RelPath::parse).transpose()?;
        let versions = self.archive()?;
        versions
            .list(rel.as_ref())
            .map_err(|e| Error::io("listing .ssp/versions", e))
    }

    /// Puts the version of `rel` kept at `at` (the newest at or before it; the newest when
    /// `None`) back in place; the current file goes into versions first. The next sync sends it.
    pub fn restore(&self, rel: &str, at: Option<SystemTime>) -> Result<crate::fs::Version> {
        let rel = crate::fs::RelPath::parse(rel)?;
        let _held = self.hold();
        self.forget_last_scan();
        let mut versions = self.archive()?;
        versions.restore(&rel, at, SystemTime::now())
    }

    /// Prunes versions kept longer than `keep` if the last prune is an hour old (blocking).
    pub fn prune_versions_if_due(&self, keep: Duration) {
        {
            let mut last = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(PRUNE_INTERVAL_S)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match self.prune_versions(keep) {
            Ok(0) => {}
            Ok(n) => tracing::info!("{}: pruned {n} old versions", self.root.display()),
            Err(e) => tracing::warn!("{}: cannot prune old versions: {e}", self.root.display()),
        }
    }

    /// Deletes versions kept longer than `keep`; returns how many.
    pub fn prune_versions(&self, keep: Duration) -> Result<usize> {
        let mut versions = self.archive()?;
        versions
            .prune(keep, SystemTime::now())
            .map_err(|e| Error::io("pruning .ssp/versions", e))
    }
}

#[cfg(test)]
mod tests {
    /// The last user of a folder's model lets go on one thread while another opens it: the
    /// opener gets a model (the same or a new one), never "another process has the store".
    #[test]
    fn opening_while_the_last_user_drops_it_never_reports_the_folder_busy() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..100 {
            let f = Folder::open(dir.path(), false).unwrap();
            let go = std::sync::Arc::new(std::sync::Barrier::new(2));
            let g = std::sync::Arc::clone(&go);
            let dropper = std::thread::spawn(move || {
                g.wait();
                drop(f);
            });
            go.wait();
            let opened = Folder::open(dir.path(), false);
            dropper.join().unwrap();
            assert!(opened.is_ok(), "round {round}: {:?}", opened.err());
        }
    }

    use super::*;

    #[test]
    fn full_rescans_come_within_ten_percent_of_the_interval() {
        let hour = Duration::from_secs(3600);
        // (random draw, interval)
        let table = [
            (0, Duration::from_secs(3240)),
            (u64::MAX / 2, hour),
            (u64::MAX, Duration::from_secs(3960)),
        ];
        for (r, want) in table {
            let got = jittered(hour, r);
            let off = got.abs_diff(want);
            assert!(off < Duration::from_millis(1), "{r}: {got:?}");
        }
    }

    #[test]
    fn conflict_names_parse_back_to_their_original() {
        // (copy, original, date-time, device)
        let table = [
            (
                "a.sync-conflict-20240229-235959-0123456.txt",
                Some(("a.txt", "20240229-235959", "0123456")),
            ),
            (
                "d/e/notes.sync-conflict-20261201-101010-ABCDEF0",
                Some(("d/e/notes", "20261201-101010", "ABCDEF0")),
            ),
            (
                "x.tar.sync-conflict-20261201-101010-ABCDEF0.gz",
                Some(("x.tar.gz", "20261201-101010", "ABCDEF0")),
            ),
            ("plain.txt", None),
            (".sync-conflict-20261201-101010-ABCDEF0", None),
            ("a.sync-conflict-2026120-101010-ABCDEF0", None),
            ("a.sync-conflict-20261201-101010-ABCDEF0x", None),
        ];
        for (copy, want) in table {
            let got = parse_conflict_name(copy);
            let want = want.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
            assert_eq!(got, want, "{copy}");
        }
    }
}
