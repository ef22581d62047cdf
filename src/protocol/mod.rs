//! The wire format, sans I/O: message types, their encoding, frame limits and the frame codec.
//!
//! `docs/protocol.md` is the human-readable specification of everything defined here.

mod codec;
mod message;
mod text;

pub use codec::{FrameDecoder, FrameEncoder};
pub use message::{
    Auth, ErrorCode, ErrorMsg, FileChunk, FileIndex, FileRequest, Hello, IndexEntry, Message,
    MessageType, SyncComplete, SyncMode, SyncRequest, MAX_KNOWN_PEERS,
};
pub use text::{peer_text, printable, sanitize_error, MAX_PEER_TEXT_CHARS};

/// The protocol version this engine speaks. Version 1 was the original pure-Python SSP,
/// version 2 the one-way pull; version 3 is two-way (device IDs, version vectors, tombstones,
/// the same messages in both directions).
pub const PROTOCOL_VERSION: u32 = 3;
/// The oldest version we accept from a peer: a v2 peer cannot take part in two-way sync (it
/// has no versions, so it could only overwrite), and gets a version error naming both.
pub const MIN_PROTOCOL_VERSION: u32 = 3;

/// Default FILE_CHUNK payload size, chosen by measurement with `bench/bench.py` (the sweep is in
/// docs/protocol.md): larger chunks stopped paying off past this point on loopback.
pub const DEFAULT_CHUNK_SIZE: usize = 512 * 1024;
/// Smallest accepted chunk size (the original's 4 KiB).
pub const MIN_CHUNK_SIZE: usize = 4 * 1024;
/// Largest accepted chunk size; bounds the memory a chunk needs on both sides.
pub const MAX_CHUNK_SIZE: usize = 8 * 1024 * 1024;

/// Largest frame body accepted, checked before anything is allocated for it:
/// a maximal chunk plus its header and AEAD tag, with room to spare.
pub const MAX_FRAME_BYTES: usize = MAX_CHUNK_SIZE + 64 * 1024;
/// Largest frame body accepted before encryption is on (the handshake's messages are under
/// 200 bytes): an unauthenticated peer can make us buffer at most this much per connection.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 4096;
/// Time a new connection has to deliver its HELLO; the rest of the handshake keeps
/// `HANDSHAKE_TIMEOUT_MS`. Short, so silent connections give their permit back quickly.
pub const HELLO_TIMEOUT_MS: u64 = 2_000;
/// Largest number of entries one FILE_INDEX message carries (keeps index frames small).
pub const INDEX_BATCH_ENTRIES: usize = 1024;
/// Bytes of the binary header in front of FILE_CHUNK data.
pub const CHUNK_HEADER_BYTES: usize = 16;

// What a client accepts from an authenticated server (issue 6, item 9). The defaults are for a
// million-file folder with room to spare; each is a field of `PeerConfig` so a user with a
// bigger folder can raise it, and the error that names a limit says which field.

/// Default cap on the entries of one index (`PeerConfig::max_index_entries`): twice the million
/// files the engine is designed for.
pub const DEFAULT_MAX_INDEX_ENTRIES: usize = 2_000_000;
/// Default cap on the sum of the path lengths of one index, in bytes
/// (`PeerConfig::max_index_path_bytes`): 128 bytes per path at the entry cap, more than real
/// trees average (tens of bytes); the index then takes a few hundred MB of client memory at
/// worst (issue 6 measured 355 MB for 251 MB of paths).
pub const DEFAULT_MAX_INDEX_PATH_BYTES: usize = 256 * 1024 * 1024;
/// Default time a client waits for any frame from the server after the handshake
/// (`PeerConfig::progress_timeout`) before it gives up on a silent server.
pub const DEFAULT_PROGRESS_TIMEOUT_MS: u64 = 60_000;
/// How often a server sends HEARTBEAT while it scans its folder for an index, so a client's
/// progress timeout measures a silent server, not a big folder's first scan.
pub const SCAN_HEARTBEAT_INTERVAL_MS: u64 = 15_000;
/// Deepest relative path (in components) a client creates: bounds the folders one index entry
/// can make, far beyond real trees.
pub const MAX_PATH_DEPTH: usize = 256;
/// Longest local path a client creates, in bytes, including the sync folder's own path and the
/// terminating NUL (`PATH_MAX`: 4096 on Linux, 1024 on macOS): a longer one could perhaps be
/// written through descriptors but never scanned or opened by path again.
#[cfg(unix)]
pub const MAX_LOCAL_PATH_BYTES: usize = libc::PATH_MAX as usize;
/// Longest local path a client creates, in bytes (Windows needs long-path support for this).
#[cfg(not(unix))]
pub const MAX_LOCAL_PATH_BYTES: usize = 4096;
