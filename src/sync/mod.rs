//! The engine: the server (accepting, authenticating and serving sessions), the client
//! (connecting and pulling), and the shared folder context both sides scan through.

mod client;
mod folder;
mod pull;
mod server;
mod session;

pub use client::{Client, ClientConfig, ClientStatus, SyncStats};
pub use folder::Folder;
pub use server::{Server, ServerConfig, ServerStatus};

/// Time allowed for TCP connect plus the whole handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
