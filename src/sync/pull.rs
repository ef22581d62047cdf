//! The write stage both ends use to apply a peer's changes: receive and validate its index,
//! apply decisions on disk through descriptors (conflict copies, folders, symlinks, metadata,
//! deletions into versions), and fetch content with pipelined requests while a blocking writer
//! thread turns chunks into temp files that are verified and renamed only onto what the plan
//! saw.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::folder::{Folder, Held};
use super::incoming::Remote;
use super::link::{silent_peer, Link};
use super::session::{RoundConfig, RoundOutcome};
use crate::error::{Error, Result};
use crate::fs::{
    local_mode, part_name, part_rel, umask, Dir, EntryStat, FinishError, PartFile, PartWriter,
    RelPath, Versions, WriteRoot, NEW_DIR_MODE,
};
use crate::index::{Action, Apply, EntryKind, FileRecord, Hash};
use crate::net::remote_error;
use crate::progress::{Event, EventSink, Progress, TransferCounters, PROGRESS_INTERVAL_MS};
use crate::protocol::{
    peer_text, sanitize_error, ErrorCode, ErrorMsg, FileChunk, FileRequest, IndexEntry, Message,
    SyncComplete, INDEX_BATCH_ENTRIES, MAX_LOCAL_PATH_BYTES, MAX_PATH_DEPTH,
};

/// Files requested ahead of the one being received. Requests go out in batches: once half the
/// window has arrived, the window is topped up with one flush.
const WINDOW_FILES: usize = 256;
/// Batches queued between the socket task and the writer thread.
const WRITE_QUEUE: usize = 4;
/// A batch for the writer ends at this many messages or bytes (whatever is already received
/// goes in one hand-over: one thread wake-up per batch, not per small file).
const BATCH_MESSAGES: usize = 256;
const BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Most finished files whose records wait for one commit (a commit syncs the store).
const COMMIT_RECORDS: usize = 4096;
/// Longest a finished file's record waits for its commit.
const COMMIT_INTERVAL: Duration = Duration::from_millis(250);

/// A path's current state on disk, as the plan saw it: the finish step replaces nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Nothing is there.
    Absent,
    /// A regular file or symlink with this size, mtime and inode.
    Entry {
        size: u64,
        mtime_ns: i64,
        inode: u64,
    },
    /// A folder.
    Dir,
}

impl Expect {
    /// What `local` (our record after the scan) says is on disk.
    pub fn of(local: Option<&FileRecord>) -> Expect {
        match local {
            Some(r) if !r.deleted && r.kind == EntryKind::Dir => Expect::Dir,
            Some(r) if !r.deleted => Expect::Entry {
                size: r.size,
                mtime_ns: r.mtime_ns,
                inode: r.inode,
            },
            _ => Expect::Absent,
        }
    }

    /// Whether `found` (a stat of the path, `None` when absent) is still what was expected.
    pub fn holds(&self, found: Option<&EntryStat>) -> bool {
        match (self, found) {
            (Expect::Absent, None) => true,
            (Expect::Dir, Some(st)) => st.is_dir,
            (
                Expect::Entry {
                    size,
                    mtime_ns,
                    inode,
                },
                Some(st),
            ) => !st.is_dir && st.len == *size && st.mtime_ns == *mtime_ns && st.ino == *inode,
            _ => false,
        }
    }
}

/// The message for a path that changed here after the plan was made.
const CHANGED_HERE: &str = "changed here during the sync; it syncs next time";

/// A file to fetch.
pub(crate) struct Fetch {
    rel: RelPath,
    /// What the store holds once it is written (the peer's record, versions merged).
    record: FileRecord,
    hash: Hash,
    /// For messages only: every write goes through descriptors, never this path.
    target: PathBuf,
    /// Permission bits the file gets: the sender's, narrowed by our umask.
    mode: u32,
    /// What must still be at the target when the file is finished.
    expect: Expect,
}

impl Fetch {
    /// Temp-file name, in the target's folder (made when needed: a million fetches hold no
    /// million names).
    fn part(&self) -> String {
        part_name(&self.rel, &self.hash)
    }

    /// The temp file relative to the root (as the scan reports parts).
    fn part_rel(&self) -> String {
        part_rel(&self.rel, &self.hash)
    }
}

enum WriteCmd {
    Chunk(FileChunk),
    Fail { id: u32, reason: String },
}

enum Outcome {
    /// Written and stored.
    Done,
    Failed(String),
    /// The disk is full: every later file would fail too, so the sync stops here.
    Abort(Error),
    /// The resumed temp file did not verify: fetch again from zero.
    Retry,
}

struct FileDone {
    id: u32,
    outcome: Outcome,
}

/// Bounds on what a peer may send in one round (from our config).
#[derive(Debug, Clone)]
pub(crate) struct PullLimits {
    pub max_index_entries: usize,
    pub max_index_path_bytes: usize,
    pub progress_timeout: Duration,
    /// [`super::PeerConfig::segment_entries`].
    pub segment_entries: usize,
}

impl From<&super::PeerConfig> for PullLimits {
    fn from(c: &super::PeerConfig) -> Self {
        Self {
            max_index_entries: c.max_index_entries,
            max_index_path_bytes: c.max_index_path_bytes,
            progress_timeout: c.progress_timeout,
            segment_entries: c.segment_entries,
        }
    }
}

/// Progress and cancellation plumbing for one round.
pub(crate) struct PullHooks<'a> {
    pub events: Option<&'a EventSink>,
    pub cancel: CancellationToken,
    pub pending: &'a AtomicU64,
}

/// Most devices one version vector may name: far more than replicas of a folder, few enough
/// that a hostile index cannot make vectors the bulk of its size.
const MAX_VERSION_DEVICES: usize = 256;

async fn fail_peer(link: &Link, e: Error) -> Error {
    let code = if matches!(e, Error::BadPath { .. }) {
        ErrorCode::BadPath
    } else {
        ErrorCode::BadMessage
    };
    link.fail(code, e.to_string()).await;
    e
}

/// Receives and validates the peer's whole index. Anything hostile aborts the round before
/// any write; every batch is checked against the limits before it is kept, so memory stays
/// bounded by them whatever the peer sends.
pub(crate) async fn receive_index(
    link: &mut Link,
    folder: &Arc<Folder>,
    limits: &PullLimits,
) -> Result<Remote> {
    let mut out = Remote::new(folder, limits.segment_entries);
    let mut tally = IndexTally::default();
    loop {
        let batch = match link.next(limits.progress_timeout, "the index").await? {
            Message::FileIndex(b) => b,
            m => {
                return Err(fail_peer(
                    link,
                    Error::protocol(format!("expected FILE_INDEX, got {:?}", m.message_type())),
                )
                .await)
            }
        };
        if let Err(why) = tally.add(&batch.entries, limits) {
            return Err(fail_peer(link, Error::protocol(why)).await);
        }
        for entry in batch.entries {
            let rel = match RelPath::parse(&entry.path) {
                Ok(r) => r,
                Err(e) => {
                    let e = sanitize_error(e);
                    tracing::warn!("the peer offered a hostile path: {e}");
                    return Err(fail_peer(link, e).await);
                }
            };
            let shown = peer_text(rel.as_str());
            let Some(hash) = Hash::from_hex(&entry.hash) else {
                return Err(
                    fail_peer(link, Error::protocol(format!("bad hash for {shown}"))).await,
                );
            };
            if entry.version.0.len() > MAX_VERSION_DEVICES {
                return Err(fail_peer(
                    link,
                    Error::protocol(format!(
                        "{shown}: a version naming more than {MAX_VERSION_DEVICES} devices"
                    )),
                )
                .await);
            }
            let mut rec = FileRecord::from_entry(&entry, hash);
            rec.path = rel.as_str().to_owned();
            match rec.kind {
                EntryKind::Dir => rec.size = 0,
                EntryKind::Symlink if !rec.deleted => {
                    let ok = rec
                        .target
                        .as_deref()
                        .map(|t| crate::fs::symlink_target_inside(rel.as_str(), t));
                    if !matches!(ok, Some(Ok(_))) {
                        return Err(fail_peer(
                            link,
                            Error::protocol(format!(
                                "{shown}: a symlink pointing outside the folder"
                            )),
                        )
                        .await);
                    }
                }
                _ => {}
            }
            // In strictly increasing path order (the store's): a repeat is caught by the same
            // comparison, without a set of every path.
            if let Some(before) = out.last_path().filter(|b| *b >= rel.as_str()) {
                let why = if before == rel.as_str() {
                    format!("{shown} listed twice")
                } else {
                    format!("{shown} out of path order in the index")
                };
                return Err(fail_peer(link, Error::protocol(why)).await);
            }
            out.push(rec)?;
        }
        if batch.last {
            out.finish()?;
            return Ok(out);
        }
    }
}

/// One path's decision, with what our side held when it was made.
pub(crate) struct Planned {
    local: Option<Box<FileRecord>>,
    action: Action,
    record: FileRecord,
    /// For a conflict copy: the store already knows the copy's path (the same loser was
    /// copied before and the user has since kept, edited or deleted that copy), so our entry
    /// goes into versions instead of over it.
    copy_taken: bool,
}

/// Everything a round changes on this side, in the order it is applied.
#[derive(Default)]
pub(crate) struct LocalPlan {
    items: Vec<Planned>,
    /// A local file for each content hash we hold (non-empty files): a renamed or copied file
    /// is copied from here instead of fetched again.
    pub sources: Arc<HashMap<Hash, String>>,
}

impl LocalPlan {
    pub fn push(
        &mut self,
        local: Option<FileRecord>,
        action: Action,
        record: FileRecord,
        copy_taken: bool,
    ) {
        self.items.push(Planned {
            local: local.map(Box::new),
            action,
            record,
            copy_taken,
        });
    }

    /// What the plan does, counted (`want_sources`: with the hashes it may fetch).
    pub fn tally(&self, want_sources: bool) -> PlanTally {
        let mut tally = PlanTally::new(want_sources);
        for p in &self.items {
            tally.add(p.local.as_deref(), &p.action, &p.record);
        }
        tally
    }
}

/// What a plan does, counted as it is made (a plan too big to hold is counted, then applied
/// in segments).
#[derive(Default)]
pub(crate) struct PlanTally {
    /// Paths it changes.
    pub changes: usize,
    /// Live local files it deletes.
    pub deleted_files: usize,
    /// Whether it writes a file or symlink.
    pub writes_files: bool,
    /// Files it may fetch, and their bytes.
    pub fetches: u64,
    pub fetch_bytes: u64,
    /// Content hashes of those files (when `want_sources`).
    pub wanted: HashSet<Hash>,
    want_sources: bool,
}

impl PlanTally {
    /// `want_sources`: collect the hashes to look for among our files (none when we hold none).
    pub fn new(want_sources: bool) -> PlanTally {
        PlanTally {
            want_sources,
            ..Default::default()
        }
    }

    /// Counts one decision (`here`: our record, `record`: what the path becomes).
    pub fn add(&mut self, here: Option<&FileRecord>, action: &Action, record: &FileRecord) {
        if matches!(action, Action::Keep) {
            return;
        }
        self.changes += 1;
        if matches!(action, Action::Apply(Apply::Delete)) {
            if here.is_some_and(|l| !l.deleted && l.kind == EntryKind::File) {
                self.deleted_files += 1;
            }
            return;
        }
        let fetch = matches!(
            action,
            Action::Apply(Apply::Fetch) | Action::ConflictCopy { .. }
        ) && !record.deleted
            && record.kind == EntryKind::File;
        if matches!(
            action,
            Action::Apply(Apply::Fetch | Apply::MakeLink) | Action::ConflictCopy { .. }
        ) {
            self.writes_files = true;
        }
        if fetch {
            self.fetches += 1;
            self.fetch_bytes = self.fetch_bytes.saturating_add(record.size);
            if self.want_sources && record.size > 0 {
                self.wanted.insert(record.hash);
            }
        }
    }
}

/// A local file for each of the content hashes `wanted` (non-empty live files), in one pass
/// over our index.
pub(crate) fn find_sources(
    local: &super::link::Indexed,
    wanted: &HashSet<Hash>,
) -> Result<HashMap<Hash, String>> {
    let mut sources = HashMap::new();
    if wanted.is_empty() {
        return Ok(sources);
    }
    for r in local.records()? {
        let r = r?;
        if !r.deleted && r.kind == EntryKind::File && r.size > 0 && wanted.contains(&r.hash) {
            sources.entry(r.hash).or_insert(r.path);
        }
    }
    Ok(sources)
}

/// The disk side of a round that runs on one blocking thread: its descriptors and versions.
struct Local<'a> {
    folder: &'a Folder,
    writes: WriteRoot,
    versions: Option<Versions>,
    /// Reads of local content (copies), opened when first needed.
    beneath: Option<crate::fs::Beneath>,
}

impl Local<'_> {
    fn open(folder: &Folder, keep: Option<Duration>) -> Result<Local<'_>> {
        let writes = WriteRoot::open(folder.root())?;
        let versions = match keep {
            Some(_) => Some(
                Versions::open(writes.root()).map_err(|e| Error::io("opening .ssp/versions", e))?,
            ),
            None => None,
        };
        Ok(Local {
            folder,
            writes,
            versions,
            beneath: None,
        })
    }

    /// The parent folder and name of `rel`, and what is there now.
    fn at(&mut self, rel: &RelPath, create: bool) -> Result<(Arc<Dir>, Option<EntryStat>)> {
        let dir = self.writes.parent(rel, create)?;
        let st = match dir.stat(rel.file_name()) {
            Ok(st) => Some(st),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(Error::io(rel.to_string(), e)),
        };
        Ok((dir, st))
    }

    /// Moves what is at `rel` out of the way: files and symlinks into versions (or removed,
    /// when versions are off), an empty folder removed. A folder with content stays and fails.
    fn clear(&mut self, dir: &Dir, rel: &RelPath, st: &EntryStat) -> Result<()> {
        let name = rel.file_name();
        if st.is_dir {
            return dir.remove_dir(name).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTEMPTY | libc::EEXIST) => Error::io(
                    rel.to_string(),
                    std::io::Error::other("a folder with files in it is in the way"),
                ),
                _ => Error::io(rel.to_string(), e),
            });
        }
        match &mut self.versions {
            Some(v) => v
                .archive(dir, name, rel, SystemTime::now())
                .map(|_| ())
                .map_err(|e| Error::io(format!("keeping the old version of {rel}"), e)),
            None => dir.unlink(name).map_err(|e| Error::io(rel.to_string(), e)),
        }
    }

    /// Applies one non-fetch decision; `Ok(Some(fetch))` for content still to come.
    fn apply(
        &mut self,
        p: Planned,
        stored: &mut Vec<FileRecord>,
        copies: &mut Vec<FileRecord>,
    ) -> Result<Option<Fetch>> {
        let Planned {
            local,
            action,
            mut record,
            copy_taken,
        } = p;
        let rel = RelPath::parse(&record.path)?;
        let expect = Expect::of(local.as_deref());
        let then = match &action {
            Action::Keep => return Ok(None),
            Action::Adopt => {
                if let Some(l) = local.as_ref().filter(|l| !l.deleted) {
                    record.inode = l.inode;
                    record.mtime_ns = l.mtime_ns;
                    record.mode = l.mode;
                }
                stored.push(record);
                return Ok(None);
            }
            Action::Touch => {
                let (_, st) = self.at(&rel, false)?;
                if !expect.holds(st.as_ref()) {
                    return Err(Error::io(
                        rel.to_string(),
                        std::io::Error::other(CHANGED_HERE),
                    ));
                }
                let w =
                    self.writes
                        .apply_metadata(&rel, record.mtime_ns, local_mode(record.mode))?;
                record.inode = w.inode;
                record.mtime_ns = w.mtime_ns;
                record.set_mode(w.mode);
                stored.push(record);
                return Ok(None);
            }
            Action::ConflictCopy { copy, then } => {
                let copy_rel = RelPath::parse(copy)?;
                let (dir, st) = self.at(&rel, false)?;
                if !expect.holds(st.as_ref()) {
                    return Err(Error::io(
                        rel.to_string(),
                        std::io::Error::other(CHANGED_HERE),
                    ));
                }
                if let Some(st) = &st {
                    let (cdir, cst) = self.at(&copy_rel, true)?;
                    if copy_taken || cst.is_some() {
                        // This loser was copied before (the copy is known here or on its way
                        // from the peer), or something new holds the name: ours goes into
                        // versions, so nothing is written over and nothing is lost.
                        self.clear(&dir, &rel, st)?;
                    } else {
                        dir.rename_to(rel.file_name(), &cdir, copy_rel.file_name())
                            .map_err(|e| {
                                Error::io(format!("making the conflict copy {copy}"), e)
                            })?;
                        if let Some(mut c) = local.map(|l| *l) {
                            c.path = copy.clone();
                            c.version = Default::default();
                            copies.push(c);
                        }
                    }
                }
                *then
            }
            Action::Apply(a) => *a,
        };
        let expect = if matches!(action, Action::ConflictCopy { .. }) {
            Expect::Absent
        } else {
            expect
        };
        match then {
            Apply::Delete => Ok(None), // after the fetches (see `delete_local`)
            Apply::Fetch => {
                let hash = record.hash;
                Ok(Some(Fetch {
                    target: rel.under(self.folder.root()),
                    mode: local_mode(record.mode),
                    rel,
                    hash,
                    record,
                    expect,
                }))
            }
            Apply::MakeDir => {
                let (dir, st) = self.at(&rel, true)?;
                if !expect.holds(st.as_ref()) {
                    return Err(Error::io(
                        rel.to_string(),
                        std::io::Error::other(CHANGED_HERE),
                    ));
                }
                match &st {
                    Some(st) if st.is_dir => {}
                    Some(st) => {
                        self.clear(&dir, &rel, st)?;
                        dir.mkdir(rel.file_name(), NEW_DIR_MODE)
                            .map_err(|e| Error::io(rel.to_string(), e))?;
                    }
                    None => dir
                        .mkdir(rel.file_name(), NEW_DIR_MODE)
                        .map_err(|e| Error::io(rel.to_string(), e))?,
                }
                record.mode = NEW_DIR_MODE & !umask();
                stored.push(record);
                Ok(None)
            }
            Apply::MakeLink => {
                let target = record.target.clone().unwrap_or_default();
                let (dir, st) = self.at(&rel, true)?;
                if !expect.holds(st.as_ref()) {
                    return Err(Error::io(
                        rel.to_string(),
                        std::io::Error::other(CHANGED_HERE),
                    ));
                }
                if let Some(st) = &st {
                    self.clear(&dir, &rel, st)?;
                }
                dir.symlink(target.as_bytes(), rel.file_name())
                    .map_err(|e| Error::io(format!("creating the symlink {rel}"), e))?;
                if let Ok(st) = dir.stat(rel.file_name()) {
                    record.inode = st.ino;
                    record.mtime_ns = st.mtime_ns;
                }
                stored.push(record);
                Ok(None)
            }
        }
    }

    /// Writes `fetch` from the local file `src` holding the same content (verified by hash as
    /// it is copied), finished like a fetched file.
    fn copy_from(&mut self, src: &str, fetch: &Fetch) -> Result<FileRecord> {
        use std::io::Read;
        let src_rel = RelPath::parse(src)?;
        let mut file = self
            .beneath()?
            .open_read(&src_rel)
            .map_err(|e| Error::io(src.to_owned(), e))?;
        let dir = self.writes.parent(&fetch.rel, true)?;
        let mut w = PartWriter::create(dir, &fetch.part())?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| Error::io(src.to_owned(), e))?;
            if n == 0 {
                break;
            }
            if w.written() + n as u64 > fetch.record.size {
                w.discard();
                return Err(Error::io(src.to_owned(), std::io::Error::other("changed")));
            }
            w.write(&buf[..n])?;
        }
        let mut stored = Vec::new();
        match finish(w, fetch, self, &mut stored) {
            Outcome::Done => stored
                .pop()
                .ok_or_else(|| Error::Store("copied file not recorded".into())),
            Outcome::Failed(why) => {
                Err(Error::io(fetch.rel.to_string(), std::io::Error::other(why)))
            }
            Outcome::Abort(e) => Err(e),
            Outcome::Retry => Err(Error::io(
                src.to_owned(),
                std::io::Error::other("content differs"),
            )),
        }
    }

    fn beneath(&mut self) -> Result<&crate::fs::Beneath> {
        if self.beneath.is_none() {
            let b = crate::fs::Beneath::new(self.folder.root())
                .map_err(|e| Error::io(self.folder.root().display().to_string(), e))?;
            self.beneath = Some(b);
        }
        self.beneath
            .as_ref()
            .ok_or_else(|| Error::Store("folder not open".into()))
    }

    /// Deletes one path the peer deleted (files into versions; folders only when empty).
    /// `Ok(false)`: a folder that still holds files (changes here that won over the peer's
    /// deletion, or ignored ones) stays.
    fn delete(&mut self, p: &Planned) -> Result<bool> {
        let rel = RelPath::parse(&p.record.path)?;
        let expect = Expect::of(p.local.as_deref());
        let (dir, st) = match self.at(&rel, false) {
            Ok(x) => x,
            // The parent is gone already (deleted with it): nothing left to do.
            Err(_) => return Ok(true),
        };
        if !expect.holds(st.as_ref()) {
            return Err(Error::io(
                rel.to_string(),
                std::io::Error::other(CHANGED_HERE),
            ));
        }
        match st {
            Some(st) if st.is_dir => match dir.remove_dir(rel.file_name()) {
                Ok(()) => Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                    Ok(false)
                }
                Err(e) => Err(Error::io(rel.to_string(), e)),
            },
            Some(st) => self.clear(&dir, &rel, &st).map(|()| true),
            None => Ok(true),
        }
    }
}

/// Applies everything but fetches and deletions: conflict copies first (so both versions
/// survive), then folders, symlinks, metadata and records. Returns the files to fetch.
pub(crate) async fn apply_local(
    folder: &Arc<Folder>,
    plan: &mut LocalPlan,
    cfg: &RoundConfig,
    out: &mut RoundOutcome,
) -> Result<Vec<Fetch>> {
    // Taken out of the plan: only its deletions stay (for `delete_local`).
    let (deletions, mut items): (Vec<Planned>, Vec<Planned>) = std::mem::take(&mut plan.items)
        .into_iter()
        .partition(|p| matches!(p.action, Action::Apply(Apply::Delete)));
    plan.items = deletions;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // Parents before children.
    items.sort_by(|a, b| a.record.path.cmp(&b.record.path));
    let f = Arc::clone(folder);
    let keep = cfg.versions_keep;
    let sources = std::mem::take(&mut plan.sources);
    let (fetches, failures, copied) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut local = Local::open(&f, keep)?;
        let mut held = f.hold();
        let (mut stored, mut copies, mut fetches, mut failures) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut copied = 0u64;
        for p in items {
            let path = p.record.path.clone();
            match local.apply(p, &mut stored, &mut copies) {
                Ok(Some(fetch)) => match sources.get(&fetch.hash) {
                    // Content we already hold (a rename, a copy): copied here, not sent again.
                    Some(src) if fetch.record.size > 0 => match local.copy_from(src, &fetch) {
                        Ok(rec) => {
                            copied += 1;
                            stored.push(rec);
                        }
                        Err(e) => {
                            tracing::debug!("{}: local copy failed, fetching: {e}", fetch.rel);
                            fetches.push(fetch);
                        }
                    },
                    _ => fetches.push(fetch),
                },
                Ok(None) => {}
                Err(e) => failures.push((path, e.to_string())),
            }
        }
        held.commit(stored, false)?;
        held.commit(copies, true)?;
        Ok((fetches, failures, copied))
    })
    .await
    .map_err(|e| Error::Store(e.to_string()))??;
    if copied > 0 {
        tracing::info!("{copied} files copied from content already here (renames, copies)");
    }
    out.copied_locally += copied;
    out.failures.extend(failures);
    Ok(fetches)
}

/// Applies the peer's deletions, deepest paths first (a folder goes once it is empty), after
/// the fetches (so a renamed file's content was still here to be found).
pub(crate) async fn delete_local(
    folder: &Arc<Folder>,
    plan: LocalPlan,
    cfg: &RoundConfig,
    out: &mut RoundOutcome,
) -> Result<()> {
    let mut items: Vec<Planned> = plan
        .items
        .into_iter()
        .filter(|p| matches!(p.action, Action::Apply(Apply::Delete)))
        .collect();
    if items.is_empty() {
        return Ok(());
    }
    items.sort_by(|a, b| b.record.path.cmp(&a.record.path));
    let f = Arc::clone(folder);
    let keep = cfg.versions_keep;
    let (deleted, failures) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut local = Local::open(&f, keep)?;
        let mut held = f.hold();
        let (mut stored, mut kept, mut failures, mut deleted) =
            (Vec::new(), Vec::new(), Vec::new(), 0u64);
        for p in &items {
            match local.delete(p) {
                Ok(true) => {
                    if p.local
                        .as_ref()
                        .is_some_and(|l| !l.deleted && l.kind == EntryKind::File)
                    {
                        deleted += 1;
                    }
                    stored.push(p.record.clone());
                }
                // The folder stays for what it still holds: a new version of it, newer than
                // the peer's deletion, so the peer brings the folder back too.
                Ok(false) => {
                    if let Some(mut dir) = p.local.as_deref().cloned() {
                        dir.version.merge(&p.record.version);
                        kept.push(dir);
                    }
                }
                Err(e) => failures.push((p.record.path.clone(), e.to_string())),
            }
        }
        held.commit(stored, false)?;
        held.commit(kept, true)?;
        Ok((deleted, failures))
    })
    .await
    .map_err(|e| Error::Store(e.to_string()))??;
    out.deleted += deleted;
    out.failures.extend(failures);
    Ok(())
}

/// What the index received so far adds up to.
#[derive(Debug, Default)]
struct IndexTally {
    entries: usize,
    path_bytes: usize,
    size_bytes: u64,
}

impl IndexTally {
    /// Counts one FILE_INDEX batch, or says which limit it breaks (before anything of it is
    /// kept): the batch size of the protocol, the client's caps on entries and path bytes, and
    /// the sum of the announced sizes, which must fit in 64 bits.
    fn add(&mut self, batch: &[IndexEntry], limits: &PullLimits) -> Result<(), String> {
        if batch.len() > INDEX_BATCH_ENTRIES {
            return Err(format!(
                "a FILE_INDEX batch of {} entries (the protocol allows at most {INDEX_BATCH_ENTRIES})",
                batch.len()
            ));
        }
        let entries = self.entries.saturating_add(batch.len());
        if entries > limits.max_index_entries {
            return Err(format!(
                "the server's index has more than {} entries, this client's limit \
                 (raise ClientConfig.max_index_entries to sync a bigger folder)",
                limits.max_index_entries
            ));
        }
        let path_bytes = batch
            .iter()
            .fold(self.path_bytes, |sum, e| sum.saturating_add(e.path.len()));
        if path_bytes > limits.max_index_path_bytes {
            return Err(format!(
                "the paths in the server's index add up to more than {} bytes, this client's \
                 limit (raise ClientConfig.max_index_path_bytes to sync a bigger folder)",
                limits.max_index_path_bytes
            ));
        }
        let size_bytes = batch
            .iter()
            .try_fold(self.size_bytes, |sum, e| sum.checked_add(e.size))
            .ok_or("the file sizes in the server's index add up to more than 2^64 bytes")?;
        *self = IndexTally {
            entries,
            path_bytes,
            size_bytes,
        };
        Ok(())
    }
}

/// Whether `rel` can be created under a root of `root_bytes` bytes: not deeper than
/// [`MAX_PATH_DEPTH`], and the file, and the temp file beside it, within the local path limit.
/// Checked before the first folder of it is made, so a path that cannot be written creates
/// nothing.
fn fits_locally(root_bytes: usize, rel: &RelPath) -> Result<(), String> {
    let s = rel.as_str();
    let depth = s.split('/').count();
    if depth > MAX_PATH_DEPTH {
        return Err(format!(
            "{depth} folders deep (this client creates at most {MAX_PATH_DEPTH})"
        ));
    }
    let name = s.rsplit('/').next().map_or(0, str::len);
    // root + '/' + rel, with the file name replaced by a temp name if that is longer, + NUL.
    let longest = root_bytes + 1 + s.len() - name + name.max(TEMP_NAME_BYTES_MAX) + 1;
    if longest > MAX_LOCAL_PATH_BYTES {
        return Err(format!(
            "path too long for this folder ({longest} bytes with the folder's path and a temp \
             name; the system allows {MAX_LOCAL_PATH_BYTES})"
        ));
    }
    Ok(())
}

/// Room kept for the temp file's name next to a file (`fs::part_path` makes 51 bytes).
const TEMP_NAME_BYTES_MAX: usize = 64;

/// Where one call of [`fetch_all`] stands in its round.
#[derive(Default)]
pub(crate) struct SegmentOf {
    /// The round's progress counters, when it fetches in several segments (then the round
    /// reports the start and the end; each call only counts).
    pub counters: Option<Arc<TransferCounters>>,
    /// The round's last call: temp files nothing fetched are removed after it.
    pub last: bool,
}

/// The connection a round fetches over, and where the peer's SYNC_COMPLETE goes if it comes
/// meanwhile.
pub(crate) struct Wire<'a> {
    pub link: &'a mut Link,
    pub peer_done: &'a mut Option<SyncComplete>,
}

/// What the fetches of a round did.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub files_total: u64,
    pub bytes_total: u64,
    pub received: u64,
    pub bytes: u64,
    pub failures: Vec<(String, String)>,
}

/// Fetches `fetches` from the peer with pipelined requests (serving its requests meanwhile),
/// writing each through a temp file that is verified and finished only onto what the plan
/// saw. `peer_done` gets the peer's SYNC_COMPLETE if it arrives meanwhile.
pub(crate) async fn fetch_all(
    wire: Wire<'_>,
    folder: &Arc<Folder>,
    mut fetches: Vec<Fetch>,
    parts: &[PartFile],
    cfg: &RoundConfig,
    hooks: &PullHooks<'_>,
    segment: &SegmentOf,
) -> Result<Fetched> {
    let mut out = Fetched {
        files_total: fetches.len() as u64,
        ..Default::default()
    };
    // Files this folder cannot hold fail alone, before any folder of theirs is created.
    let root_bytes = folder.root().as_os_str().len();
    fetches.retain(|f| match fits_locally(root_bytes, &f.rel) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("{}: {why}", peer_text(f.rel.as_str()));
            out.failures.push((f.rel.as_str().to_owned(), why));
            false
        }
    });
    // The index's sizes were summed with checks as it arrived; these are a subset.
    out.bytes_total = fetches
        .iter()
        .fold(0u64, |sum, f| sum.saturating_add(f.record.size));
    if let Some(sink) = hooks.events.filter(|_| segment.counters.is_none()) {
        sink(Event::Progress(Progress {
            phase: "requesting",
            files_to_request: out.files_total,
            files_total: out.files_total,
            bytes_total: out.bytes_total,
            progress: 0.0,
            ..Default::default()
        }));
    }
    // Resumable temp files (regular, one link) and their lengths; the others are replaced.
    let resumable: HashMap<String, u64> = parts
        .iter()
        .filter(|p| p.resumable)
        .map(|p| (p.rel.clone(), p.len))
        .collect();
    let writing = folder.writing(fetches.iter().map(Fetch::part_rel).collect());
    let (received, failures, bytes) = transfer(
        wire,
        folder,
        fetches,
        &resumable,
        cfg,
        hooks,
        segment.counters.as_ref(),
    )
    .await?;
    drop(writing);
    if !segment.last {
        out.received = received;
        out.bytes = bytes;
        out.failures.extend(failures);
        return Ok(out);
    }
    // Temp files no fetch of ours or of another round of this folder is writing can never be
    // resumed (their name holds content no longer wanted): no other process syncs the folder
    // (its store is ours), so they go now.
    let stale: Vec<String> = parts
        .iter()
        .filter(|p| !folder.is_writing(&p.rel))
        .map(|p| p.rel.clone())
        .collect();
    if !stale.is_empty() {
        let root = folder.root().to_path_buf();
        let _ = tokio::task::spawn_blocking(move || remove_stale_parts(&root, &stale)).await;
    }
    out.received = received;
    out.bytes = bytes;
    out.failures.extend(failures);
    Ok(out)
}

/// Deletes temp files left by interrupted syncs of content no longer wanted (their name holds
/// the content hash, so no later sync would resume them).
/// `parts` are relative to `root`; folders are opened without following symlinks.
fn remove_stale_parts(root: &std::path::Path, parts: &[String]) {
    let max_age = Duration::ZERO;
    let mut writes = match WriteRoot::open(root) {
        Ok(w) => w,
        Err(e) => return tracing::warn!("cannot remove stale temp files: {e}"),
    };
    for part in parts {
        match writes.remove_stale_part(part, max_age) {
            Ok(true) => tracing::info!("removed stale temp file {part}"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot remove stale temp file {part}: {e}"),
        }
    }
}

/// Files received, (path, reason) of failures, bytes received.
type Transferred = (u64, Vec<(String, String)>, u64);

async fn transfer(
    wire: Wire<'_>,
    folder: &Arc<Folder>,
    fetches: Vec<Fetch>,
    parts: &HashMap<String, u64>,
    cfg: &RoundConfig,
    hooks: &PullHooks<'_>,
    shared: Option<&Arc<TransferCounters>>,
) -> Result<Transferred> {
    let Wire { link, peer_done } = wire;
    let (chunk_size, patience) = (cfg.chunk_size, cfg.limits.progress_timeout);
    if fetches.is_empty() {
        if shared.is_none() {
            emit_final(hooks, &TransferCounters::new(0, 0, chunk_size));
        }
        return Ok((0, Vec::new(), 0));
    }
    let root = folder.root().to_path_buf();
    // Summed with checks when the index arrived; this is a subset of it.
    let total_bytes = fetches
        .iter()
        .fold(0u64, |sum, f| sum.saturating_add(f.record.size));
    let counters = match shared {
        Some(c) => Arc::clone(c),
        None => TransferCounters::new(fetches.len() as u64, total_bytes, chunk_size),
    };
    let bytes_before = counters.bytes_done.load(Ordering::Relaxed);
    // Resume offsets: an intact prefix left by an interrupted sync, in a temp file the scan
    // found to be a regular file with one link (the writer checks again on its descriptor).
    let mut queue: VecDeque<(u32, u64)> = VecDeque::with_capacity(fetches.len());
    for (i, f) in fetches.iter().enumerate() {
        let offset = match parts.get(&f.part_rel()) {
            Some(&len) if len <= f.record.size => len,
            _ => 0,
        };
        if offset > 0 {
            tracing::info!("resuming {} at byte {offset}", f.rel);
            counters.bytes_done.fetch_add(offset, Ordering::Relaxed);
        }
        queue.push_back((i as u32, offset));
    }
    // Before the first request: what is still to come must fit on the disk.
    let resumed = counters
        .bytes_done
        .load(Ordering::Relaxed)
        .saturating_sub(bytes_before);
    ensure_room(
        &root,
        total_bytes.saturating_sub(resumed),
        free_bytes(&root),
    )?;
    let fetches = Arc::new(fetches);
    let (cmd_tx, cmd_rx) = mpsc::channel::<Vec<WriteCmd>>(WRITE_QUEUE);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<FileDone>>();
    let writer = {
        let (fetches, counters) = (Arc::clone(&fetches), Arc::clone(&counters));
        let (folder, keep) = (Arc::clone(folder), cfg.versions_keep);
        tokio::task::spawn_blocking(move || {
            write_files(&fetches, &folder, keep, cmd_rx, &done_tx, &counters)
        })
    };
    let ticker = hooks.events.cloned().map(|sink| {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_millis(PROGRESS_INTERVAL_MS));
            tick.tick().await;
            loop {
                tick.tick().await;
                sink(Event::Progress(counters.snapshot(false)));
            }
        })
    });

    // Requests in flight, with the offset their next chunk must start at (`None` once the last
    // chunk came): each file's data arrives in order, once, and never past its size.
    let mut inflight: HashMap<u32, Option<u64>> = HashMap::new();
    let mut retried: HashSet<u32> = HashSet::new();
    let mut received = 0u64;
    let mut failures = Vec::new();
    let result: Result<()> = async {
        loop {
            if inflight.len() <= WINDOW_FILES / 2 && !queue.is_empty() {
                let top_up = async {
                    while inflight.len() < WINDOW_FILES {
                        let Some((id, offset)) = queue.pop_front() else { break };
                        let path = fetches[id as usize].record.path.clone();
                        link.send(Message::FileRequest(FileRequest { id, path, offset })).await?;
                        inflight.insert(id, Some(offset));
                    }
                    Ok::<(), Error>(())
                };
                tokio::time::timeout(patience, top_up)
                    .await
                    .map_err(|_| silent_peer(patience, "it to read our requests"))??;
            }
            hooks.pending.store((inflight.len() + queue.len()) as u64, Ordering::Relaxed);
            if inflight.is_empty() && queue.is_empty() {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = hooks.cancel.cancelled() => return Err(Error::Cancelled),
                // Restarted by every frame and every finished file: only a server that sends
                // nothing at all while we wait for it gets here.
                _ = tokio::time::sleep(patience) => return Err(silent_peer(patience, "file data")),
                Some(batch) = done_rx.recv() => {
                    for done in batch {
                        inflight.remove(&done.id);
                        let path = &fetches[done.id as usize].record.path;
                        match done.outcome {
                            Outcome::Done => received += 1,
                            Outcome::Retry if retried.insert(done.id) => queue.push_back((done.id, 0)),
                            Outcome::Retry => failures.push((
                                path.clone(),
                                "content did not match its hash (changed on the other side during the sync?)".into(),
                            )),
                            Outcome::Failed(reason) => {
                                tracing::warn!("{}: {}", peer_text(path), peer_text(&reason));
                                failures.push((path.clone(), reason));
                            }
                            Outcome::Abort(e) => return Err(e),
                        }
                    }
                }
                msg = link.next(patience, "file data") => {
                    // Take everything already received, up to a batch, in one hand-over.
                    let (mut batch, mut bytes, mut next) = (Vec::new(), 0, msg);
                    loop {
                        match next {
                            Ok(Message::FileChunk(c)) => {
                                let Some(expected) = inflight.get_mut(&c.id) else {
                                    return Err(Error::protocol(format!("chunk for request {} that is not in flight", c.id)));
                                };
                                let f = &fetches[c.id as usize];
                                if let Err(why) = accept_chunk(expected, c.offset, c.data.len(), c.last, f.record.size) {
                                    return Err(Error::protocol(format!("{}: {why}", peer_text(f.rel.as_str()))));
                                }
                                bytes += c.data.len();
                                batch.push(WriteCmd::Chunk(c));
                            }
                            Ok(Message::Error(ErrorMsg { id: Some(id), message, .. })) if inflight.contains_key(&id) => {
                                batch.push(WriteCmd::Fail { id, reason: format!("the peer: {}", peer_text(&message)) });
                            }
                            Ok(Message::Error(e)) => return Err(remote_error(e)),
                            Ok(Message::SyncComplete(c)) if peer_done.is_none() => *peer_done = Some(c),
                            Ok(m) => return Err(Error::protocol(format!("unexpected {:?} during transfer", m.message_type()))),
                            Err(e) => return Err(e),
                        }
                        if batch.len() >= BATCH_MESSAGES || bytes >= BATCH_BYTES {
                            break;
                        }
                        match link.try_next() {
                            Some(m) => next = m,
                            None => break,
                        }
                    }
                    if !batch.is_empty() && cmd_tx.send(batch).await.is_err() {
                        // The writer stopped early; its last report says why (a full disk).
                        while let Ok(done) = done_rx.try_recv() {
                            if let Some(e) = done.into_iter().find_map(|d| match d.outcome {
                                Outcome::Abort(e) => Some(e),
                                _ => None,
                            }) {
                                return Err(e);
                            }
                        }
                        return Err(Error::Store("writer thread stopped".into()));
                    }
                }
            }
        }
    }
    .await;
    drop(cmd_tx);
    let _ = writer.await;
    // The writer's last commit comes after every file was reported done: a failure of it
    // fails the sync.
    let mut result = result;
    while let Ok(batch) = done_rx.try_recv() {
        for d in batch {
            if let (Outcome::Abort(e), true) = (d.outcome, result.is_ok()) {
                result = Err(e);
            }
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    hooks.pending.store(0, Ordering::Relaxed);
    result?;
    if shared.is_none() {
        emit_final(hooks, &counters);
    }
    let bytes = counters
        .bytes_done
        .load(Ordering::Relaxed)
        .saturating_sub(bytes_before);
    Ok((received, failures, bytes))
}

/// Bytes that unprivileged writes can still use on the file system holding `root`
/// (`f_bavail * f_frsize`), or `None` where that cannot be told (then nothing is checked).
pub(crate) fn free_bytes(root: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(root.as_os_str().as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c` is a NUL-terminated path and `st` is writable memory of the right size.
        if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
            tracing::debug!(
                "cannot tell the free space of {}: {}",
                root.display(),
                std::io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: statvfs succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = root;
        None
    }
}

/// Fails with a disk error (before anything is requested) when `needed` bytes do not fit in
/// `free` bytes: interleaved temp files would otherwise fill the disk and leave every one of
/// them partial. Block rounding and the space old versions free after their rename are
/// ignored, so this catches the hopeless cases, and a write that still fills the disk stops
/// the sync as before.
pub(crate) fn ensure_room(root: &std::path::Path, needed: u64, free: Option<u64>) -> Result<()> {
    match free {
        Some(free) if needed > free => Err(Error::NoRoom {
            path: root.to_path_buf(),
            needed,
            free,
        }),
        _ => Ok(()),
    }
}

pub(crate) fn emit_final(hooks: &PullHooks<'_>, counters: &TransferCounters) {
    if let Some(sink) = hooks.events {
        sink(Event::Progress(counters.snapshot(true)));
    }
}

/// One file being written, or skipped until its last chunk after a failure.
enum Slot {
    Writing(Box<PartWriter>),
    Skipping(Outcome),
}

/// The blocking writer stage. Files finished in one batch are stored in one commit, made
/// while the folder is held (so no scan sees a new file before its record).
fn write_files(
    fetches: &[Fetch],
    folder: &Folder,
    keep: Option<Duration>,
    mut cmds: mpsc::Receiver<Vec<WriteCmd>>,
    done: &mpsc::UnboundedSender<Vec<FileDone>>,
    counters: &TransferCounters,
) {
    let mut slots: HashMap<u32, Slot> = HashMap::new();
    // Every write of this sync goes through descriptors opened from this one.
    let mut local = match Local::open(folder, keep) {
        Ok(w) => w,
        Err(e) => {
            let _ = done.send(vec![FileDone {
                id: 0,
                outcome: Outcome::Abort(e),
            }]);
            return;
        }
    };
    // Finished files' records, stored together: one commit per COMMIT_RECORDS files or
    // COMMIT_INTERVAL, not per batch. The folder stays held from the first rename to that
    // commit, so no scan sees a file here before its record.
    let mut stored = Vec::new();
    let mut held = None;
    let mut since = Instant::now();
    let commit = |held: &mut Option<Held<'_>>, stored: &mut Vec<FileRecord>| match held.take() {
        Some(mut h) => h.commit(std::mem::take(stored), false).map(drop),
        None => Ok(()),
    };
    while let Some(batch) = cmds.blocking_recv() {
        let mut finished = Vec::new();
        for cmd in batch {
            write_one(
                cmd,
                fetches,
                counters,
                &mut slots,
                &mut local,
                &mut held,
                &mut stored,
                &mut finished,
            );
            if matches!(
                finished.last(),
                Some(FileDone {
                    outcome: Outcome::Abort(_),
                    ..
                })
            ) {
                break;
            }
        }
        let mut abort = finished
            .iter()
            .any(|d| matches!(d.outcome, Outcome::Abort(_)));
        if abort || stored.len() >= COMMIT_RECORDS || since.elapsed() >= COMMIT_INTERVAL {
            if let Err(e) = commit(&mut held, &mut stored) {
                abort = true;
                finished.push(FileDone {
                    id: 0,
                    outcome: Outcome::Abort(e),
                });
            }
            since = Instant::now();
        }
        if (!finished.is_empty() && done.send(finished).is_err()) || abort {
            // Files still open keep their temp files, so the next sync resumes them.
            let _ = commit(&mut held, &mut stored);
            return;
        }
    }
    if let Err(e) = commit(&mut held, &mut stored) {
        let _ = done.send(vec![FileDone {
            id: 0,
            outcome: Outcome::Abort(e),
        }]);
    }
    // Interrupted: leave temp files in place so the next sync resumes them.
}

/// Applies one command of a batch; a file that is complete (or failed) goes to `finished`.
#[allow(clippy::too_many_arguments)]
fn write_one<'f>(
    cmd: WriteCmd,
    fetches: &[Fetch],
    counters: &TransferCounters,
    slots: &mut HashMap<u32, Slot>,
    local: &mut Local<'f>,
    held: &mut Option<Held<'f>>,
    stored: &mut Vec<FileRecord>,
    finished: &mut Vec<FileDone>,
) {
    match cmd {
        WriteCmd::Fail { id, reason } => {
            if let Some(Slot::Writing(w)) = slots.remove(&id) {
                w.discard();
            }
            counters.files_done.fetch_add(1, Ordering::Relaxed);
            finished.push(FileDone {
                id,
                outcome: Outcome::Failed(reason),
            });
        }
        WriteCmd::Chunk(c) => {
            let Some(f) = fetches.get(c.id as usize) else {
                return;
            };
            let slot = slots
                .remove(&c.id)
                .unwrap_or_else(|| open_slot(f, &mut local.writes, c.offset));
            let slot = match slot {
                Slot::Writing(mut w) if w.written() == c.offset => match w.write(&c.data) {
                    Ok(()) => {
                        counters.add_bytes(
                            &f.record.path,
                            f.record.size,
                            w.written(),
                            c.data.len() as u64,
                        );
                        Slot::Writing(w)
                    }
                    Err(e) => {
                        w.discard();
                        Slot::Skipping(failure(e, f))
                    }
                },
                Slot::Writing(w) => {
                    w.discard();
                    Slot::Skipping(Outcome::Failed("chunk out of order".into()))
                }
                skipping => skipping,
            };
            if let Slot::Skipping(Outcome::Abort(e)) = slot {
                finished.push(FileDone {
                    id: c.id,
                    outcome: Outcome::Abort(e),
                });
                return;
            }
            if !c.last {
                slots.insert(c.id, slot);
                return;
            }
            let outcome = match slot {
                Slot::Writing(w) if w.written() != f.record.size => {
                    w.discard();
                    Outcome::Failed(format!(
                        "size changed on the other side (expected {} bytes)",
                        f.record.size
                    ))
                }
                Slot::Writing(w) => {
                    let h = held.get_or_insert_with(|| local.folder.hold());
                    let _ = h;
                    finish(*w, f, local, stored)
                }
                Slot::Skipping(o) => o,
            };
            if !matches!(outcome, Outcome::Retry) {
                counters.files_done.fetch_add(1, Ordering::Relaxed);
            }
            finished.push(FileDone { id: c.id, outcome });
        }
    }
}

fn open_slot(f: &Fetch, writes: &mut WriteRoot, offset: u64) -> Slot {
    let dir = match writes.parent(&f.rel, true) {
        Ok(d) => d,
        Err(e) => return Slot::Skipping(failure(e, f)),
    };
    let opened = if offset == 0 {
        PartWriter::create(dir, &f.part()).map(Some)
    } else {
        PartWriter::resume(dir, &f.part(), offset)
    };
    match opened {
        Ok(Some(w)) => Slot::Writing(Box::new(w)),
        Ok(None) => Slot::Skipping(Outcome::Retry),
        Err(e) => Slot::Skipping(failure(e, f)),
    }
}

/// Finishes a complete temp file: the target must still be what the plan saw (else it is
/// left alone and the file syncs next time); the old content is kept in versions (a hard
/// link, so the path holds the old or the new content at every moment); then the verified
/// temp file is renamed onto it.
fn finish(
    w: PartWriter,
    f: &Fetch,
    local: &mut Local<'_>,
    stored: &mut Vec<FileRecord>,
) -> Outcome {
    // A new file needs no look at its target first: the rename itself refuses to replace
    // anything that appeared there since the plan.
    let new = matches!(f.expect, Expect::Absent);
    let at = if new {
        local.writes.parent(&f.rel, true).map(|d| (d, None))
    } else {
        local.at(&f.rel, true)
    };
    let (dir, st) = match at {
        Ok(x) => x,
        Err(e) => {
            w.discard();
            return failure(e, f);
        }
    };
    if !f.expect.holds(st.as_ref()) {
        w.discard();
        return Outcome::Failed(CHANGED_HERE.into());
    }
    if let Some(st) = &st {
        let kept = if st.is_dir {
            // A folder in the way (a type change): only an empty one goes.
            dir.remove_dir(f.rel.file_name())
                .map_err(|e| Error::io(f.rel.to_string(), e))
        } else {
            match &mut local.versions {
                Some(v) => v
                    .preserve(&dir, f.rel.file_name(), &f.rel, SystemTime::now())
                    .map(|_| ())
                    .map_err(|e| Error::io(format!("keeping the old version of {}", f.rel), e)),
                None => Ok(()),
            }
        };
        if let Err(e) = kept {
            w.discard();
            return failure(e, f);
        }
    }
    match w.finish(&f.hash, f.record.mtime_ns, f.mode, f.rel.file_name(), !new) {
        Ok(written) => {
            let mut rec = f.record.clone();
            rec.mtime_ns = written.mtime_ns;
            rec.inode = written.inode;
            rec.set_mode(written.mode);
            stored.push(rec);
            Outcome::Done
        }
        // Fetched again once from zero; a second mismatch is reported as a failure.
        Err(FinishError::HashMismatch) => Outcome::Retry,
        Err(FinishError::Taken) => Outcome::Failed(CHANGED_HERE.into()),
        Err(FinishError::Other(e)) => failure(e, f),
    }
}

/// What a local error means for one file: it failed, or (disk full) the whole sync stops.
fn failure(e: Error, f: &Fetch) -> Outcome {
    if e.is_disk_full() {
        Outcome::Abort(Error::DiskFull {
            path: f.target.clone(),
        })
    } else {
        Outcome::Failed(e.to_string())
    }
}

/// Checks a FILE_CHUNK of `len` bytes at `offset` against where its request's next chunk must
/// start (`expected`, `None` once the last chunk came) and the size the index announced, and
/// advances `expected`. Each file's data must arrive in order, exactly once, end with `last`
/// exactly at `size`, and never go past it, and only the last may be empty: a hostile server
/// cannot make us write more than the index announced, nor stream forever.
fn accept_chunk(
    expected: &mut Option<u64>,
    offset: u64,
    len: usize,
    last: bool,
    size: u64,
) -> Result<(), String> {
    if *expected != Some(offset) {
        return Err(format!(
            "chunk at byte {offset} out of order or after the last one"
        ));
    }
    if len == 0 && !last {
        // It would advance nothing: endless empty chunks would keep the request open forever.
        return Err(format!(
            "an empty chunk at byte {offset} that is not the last"
        ));
    }
    match offset.checked_add(len as u64) {
        Some(end) if end > size => Err(format!("data past its announced size of {size} bytes")),
        Some(end) if (end == size) != last => Err(format!(
            "the last chunk must end at its announced size of {size} bytes"
        )),
        Some(end) => {
            *expected = if last { None } else { Some(end) };
            Ok(())
        }
        None => Err("chunk offset overflows".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            size,
            mtime_ns: 0,
            executable: false,
            mode: None,
            hash: "0".repeat(64),
            ..Default::default()
        }
    }

    fn limits(entries: usize, path_bytes: usize) -> PullLimits {
        PullLimits {
            max_index_entries: entries,
            max_index_path_bytes: path_bytes,
            progress_timeout: Duration::from_secs(60),
            segment_entries: crate::sync::SEGMENT_ENTRIES,
        }
    }

    /// Batches as (entries, path length, size of each), against caps of 3,000 entries and
    /// 10,000 path bytes: the index of the first refused batch and what its error names.
    #[test]
    fn index_batches_are_counted_against_every_limit_before_they_are_kept() {
        type Case = (
            &'static [(usize, usize, u64)],
            Option<(usize, &'static str)>,
        );
        let table: &[(&str, Case)] = &[
            ("one full batch", (&[(1024, 1, 0)], None)),
            (
                "up to the entry cap",
                (&[(1024, 1, 0), (1024, 1, 0), (952, 1, 0)], None),
            ),
            (
                "a batch over 1024",
                (&[(1025, 1, 0)], Some((0, "at most 1024"))),
            ),
            (
                "past the entry cap",
                (
                    &[(1024, 1, 0), (1024, 1, 0), (953, 1, 0)],
                    Some((2, "max_index_entries")),
                ),
            ),
            ("up to the path cap", (&[(100, 100, 0)], None)),
            (
                "past the path cap",
                (
                    &[(100, 100, 0), (1, 1, 0)],
                    Some((1, "max_index_path_bytes")),
                ),
            ),
            ("sizes up to 2^64 - 1", (&[(1, 1, u64::MAX)], None)),
            (
                "sizes that overflow",
                (&[(1, 1, u64::MAX), (1, 1, 1)], Some((1, "2^64"))),
            ),
            (
                "overflow inside one batch",
                (&[(2, 1, u64::MAX / 2 + 1)], Some((0, "2^64"))),
            ),
        ];
        for (name, (batches, refused)) in table {
            let mut tally = IndexTally::default();
            let got = batches.iter().enumerate().find_map(|(i, &(n, len, size))| {
                let batch: Vec<_> = (0..n).map(|_| entry(&"p".repeat(len), size)).collect();
                tally
                    .add(&batch, &limits(3_000, 10_000))
                    .err()
                    .map(|why| (i, why))
            });
            match (got, refused) {
                (None, None) => {}
                (Some((i, why)), Some((at, says))) => {
                    assert_eq!(i, *at, "{name}: {why}");
                    assert!(why.contains(says), "{name}: {why}");
                }
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
    }

    /// (case, root length in bytes, relative path, fits)
    #[test]
    fn paths_too_deep_or_too_long_for_the_folder_are_refused_before_any_mkdir() {
        let deep_ok = vec!["d"; MAX_PATH_DEPTH].join("/");
        let too_deep = vec!["d"; MAX_PATH_DEPTH + 1].join("/");
        // The case: 2,048 components in 4,095 bytes.
        let hostile = vec!["a"; 2048].join("/");
        // The longest that fits under a 10-byte root: 10 + '/' + rel + NUL.
        let longest = MAX_LOCAL_PATH_BYTES - 10 - 2;
        // A path of `n` bytes ending in `name`, in folders of at most 200 bytes.
        let path_of = |n: usize, name: &str| {
            let mut folders = String::new();
            let mut rest = n - 1 - name.len();
            while rest > 200 {
                folders.push_str(&"x".repeat(199));
                folders.push('/');
                rest -= 200;
            }
            folders.push_str(&"x".repeat(rest));
            folders + "/" + name
        };
        let long_name = |n: usize| path_of(n, &"y".repeat(255));
        // A short file name that fits, in a folder that leaves no room for a temp name.
        let short_name = path_of(longest, "a");
        let table: Vec<(&str, usize, String, bool)> = vec![
            ("short", 10, "a/b.txt".into(), true),
            ("at the depth limit", 10, deep_ok, true),
            ("one folder deeper", 10, too_deep, false),
            ("4,095 bytes of one-letter folders", 1, hostile, false),
            ("at the length limit", 10, long_name(longest), true),
            ("one byte over", 10, long_name(longest + 1), false),
            (
                "fits, but not with the folder's path",
                100,
                long_name(longest),
                false,
            ),
            // A short file name in a long folder: its temp name is what must fit.
            ("room for the temp name", 10, short_name, false),
        ];
        for (case, root, rel, fits) in table {
            let rel = RelPath::parse(&rel).unwrap();
            let got = fits_locally(root, &rel);
            assert_eq!(got.is_ok(), fits, "{case}: {got:?}");
        }
    }

    /// (case, bytes needed, bytes free, refused)
    #[test]
    fn a_sync_that_cannot_fit_on_the_disk_is_refused_with_both_figures() {
        let table: &[(&str, u64, Option<u64>, bool)] = &[
            ("fits", 10, Some(100), false),
            ("exactly fits", 100, Some(100), false),
            ("one byte short", 101, Some(100), true),
            ("an exbibyte", 1 << 60, Some(50 << 30), true),
            ("nothing to fetch on a full disk", 0, Some(0), false),
            ("free space unknown", u64::MAX, None, false),
        ];
        for (case, needed, free, refused) in table {
            let got = ensure_room(std::path::Path::new("/sync"), *needed, *free);
            assert_eq!(got.is_err(), *refused, "{case}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.kind(), crate::ErrorKind::Disk, "{case}");
                assert!(e.is_disk_full(), "{case}");
                let text = e.to_string();
                assert!(
                    text.contains("needs") && text.contains("free"),
                    "{case}: {text}"
                );
                assert!(text.contains(&format!("{needed} bytes")), "{case}: {text}");
            }
        }
        use crate::error::human_bytes;
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(human_bytes(1 << 60), "1.0 EiB (1152921504606846976 bytes)");
    }

    #[test]
    fn the_real_free_space_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).expect("statvfs works on a temp dir");
        assert!(free > 0);
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }

    /// Chunk sequences for a 10-byte file requested from `start`: (start, chunks as
    /// (offset, len, last), index of the first refused chunk or None).
    #[test]
    fn chunks_are_accepted_in_order_within_the_size_and_nothing_after_the_last() {
        type Case = (u64, &'static [(u64, usize, bool)], Option<usize>);
        let table: &[(&str, Case)] = &[
            ("whole file at once", (0, &[(0, 10, true)], None)),
            (
                "in pieces",
                (0, &[(0, 4, false), (4, 4, false), (8, 2, true)], None),
            ),
            ("resumed at byte 6", (6, &[(6, 4, true)], None)),
            ("resumed at the end", (10, &[(10, 0, true)], None)),
            (
                "starts before the requested offset",
                (6, &[(0, 10, true)], Some(0)),
            ),
            ("gap", (0, &[(0, 4, false), (5, 5, true)], Some(1))),
            ("repeat", (0, &[(0, 4, false), (0, 4, false)], Some(1))),
            (
                "past the size",
                (0, &[(0, 4, false), (4, 7, true)], Some(1)),
            ),
            ("last too early", (0, &[(0, 4, true)], Some(0))),
            ("all bytes, no last", (0, &[(0, 10, false)], Some(0))),
            (
                "after the last",
                (0, &[(0, 10, true), (10, 0, true)], Some(1)),
            ),
            (
                "offset overflow",
                (u64::MAX, &[(u64::MAX, 1, true)], Some(0)),
            ),
            ("an empty non-last chunk", (0, &[(0, 0, false)], Some(0))),
            (
                "an empty non-last chunk mid-file",
                (0, &[(0, 4, false), (4, 0, false)], Some(1)),
            ),
            (
                "endless empty chunks",
                (0, &[(0, 0, false), (0, 0, false), (0, 0, false)], Some(0)),
            ),
        ];
        for (name, (start, chunks, refused)) in table {
            let mut expected = Some(*start);
            let first_refused = chunks.iter().position(|&(offset, len, last)| {
                accept_chunk(&mut expected, offset, len, last, 10).is_err()
            });
            assert_eq!(first_refused, *refused, "{name}");
        }
    }
}
