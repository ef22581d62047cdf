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
    ErrorCode, ErrorMsg, FileChunk, FileRequest, IndexEntry, Message, SyncComplete, SyncRequest,
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

/// Receives and validates the whole index. Anything hostile aborts the sync before any write.
async fn receive_index(conn: &mut Connection) -> Result<Vec<(RelPath, Hash, IndexEntry)>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let batch = match conn.recv().await? {
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
        for entry in batch.entries {
            let rel = match RelPath::parse(&entry.path) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("server offered a hostile path: {e}");
                    return Err(fail_peer(conn, e).await);
                }
            };
            let Some(hash) = Hash::from_hex(&entry.hash) else {
                return Err(fail_peer(conn, Error::protocol(format!("bad hash for {rel}"))).await);
            };
            if !seen.insert(entry.path.clone()) {
                return Err(fail_peer(conn, Error::protocol(format!("{rel} listed twice"))).await);
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

/// Runs one pull over an authenticated connection.
pub(crate) async fn pull(
    conn: &mut Connection,
    folder: Arc<Folder>,
    chunk_size: usize,
    hooks: PullHooks<'_>,
) -> Result<PullOutcome> {
    conn.send(Message::SyncRequest(SyncRequest {
        mode: "pull".into(),
    }))
    .await?;
    let scan = {
        let f = Arc::clone(&folder);
        tokio::task::spawn_blocking(move || f.scan())
    };
    let remote = receive_index(conn).await?;
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
    let plan = plan_pull(&entries, &local, umask());
    let mut outcome = PullOutcome {
        files_total: plan.fetch.len() as u64,
        bytes_total: plan.fetch.iter().map(|e| e.size).sum(),
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
        transfer(conn, fetches, &parts, root, chunk_size, &hooks).await?;
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
    conn.send(Message::SyncComplete(SyncComplete {
        files: outcome.files_received,
        bytes: outcome.bytes_received,
        failed: outcome.failures.len() as u64,
    }))
    .await?;
    loop {
        match conn.recv().await? {
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
    }
}

type Transferred = (Vec<FileRecord>, Vec<(String, String)>, u64);

async fn transfer(
    conn: &mut Connection,
    fetches: Vec<Fetch>,
    parts: &HashMap<String, u64>,
    root: PathBuf,
    chunk_size: usize,
    hooks: &PullHooks<'_>,
) -> Result<Transferred> {
    if fetches.is_empty() {
        emit_final(hooks, &TransferCounters::new(0, 0, chunk_size));
        return Ok((Vec::new(), Vec::new(), 0));
    }
    let total_bytes = fetches.iter().map(|f| f.entry.size).sum();
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
                while inflight.len() < WINDOW_FILES {
                    let Some((id, offset)) = queue.pop_front() else { break };
                    let path = fetches[id as usize].entry.path.clone();
                    conn.writer.feed(Message::FileRequest(FileRequest { id, path, offset })).await?;
                    inflight.insert(id, Some(offset));
                }
                conn.writer.flush().await?;
            }
            hooks.pending.store((inflight.len() + queue.len()) as u64, Ordering::Relaxed);
            if inflight.is_empty() && queue.is_empty() {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = hooks.cancel.cancelled() => return Err(Error::Cancelled),
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
                                tracing::warn!("{path}: {reason}");
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
                                    return Err(Error::protocol(format!("{}: {why}", f.rel)));
                                }
                                bytes += c.data.len();
                                batch.push(WriteCmd::Chunk(c));
                            }
                            Some(Ok(Message::Error(ErrorMsg { id: Some(id), message, .. }))) if inflight.contains_key(&id) => {
                                batch.push(WriteCmd::Fail { id, reason: format!("server: {message}") });
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
/// exactly at `size`, and never go past it: a hostile server cannot make us write more than
/// the index announced, nor stream forever.
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
    use super::accept_chunk;

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
