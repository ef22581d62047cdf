//! The file index: what we know of each file (records), the crash-safe store that caches it
//! between runs, and the pure two-way reconcile rules that compare a peer's record with ours.

mod encoding;
mod reconcile;
mod store;
mod version;

pub use reconcile::{
    conflict_name, is_conflict_name, reconcile, Action, Apply, Conflict, ConflictRule, Decision,
    Side,
};
pub use store::{IndexStore, Records, Snapshot};
pub use version::{Causality, Counters, DeviceId, VersionVector};

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

/// A content-defined block of a file, for delta transfer (filled in by a later version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub offset: u64,
    pub size: u32,
    pub hash: Hash,
}

/// What is at a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    #[default]
    File,
    Dir,
    /// A symbolic link whose target is relative and stays inside the folder.
    Symlink,
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
    /// File, folder or symlink (records before two-way sync are files).
    #[serde(default)]
    pub kind: EntryKind,
    /// A symlink's target (relative, `/`-separated); `hash` is BLAKE3 of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The folder's change counter when this record last changed here (local change or a
    /// version adopted from a peer): orders the index for "what changed since N".
    #[serde(default)]
    pub sequence: u64,
    /// The device whose change made this version (names conflict copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by: Option<DeviceId>,
    /// The peer this exact version was taken from (never on the wire): it has it already, so
    /// it is not sent back to it. Cleared by any change made here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<DeviceId>,
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
            kind: self.kind,
            target: self.target.clone(),
            deleted: self.deleted,
            version: self.version.clone(),
            sequence: self.sequence,
            modified_by: self.modified_by,
        }
    }

    /// A peer's entry as a record (`hash` already checked by the caller; inode unknown).
    pub fn from_entry(e: &IndexEntry, hash: Hash) -> FileRecord {
        FileRecord {
            path: e.path.clone(),
            size: e.size,
            mtime_ns: e.mtime_ns,
            executable: e.permissions() & 0o111 != 0,
            mode: e.permissions(),
            hash,
            inode: 0,
            deleted: e.deleted,
            version: e.version.clone(),
            blocks: Vec::new(),
            kind: e.kind,
            target: e.target.clone(),
            sequence: e.sequence,
            modified_by: e.modified_by,
            origin: None,
        }
    }

    /// Whether both hold the same thing at the path: both deleted, or the same kind with the
    /// same content (files: hash and size; symlinks: target; folders: always).
    pub fn same_content(&self, other: &FileRecord) -> bool {
        match (self.deleted, other.deleted) {
            (true, true) => true,
            (false, false) => {
                self.kind == other.kind
                    && match self.kind {
                        EntryKind::File => self.hash == other.hash && self.size == other.size,
                        EntryKind::Symlink => self.target == other.target,
                        EntryKind::Dir => true,
                    }
            }
            _ => false,
        }
    }
}
