//! Typed status and progress events, the live transfer counters behind them, and the
//! throttle that turns per-chunk counting into at most `1000 / PROGRESS_INTERVAL_MS` snapshots a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::protocol::peer_text;

/// Time between two progress snapshots.
pub const PROGRESS_INTERVAL_MS: u64 = 100;

/// Connection and sync states, named as in the original SSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Handshake,
    Connected,
    Authenticated,
    AuthFailed,
    SyncStarted,
    SyncCompleted,
    SyncError,
    /// A path changed on both sides; both versions were kept.
    Conflict,
    ConnectionError,
    ServerError,
    Disconnected,
}

impl Status {
    /// Every status, in the order a sync meets them (Python's `ssp.client.STATUSES`).
    pub const ALL: [Status; 12] = [
        Status::Connecting,
        Status::Handshake,
        Status::Connected,
        Status::Authenticated,
        Status::AuthFailed,
        Status::SyncStarted,
        Status::SyncCompleted,
        Status::SyncError,
        Status::Conflict,
        Status::ConnectionError,
        Status::ServerError,
        Status::Disconnected,
    ];

    /// The original's status string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "CONNECTING",
            Status::Handshake => "HANDSHAKE",
            Status::Connected => "CONNECTED",
            Status::Authenticated => "AUTHENTICATED",
            Status::AuthFailed => "AUTH_FAILED",
            Status::SyncStarted => "SYNC_STARTED",
            Status::SyncCompleted => "SYNC_COMPLETED",
            Status::SyncError => "SYNC_ERROR",
            Status::Conflict => "CONFLICT",
            Status::ConnectionError => "CONNECTION_ERROR",
            Status::ServerError => "SERVER_ERROR",
            Status::Disconnected => "DISCONNECTED",
        }
    }
}

/// A progress snapshot. Keys keep the original's (`phase`, `files_to_request`, `files_received`,
/// `file_path`, `chunk_index`, `total_chunks`, `progress` = percent of the current file) and add
/// whole-sync figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Progress {
    pub phase: &'static str,
    pub files_to_request: u64,
    pub files_received: u64,
    pub file_path: String,
    pub chunk_index: u64,
    pub total_chunks: u64,
    pub progress: f64,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate_bps: f64,
    pub eta_s: Option<f64>,
}

/// What the engine reports while it works.
#[derive(Debug, Clone)]
pub enum Event {
    Status { status: Status, details: String },
    Progress(Progress),
}

/// Receiver of events; called from engine threads, so it must be cheap and thread-safe.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// Emits a status event if there is a sink.
pub(crate) fn emit_status(sink: Option<&EventSink>, status: Status, details: impl Into<String>) {
    if let Some(sink) = sink {
        sink(Event::Status {
            status,
            details: details.into(),
        });
    }
}

/// The file currently being received.
#[derive(Debug, Default, Clone)]
struct Current {
    /// The path as the index named it, to notice the next file.
    raw_path: String,
    /// The same, made safe to show.
    path: String,
    size: u64,
    done: u64,
    chunk_index: u64,
}

/// Counters the transfer updates and the throttle reads.
pub(crate) struct TransferCounters {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub files_total: u64,
    pub bytes_total: u64,
    chunk_size: u64,
    current: Mutex<Current>,
    started: Instant,
}

impl TransferCounters {
    pub fn new(files_total: u64, bytes_total: u64, chunk_size: usize) -> Arc<Self> {
        Arc::new(Self {
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            files_total,
            bytes_total,
            chunk_size: chunk_size.max(1) as u64,
            current: Mutex::new(Current::default()),
            started: Instant::now(),
        })
    }

    /// Records `n` bytes written to `path` (of `size` bytes, `done` so far). Counts saturate:
    /// a resumed file fetched again from zero counts its prefix twice, and a hostile index may
    /// announce sizes near 2^64.
    pub fn add_bytes(&self, path: &str, size: u64, done: u64, n: u64) {
        // `fetch_update` with a closure that always answers cannot fail.
        let _ = self
            .bytes_done
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(n))
            });
        if let Ok(mut cur) = self.current.lock() {
            // The path is the server's: events carry it made safe to show.
            if cur.raw_path != path {
                cur.raw_path = path.to_owned();
                cur.path = peer_text(path);
                cur.chunk_index = 0;
            }
            cur.size = size;
            cur.done = done;
            cur.chunk_index = cur.chunk_index.saturating_add(1);
        }
    }

    /// A snapshot for the `receiving` phase (or `done` when `finished`).
    pub fn snapshot(&self, finished: bool) -> Progress {
        let files_done = self.files_done.load(Ordering::Relaxed);
        let bytes_done = self.bytes_done.load(Ordering::Relaxed);
        let cur = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            bytes_done as f64 / elapsed
        } else {
            0.0
        };
        let remaining = self.bytes_total.saturating_sub(bytes_done) as f64;
        Progress {
            phase: if finished { "done" } else { "receiving" },
            files_to_request: self.files_total,
            files_received: files_done,
            file_path: cur.path,
            chunk_index: cur.chunk_index,
            total_chunks: cur.size.div_ceil(self.chunk_size).max(1),
            progress: if cur.size == 0 {
                100.0
            } else {
                cur.done as f64 * 100.0 / cur.size as f64
            },
            files_done,
            files_total: self.files_total,
            bytes_done,
            bytes_total: self.bytes_total,
            rate_bps: rate,
            eta_s: if finished {
                Some(0.0)
            } else if rate > 0.0 {
                Some(remaining / rate)
            } else {
                None
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_names_every_status_once() {
        // A status missing from ALL (or listed twice) would be missing from Python's list.
        let names: std::collections::BTreeSet<&str> =
            Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), Status::ALL.len());
        for status in Status::ALL {
            // Exhaustive: a new variant fails to compile here until it is considered.
            match status {
                Status::Connecting
                | Status::Handshake
                | Status::Connected
                | Status::Authenticated
                | Status::AuthFailed
                | Status::SyncStarted
                | Status::SyncCompleted
                | Status::SyncError
                | Status::Conflict
                | Status::ConnectionError
                | Status::ServerError
                | Status::Disconnected => {}
            }
        }
    }

    #[test]
    fn snapshot_reports_whole_sync_and_current_file() {
        let c = TransferCounters::new(2, 300, 100);
        c.add_bytes("a", 250, 100, 100);
        c.add_bytes("a", 250, 200, 100);
        let p = c.snapshot(false);
        assert_eq!(
            (p.bytes_done, p.bytes_total, p.chunk_index, p.total_chunks),
            (200, 300, 2, 3)
        );
        assert!((p.progress - 80.0).abs() < 1e-9);
        assert_eq!(p.phase, "receiving");
        let done = c.snapshot(true);
        assert_eq!((done.phase, done.eta_s), ("done", Some(0.0)));
    }

    #[test]
    fn counts_saturate_and_the_current_path_is_safe_to_show() {
        let c = TransferCounters::new(1, u64::MAX, 100);
        c.add_bytes("\u{1b}]0;title\u{7}", 10, u64::MAX - 1, u64::MAX - 1);
        c.add_bytes("\u{1b}]0;title\u{7}", 10, u64::MAX, 5);
        let p = c.snapshot(false);
        assert_eq!(p.bytes_done, u64::MAX);
        assert_eq!(p.file_path, "\\u{1b}]0;title\\u{7}");
        assert_eq!(p.chunk_index, 2, "the same file, not a new one");
    }
}
