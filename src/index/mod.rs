//! The file index: what we know of each file (records), the crash-safe store that caches it
//! between runs, and the pure planning functions that compare two indexes.

mod plan;
mod store;

pub use plan::{plan_pull, PullPlan};
pub use store::IndexStore;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::IndexEntry;

/// A BLAKE3 content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Lowercase hex, as on the wire.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad hash"))
    }
}

/// Per-device change counters (Syncthing-style). Unused by pull-only sync; stored now so that
/// two-way sync can compare histories without migrating the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<String, u64>);

/// A content-defined block of a file, for delta transfer (filled in by a later version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub offset: u64,
    pub size: u32,
    pub hash: Hash,
}

/// Everything the index knows about one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative `/`-separated path (a valid `RelPath`).
    pub path: String,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Any execute bit set (what stores before `mode` kept).
    pub executable: bool,
    /// Permission bits (`0o777`). 0 in records written before it existed: such a record looks
    /// like a mode change, which only refreshes the record.
    #[serde(default)]
    pub mode: u32,
    pub hash: Hash,
    /// Inode number at hashing time: a same-size, same-mtime replacement still re-hashes.
    #[serde(default)]
    pub inode: u64,
    /// Tombstone: the file was deleted; kept so deletions can be synced later.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "VersionVector::is_empty")]
    pub version: VersionVector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Block>,
}

impl VersionVector {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FileRecord {
    /// Sets the permission bits and the executable flag that follows from them.
    pub fn set_mode(&mut self, mode: u32) {
        self.mode = mode & 0o777;
        self.executable = self.mode & 0o111 != 0;
    }

    /// The wire form of this record.
    pub fn to_entry(&self) -> IndexEntry {
        IndexEntry {
            path: self.path.clone(),
            size: self.size,
            mtime_ns: self.mtime_ns,
            executable: self.executable,
            mode: Some(self.mode),
            hash: self.hash.to_hex(),
        }
    }
}
