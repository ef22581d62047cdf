//! The engine: the server (accepting, authenticating and serving sessions), the client
//! (connecting and pulling), and the shared folder context both sides scan through.

pub mod admission;
mod client;
mod folder;
mod pull;
mod server;
mod session;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{Client, ClientConfig, ClientStatus, SyncStats};
pub use folder::Folder;
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
}

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
        }
    }
}

/// Default time allowed for TCP connect plus the whole handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
