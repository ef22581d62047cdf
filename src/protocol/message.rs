//! Messages: a one-byte type, then a JSON body (control) or a binary header and raw bytes (data).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::CHUNK_HEADER_BYTES;
use crate::error::{Error, Result};

/// The type byte that starts every message body. Names follow the original SSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Hello = 1,
    Auth = 2,
    FileIndex = 3,
    FileRequest = 4,
    FileChunk = 5,
    Ack = 6,
    SyncComplete = 7,
    Error = 8,
    Heartbeat = 9,
    SyncRequest = 10,
}

impl MessageType {
    fn from_byte(b: u8) -> Result<Self> {
        Ok(match b {
            1 => Self::Hello,
            2 => Self::Auth,
            3 => Self::FileIndex,
            4 => Self::FileRequest,
            5 => Self::FileChunk,
            6 => Self::Ack,
            7 => Self::SyncComplete,
            8 => Self::Error,
            9 => Self::Heartbeat,
            10 => Self::SyncRequest,
            other => return Err(Error::protocol(format!("unknown message type {other}"))),
        })
    }
}

/// First message in each direction: announces the protocol version range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub min_version: u32,
    pub software: String,
}

/// The PAKE handshake steps (see `crypto::handshake`). Byte strings are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Auth {
    /// Client → server: SPAKE2 message A.
    Pake { msg: String },
    /// Server → client: SPAKE2 message B and the server's key confirmation.
    PakeReply { msg: String, confirm: String },
    /// Client → server: the client's key confirmation.
    Confirm { confirm: String },
    /// Server → client: accepted; every later frame is encrypted.
    Ok {},
}

/// What a sync moves, seen from the client: both ways, or only one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncMode {
    /// Each side applies the other's changes (what "sync" means).
    #[default]
    #[serde(rename = "two-way")]
    TwoWay,
    /// The client applies the server's changes and sends none of its own.
    #[serde(rename = "pull")]
    Pull,
    /// The server applies the client's changes and sends none of its own.
    #[serde(rename = "push")]
    Push,
}

impl SyncMode {
    /// Every mode, in the order users see them.
    pub const ALL: [SyncMode; 3] = [SyncMode::TwoWay, SyncMode::Pull, SyncMode::Push];

    /// The mode's name on the wire, in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::TwoWay => "two-way",
            SyncMode::Pull => "pull",
            SyncMode::Push => "push",
        }
    }

    /// Parses a mode name.
    pub fn parse(s: &str) -> Option<SyncMode> {
        SyncMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the client applies the server's changes.
    pub fn client_pulls(self) -> bool {
        self != SyncMode::Push
    }

    /// Whether the server applies the client's changes.
    pub fn server_pulls(self) -> bool {
        self != SyncMode::Pull
    }
}

/// Starts a sync round, in both directions: the client sends it first, the server answers with
/// its own. Each side then sends its index if the other applies its changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The client's mode (the server echoes it, or refuses it with ERROR `read_only`).
    pub mode: SyncMode,
    /// The sender folder's device ID.
    pub device: crate::index::DeviceId,
    /// Server: it takes no changes from clients (a send-only folder).
    #[serde(default)]
    pub read_only: bool,
    /// Client: the user confirmed that this sync may delete every file (the mass-deletion
    /// guard stands down on both ends).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_mass_delete: bool,
    /// For each peer device: the sequence up to which the sender has applied that device's
    /// index. The receiver then sends only records changed after it (0 or absent: all).
    /// At most [`MAX_KNOWN_PEERS`] entries.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub known: std::collections::BTreeMap<crate::index::DeviceId, u64>,
}

/// Most entries of `SyncRequest::known` (a folder syncs with a handful of peers).
pub const MAX_KNOWN_PEERS: usize = 64;

/// One entry of the sender's folder: a file, folder or symlink, or a tombstone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// Any execute bit set; kept for peers that predate `mode` (they ignore `mode`).
    #[serde(default)]
    pub executable: bool,
    /// Permission bits (`0o777` of `st_mode`); absent from older peers, see
    /// [`IndexEntry::permissions`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// BLAKE3 of the content (of the target, for a symlink; zero for a folder), lowercase hex.
    pub hash: String,
    #[serde(default)]
    pub kind: crate::index::EntryKind,
    /// A symlink's target: relative, and inside the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A tombstone: the entry was deleted (`mtime_ns` is when the sender noticed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The version vector: `{device ID: counter}`.
    #[serde(default)]
    pub version: crate::index::VersionVector,
    /// The sender's change counter for this entry.
    #[serde(default)]
    pub sequence: u64,
    /// The device whose change made this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by: Option<crate::index::DeviceId>,
}

impl IndexEntry {
    /// The sender's permission bits, never more than `0o777` (setuid, setgid and sticky never
    /// travel); from `executable` when an older peer sent no `mode`.
    pub fn permissions(&self) -> u32 {
        match self.mode {
            Some(m) => m & 0o777,
            None if self.executable => 0o755,
            None => 0o644,
        }
    }
}

/// A batch of the server's index; `last` marks the final batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIndex {
    pub entries: Vec<IndexEntry>,
    pub last: bool,
}

/// Client → server: send `path` from byte `offset` on, tagged with `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRequest {
    pub id: u32,
    pub path: String,
    #[serde(default)]
    pub offset: u64,
}

/// Server → client: file data for request `id`, starting at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    pub id: u32,
    pub offset: u64,
    pub last: bool,
    pub data: Bytes,
}

/// Client → server: the session's transfers are over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncComplete {
    pub files: u64,
    pub bytes: u64,
    #[serde(default)]
    pub failed: u64,
    /// The sender's sequence number its index of this round was complete up to: a peer that
    /// applied all of it asks, next round, only for what changed since (`SyncRequest::known`).
    #[serde(default)]
    pub sequence: u64,
}

/// Machine-readable error codes carried by ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    VersionMismatch,
    AuthFailed,
    BadFrame,
    BadMessage,
    BadPath,
    NotFound,
    FileChanged,
    Io,
    ShuttingDown,
    Timeout,
    /// The source failed the handshake too often (or many did); try again later.
    RateLimited,
    /// The server takes no changes (read-only): a push is refused.
    ReadOnly,
    /// Another sync is using the folder.
    Busy,
    /// The round would delete every file of the sender's folder; nothing was deleted.
    MassDeletion,
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VersionMismatch => "version_mismatch",
            Self::AuthFailed => "auth_failed",
            Self::BadFrame => "bad_frame",
            Self::BadMessage => "bad_message",
            Self::BadPath => "bad_path",
            Self::NotFound => "not_found",
            Self::FileChanged => "file_changed",
            Self::Io => "io",
            Self::ShuttingDown => "shutting_down",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::ReadOnly => "read_only",
            Self::Busy => "busy",
            Self::MassDeletion => "mass_deletion",
            Self::Unknown => "unknown",
        }
    }
}

/// An error report. With `id` it concerns one FILE_REQUEST and the session goes on;
/// without, the sender closes the connection after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

impl ErrorMsg {
    /// A connection-fatal error.
    pub fn fatal(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
        }
    }
}

/// Every message of protocol v2.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    Auth(Auth),
    SyncRequest(SyncRequest),
    FileIndex(FileIndex),
    FileRequest(FileRequest),
    FileChunk(FileChunk),
    Ack,
    SyncComplete(SyncComplete),
    Error(ErrorMsg),
    Heartbeat,
}

const FLAG_LAST: u8 = 1;

impl Message {
    /// This message's type byte.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Auth(_) => MessageType::Auth,
            Message::SyncRequest(_) => MessageType::SyncRequest,
            Message::FileIndex(_) => MessageType::FileIndex,
            Message::FileRequest(_) => MessageType::FileRequest,
            Message::FileChunk(_) => MessageType::FileChunk,
            Message::Ack => MessageType::Ack,
            Message::SyncComplete(_) => MessageType::SyncComplete,
            Message::Error(_) => MessageType::Error,
            Message::Heartbeat => MessageType::Heartbeat,
        }
    }

    /// Appends the message body (type byte + payload) to `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        dst.put_u8(self.message_type() as u8);
        let mut w = dst.writer();
        // Serialising our own plain structs into a Vec-backed writer cannot fail.
        let json = match self {
            Message::Hello(m) => serde_json::to_writer(&mut w, m),
            Message::Auth(m) => serde_json::to_writer(&mut w, m),
            Message::SyncRequest(m) => serde_json::to_writer(&mut w, m),
            Message::FileIndex(m) => serde_json::to_writer(&mut w, m),
            Message::FileRequest(m) => serde_json::to_writer(&mut w, m),
            Message::SyncComplete(m) => serde_json::to_writer(&mut w, m),
            Message::Error(m) => serde_json::to_writer(&mut w, m),
            Message::Ack | Message::Heartbeat => {
                w.get_mut().put_slice(b"{}");
                Ok(())
            }
            Message::FileChunk(c) => {
                let dst = w.into_inner();
                dst.reserve(CHUNK_HEADER_BYTES + c.data.len());
                dst.put_u32(c.id);
                dst.put_u64(c.offset);
                dst.put_u8(if c.last { FLAG_LAST } else { 0 });
                dst.put_bytes(0, CHUNK_HEADER_BYTES - 13);
                dst.put_slice(&c.data);
                return;
            }
        };
        debug_assert!(json.is_ok());
    }

    /// Parses one message body. Never panics on hostile input.
    pub fn decode(mut body: Bytes) -> Result<Message> {
        if body.is_empty() {
            return Err(Error::protocol("empty message"));
        }
        let kind = MessageType::from_byte(body.get_u8())?;
        fn json<T: for<'de> Deserialize<'de>>(kind: MessageType, b: &[u8]) -> Result<T> {
            // serde quotes the peer's strings (e.g. an unknown variant) verbatim.
            serde_json::from_slice(b).map_err(|e| {
                let e = super::peer_text(&e.to_string());
                Error::protocol(format!("malformed {kind:?} message: {e}"))
            })
        }
        Ok(match kind {
            MessageType::Hello => Message::Hello(json(kind, &body)?),
            MessageType::Auth => Message::Auth(json(kind, &body)?),
            MessageType::SyncRequest => Message::SyncRequest(json(kind, &body)?),
            MessageType::FileIndex => Message::FileIndex(json(kind, &body)?),
            MessageType::FileRequest => Message::FileRequest(json(kind, &body)?),
            MessageType::SyncComplete => Message::SyncComplete(json(kind, &body)?),
            MessageType::Error => Message::Error(json(kind, &body)?),
            MessageType::Ack => Message::Ack,
            MessageType::Heartbeat => Message::Heartbeat,
            MessageType::FileChunk => {
                if body.len() < CHUNK_HEADER_BYTES {
                    return Err(Error::protocol("truncated FILE_CHUNK header"));
                }
                let id = body.get_u32();
                let offset = body.get_u64();
                let flags = body.get_u8();
                body.advance(CHUNK_HEADER_BYTES - 13);
                Message::FileChunk(FileChunk {
                    id,
                    offset,
                    last: flags & FLAG_LAST != 0,
                    data: body,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Message) {
        let mut buf = BytesMut::new();
        m.encode_into(&mut buf);
        assert_eq!(Message::decode(buf.freeze()).unwrap(), m);
    }

    #[test]
    fn every_message_roundtrips() {
        roundtrip(Message::Hello(Hello {
            version: 2,
            min_version: 2,
            software: "t".into(),
        }));
        roundtrip(Message::Auth(Auth::Pake { msg: "ab".into() }));
        roundtrip(Message::Auth(Auth::Ok {}));
        for mode in SyncMode::ALL {
            roundtrip(Message::SyncRequest(SyncRequest {
                mode,
                device: crate::index::DeviceId(7),
                read_only: true,
                allow_mass_delete: mode == SyncMode::Push,
                known: [(crate::index::DeviceId(9), 12)].into_iter().collect(),
            }));
        }
        roundtrip(Message::FileIndex(FileIndex {
            entries: vec![IndexEntry {
                path: "a/b".into(),
                size: 3,
                mtime_ns: -5,
                executable: true,
                mode: Some(0o750),
                hash: "00".into(),
                kind: crate::index::EntryKind::Symlink,
                target: Some("b".into()),
                deleted: true,
                version: crate::index::VersionVector(
                    [(crate::index::DeviceId(3), 4)].into_iter().collect(),
                ),
                sequence: 9,
                modified_by: Some(crate::index::DeviceId(3)),
            }],
            last: true,
        }));
        roundtrip(Message::FileRequest(FileRequest {
            id: 7,
            path: "x".into(),
            offset: 9,
        }));
        for len in [0usize, 1, 4096] {
            roundtrip(Message::FileChunk(FileChunk {
                id: u32::MAX,
                offset: u64::MAX,
                last: len == 0,
                data: Bytes::from(vec![0xA5; len]),
            }));
        }
        roundtrip(Message::Ack);
        roundtrip(Message::Heartbeat);
        roundtrip(Message::SyncComplete(SyncComplete {
            files: 1,
            bytes: 2,
            failed: 0,
            sequence: 77,
        }));
        roundtrip(Message::Error(ErrorMsg {
            code: ErrorCode::BadPath,
            message: "m".into(),
            id: Some(3),
        }));
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x00",
            b"\xff{}",
            b"\x01",
            b"\x01{\"version\":\"two\"}",
            b"\x05\x00\x00",
            b"\x02{\"step\":\"nope\"}",
            b"\x04{\"id\":-1,\"path\":\"a\"}",
        ];
        for case in cases {
            assert!(
                Message::decode(Bytes::copy_from_slice(case)).is_err(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn unknown_error_codes_still_parse() {
        let m = Message::decode(Bytes::from_static(
            b"\x08{\"code\":\"from_the_future\",\"message\":\"x\"}",
        ));
        assert!(matches!(
            m,
            Ok(Message::Error(ErrorMsg {
                code: ErrorCode::Unknown,
                ..
            }))
        ));
    }
}
