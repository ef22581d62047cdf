//! The wire format, sans I/O: message types, their encoding, frame limits and the frame codec.
//!
//! `docs/protocol.md` is the human-readable specification of everything defined here.

mod codec;
mod message;

pub use codec::{FrameDecoder, FrameEncoder};
pub use message::{
    Auth, ErrorCode, ErrorMsg, FileChunk, FileIndex, FileRequest, Hello, IndexEntry, Message,
    MessageType, SyncComplete, SyncRequest,
};

/// The protocol version this engine speaks. Version 1 was the original pure-Python SSP.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest version we accept from a peer.
pub const MIN_PROTOCOL_VERSION: u32 = 2;

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
