//! Pulling: fetch the server's index, plan against ours, and fetch what differs with pipelined
//! requests. A blocking writer thread turns chunks into temp files and verified renames while
//! this task keeps the socket busy.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::folder::Folder;
use crate::error::{Error, Result};
use crate::fs::{
    local_mode, part_name, part_rel, umask, FinishError, PartWriter, RelPath, WriteRoot,
};
use crate::index::{plan_pull, FileRecord, Hash, VersionVector};
use crate::net::{remote_error, Connection};
use crate::progress::{Event, EventSink, Progress, TransferCounters, PROGRESS_INTERVAL_MS};
use crate::protocol::{
    peer_text, sanitize_error, ErrorCode, ErrorMsg, FileChunk, FileRequest, IndexEntry, Message,
    SyncComplete, SyncRequest, INDEX_BATCH_ENTRIES, MAX_LOCAL_PATH_BYTES, MAX_PATH_DEPTH,
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
/// A temp file of content the server no longer offers is deleted once it has not been touched
/// for this long (younger ones may belong to a sync still running in another process).
const STALE_PART_AGE_S: u64 = 15 * 60;

/// What a pull did.
#[derive(Debug, Default, Clone)]
pub(crate) struct PullOutcome {
    pub files_received: u64,
    pub bytes_received: u64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub unchanged: u64,
    pub touched: u64,
    /// (path, reason) of files that could not be fetched.
    pub failures: Vec<(String, String)>,
}

/// A file to fetch.
struct Fetch {
    rel: RelPath,
    entry: IndexEntry,
    hash: Hash,
    /// Temp-file name, in the target's folder.
    part: String,
    /// The temp file relative to the root (as the scan reports parts).
    part_rel: String,
    /// For messages only: every write goes through descriptors, never this path.
    target: PathBuf,
    /// Permission bits the file gets: the sender's, narrowed by our umask.
    mode: u32,
}

enum WriteCmd {
    Chunk(FileChunk),
    Fail { id: u32, reason: String },
}

enum Outcome {
    Done(FileRecord),
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

/// Bounds on what the server may send in one pull (from the client's config).
#[derive(Debug, Clone)]
pub(crate) struct PullLimits {
    pub max_index_entries: usize,
    pub max_index_path_bytes: usize,
    pub progress_timeout: Duration,
}

impl From<&super::PeerConfig> for PullLimits {
    fn from(c: &super::PeerConfig) -> Self {
        Self {
            max_index_entries: c.max_index_entries,
            max_index_path_bytes: c.max_index_path_bytes,
            progress_timeout: c.progress_timeout,
        }
    }
}

/// The error for a server that sent nothing for `limit` while we waited for `what`.
fn silent_server(limit: Duration, what: &str) -> Error {
    Error::ConnectionLost(format!(
        "the server sent nothing for {} s while we waited for {what}; it may be stuck \
         (ClientConfig.progress_timeout sets how long to wait)",
        limit.as_secs_f64()
    ))
}

/// Receives the next message, failing if the server sends nothing for `limit`.
async fn recv_within(conn: &mut Connection, limit: Duration, what: &str) -> Result<Message> {
    match tokio::time::timeout(limit, conn.recv()).await {
        Ok(m) => m,
        Err(_) => Err(silent_server(limit, what)),
    }
}

/// Sends one message, failing if the server does not take it within `limit` (a server that
/// stops reading would otherwise block us once the socket buffers are full).
async fn send_within(conn: &mut Connection, limit: Duration, msg: Message) -> Result<()> {
    match tokio::time::timeout(limit, conn.send(msg)).await {
        Ok(r) => r,
        Err(_) => Err(silent_server(limit, "it to read our requests")),
    }
}

/// Progress and cancellation plumbing for one pull.
pub(crate) struct PullHooks<'a> {
    pub events: Option<&'a EventSink>,
    pub cancel: CancellationToken,
    pub pending: &'a AtomicU64,
}

async fn fail_peer(conn: &mut Connection, e: Error) -> Error {
    let code = if matches!(e, Error::BadPath { .. }) {
        ErrorCode::BadPath
    } else {
        ErrorCode::BadMessage
    };
    conn.send_error(code, e.to_string()).await;
    e
}

/// Receives and validates the whole index. Anything hostile aborts the sync before any write;
/// every batch is checked against the limits before it is kept, so memory stays bounded by
/// them whatever the server sends.
async fn receive_index(
    conn: &mut Connection,
    limits: &PullLimits,
) -> Result<Vec<(RelPath, Hash, IndexEntry)>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut tally = IndexTally::default();
    loop {
        let batch = match recv_within(conn, limits.progress_timeout, "the index").await? {
            Message::FileIndex(b) => b,
            Message::Heartbeat => continue,
            m => {
                return Err(fail_peer(
                    conn,
                    Error::protocol(format!("expected FILE_INDEX, got {:?}", m.message_type())),
                )
                .await)
            }
        };
        if let Err(why) = tally.add(&batch.entries, limits) {
            return Err(fail_peer(conn, Error::protocol(why)).await);
        }
        for entry in batch.entries {
            let rel = match RelPath::parse(&entry.path) {
                Ok(r) => r,
                Err(e) => {
                    let e = sanitize_error(e);
                    tracing::warn!("server offered a hostile path: {e}");
                    return Err(fail_peer(conn, e).await);
                }
            };
            let shown = peer_text(rel.as_str());
            let Some(hash) = Hash::from_hex(&entry.hash) else {
                return Err(
                    fail_peer(conn, Error::protocol(format!("bad hash for {shown}"))).await,
                );
            };
            if !seen.insert(entry.path.clone()) {
                return Err(
                    fail_peer(conn, Error::protocol(format!("{shown} listed twice"))).await,
                );
            }
            // Planning compares hex strings: keep ours canonical whatever case the peer used.
            let entry = IndexEntry {
                hash: hash.to_hex(),
                ..entry
            };
            out.push((rel, hash, entry));
        }
        if batch.last {
            return Ok(out);
        }
    }
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

/// Runs one pull over an authenticated connection.
pub(crate) async fn pull(
    conn: &mut Connection,
    folder: Arc<Folder>,
    chunk_size: usize,
    limits: &PullLimits,
    hooks: PullHooks<'_>,
) -> Result<PullOutcome> {
    let patience = limits.progress_timeout;
    send_within(
        conn,
        patience,
        Message::SyncRequest(SyncRequest {
            mode: "pull".into(),
        }),
    )
    .await?;
    let scan = {
        let f = Arc::clone(&folder);
        tokio::task::spawn_blocking(move || f.scan())
    };
    let remote = receive_index(conn, limits).await?;
    let local = scan.await.map_err(|e| Error::Store(e.to_string()))??;
    // Resumable temp files (regular, one link) and their lengths; the others are replaced.
    let parts: HashMap<String, u64> = local
        .parts
        .iter()
        .filter(|p| p.resumable)
        .map(|p| (p.rel.clone(), p.len))
        .collect();
    let all_parts: HashSet<String> = local.parts.into_iter().map(|p| p.rel).collect();
    let local: HashMap<String, FileRecord> = local
        .files
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    let entries: Vec<IndexEntry> = remote.iter().map(|(_, _, e)| e.clone()).collect();
    let mut plan = plan_pull(&entries, &local, umask());
    let mut outcome = PullOutcome {
        files_total: plan.fetch.len() as u64,
        // The index's sizes were summed with checks as it arrived; these are a subset.
        bytes_total: plan
            .fetch
            .iter()
            .fold(0u64, |sum, e| sum.saturating_add(e.size)),
        unchanged: plan.unchanged as u64,
        ..Default::default()
    };
    tracing::info!(
        "plan: fetch {} files ({} bytes), fix metadata of {}, {} unchanged",
        outcome.files_total,
        outcome.bytes_total,
        plan.touch.len(),
        plan.unchanged
    );
    let by_path: HashMap<&str, (&RelPath, &Hash)> = remote
        .iter()
        .map(|(r, h, e)| (e.path.as_str(), (r, h)))
        .collect();
    // Files this folder cannot hold fail alone, before any folder of theirs is created.
    let root_bytes = folder.root().as_os_str().len();
    plan.fetch.retain(|e| {
        let fits = by_path
            .get(e.path.as_str())
            .map(|(rel, _)| fits_locally(root_bytes, rel));
        match fits {
            Some(Err(why)) => {
                tracing::warn!("{}: {why}", peer_text(&e.path));
                outcome.failures.push((e.path.clone(), why));
                false
            }
            _ => true,
        }
    });
    let root = folder.root().to_path_buf();

    // Same content, other metadata: fix in place, on descriptors (mode and mtime can never be
    // applied through a folder swapped for a symlink).
    let mut records = Vec::new();
    if !plan.touch.is_empty() {
        let mut writes = WriteRoot::open(&root)?;
        for e in &plan.touch {
            let Some((rel, hash)) = by_path.get(e.path.as_str()) else {
                continue;
            };
            match writes.apply_metadata(rel, e.mtime_ns, local_mode(e.permissions())) {
                Ok(w) => {
                    outcome.touched += 1;
                    records.push(record(e, **hash, &w));
                }
                Err(err) => outcome.failures.push((e.path.clone(), err.to_string())),
            }
        }
    }

    let fetches: Vec<Fetch> = plan
        .fetch
        .into_iter()
        .filter_map(|entry| {
            let (rel, hash) = by_path.get(entry.path.as_str())?;
            Some(Fetch {
                part: part_name(rel, hash),
                part_rel: part_rel(rel, hash),
                target: rel.under(&root),
                mode: local_mode(entry.permissions()),
                rel: (*rel).clone(),
                hash: **hash,
                entry,
            })
        })
        .collect();
    if let Some(sink) = hooks.events {
        sink(Event::Progress(Progress {
            phase: "requesting",
            files_to_request: outcome.files_total,
            files_total: outcome.files_total,
            bytes_total: outcome.bytes_total,
            progress: 0.0,
            ..Default::default()
        }));
    }
    let wanted: HashSet<String> = fetches.iter().map(|f| f.part_rel.clone()).collect();
    let stale: Vec<String> = all_parts.difference(&wanted).cloned().collect();
    let stale_root = root.clone();
    let (received, failures, bytes) =
        transfer(conn, fetches, &parts, root, chunk_size, patience, &hooks).await?;
    if !stale.is_empty() {
        let _ = tokio::task::spawn_blocking(move || remove_stale_parts(&stale_root, &stale)).await;
    }
    outcome.files_received = received.len() as u64;
    outcome.bytes_received = bytes;
    outcome.failures.extend(failures);
    records.extend(received);
    {
        let f = Arc::clone(&folder);
        let recs = records;
        let _ = tokio::task::spawn_blocking(move || f.remember(&recs)).await;
    }
    let complete = Message::SyncComplete(SyncComplete {
        files: outcome.files_received,
        bytes: outcome.bytes_received,
        failed: outcome.failures.len() as u64,
    });
    send_within(conn, patience, complete).await?;
    loop {
        match recv_within(conn, patience, "ACK").await? {
            Message::Ack => break,
            Message::Heartbeat => {}
            m => {
                return Err(Error::protocol(format!(
                    "expected ACK, got {:?}",
                    m.message_type()
                )))
            }
        }
    }
    Ok(outcome)
}

/// Deletes temp files left by interrupted syncs of content the server no longer offers (their
/// name holds the content hash, so no later sync would resume them), once they are old enough.
/// `parts` are relative to `root`; folders are opened without following symlinks.
fn remove_stale_parts(root: &std::path::Path, parts: &[String]) {
    let max_age = Duration::from_secs(STALE_PART_AGE_S);
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

fn record(e: &IndexEntry, hash: Hash, written: &crate::fs::Written) -> FileRecord {
    FileRecord {
        path: e.path.clone(),
        size: e.size,
        mtime_ns: written.mtime_ns,
        executable: written.mode & 0o111 != 0,
        mode: written.mode,
        hash,
        inode: written.inode,
        deleted: false,
        version: VersionVector::default(),
        blocks: Vec::new(),
        kind: Default::default(),
        target: None,
        sequence: 0,
        modified_by: None,
    }
}

type Transferred = (Vec<FileRecord>, Vec<(String, String)>, u64);

async fn transfer(
    conn: &mut Connection,
    fetches: Vec<Fetch>,
    parts: &HashMap<String, u64>,
    root: PathBuf,
    chunk_size: usize,
    patience: Duration,
    hooks: &PullHooks<'_>,
) -> Result<Transferred> {
    if fetches.is_empty() {
        emit_final(hooks, &TransferCounters::new(0, 0, chunk_size));
        return Ok((Vec::new(), Vec::new(), 0));
    }
    // Summed with checks when the index arrived; this is a subset of it.
    let total_bytes = fetches
        .iter()
        .fold(0u64, |sum, f| sum.saturating_add(f.entry.size));
    let counters = TransferCounters::new(fetches.len() as u64, total_bytes, chunk_size);
    // Resume offsets: an intact prefix left by an interrupted sync, in a temp file the scan
    // found to be a regular file with one link (the writer checks again on its descriptor).
    let mut queue: VecDeque<(u32, u64)> = VecDeque::with_capacity(fetches.len());
    for (i, f) in fetches.iter().enumerate() {
        let offset = match parts.get(&f.part_rel) {
            Some(&len) if len <= f.entry.size => len,
            _ => 0,
        };
        if offset > 0 {
            tracing::info!("resuming {} at byte {offset}", f.rel);
            counters.bytes_done.fetch_add(offset, Ordering::Relaxed);
        }
        queue.push_back((i as u32, offset));
    }
    // Before the first request: what is still to come must fit on the disk.
    let resumed = counters.bytes_done.load(Ordering::Relaxed);
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
        tokio::task::spawn_blocking(move || {
            write_files(&fetches, &root, cmd_rx, &done_tx, &counters)
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
    let mut received = Vec::new();
    let mut failures = Vec::new();
    let result: Result<()> = async {
        loop {
            if inflight.len() <= WINDOW_FILES / 2 && !queue.is_empty() {
                let top_up = async {
                    while inflight.len() < WINDOW_FILES {
                        let Some((id, offset)) = queue.pop_front() else { break };
                        let path = fetches[id as usize].entry.path.clone();
                        conn.writer.feed(Message::FileRequest(FileRequest { id, path, offset })).await?;
                        inflight.insert(id, Some(offset));
                    }
                    conn.writer.flush().await
                };
                tokio::time::timeout(patience, top_up)
                    .await
                    .map_err(|_| silent_server(patience, "it to read our requests"))??;
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
                _ = tokio::time::sleep(patience) => return Err(silent_server(patience, "file data")),
                Some(batch) = done_rx.recv() => {
                    for done in batch {
                        inflight.remove(&done.id);
                        let path = &fetches[done.id as usize].entry.path;
                        match done.outcome {
                            Outcome::Done(rec) => received.push(rec),
                            Outcome::Retry if retried.insert(done.id) => queue.push_back((done.id, 0)),
                            Outcome::Retry => failures.push((
                                path.clone(),
                                "content did not match its hash (changed on the server during the sync?)".into(),
                            )),
                            Outcome::Failed(reason) => {
                                tracing::warn!("{}: {}", peer_text(path), peer_text(&reason));
                                failures.push((path.clone(), reason));
                            }
                            Outcome::Abort(e) => return Err(e),
                        }
                    }
                }
                msg = conn.reader.next() => {
                    // Take everything already received, up to a batch, in one hand-over.
                    let (mut batch, mut bytes, mut next) = (Vec::new(), 0, msg);
                    loop {
                        match next {
                            Some(Ok(Message::FileChunk(c))) => {
                                let Some(expected) = inflight.get_mut(&c.id) else {
                                    return Err(Error::protocol(format!("chunk for request {} that is not in flight", c.id)));
                                };
                                let f = &fetches[c.id as usize];
                                if let Err(why) = accept_chunk(expected, c.offset, c.data.len(), c.last, f.entry.size) {
                                    return Err(Error::protocol(format!("{}: {why}", peer_text(f.rel.as_str()))));
                                }
                                bytes += c.data.len();
                                batch.push(WriteCmd::Chunk(c));
                            }
                            Some(Ok(Message::Error(ErrorMsg { id: Some(id), message, .. }))) if inflight.contains_key(&id) => {
                                batch.push(WriteCmd::Fail { id, reason: format!("server: {}", peer_text(&message)) });
                            }
                            Some(Ok(Message::Error(e))) => return Err(remote_error(e)),
                            Some(Ok(Message::Heartbeat)) => {}
                            Some(Ok(m)) => return Err(Error::protocol(format!("unexpected {:?} during transfer", m.message_type()))),
                            Some(Err(e)) => return Err(e),
                            None => return Err(Error::ConnectionLost("the server closed the connection mid-transfer".into())),
                        }
                        if batch.len() >= BATCH_MESSAGES || bytes >= BATCH_BYTES {
                            break;
                        }
                        match conn.reader.next().now_or_never() {
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
    if let Some(t) = ticker {
        t.abort();
    }
    hooks.pending.store(0, Ordering::Relaxed);
    result?;
    emit_final(hooks, &counters);
    let bytes = counters.bytes_done.load(Ordering::Relaxed);
    Ok((received, failures, bytes))
}

/// Bytes that unprivileged writes can still use on the file system holding `root`
/// (`f_bavail * f_frsize`), or `None` where that cannot be told (then nothing is checked).
fn free_bytes(root: &std::path::Path) -> Option<u64> {
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
fn ensure_room(root: &std::path::Path, needed: u64, free: Option<u64>) -> Result<()> {
    match free {
        Some(free) if needed > free => Err(Error::NoRoom {
            path: root.to_path_buf(),
            needed,
            free,
        }),
        _ => Ok(()),
    }
}

fn emit_final(hooks: &PullHooks<'_>, counters: &TransferCounters) {
    if let Some(sink) = hooks.events {
        sink(Event::Progress(counters.snapshot(true)));
    }
}

/// One file being written, or skipped until its last chunk after a failure.
enum Slot {
    Writing(Box<PartWriter>),
    Skipping(Outcome),
}

/// The blocking writer stage.
fn write_files(
    fetches: &[Fetch],
    root: &std::path::Path,
    mut cmds: mpsc::Receiver<Vec<WriteCmd>>,
    done: &mpsc::UnboundedSender<Vec<FileDone>>,
    counters: &TransferCounters,
) {
    let mut slots: HashMap<u32, Slot> = HashMap::new();
    // Every write of this sync goes through descriptors opened from this one.
    let mut writes = match WriteRoot::open(root) {
        Ok(w) => w,
        Err(e) => {
            let _ = done.send(vec![FileDone {
                id: 0,
                outcome: Outcome::Abort(e),
            }]);
            return;
        }
    };
    while let Some(batch) = cmds.blocking_recv() {
        let mut finished = Vec::new();
        for cmd in batch {
            write_one(
                cmd,
                fetches,
                counters,
                &mut slots,
                &mut writes,
                &mut finished,
            );
            if matches!(
                finished.last(),
                Some(FileDone {
                    outcome: Outcome::Abort(_),
                    ..
                })
            ) {
                // Files still open keep their temp files, so the next sync resumes them.
                let _ = done.send(finished);
                return;
            }
        }
        if !finished.is_empty() && done.send(finished).is_err() {
            return;
        }
    }
    // Interrupted: leave temp files in place so the next sync resumes them.
}

/// Applies one command of a batch; a file that is complete (or failed) goes to `finished`.
fn write_one(
    cmd: WriteCmd,
    fetches: &[Fetch],
    counters: &TransferCounters,
    slots: &mut HashMap<u32, Slot>,
    writes: &mut WriteRoot,
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
                .unwrap_or_else(|| open_slot(f, writes, c.offset));
            let slot = match slot {
                Slot::Writing(mut w) if w.written() == c.offset => match w.write(&c.data) {
                    Ok(()) => {
                        counters.add_bytes(
                            &f.entry.path,
                            f.entry.size,
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
                Slot::Writing(w) if w.written() != f.entry.size => {
                    w.discard();
                    Outcome::Failed(format!(
                        "size changed on the server (expected {} bytes)",
                        f.entry.size
                    ))
                }
                Slot::Writing(w) => {
                    match w.finish(&f.hash, f.entry.mtime_ns, f.mode, f.rel.file_name()) {
                        Ok(written) => Outcome::Done(record(&f.entry, f.hash, &written)),
                        // Fetched again once from zero; a second mismatch is reported as a failure.
                        Err(FinishError::HashMismatch) => Outcome::Retry,
                        Err(FinishError::Other(e)) => failure(e, f),
                    }
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
        PartWriter::create(dir, &f.part).map(Some)
    } else {
        PartWriter::resume(dir, &f.part, offset)
    };
    match opened {
        Ok(Some(w)) => Slot::Writing(Box::new(w)),
        Ok(None) => Slot::Skipping(Outcome::Retry),
        Err(e) => Slot::Skipping(failure(e, f)),
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
        }
    }

    fn limits(entries: usize, path_bytes: usize) -> PullLimits {
        PullLimits {
            max_index_entries: entries,
            max_index_path_bytes: path_bytes,
            progress_timeout: Duration::from_secs(60),
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
