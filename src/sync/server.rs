//! The server: binds, accepts under a shutdown token, authenticates each connection (slowing
//! down addresses that keep failing) and runs one session per client. Errors in a session never
//! reach the listener.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::folder::Folder;
use super::session::serve_session;
use crate::error::{Error, Result};
use crate::net::server_handshake;
use crate::protocol::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// Failures from one address within this window count towards its penalty.
const FAILURE_WINDOW_MS: u64 = 60_000;
/// Longest delay imposed on an address before its handshake.
const MAX_PENALTY_MS: u64 = 5_000;
/// Connections (handshaking or in a session) served at once; beyond, the server stops
/// accepting until one ends, so a flood cannot exhaust its file descriptors.
const MAX_CONNECTIONS: usize = 512;
/// Handshakes in progress from one address; more are closed at once, so one flooding address
/// cannot take every connection slot for the length of the handshake timeout.
const MAX_HANDSHAKES_PER_IP: u32 = 16;

/// How to run a server: where to listen and which folder to serve.
pub type ServerConfig = super::PeerConfig;

/// Counters shared by the server and its sessions.
#[derive(Default)]
pub(crate) struct ServerCounters {
    pub total_connections: AtomicU64,
    pub active_connections: AtomicU64,
    pub files_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub sync_sessions: AtomicU64,
    pub files_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub auth_failures: AtomicU64,
    pub refused_connections: AtomicU64,
}

/// A snapshot of the server for status displays.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub running: bool,
    pub host: String,
    pub port: u16,
    pub active_connections: u64,
    pub sync_folder: String,
    pub clients: Vec<String>,
    pub stats: ServerStats,
}

/// Whole-lifetime counters.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    pub total_connections: u64,
    pub active_connections: u64,
    pub files_sent: u64,
    pub bytes_sent: u64,
    pub sync_sessions: u64,
    pub files_received: u64,
    pub bytes_received: u64,
    pub auth_failures: u64,
    /// Connections closed before their handshake because their address had too many pending.
    pub refused_connections: u64,
    pub uptime_s: f64,
    pub start_time: Option<f64>,
}

/// Remembers recent authentication failures per address.
#[derive(Default)]
struct FailureTracker {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureTracker {
    fn penalty(&self, ip: IpAddr) -> Duration {
        let Ok(map) = self.by_ip.lock() else {
            return Duration::ZERO;
        };
        match map.get(&ip) {
            Some((n, at)) if at.elapsed() < Duration::from_millis(FAILURE_WINDOW_MS) && *n >= 2 => {
                let ms = 250u64.saturating_mul(1 << (*n - 2).min(10));
                Duration::from_millis(ms.min(MAX_PENALTY_MS))
            }
            _ => Duration::ZERO,
        }
    }

    fn failed(&self, ip: IpAddr) {
        if let Ok(mut map) = self.by_ip.lock() {
            let e = map.entry(ip).or_insert((0, Instant::now()));
            if e.1.elapsed() > Duration::from_millis(FAILURE_WINDOW_MS) {
                e.0 = 0;
            }
            e.0 += 1;
            e.1 = Instant::now();
        }
    }

    fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut map) = self.by_ip.lock() {
            map.remove(&ip);
        }
    }
}

/// State shared by the server handle and its sessions.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub counters: ServerCounters,
    failures: FailureTracker,
    /// Handshakes in progress per address (see [`HandshakeSlot`]).
    handshaking: Mutex<HashMap<IpAddr, u32>>,
    /// One permit per connection, held from accept to close.
    connection_limit: Arc<tokio::sync::Semaphore>,
    clients: Mutex<BTreeMap<u64, SocketAddr>>,
    running: AtomicBool,
    /// Set by `bind`.
    folder: Mutex<Option<Arc<Folder>>>,
    bound_port: AtomicU64,
    started: Mutex<Option<(Instant, SystemTime)>>,
}

/// A sync server. All methods take `&self`; the handle is shared across threads.
pub struct Server {
    shared: Arc<Shared>,
    listener: tokio::sync::Mutex<Option<TcpListener>>,
    /// Cancelled by `stop`; replaced by the next `bind`.
    shutdown: Mutex<CancellationToken>,
    /// Tracks the accept loop and every session, so `stop` can wait for all of them.
    tasks: Mutex<TaskTracker>,
}

impl Server {
    /// A server that is not yet listening.
    pub fn new(mut config: ServerConfig) -> Server {
        config.chunk_size = config.chunk_size.clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
        let port = config.port as u64;
        Server {
            shared: Arc::new(Shared {
                config,
                counters: ServerCounters::default(),
                failures: FailureTracker::default(),
                handshaking: Mutex::new(HashMap::new()),
                connection_limit: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
                clients: Mutex::new(BTreeMap::new()),
                running: AtomicBool::new(false),
                folder: Mutex::new(None),
                bound_port: AtomicU64::new(port),
                started: Mutex::new(None),
            }),
            listener: tokio::sync::Mutex::new(None),
            shutdown: Mutex::new(CancellationToken::new()),
            tasks: Mutex::new(TaskTracker::new()),
        }
    }

    /// Opens (creating) the folder and binds the listener; returns the bound address.
    pub async fn bind(&self) -> Result<SocketAddr> {
        let cfg = &self.shared.config;
        let folder_path = cfg.folder.clone();
        let folder = tokio::task::spawn_blocking(move || Folder::open(&folder_path, true))
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
        let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    Error::AddressInUse {
                        addr: format!("{}:{}", cfg.host, cfg.port),
                        port: cfg.port,
                    }
                } else {
                    Error::Connect {
                        addr: format!("{}:{} (bind)", cfg.host, cfg.port),
                        source: e,
                    }
                }
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("local address", e))?;
        self.shared
            .bound_port
            .store(addr.port() as u64, Ordering::Relaxed);
        *lock(&self.shared.folder) = Some(Arc::new(folder));
        *self.listener.lock().await = Some(listener);
        {
            let mut token = lock(&self.shutdown);
            if token.is_cancelled() {
                *token = CancellationToken::new();
                *lock(&self.tasks) = TaskTracker::new();
            }
        }
        tracing::info!("listening on {addr}, folder {}", cfg.folder.display());
        Ok(addr)
    }

    /// Accepts and serves clients until `stop`. Binds first if `bind` was not called.
    pub async fn serve(&self) -> Result<()> {
        if self.listener.lock().await.is_none() {
            self.bind().await?;
        }
        let Some(listener) = self.listener.lock().await.take() else {
            return Err(Error::protocol("server is already serving"));
        };
        let token = lock(&self.shutdown).clone();
        let tracker = lock(&self.tasks).clone();
        let folder = lock(&self.shared.folder)
            .clone()
            .ok_or_else(|| Error::protocol("not bound"))?;
        self.shared.running.store(true, Ordering::SeqCst);
        *lock(&self.shared.started) = Some((Instant::now(), SystemTime::now()));
        let mut next_id = 0u64;
        let limit = Arc::clone(&self.shared.connection_limit);
        loop {
            let permit = tokio::select! {
                _ = token.cancelled() => break,
                permit = Arc::clone(&limit).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break, // the semaphore is never closed
                },
            };
            tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        next_id += 1;
                        let shared = Arc::clone(&self.shared);
                        let folder = Arc::clone(&folder);
                        let token = token.clone();
                        tracker.spawn(async move {
                            handle_connection(shared, folder, stream, peer, next_id, token).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        drop(listener);
        tracker.close();
        tracker.wait().await;
        self.shared.running.store(false, Ordering::SeqCst);
        tracing::info!("server stopped");
        Ok(())
    }

    /// Stops accepting, ends every session and waits until they are gone. Idempotent.
    pub async fn stop(&self) {
        let token = lock(&self.shutdown).clone();
        token.cancel();
        // A bound-but-never-served listener is released too.
        self.listener.lock().await.take();
        let tracker = lock(&self.tasks).clone();
        tracker.close();
        tracker.wait().await;
        // `serve` clears this itself; it may still be between its last await and that line.
        while self.shared.running.load(Ordering::SeqCst) && !tracker.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A status snapshot.
    pub fn status(&self) -> ServerStatus {
        let s = &self.shared;
        let c = &s.counters;
        let active = c.active_connections.load(Ordering::Relaxed);
        let started = *lock(&s.started);
        let running = s.running.load(Ordering::SeqCst);
        ServerStatus {
            running,
            host: s.config.host.clone(),
            port: s.bound_port.load(Ordering::Relaxed) as u16,
            active_connections: active,
            sync_folder: s.config.folder.display().to_string(),
            clients: lock(&s.clients).values().map(|a| a.to_string()).collect(),
            stats: ServerStats {
                total_connections: c.total_connections.load(Ordering::Relaxed),
                active_connections: active,
                files_sent: c.files_sent.load(Ordering::Relaxed),
                bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
                sync_sessions: c.sync_sessions.load(Ordering::Relaxed),
                files_received: c.files_received.load(Ordering::Relaxed),
                bytes_received: c.bytes_received.load(Ordering::Relaxed),
                auth_failures: c.auth_failures.load(Ordering::Relaxed),
                refused_connections: c.refused_connections.load(Ordering::Relaxed),
                uptime_s: match (running, started) {
                    (true, Some((at, _))) => at.elapsed().as_secs_f64(),
                    _ => 0.0,
                },
                start_time: started
                    .and_then(|(_, t)| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64()),
            },
        }
    }
}

/// Locks a std mutex, recovering from poisoning (the data are plain counters and maps).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A handshake in progress from one address; counted until dropped.
struct HandshakeSlot<'a> {
    shared: &'a Shared,
    ip: IpAddr,
}

impl<'a> HandshakeSlot<'a> {
    /// `None` when the address already has [`MAX_HANDSHAKES_PER_IP`] handshakes in progress.
    fn take(shared: &'a Shared, ip: IpAddr) -> Option<Self> {
        let mut pending = lock(&shared.handshaking);
        let n = pending.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(HandshakeSlot { shared, ip })
    }
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        let mut pending = lock(&self.shared.handshaking);
        if let Some(n) = pending.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

async fn handle_connection(
    shared: Arc<Shared>,
    folder: Arc<Folder>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    token: CancellationToken,
) {
    let Some(slot) = HandshakeSlot::take(&shared, peer.ip()) else {
        shared
            .counters
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "{peer}: refused: {MAX_HANDSHAKES_PER_IP} handshakes from this address in progress"
        );
        return;
    };
    let penalty = shared.failures.penalty(peer.ip());
    if !penalty.is_zero() {
        tracing::info!("{peer}: delaying handshake by {penalty:?} after repeated failures");
        tokio::select! {
            _ = tokio::time::sleep(penalty) => {}
            _ = token.cancelled() => return,
        }
    }
    let handshake = tokio::time::timeout(
        shared.config.handshake_timeout,
        server_handshake(stream, shared.config.secret.as_bytes()),
    );
    let conn = tokio::select! {
        r = handshake => r,
        _ = token.cancelled() => return,
    };
    let conn = match conn {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            if matches!(e, Error::Auth(_)) {
                shared.failures.failed(peer.ip());
                shared
                    .counters
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!("{peer}: handshake failed: {e}");
            return;
        }
        Err(_) => {
            shared.failures.failed(peer.ip());
            tracing::warn!("{peer}: handshake timed out");
            return;
        }
    };
    drop(slot);
    shared.failures.succeeded(peer.ip());
    let c = &shared.counters;
    c.total_connections.fetch_add(1, Ordering::Relaxed);
    c.active_connections.fetch_add(1, Ordering::Relaxed);
    lock(&shared.clients).insert(id, peer);
    tracing::info!("{peer}: authenticated");
    match serve_session(conn, &shared, &folder, &token).await {
        Ok(()) => tracing::info!("{peer}: disconnected"),
        Err(e) => tracing::warn!("{peer}: session ended: {e}"),
    }
    lock(&shared.clients).remove(&id);
    c.active_connections.fetch_sub(1, Ordering::Relaxed);
}
