//! The engine: the server (accepting, authenticating and serving sessions), the client
//! (connecting and pulling), and the shared folder context both sides scan through.

mod client;
mod folder;
mod pull;
mod server;
mod session;

use std::path::PathBuf;

pub use client::{Client, ClientConfig, ClientStatus, SyncStats};
pub use folder::Folder;
pub use server::{Server, ServerConfig, ServerStatus};

/// What either end needs: the shared secret, its folder, the server's address and the chunk
/// size. ([`ClientConfig`] and [`ServerConfig`] name it for each side.)
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub secret: String,
    pub folder: PathBuf,
    pub host: String,
    pub port: u16,
    pub chunk_size: usize,
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
        }
    }
}

/// Time allowed for TCP connect plus the whole handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
