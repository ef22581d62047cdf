//! One authenticated client session on the server: answer SYNC_REQUEST with the index, stream
//! requested files, acknowledge SYNC_COMPLETE.
//!
//! Three stages run concurrently so neither the disk nor the socket waits for the other:
//! this task parses requests, a blocking thread reads files into chunks, and a writer task
//! encrypts and sends them. Channels between them are bounded, so memory is too.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::folder::Folder;
use super::server::Shared;
use crate::error::{Error, Result};
use crate::fs::{Beneath, RelPath};
use crate::index::FileRecord;
use crate::net::{recv, Connection, FrameWriter};
use crate::protocol::{
    sanitize_error, ErrorCode, ErrorMsg, FileChunk, FileIndex, FileRequest, Message,
    INDEX_BATCH_ENTRIES, SCAN_HEARTBEAT_INTERVAL_MS,
};

/// Outgoing messages queued for the writer task (each at most one chunk).
const OUTBOUND_QUEUE: usize = 8;
/// File requests queued for the reader thread.
const JOB_QUEUE: usize = 1024;

/// A file to stream.
struct ReadJob {
    id: u32,
    rel: RelPath,
    offset: u64,
    /// The size the index announced: exactly this much is sent, or an error if the file changed.
    size: u64,
}

pub(crate) async fn serve_session(
    conn: Connection,
    shared: &Arc<Shared>,
    folder: &Arc<Folder>,
    token: &CancellationToken,
) -> Result<()> {
    let Connection {
        mut reader,
        writer,
        peer,
    } = conn;
    let (out_tx, out_rx) = mpsc::channel::<Message>(OUTBOUND_QUEUE);
    let writer_task = tokio::spawn(write_loop(writer, out_rx));
    let (job_tx, job_rx) = mpsc::channel::<ReadJob>(JOB_QUEUE);
    let reader_thread = {
        let out = out_tx.clone();
        let shared = Arc::clone(shared);
        let root = folder.root().to_path_buf();
        tokio::task::spawn_blocking(move || read_files(job_rx, out, &shared, &root))
    };
    let mut index: HashMap<String, FileRecord> = HashMap::new();
    let result = loop {
        let msg = tokio::select! {
            m = recv(&mut reader) => m,
            _ = token.cancelled() => {
                let _ = out_tx.send(Message::Error(ErrorMsg::fatal(ErrorCode::ShuttingDown, "server is shutting down"))).await;
                break Ok(());
            }
        };
        let msg = match msg {
            Ok(m) => m,
            Err(Error::ConnectionLost(_)) => break Ok(()),
            Err(e @ Error::Protocol(_)) => {
                let _ = out_tx
                    .send(Message::Error(ErrorMsg::fatal(
                        ErrorCode::BadFrame,
                        e.to_string(),
                    )))
                    .await;
                break Err(e);
            }
            Err(e) => break Err(e),
        };
        match msg {
            Message::SyncRequest(_) => {
                let f = Arc::clone(folder);
                let scan = tokio::task::spawn_blocking(move || f.scan());
                let period = std::time::Duration::from_millis(SCAN_HEARTBEAT_INTERVAL_MS);
                let scan = scan_with_heartbeats(scan, &out_tx, period)
                    .await
                    .map_err(|e| Error::Store(e.to_string()))
                    .and_then(|r| r);
                let scan = match scan {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = out_tx
                            .send(Message::Error(ErrorMsg::fatal(
                                ErrorCode::Io,
                                e.to_string(),
                            )))
                            .await;
                        break Err(e);
                    }
                };
                tracing::debug!(
                    "{peer}: index of {} files ({} hashed)",
                    scan.files.len(),
                    scan.hashed
                );
                let entries: Vec<_> = scan.files.iter().map(FileRecord::to_entry).collect();
                index = scan
                    .files
                    .into_iter()
                    .map(|r| (r.path.clone(), r))
                    .collect();
                let mut batches = entries.chunks(INDEX_BATCH_ENTRIES).peekable();
                if batches.peek().is_none() {
                    let _ = out_tx
                        .send(Message::FileIndex(FileIndex {
                            entries: vec![],
                            last: true,
                        }))
                        .await;
                }
                while let Some(batch) = batches.next() {
                    let last = batches.peek().is_none();
                    if out_tx
                        .send(Message::FileIndex(FileIndex {
                            entries: batch.to_vec(),
                            last,
                        }))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            Message::FileRequest(FileRequest { id, path, offset }) => {
                let rel = match RelPath::parse(&path) {
                    Ok(r) => r,
                    Err(e) => {
                        let e = sanitize_error(e);
                        tracing::warn!("{peer}: hostile request: {e}");
                        let _ = out_tx
                            .send(Message::Error(ErrorMsg::fatal(
                                ErrorCode::BadPath,
                                e.to_string(),
                            )))
                            .await;
                        break Err(e);
                    }
                };
                let Some(size) = index.get(rel.as_str()).map(|r| r.size) else {
                    let msg = ErrorMsg {
                        code: ErrorCode::NotFound,
                        message: format!("{rel} is not in the index"),
                        id: Some(id),
                    };
                    if out_tx.send(Message::Error(msg)).await.is_err() {
                        break Ok(());
                    }
                    continue;
                };
                let job = ReadJob {
                    id,
                    rel,
                    offset,
                    size,
                };
                if job_tx.send(job).await.is_err() {
                    break Ok(());
                }
            }
            Message::SyncComplete(done) => {
                shared
                    .counters
                    .sync_sessions
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "{peer}: sync complete ({} files, {} bytes)",
                    done.files,
                    done.bytes
                );
                let _ = out_tx.send(Message::Ack).await;
            }
            Message::Heartbeat => {}
            other => {
                let e = Error::protocol(format!(
                    "unexpected {:?} from the client",
                    other.message_type()
                ));
                let _ = out_tx
                    .send(Message::Error(ErrorMsg::fatal(
                        ErrorCode::BadMessage,
                        e.to_string(),
                    )))
                    .await;
                break Err(e);
            }
        }
    };
    drop(job_tx);
    drop(out_tx);
    let _ = reader_thread.await;
    let _ = writer_task.await;
    result
}

/// Awaits a scan, sending a HEARTBEAT every `period` ([`SCAN_HEARTBEAT_INTERVAL_MS`]) meanwhile: the first
/// scan of a big folder hashes for minutes, and the client's progress timeout must not take
/// that for a silent server.
async fn scan_with_heartbeats<T>(
    mut scan: tokio::task::JoinHandle<T>,
    out: &mpsc::Sender<Message>,
    period: std::time::Duration,
) -> Result<T, tokio::task::JoinError> {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            done = &mut scan => return done,
            _ = beat.tick() => {
                // A client that is gone shows up at the index send; keep scanning until then.
                let _ = out.send(Message::Heartbeat).await;
            }
        }
    }
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
    shared: &Shared,
    root: &Path,
) {
    let chunk_size = shared.config.chunk_size;
    let beneath = Beneath::new(root);
    while let Some(job) = jobs.blocking_recv() {
        let streamed = match &beneath {
            Ok(b) => stream_file(&job, &out, chunk_size, b),
            Err(e) => Err(ErrorMsg {
                code: ErrorCode::Io,
                message: format!("cannot open the served folder: {e}"),
                id: Some(job.id),
            }),
        };
        match streamed {
            Ok(Some(bytes)) => {
                shared.counters.files_sent.fetch_add(1, Ordering::Relaxed);
                shared
                    .counters
                    .bytes_sent
                    .fetch_add(bytes, Ordering::Relaxed);
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
    // The client takes exactly the announced size: a file that changed since is reported, and
    // the client's next sync sees it in the new index.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_long_scan_sends_heartbeats_and_a_short_one_none() {
        // (case, scan time, heartbeats at least, at most)
        let table = [("long scan", 400, 1, 9), ("instant scan", 0, 0, 0)];
        for (case, scan_ms, least, most) in table {
            let (tx, mut rx) = mpsc::channel(16);
            let scan = tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(scan_ms));
                7
            });
            let got = scan_with_heartbeats(scan, &tx, Duration::from_millis(100)).await;
            assert_eq!(got.unwrap(), 7, "{case}: the scan's result");
            drop(tx);
            let mut beats = 0;
            while let Some(m) = rx.recv().await {
                assert!(matches!(m, Message::Heartbeat), "{case}");
                beats += 1;
            }
            assert!(
                (least..=most).contains(&beats),
                "{case}: {beats} heartbeats"
            );
        }
    }
}
