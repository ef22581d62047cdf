//! The client: connect and authenticate, run pulls over the connection, report status and
//! progress as events and snapshots.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::folder::Folder;
use super::link::{Link, Served};
use super::lock;
use super::pull::PullHooks;
use super::session::{client_round, RoundOutcome};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::Skipped;
use crate::net::{client_handshake, Connection};
use crate::progress::{emit_status, EventSink, Status};
use crate::protocol::{peer_text, sanitize_error, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// How to reach a server and where to put its files. `chunk_size` only bounds progress
/// granularity on the client; the server chooses chunk sizes.
pub type ClientConfig = super::PeerConfig;

/// Cumulative transfer figures of this client (original keys plus whole-sync totals).
///
/// The two times are plain numbers with `0.0` meaning "never", as in the original SSP, whose
/// scripts and page compare them with numbers (`stats["sync_start_time"] > 0`) before any sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStats {
    pub files_received: u64,
    pub bytes_received: u64,
    pub files_sent: u64,
    pub bytes_sent: u64,
    /// Unix time the last sync started; 0.0 before the first.
    pub sync_start_time: f64,
    /// Seconds the last sync took; 0.0 before the first finishes.
    pub sync_duration: f64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_unchanged: u64,
    pub files_failed: u64,
    /// Files deleted here by the last sync (kept in `.ssp/versions/`).
    pub files_deleted: u64,
    /// Conflicts the last sync found (both versions kept; see [`Client::report`]).
    pub conflicts: u64,
    /// Entries the last sync did not sync, on either side (see [`SyncReport::skipped`]).
    pub files_skipped: u64,
    pub syncs_completed: u64,
    pub last_error: Option<String>,
}

/// One sync's outcome from a round and the follow-up round that carried its conflicts across:
/// what either round moved, the conflicts of both, and the state the follow-up's scan found
/// (what is not synced, what is unchanged).
fn followed_by(first: RoundOutcome, next: RoundOutcome) -> RoundOutcome {
    let mut conflicts = first.conflicts;
    conflicts.extend(next.conflicts);
    let mut failures = first.failures;
    failures.extend(next.failures);
    RoundOutcome {
        files_received: first.files_received + next.files_received,
        bytes_received: first.bytes_received + next.bytes_received,
        files_total: first.files_total + next.files_total,
        bytes_total: first.bytes_total + next.bytes_total,
        deleted: first.deleted + next.deleted,
        copied_locally: first.copied_locally + next.copied_locally,
        local_changes: first.local_changes + next.local_changes,
        changes: first.changes + next.changes,
        conflicts,
        failures,
        ..next
    }
}

/// One side of a conflict, as users see it.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictSide {
    pub size: u64,
    pub mtime_ns: i64,
    /// The device that made this version (its short ID), if known.
    pub device: Option<String>,
    pub deleted: bool,
}

/// A conflict the last sync met: both versions survive, the loser as `copy`.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictReport {
    pub path: String,
    pub copy: String,
    /// "local" or "remote": whose version kept the name.
    pub winner: &'static str,
    pub local: ConflictSide,
    pub remote: ConflictSide,
}

impl ConflictReport {
    fn from(c: &crate::index::Conflict) -> ConflictReport {
        let side = |r: &crate::index::FileRecord| ConflictSide {
            size: r.size,
            mtime_ns: r.mtime_ns,
            device: r.modified_by.map(|d| d.short()),
            deleted: r.deleted,
        };
        ConflictReport {
            path: c.path.clone(),
            copy: c.copy.clone(),
            winner: match c.winner {
                crate::index::Side::Local => "local",
                crate::index::Side::Remote => "remote",
            },
            local: side(&c.local),
            remote: side(&c.remote),
        }
    }
}

/// What the last sync left for people to look at: conflicts, entries not synced, failures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub conflicts: Vec<ConflictReport>,
    pub skipped: Vec<Skipped>,
    /// Entries synced with a caveat (names Windows cannot hold).
    pub warnings: Vec<Skipped>,
    /// (path, reason) of changes that failed.
    pub failed: Vec<(String, String)>,
}

/// A snapshot of the client for status displays.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    pub connected: bool,
    pub authenticated: bool,
    pub sync_in_progress: bool,
    pub server_host: String,
    pub server_port: u16,
    pub sync_folder: String,
    pub pending_requests: u64,
    pub stats: SyncStats,
}

/// A sync client. Methods take `&self`; one sync runs at a time.
pub struct Client {
    config: ClientConfig,
    conn: tokio::sync::Mutex<Option<Link>>,
    /// The folder's model, opened by the first sync and kept.
    folder: Mutex<Option<Arc<Folder>>>,
    /// Files and bytes the server pulled from us.
    served: Arc<Served>,
    report: Mutex<SyncReport>,
    connected: AtomicBool,
    sync_in_progress: AtomicBool,
    pending: AtomicU64,
    stats: Mutex<SyncStats>,
    /// Cancelled by `cancel`; replaced when a new sync starts.
    cancel: Mutex<CancellationToken>,
}

impl Client {
    /// A client that is not yet connected.
    pub fn new(mut config: ClientConfig) -> Client {
        config.chunk_size = config.chunk_size.clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
        Client {
            config,
            conn: tokio::sync::Mutex::new(None),
            folder: Mutex::new(None),
            served: Arc::default(),
            report: Mutex::default(),
            connected: AtomicBool::new(false),
            sync_in_progress: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            stats: Mutex::new(SyncStats::default()),
            cancel: Mutex::new(CancellationToken::new()),
        }
    }

    /// Connects and authenticates (replacing any previous connection).
    pub async fn connect(&self, events: Option<&EventSink>) -> Result<()> {
        let mut slot = self.conn.lock().await;
        *slot = None;
        self.connected.store(false, Ordering::SeqCst);
        // Whatever the peer said reaches people only through this sanitised error.
        let conn = self.open(events).await.map_err(sanitize_error);
        match conn {
            Ok(c) => {
                *slot = Some(Link::new(
                    c,
                    self.config.folder.clone(),
                    self.config.chunk_size,
                    Arc::clone(&self.served),
                ));
                self.connected.store(true, Ordering::SeqCst);
                emit_status(
                    events,
                    Status::Connected,
                    format!("connected to {}:{}", self.config.host, self.config.port),
                );
                emit_status(
                    events,
                    Status::Authenticated,
                    "mutual authentication succeeded; traffic is encrypted",
                );
                Ok(())
            }
            Err(e) => {
                let status = if e.kind() == ErrorKind::Auth {
                    Status::AuthFailed
                } else {
                    Status::ConnectionError
                };
                emit_status(events, status, e.to_string());
                lock(&self.stats).last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn open(&self, events: Option<&EventSink>) -> Result<Connection> {
        super::admission::check_secret_not_empty(&self.config.secret)?;
        super::admission::warn_once_about(&self.config.secret);
        let addr = format!("{}:{}", self.config.host, self.config.port);
        emit_status(events, Status::Connecting, format!("connecting to {addr}"));
        let limit = self.config.handshake_timeout;
        let stream = tokio::time::timeout(
            limit,
            TcpStream::connect((self.config.host.as_str(), self.config.port)),
        )
        .await
        .map_err(|_| Error::Timeout("connecting to the server"))?
        .map_err(|source| Error::Connect {
            addr: addr.clone(),
            source,
        })?;
        emit_status(
            events,
            Status::Handshake,
            "authenticating with the shared secret (SPAKE2)",
        );
        // A wrong address or port is the likely cause of anything but an SSP answer: say so.
        match tokio::time::timeout(limit, client_handshake(stream, self.config.secret.as_bytes()))
            .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(Error::ConnectionLost(_))) => Err(Error::ConnectionLost(format!(
                "{addr} closed the connection during the handshake (is it an SSP server, and is it accepting us?)"
            ))),
            Ok(Err(Error::Protocol(e))) => Err(Error::Protocol(format!(
                "{addr} does not answer like an SSP server ({e})"
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::ConnectionLost(format!(
                "no SSP handshake from {addr} within {} s (is it an SSP server?)",
                limit.as_secs_f64()
            ))),
        }
    }

    /// Pulls every new or changed file of the server's folder. Connects first if needed.
    pub async fn sync(&self, events: Option<&EventSink>) -> Result<SyncStats> {
        if self.sync_in_progress.swap(true, Ordering::SeqCst) {
            return Err(Error::protocol("a sync is already running on this client"));
        }
        let result = self.sync_inner(events).await;
        self.sync_in_progress.store(false, Ordering::SeqCst);
        result
    }

    async fn sync_inner(&self, events: Option<&EventSink>) -> Result<SyncStats> {
        let cancel = {
            let mut c = lock(&self.cancel);
            if c.is_cancelled() {
                *c = CancellationToken::new();
            }
            c.clone()
        };
        if self.conn.lock().await.is_none() {
            self.connect(events).await?;
        }
        let mut slot = self.conn.lock().await;
        let Some(link) = slot.as_mut() else {
            return Err(Error::ConnectionLost("not connected".into()));
        };
        let started = Instant::now();
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        {
            let mut s = lock(&self.stats);
            s.sync_start_time = start_unix;
            s.sync_duration = 0.0;
        }
        emit_status(
            events,
            Status::SyncStarted,
            format!(
                "{} sync of {}",
                self.config.mode.as_str(),
                self.config.folder.display()
            ),
        );
        let folder = match self.folder().await {
            Ok(f) => f,
            Err(e) => {
                let e = sanitize_error(e);
                lock(&self.stats).last_error = Some(e.to_string());
                emit_status(events, Status::SyncError, e.to_string());
                return Err(e);
            }
        };
        let busy = folder.try_begin_sync();
        let result = match busy {
            Ok(_running) => {
                let hooks = PullHooks {
                    events,
                    cancel,
                    pending: &self.pending,
                };
                let (mode, cfg) = (self.config.mode, self.config.round());
                match client_round(link, &folder, mode, &cfg, &hooks).await {
                    // A conflict is resolved after the indexes crossed: the side that lost
                    // made the copy (and stored the winner as its own change), which the
                    // other side has not seen yet. One more round carries it across, so that
                    // one sync leaves both holding both versions and clients syncing through
                    // this server converge once each has synced (twice at most).
                    Ok(out) if !out.conflicts.is_empty() && out.failures.is_empty() => {
                        client_round(link, &folder, mode, &cfg, &hooks)
                            .await
                            .map(|next| followed_by(out, next))
                    }
                    other => other,
                }
            }
            Err(e) => Err(e),
        }
        .map_err(sanitize_error);
        let elapsed = started.elapsed().as_secs_f64();
        // Each arm takes the stats lock for itself: a guard alive across the Err arm's await
        // would make this future not `Send` (the bindings spawn it on the runtime).
        lock(&self.stats).sync_duration = elapsed;
        match result {
            Ok(out) => {
                // Events call into Python: never with a lock held (a status() call holding
                // the GIL would wait on that lock while we wait on the GIL).
                for c in &out.conflicts {
                    emit_status(
                        events,
                        Status::Conflict,
                        format!(
                            "{}: changed on both sides; the other version is kept as {}",
                            peer_text(&c.path),
                            peer_text(&c.copy)
                        ),
                    );
                }
                let mut s = lock(&self.stats);
                s.files_received = s.files_received.saturating_add(out.files_received);
                s.bytes_received = s.bytes_received.saturating_add(out.bytes_received);
                s.files_sent = self.served.files.load(Ordering::Relaxed);
                s.bytes_sent = self.served.bytes.load(Ordering::Relaxed);
                s.files_total = out.files_total;
                s.bytes_total = out.bytes_total;
                s.files_unchanged = out.unchanged;
                s.files_failed = out.failures.len() as u64;
                s.files_deleted = out.deleted;
                s.conflicts = out.conflicts.len() as u64;
                s.files_skipped = out.skipped.len() as u64;
                *lock(&self.report) = SyncReport {
                    conflicts: out.conflicts.iter().map(ConflictReport::from).collect(),
                    skipped: out.skipped.clone(),
                    warnings: out.warnings.clone(),
                    failed: out.failures.clone(),
                };
                if let Some((path, reason)) = out.failures.first() {
                    let err = Error::Incomplete {
                        failed: out.failures.len() as u64,
                        total: out.changes.max(out.failures.len() as u64),
                        // Both may quote the server (its paths, its ERROR text).
                        first: format!("{}: {}", peer_text(path), peer_text(reason)),
                    };
                    s.last_error = Some(err.to_string());
                    drop(s);
                    emit_status(events, Status::SyncError, err.to_string());
                    return Err(err);
                }
                s.syncs_completed += 1;
                s.last_error = None;
                let snapshot = s.clone();
                drop(s);
                emit_status(
                    events,
                    Status::SyncCompleted,
                    format!(
                        "{} files ({} bytes) received, {} sent, {} deleted in {elapsed:.2} s; {} unchanged{}{}",
                        out.files_received,
                        out.bytes_received,
                        snapshot.files_sent,
                        out.deleted,
                        out.unchanged,
                        if out.conflicts.is_empty() { String::new() } else { format!("; {} conflicts", out.conflicts.len()) },
                        if out.skipped.is_empty() { String::new() } else { format!("; {} not synced", out.skipped.len()) },
                    ),
                );
                Ok(snapshot)
            }
            Err(e) => {
                lock(&self.stats).last_error = Some(e.to_string());
                // The stream is in an unknown state after a failed sync: start afresh next time.
                if let Some(link) = slot.take() {
                    link.close().await;
                }
                self.connected.store(false, Ordering::SeqCst);
                let status = if e.kind() == ErrorKind::Connection {
                    Status::ConnectionError
                } else {
                    Status::SyncError
                };
                emit_status(events, status, e.to_string());
                Err(e)
            }
        }
    }

    /// The folder's model: opened (and the folder created) by the first sync, then kept.
    async fn folder(&self) -> Result<Arc<Folder>> {
        if let Some(f) = lock(&self.folder).clone() {
            return Ok(f);
        }
        let path = self.config.folder.clone();
        let folder = tokio::task::spawn_blocking(move || Folder::open(&path, true))
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
        *lock(&self.folder) = Some(Arc::clone(&folder));
        Ok(folder)
    }

    /// Conflicts, entries not synced and failures of the last sync.
    pub fn report(&self) -> SyncReport {
        lock(&self.report).clone()
    }

    /// The conflict copies in the folder now, each with the file it is a copy of.
    pub async fn conflicts(&self) -> Result<Vec<super::ConflictCopy>> {
        let f = self.folder().await?;
        blocking(move || f.conflicts()).await
    }

    /// Resolves a conflict copy (see [`super::Keep`]); the next sync carries the result.
    pub async fn resolve(&self, copy: String, keep: super::Keep) -> Result<()> {
        let f = self.folder().await?;
        blocking(move || f.resolve(&copy, keep)).await
    }

    /// Versions kept of `path` (of every path when `None`), newest first.
    pub async fn versions(&self, path: Option<String>) -> Result<Vec<crate::fs::Version>> {
        let f = self.folder().await?;
        blocking(move || f.versions(path.as_deref())).await
    }

    /// Restores the version of `path` kept at `at` (newest at or before; newest if `None`).
    pub async fn restore(
        &self,
        path: String,
        at: Option<std::time::SystemTime>,
    ) -> Result<crate::fs::Version> {
        let f = self.folder().await?;
        blocking(move || f.restore(&path, at)).await
    }

    /// Asks a running sync to stop; it then fails with [`Error::Cancelled`].
    pub fn cancel(&self) {
        lock(&self.cancel).cancel();
    }

    /// Closes the connection.
    pub async fn disconnect(&self, events: Option<&EventSink>) {
        self.cancel();
        let conn = self.conn.lock().await.take();
        self.connected.store(false, Ordering::SeqCst);
        if let Some(link) = conn {
            link.close().await;
        }
        emit_status(events, Status::Disconnected, "disconnected");
    }

    /// A status snapshot.
    pub fn status(&self) -> ClientStatus {
        let connected = self.connected.load(Ordering::SeqCst);
        ClientStatus {
            connected,
            authenticated: connected,
            sync_in_progress: self.sync_in_progress.load(Ordering::SeqCst),
            server_host: self.config.host.clone(),
            server_port: self.config.port,
            sync_folder: self.config.folder.display().to_string(),
            pending_requests: self.pending.load(Ordering::Relaxed),
            stats: lock(&self.stats).clone(),
        }
    }
}

/// Runs disk work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(e.to_string()))?
}

#[cfg(test)]
mod tests {
    /// The bindings spawn syncs on the runtime's worker threads: the future must be `Send`
    /// (a std mutex guard held across an await made it not, and only the bindings' build saw it).
    #[test]
    fn a_sync_can_run_on_any_runtime_thread() {
        fn send<T: Send>(_: T) {}
        let client = Client::new(ClientConfig::new("s", "/nonexistent", "127.0.0.1", 1));
        send(client.sync(None));
        send(client.conflicts());
        send(client.versions(None));
    }

    use super::*;

    /// The original's consumers compare these with numbers before any sync: they must be 0,
    /// never null.
    #[test]
    fn stats_before_any_sync_report_zero_times() {
        let fresh = serde_json::to_value(SyncStats::default()).unwrap();
        for key in ["sync_start_time", "sync_duration"] {
            assert_eq!(fresh[key], serde_json::json!(0.0), "{key}");
        }
    }
}
