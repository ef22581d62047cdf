//! The server: binds (refusing unsafe secrets), accepts under a shutdown token, admits each
//! connection through [`Admission`], authenticates it and runs one session per client. Errors
//! in a session never reach the listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{self, Admission, HandshakeSlot, Refusal};
use super::folder::Folder;
use super::link::{Link, Served};
use super::lock;
use super::session::server_round;
use crate::error::{Error, Result};
use crate::net::server_handshake_guarded;
use crate::protocol::{ErrorCode, ErrorMsg, FrameEncoder, Message, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// Connections (handshaking or in a session) served at once; beyond, the server stops
/// accepting until one ends, so a flood cannot exhaust its file descriptors.
pub const MAX_CONNECTIONS: usize = 512;

/// How to run a server: where to listen and which folder to serve.
pub type ServerConfig = super::PeerConfig;

/// Counters shared by the server and its sessions.
#[derive(Default)]
pub(crate) struct ServerCounters {
    pub total_connections: AtomicU64,
    pub active_connections: AtomicU64,
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
    /// Handshakes that were sent PAKE_REPLY (so tested one guess) and did not confirm it.
    pub auth_failures: u64,
    /// Connections or guesses refused by the admission: a penalised source, the global guessing
    /// budget spent, or too many handshakes from one source in progress.
    pub refused_connections: u64,
    pub uptime_s: f64,
    pub start_time: Option<f64>,
}

/// State shared by the server handle and its sessions.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub counters: ServerCounters,
    /// Files and bytes served to clients (what they pulled).
    pub served: Arc<Served>,
    /// Failure penalties, the global guessing budget and per-source handshake slots.
    admission: Arc<Admission>,
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
                served: Arc::default(),
                admission: Arc::new(Admission::default()),
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
    ///
    /// Fails with [`Error::Config`] before binding if the secret is empty, or is
    /// [`admission::DEFAULT_SECRET`] and the host resolves to anything but loopback.
    pub async fn bind(&self) -> Result<SocketAddr> {
        let cfg = &self.shared.config;
        admission::check_secret_not_empty(&cfg.secret)?;
        // Resolve once and bind exactly what was checked.
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| Error::Connect {
                addr: format!(
                    "{}:{} (resolving the address to listen on)",
                    cfg.host, cfg.port
                ),
                source: e,
            })?
            .collect();
        admission::check_secret_for_listening(&cfg.secret, &addrs)?;
        admission::warn_once_about(&cfg.secret);
        let folder_path = cfg.folder.clone();
        let folder = tokio::task::spawn_blocking(move || {
            let folder = Folder::open(&folder_path, true)?;
            // A served folder is watched, so a round walks it only when something changed. A
            // watch that cannot start was logged; the folder is then walked every round.
            let _ = folder.watch();
            Ok::<_, Error>(folder)
        })
        .await
        .map_err(|e| Error::Store(e.to_string()))??;
        if cfg.read_only {
            tracing::info!(
                "{}: read-only: clients may pull, not push",
                cfg.folder.display()
            );
        }
        let listener = TcpListener::bind(addrs.as_slice()).await.map_err(|e| {
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
        *lock(&self.shared.folder) = Some(folder);
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
    /// A `stop` that came after the last `bind` but before `serve` began wins: `serve` then
    /// returns at once instead of binding again and serving until the next `stop`.
    pub async fn serve(&self) -> Result<()> {
        if self.listener.lock().await.is_none() {
            if lock(&self.shutdown).is_cancelled() {
                return Ok(());
            }
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
                        // Decided here, before a task exists: a refused source holds neither
                        // the permit (dropped with this iteration) nor a slot.
                        let slot = match self.shared.admission.admit(peer.ip(), Instant::now()) {
                            Ok(slot) => slot,
                            Err(refusal) => {
                                refuse(&self.shared, stream, peer, &refusal);
                                continue;
                            }
                        };
                        next_id += 1;
                        let shared = Arc::clone(&self.shared);
                        let folder = Arc::clone(&folder);
                        let token = token.clone();
                        tracker.spawn(async move {
                            handle_connection(shared, folder, stream, peer, slot, next_id, token).await;
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
                files_sent: s.served.files.load(Ordering::Relaxed),
                bytes_sent: s.served.bytes.load(Ordering::Relaxed),
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

/// Closes a connection the admission refused, telling the client why in one small ERROR frame
/// written without waiting (a fresh socket's send buffer always has room for it), so a refused
/// source costs no task and no time.
fn refuse(shared: &Shared, stream: TcpStream, peer: SocketAddr, refusal: &Refusal) {
    shared
        .counters
        .refused_connections
        .fetch_add(1, Ordering::Relaxed);
    // Debug only: a refused source may retry in a loop, and every line would be one more.
    tracing::debug!("{peer}: refused: {refusal}");
    let mut frame = BytesMut::new();
    let msg = Message::Error(ErrorMsg::fatal(ErrorCode::RateLimited, refusal.to_string()));
    if FrameEncoder::default().encode(msg, &mut frame).is_ok() {
        let _ = stream.try_write(&frame);
    }
}

async fn handle_connection(
    shared: Arc<Shared>,
    folder: Arc<Folder>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: HandshakeSlot,
    id: u64,
    token: CancellationToken,
) {
    let config = &shared.config;
    let hello_timeout = config.hello_timeout.min(config.handshake_timeout);
    // Set once the client was sent the reply that lets it test a guess.
    let guessed = AtomicBool::new(false);
    let handshake = tokio::time::timeout(
        config.handshake_timeout,
        server_handshake_guarded(
            stream,
            config.secret.as_bytes(),
            hello_timeout,
            || match slot.begin_guess(Instant::now()) {
                Ok(()) => {
                    guessed.store(true, Ordering::Relaxed);
                    Ok(())
                }
                Err(refusal) => {
                    shared
                        .counters
                        .refused_connections
                        .fetch_add(1, Ordering::Relaxed);
                    Err(refusal.to_string())
                }
            },
        ),
    );
    let conn = tokio::select! {
        r = handshake => r,
        _ = token.cancelled() => return,
    };
    let conn = match conn {
        Ok(Ok(conn)) => conn,
        failure => {
            // Settles a counted guess as failed (its penalty starts) before anyone sees the count.
            drop(slot);
            if guessed.load(Ordering::Relaxed) {
                shared
                    .counters
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            match failure {
                Ok(Err(e)) => tracing::warn!("{peer}: handshake failed: {e}"),
                _ => tracing::warn!("{peer}: handshake timed out"),
            }
            return;
        }
    };
    slot.guess_succeeded(Instant::now());
    drop(slot);
    let c = &shared.counters;
    c.total_connections.fetch_add(1, Ordering::Relaxed);
    c.active_connections.fetch_add(1, Ordering::Relaxed);
    lock(&shared.clients).insert(id, peer);
    tracing::info!("{peer}: authenticated");
    match serve_session(conn, &shared, &folder, &token, peer).await {
        Ok(()) => tracing::info!("{peer}: disconnected"),
        Err(e) => tracing::warn!("{peer}: session ended: {e}"),
    }
    lock(&shared.clients).remove(&id);
    c.active_connections.fetch_sub(1, Ordering::Relaxed);
}

/// How long an authenticated client may stay connected without starting a round (scripts
/// connect, then sync later).
const IDLE_SESSION_S: u64 = 24 * 3600;

/// Serves one authenticated client: a sync round per SYNC_REQUEST, until it disconnects or the
/// server stops.
async fn serve_session(
    conn: crate::net::Connection,
    shared: &Arc<Shared>,
    folder: &Arc<Folder>,
    token: &CancellationToken,
    peer: SocketAddr,
) -> Result<()> {
    let config = &shared.config;
    let mut link = Link::new(
        conn,
        folder.root().to_path_buf(),
        config.chunk_size,
        Arc::clone(&shared.served),
    );
    let round_cfg = config.round();
    let pending = AtomicU64::new(0);
    let result = loop {
        let idle = Duration::from_secs(IDLE_SESSION_S);
        let msg = tokio::select! {
            m = link.next(idle, "a SYNC_REQUEST") => m,
            _ = token.cancelled() => {
                link.fail(ErrorCode::ShuttingDown, "server is shutting down").await;
                break Ok(());
            }
        };
        let request = match msg {
            Ok(Message::SyncRequest(r)) => r,
            Ok(other) => {
                let e = Error::protocol(format!(
                    "unexpected {:?} from the client",
                    other.message_type()
                ));
                link.fail(ErrorCode::BadMessage, e.to_string()).await;
                break Err(e);
            }
            Err(Error::ConnectionLost(_)) => break Ok(()),
            Err(e @ Error::Protocol(_)) => {
                link.fail(ErrorCode::BadFrame, e.to_string()).await;
                break Err(e);
            }
            Err(e) => break Err(e),
        };
        let hooks = super::pull::PullHooks {
            events: None,
            cancel: token.child_token(),
            pending: &pending,
        };
        let round = server_round(
            &mut link,
            folder,
            &request,
            config.read_only,
            &round_cfg,
            &hooks,
        );
        let outcome = tokio::select! {
            r = round => r,
            _ = token.cancelled() => {
                link.fail(ErrorCode::ShuttingDown, "server is shutting down").await;
                break Ok(());
            }
        };
        match outcome {
            Ok(out) => {
                let c = &shared.counters;
                c.sync_sessions.fetch_add(1, Ordering::Relaxed);
                c.files_received
                    .fetch_add(out.files_received, Ordering::Relaxed);
                c.bytes_received
                    .fetch_add(out.bytes_received, Ordering::Relaxed);
                tracing::info!(
                    "{peer}: {} round done: {} files received, {} deleted, {} conflicts",
                    request.mode.as_str(),
                    out.files_received,
                    out.deleted,
                    out.conflicts.len()
                );
            }
            Err(e) => break Err(e),
        }
    };
    link.close().await;
    result
}
