//! One authenticated connection as both ends use it during sync: a writer task fed by a
//! bounded queue, one read path that serves the peer's FILE_REQUESTs on the side (a blocking
//! reader thread streams the files) and swallows HEARTBEATs, and the peer's ERROR mapped once.
//!
//! Either end may request files from the other at any time after it received its index, so
//! every wait for a message goes through [`Link::next`], which keeps serving meanwhile.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::fs::{Beneath, RelPath};
use crate::index::{FileRecord, Snapshot};
use crate::net::{remote_error, Connection, FrameReader, FrameWriter};
use crate::protocol::{sanitize_error, ErrorCode, ErrorMsg, FileChunk, FileRequest, Message};

/// Outgoing messages queued for the writer task (each at most one chunk).
const OUTBOUND_QUEUE: usize = 8;
/// The peer's file requests queued for the reader thread: four times the request window a
/// well-behaved peer keeps, so only a peer that ignores the window overflows it.
const JOB_QUEUE: usize = 1024;

/// Counters the provider adds to as it serves files.
#[derive(Debug, Default)]
pub(crate) struct Served {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

/// What the peer may request: the live files of the index we sent it, with their sizes.
pub(crate) type Offered = Arc<Mutex<Arc<Indexed>>>;

/// Our index for one round: the store as the round's scan left it ([`Snapshot`]: later
/// commits do not change it), less the paths held back this round. Read as a sorted stream
/// or path by path; never held in memory whole.
#[derive(Debug, Default)]
pub(crate) struct Indexed {
    snapshot: Snapshot,
    /// Not offered, not sent, not taken as ours (see `session::check_local_names`).
    held: HashSet<String>,
}

impl Indexed {
    pub fn new(snapshot: Snapshot, held: HashSet<String>) -> Indexed {
        Indexed { snapshot, held }
    }

    /// The record at `path`.
    pub fn get(&self, path: &str) -> Result<Option<FileRecord>> {
        if self.held.contains(path) {
            return Ok(None);
        }
        self.snapshot.get(path)
    }

    /// Whether `path` is held back this round.
    pub fn is_held(&self, path: &str) -> bool {
        self.held.contains(path)
    }

    /// Whether there is a record at `path`.
    pub fn contains_key(&self, path: &str) -> Result<bool> {
        Ok(self.get(path)?.is_some())
    }

    /// Every record, in path order.
    pub fn records(&self) -> Result<impl Iterator<Item = Result<FileRecord>> + '_> {
        Ok(self
            .snapshot
            .records()?
            .filter(|r| r.as_ref().map_or(true, |r| !self.held.contains(&r.path))))
    }

    /// The size of the live file at `path`, if there is one (none if the store cannot be
    /// read: the request is refused).
    pub fn file_size(&self, path: &str) -> Option<u64> {
        match self.get(path) {
            Ok(r) => r
                .filter(|r| !r.deleted && r.kind == crate::index::EntryKind::File)
                .map(|r| r.size),
            Err(e) => {
                tracing::warn!("reading the index for a request: {e}");
                None
            }
        }
    }
}

/// A file to stream.
struct ReadJob {
    id: u32,
    rel: RelPath,
    offset: u64,
    /// The size the index announced: exactly this much is sent, or an error if the file changed.
    size: u64,
}

/// An authenticated connection in a sync (see the module doc).
pub(crate) struct Link {
    reader: FrameReader,
    out: mpsc::Sender<Message>,
    writer: tokio::task::JoinHandle<Result<()>>,
    jobs: Option<mpsc::Sender<ReadJob>>,
    provider: Option<tokio::task::JoinHandle<()>>,
    pub offered: Offered,
}

impl Link {
    /// Takes over `conn`; files are served from `root` with chunks of `chunk_size`.
    pub fn new(conn: Connection, root: PathBuf, chunk_size: usize, served: Arc<Served>) -> Link {
        let Connection { reader, writer, .. } = conn;
        let (out, out_rx) = mpsc::channel::<Message>(OUTBOUND_QUEUE);
        let writer = tokio::spawn(write_loop(writer, out_rx));
        let (jobs, job_rx) = mpsc::channel::<ReadJob>(JOB_QUEUE);
        let provider = {
            let out = out.clone();
            tokio::task::spawn_blocking(move || read_files(job_rx, out, &served, &root, chunk_size))
        };
        Link {
            reader,
            out,
            writer,
            jobs: Some(jobs),
            provider: Some(provider),
            offered: Arc::default(),
        }
    }

    /// Queues one message for the writer task.
    pub async fn send(&self, msg: Message) -> Result<()> {
        self.out
            .send(msg)
            .await
            .map_err(|_| Error::ConnectionLost("the connection's writer stopped".into()))
    }

    /// A sender for tasks that send concurrently (index batches).
    pub fn sender(&self) -> mpsc::Sender<Message> {
        self.out.clone()
    }

    /// Best effort: tells the peer why we stop.
    pub async fn fail(&self, code: ErrorCode, message: impl Into<String>) {
        let _ = self
            .send(Message::Error(ErrorMsg::fatal(code, message)))
            .await;
    }

    /// The next message for the sync logic, within `patience`. Serves FILE_REQUESTs and skips
    /// HEARTBEATs on the way (both restart the wait); a fatal ERROR from the peer is `Err`.
    /// Cancellation-safe: nothing is lost when the future is dropped.
    pub async fn next(&mut self, patience: Duration, what: &str) -> Result<Message> {
        loop {
            let msg = match tokio::time::timeout(patience, self.reader.next()).await {
                Err(_) => return Err(silent_peer(patience, what)),
                Ok(None) => {
                    return Err(Error::ConnectionLost(format!(
                        "the peer closed the connection while we waited for {what}"
                    )))
                }
                Ok(Some(m)) => m?,
            };
            match msg {
                Message::Heartbeat => {}
                Message::FileRequest(r) => {
                    if let Err(e) = self.serve_now(r) {
                        tracing::warn!("hostile request: {e}");
                        self.fail(refusal_code(&e), e.to_string()).await;
                        return Err(e);
                    }
                }
                Message::Error(e) if e.id.is_none() => return Err(remote_error(e)),
                m => return Ok(m),
            }
        }
    }

    /// As [`Link::next`], but returns `None` at once when no message is ready.
    pub fn try_next(&mut self) -> Option<Result<Message>> {
        use futures_util::FutureExt;
        loop {
            let msg = match self.reader.next().now_or_never()? {
                None => {
                    return Some(Err(Error::ConnectionLost(
                        "the peer closed the connection mid-transfer".into(),
                    )))
                }
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(m)) => m,
            };
            match msg {
                Message::Heartbeat => {}
                Message::FileRequest(r) => {
                    if let Err(e) = self.serve_now(r) {
                        // Said to the peer by the caller's next `fail` (this path cannot wait).
                        let code = match &e {
                            Error::BadPath { .. } => ErrorCode::BadPath,
                            _ => ErrorCode::BadMessage,
                        };
                        let _ = self
                            .out
                            .try_send(Message::Error(ErrorMsg::fatal(code, e.to_string())));
                        return Some(Err(e));
                    }
                }
                Message::Error(e) if e.id.is_none() => return Some(Err(remote_error(e))),
                m => return Some(Ok(m)),
            }
        }
    }

    /// Hands one peer request to the reader thread, or answers it with an ERROR for that id
    /// (a path we did not offer). A hostile path or a flood beyond the queue ends the session.
    fn serve_now(&mut self, FileRequest { id, path, offset }: FileRequest) -> Result<()> {
        let rel = RelPath::parse(&path).map_err(sanitize_error)?;
        let size = super::lock(&self.offered).file_size(rel.as_str());
        let Some(size) = size else {
            let msg = ErrorMsg {
                code: ErrorCode::NotFound,
                message: format!("{rel} is not in the index we sent"),
                id: Some(id),
            };
            return self.out.try_send(Message::Error(msg)).or_else(|e| match e {
                mpsc::error::TrySendError::Full(m) => {
                    // The queue drains by itself; a short blocking hand-over keeps order.
                    let out = self.out.clone();
                    tokio::spawn(async move { out.send(m).await });
                    Ok(())
                }
                mpsc::error::TrySendError::Closed(_) => Err(Error::ConnectionLost(
                    "the connection's writer stopped".into(),
                )),
            });
        };
        let job = ReadJob {
            id,
            rel,
            offset,
            size,
        };
        let Some(jobs) = &self.jobs else {
            return Ok(());
        };
        jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::protocol(format!(
                "the peer has more than {JOB_QUEUE} file requests open (it ignores the request window)"
            )),
            mpsc::error::TrySendError::Closed(_) => {
                Error::ConnectionLost("the file reader stopped".into())
            }
        })
    }

    /// Ends the link: stops serving, flushes what is queued and closes the socket.
    pub async fn close(mut self) {
        self.jobs.take();
        if let Some(p) = self.provider.take() {
            let _ = p.await;
        }
        drop(self.out);
        let _ = self.writer.await;
    }
}

/// The ERROR code that tells a peer why its request ended the session.
fn refusal_code(e: &Error) -> ErrorCode {
    match e {
        Error::BadPath { .. } => ErrorCode::BadPath,
        _ => ErrorCode::BadMessage,
    }
}

/// The error for a peer that sent nothing for `limit` while we waited for `what`.
pub(crate) fn silent_peer(limit: Duration, what: &str) -> Error {
    Error::ConnectionLost(format!(
        "the peer sent nothing for {} s while we waited for {what}; it may be stuck \
         (ClientConfig.progress_timeout sets how long to wait)",
        limit.as_secs_f64()
    ))
}

/// Sends queued messages, flushing whenever the queue runs dry.
async fn write_loop(mut writer: FrameWriter, mut rx: mpsc::Receiver<Message>) -> Result<()> {
    while let Some(msg) = rx.recv().await {
        writer.feed(msg).await?;
        while let Ok(msg) = rx.try_recv() {
            writer.feed(msg).await?;
        }
        writer.flush().await?;
    }
    writer.close().await
}

/// The blocking file-reader stage.
fn read_files(
    mut jobs: mpsc::Receiver<ReadJob>,
    out: mpsc::Sender<Message>,
    served: &Served,
    root: &Path,
    chunk_size: usize,
) {
    // Opened at the first request (a client's folder may not exist before its first sync).
    let mut beneath = None;
    while let Some(job) = jobs.blocking_recv() {
        if !matches!(beneath, Some(Ok(_))) {
            beneath = Some(Beneath::new(root));
        }
        let Some(beneath) = &beneath else { continue };
        let streamed = match beneath {
            Ok(b) => stream_file(&job, &out, chunk_size, b),
            Err(e) => Err(ErrorMsg {
                code: ErrorCode::Io,
                message: format!("cannot open the synced folder: {e}"),
                id: Some(job.id),
            }),
        };
        match streamed {
            Ok(Some(bytes)) => {
                served.files.fetch_add(1, Ordering::Relaxed);
                served.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok(None) => return, // the writer is gone
            Err(msg) => {
                if out.blocking_send(Message::Error(msg)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Streams one file as chunks. `Ok(None)` when the outbound queue closed.
fn stream_file(
    job: &ReadJob,
    out: &mpsc::Sender<Message>,
    chunk_size: usize,
    beneath: &Beneath,
) -> Result<Option<u64>, ErrorMsg> {
    let fail = |code: ErrorCode, message: String| ErrorMsg {
        code,
        message,
        id: Some(job.id),
    };
    let io_fail = |e: std::io::Error| fail(ErrorCode::Io, format!("cannot read the file: {e}"));
    // The scanner never follows symlinks; the open refuses them too, in case the tree changed.
    let mut file = beneath
        .open_read(&job.rel)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ELOOP | libc::EXDEV | libc::ENOTDIR) => fail(
                ErrorCode::NotFound,
                "no longer a regular file inside the folder".into(),
            ),
            _ => io_fail(e),
        })?;
    let md = file.metadata().map_err(io_fail)?;
    if !md.is_file() {
        return Err(fail(ErrorCode::NotFound, "not a regular file".into()));
    }
    // The peer takes exactly the announced size and checks the hash: a file that changed
    // since is reported, and the next sync sees it in the new index.
    let size = job.size;
    if md.len() != size {
        return Err(fail(
            ErrorCode::FileChanged,
            format!(
                "changed since the index was sent ({size} bytes, now {})",
                md.len()
            ),
        ));
    }
    if job.offset > size {
        return Err(fail(
            ErrorCode::FileChanged,
            format!("offset {} is past the end ({size} bytes)", job.offset),
        ));
    }
    if job.offset > 0 {
        file.seek(SeekFrom::Start(job.offset)).map_err(io_fail)?;
    }
    let (mut pos, mut sent) = (job.offset, 0u64);
    loop {
        let n = (size - pos).min(chunk_size as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        file.read_exact(&mut buf).map_err(|e| {
            fail(
                ErrorCode::FileChanged,
                format!("file changed while being read: {e}"),
            )
        })?;
        let last = pos + n as u64 == size;
        let chunk = FileChunk {
            id: job.id,
            offset: pos,
            last,
            data: buf.freeze(),
        };
        if out.blocking_send(Message::FileChunk(chunk)).is_err() {
            return Ok(None);
        }
        pos += n as u64;
        sent += n as u64;
        if last {
            return Ok(Some(sent));
        }
    }
}
