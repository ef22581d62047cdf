//! SSP (SmartSync Protocol): an authenticated, encrypted, resumable folder-sync engine.
//!
//! # Layout
//! - [`protocol`]: the wire format, sans I/O: messages, limits and the frame codec.
//! - [`crypto`]: the SPAKE2 handshake with key confirmation and the AES-256-GCM record layer.
//! - [`net`]: a `Connection` over TCP and the handshake drivers.
//! - [`fs`]: validated relative paths, scanning with the hash cache, safe temp-file writes.
//! - [`index`]: file records, the redb cache store and pure sync planning.
//! - [`sync`]: the server, its per-client sessions, the client and its pull.
//! - [`progress`]: typed status/progress events and their throttle.
//! - `bindings` (feature `python`): the PyO3 module `ssp._native`; the only place Python appears.
//!
//! `docs/protocol.md` specifies the wire format.

pub mod crypto;
pub mod error;
pub mod fs;
pub mod index;
pub mod net;
pub mod progress;
pub mod protocol;
pub mod sync;

#[cfg(feature = "python")]
mod bindings;

pub use error::{Error, ErrorKind, Result};
pub use progress::{Event, EventSink, Progress, Status};
pub use protocol::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, PROTOCOL_VERSION};
pub use sync::admission::DEFAULT_SECRET;
pub use sync::{
    Client, ClientConfig, ClientStatus, PeerConfig, Server, ServerConfig, ServerStatus, SyncStats,
    SEGMENT_ENTRIES,
};
