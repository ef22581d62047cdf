//! The engine: the server (accepting, authenticating and serving sessions), the client
//! (connecting and pulling), and the shared folder context both sides scan through.

pub mod admission;
mod client;
mod folder;
mod incoming;
mod link;
mod pull;
mod server;
mod session;

use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::SyncMode;

pub use client::{
    Client, ClientConfig, ClientStatus, ConflictReport, ConflictSide, SyncReport, SyncStats,
};
pub use folder::{parse_conflict_name, ConflictCopy, Folder, Keep, DEFAULT_TOMBSTONE_KEEP_DAYS};
pub use server::{Server, ServerConfig, ServerStatus};

/// What either end needs: the shared secret, its folder, the server's address and the chunk
/// size, plus the limits a client puts on what a server sends and the time a server gives a
/// new connection. ([`ClientConfig`] and [`ServerConfig`] name it for each side.)
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub secret: String,
    pub folder: PathBuf,
    pub host: String,
    pub port: u16,
    pub chunk_size: usize,
    /// Time allowed for TCP connect (client) plus the whole handshake; a peer that takes
    /// longer is disconnected (and, on the server, counted as a failed attempt once it was
    /// sent the reply that lets it test a guess).
    pub handshake_timeout: Duration,
    /// Client: most entries accepted in the server's index; a bigger index fails the sync
    /// before anything is written (raise it for folders of more files).
    pub max_index_entries: usize,
    /// Client: most bytes of paths accepted in the server's index (sum of the path lengths).
    pub max_index_path_bytes: usize,
    /// Client: after the handshake, a server that sends no frame at all for this long (not
    /// even a HEARTBEAT) fails the sync instead of hanging it; time the client spends waiting
    /// on its own disk does not count.
    pub progress_timeout: Duration,
    /// Server only: time a new connection has to send its HELLO (at most `handshake_timeout`),
    /// so silent connections give their permit back quickly.
    pub hello_timeout: Duration,
    /// Client: what a sync moves (two-way by default).
    pub mode: SyncMode,
    /// Server: take no changes from clients (pushes are refused; two-way clients only pull).
    pub read_only: bool,
    /// Let a sync go on when every file of the folder is gone (on this side, or in the peer's
    /// index): off by default, so an unmounted drive or a wrong path deletes nothing.
    pub allow_mass_delete: bool,
    /// How long files replaced or deleted by a sync are kept in `.ssp/versions/` (`None`: not
    /// kept at all).
    pub versions_keep: Option<Duration>,
    /// How long the record of a deletion is kept (a replica away for longer may bring the file
    /// back).
    pub tombstone_keep: Duration,
    /// Entries of the peer's index planned and applied together ([`SEGMENT_ENTRIES`] by
    /// default): a bigger index waits in a scratch table of the folder's store, not in memory,
    /// and is applied segment by segment.
    pub segment_entries: usize,
}

/// Default [`PeerConfig::segment_entries`]: a segment of this many entries takes some tens of
/// MB; a million-file index takes 31 segments.
pub const SEGMENT_ENTRIES: usize = 32_768;

impl PeerConfig {
    /// A config with the default chunk size.
    pub fn new(
        secret: impl Into<String>,
        folder: impl Into<PathBuf>,
        host: impl Into<String>,
        port: u16,
    ) -> Self {
        Self {
            secret: secret.into(),
            folder: folder.into(),
            host: host.into(),
            port,
            chunk_size: crate::protocol::DEFAULT_CHUNK_SIZE,
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
            max_index_entries: crate::protocol::DEFAULT_MAX_INDEX_ENTRIES,
            max_index_path_bytes: crate::protocol::DEFAULT_MAX_INDEX_PATH_BYTES,
            progress_timeout: Duration::from_millis(crate::protocol::DEFAULT_PROGRESS_TIMEOUT_MS),
            hello_timeout: Duration::from_millis(crate::protocol::HELLO_TIMEOUT_MS),
            mode: SyncMode::TwoWay,
            read_only: false,
            allow_mass_delete: false,
            versions_keep: Some(days(crate::fs::DEFAULT_VERSIONS_KEEP_DAYS)),
            tombstone_keep: days(folder::DEFAULT_TOMBSTONE_KEEP_DAYS),
            segment_entries: SEGMENT_ENTRIES,
        }
    }

    /// How this side takes part in sync rounds.
    pub(crate) fn round(&self) -> session::RoundConfig {
        session::RoundConfig {
            chunk_size: self.chunk_size,
            limits: pull::PullLimits::from(self),
            allow_mass_delete: self.allow_mass_delete,
            tombstone_keep: self.tombstone_keep,
            versions_keep: self.versions_keep,
        }
    }
}

/// Locks a std mutex, recovering from poisoning (the data are plain counters and maps).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `n` days.
pub fn days(n: u64) -> Duration {
    Duration::from_secs(n.saturating_mul(24 * 3600))
}

/// Default time allowed for TCP connect plus the whole handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
