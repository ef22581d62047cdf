//! The store's compact binary form of a [`FileRecord`] (the path is the key, not repeated).
//!
//! JSON was the first form: decoding it was a quarter of a no-op scan's time at 100,000 files.
//! A record starts with [`FORMAT`]; a value starting with `{` is the JSON of older stores,
//! still read (and rewritten in this form the next time the record changes).
//!
//! Layout (integers little-endian):
//! `FORMAT u8, flags u8, size u64, mtime_ns i64, mode u32, inode u64, sequence u64,
//! hash [u8; 32], [modified_by u64], [origin u64], versions u16, versions × (device u64,
//! counter u64), [target: len u32, bytes], blocks u32, blocks × (offset u64, size u32,
//! hash [u8; 32])` — the bracketed fields present when their flag is set.

use super::{Block, DeviceId, EntryKind, FileRecord, Hash, VersionVector};

/// The first byte of a binary record (JSON records start with `{`).
const FORMAT: u8 = 1;

const DELETED: u8 = 1;
const EXECUTABLE: u8 = 1 << 1;
const DIR: u8 = 1 << 2;
const SYMLINK: u8 = 1 << 3;
const MODIFIED_BY: u8 = 1 << 4;
const ORIGIN: u8 = 1 << 5;
const TARGET: u8 = 1 << 6;

/// The binary form of `rec` (without its path).
pub(crate) fn encode(rec: &FileRecord) -> Vec<u8> {
    let mut flags = 0;
    for (on, bit) in [
        (rec.deleted, DELETED),
        (rec.executable, EXECUTABLE),
        (rec.kind == EntryKind::Dir, DIR),
        (rec.kind == EntryKind::Symlink, SYMLINK),
        (rec.modified_by.is_some(), MODIFIED_BY),
        (rec.origin.is_some(), ORIGIN),
        (rec.target.is_some(), TARGET),
    ] {
        if on {
            flags |= bit;
        }
    }
    let mut out = Vec::with_capacity(80 + 16 * rec.version.0.len());
    out.extend_from_slice(&[FORMAT, flags]);
    out.extend_from_slice(&rec.size.to_le_bytes());
    out.extend_from_slice(&rec.mtime_ns.to_le_bytes());
    out.extend_from_slice(&rec.mode.to_le_bytes());
    out.extend_from_slice(&rec.inode.to_le_bytes());
    out.extend_from_slice(&rec.sequence.to_le_bytes());
    out.extend_from_slice(&rec.hash.0);
    for d in [rec.modified_by, rec.origin].into_iter().flatten() {
        out.extend_from_slice(&d.0.to_le_bytes());
    }
    // At most 256 devices reach a record (the index limits them), far below u16.
    let versions = u16::try_from(rec.version.0.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&versions.to_le_bytes());
    for (d, c) in rec.version.0.iter().take(usize::from(versions)) {
        out.extend_from_slice(&d.0.to_le_bytes());
        out.extend_from_slice(&c.to_le_bytes());
    }
    if let Some(t) = &rec.target {
        let len = u32::try_from(t.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&t.as_bytes()[..len as usize]);
    }
    let blocks = u32::try_from(rec.blocks.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&blocks.to_le_bytes());
    for b in rec.blocks.iter().take(blocks as usize) {
        out.extend_from_slice(&b.offset.to_le_bytes());
        out.extend_from_slice(&b.size.to_le_bytes());
        out.extend_from_slice(&b.hash.0);
    }
    out
}

/// The record stored at `path`, or `None` if `bytes` is neither form (a damaged record is a
/// cache miss: the file is hashed again).
pub(crate) fn decode(path: &str, bytes: &[u8]) -> Option<FileRecord> {
    match bytes.first() {
        Some(&FORMAT) => Reader(&bytes[1..]).record(path),
        Some(b'{') => serde_json::from_slice(bytes).ok(),
        _ => None,
    }
}

/// Reads fields off the front of a record.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn record(mut self, path: &str) -> Option<FileRecord> {
        let [flags] = self.take()?;
        let size = self.u64()?;
        let mtime_ns = i64::from_le_bytes(self.take()?);
        let mode = self.u32()?;
        let inode = self.u64()?;
        let sequence = self.u64()?;
        let hash = Hash(self.take()?);
        let on = |bit: u8| flags & bit != 0;
        let modified_by = if on(MODIFIED_BY) {
            Some(DeviceId(self.u64()?))
        } else {
            None
        };
        let origin = if on(ORIGIN) {
            Some(DeviceId(self.u64()?))
        } else {
            None
        };
        let mut version = VersionVector::default();
        for _ in 0..u16::from_le_bytes(self.take()?) {
            let d = DeviceId(self.u64()?);
            version.0.insert(d, self.u64()?);
        }
        let target = if on(TARGET) {
            let len = self.u32()? as usize;
            Some(std::str::from_utf8(self.bytes(len)?).ok()?.to_owned())
        } else {
            None
        };
        let count = self.u32()? as usize;
        // Each block takes 44 bytes: a count the rest cannot hold is damage, not an allocation.
        if count > self.0.len() / 44 {
            return None;
        }
        let mut blocks = Vec::with_capacity(count);
        for _ in 0..count {
            blocks.push(Block {
                offset: self.u64()?,
                size: self.u32()?,
                hash: Hash(self.take()?),
            });
        }
        if !self.0.is_empty() {
            return None;
        }
        let kind = match (on(DIR), on(SYMLINK)) {
            (false, false) => EntryKind::File,
            (true, false) => EntryKind::Dir,
            (false, true) => EntryKind::Symlink,
            (true, true) => return None,
        };
        Some(FileRecord {
            path: path.to_owned(),
            size,
            mtime_ns,
            executable: on(EXECUTABLE),
            mode,
            hash,
            inode,
            deleted: on(DELETED),
            version,
            blocks,
            kind,
            target,
            sequence,
            modified_by,
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = FileRecord> {
        (
            (
                any::<u64>(),
                any::<i64>(),
                0u32..0o1000,
                any::<u64>(),
                any::<u64>(),
            ),
            (any::<[u8; 32]>(), any::<bool>(), any::<bool>(), 0u8..3),
            proptest::collection::btree_map(any::<u64>(), any::<u64>(), 0..4),
            (
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>()),
            ),
            proptest::option::of("[a-z/.é]{0,12}"),
            proptest::collection::vec((any::<u64>(), any::<u32>(), any::<[u8; 32]>()), 0..3),
        )
            .prop_map(
                |(nums, (hash, deleted, executable, kind), vv, ids, target, blocks)| FileRecord {
                    path: "dir/näme".into(),
                    size: nums.0,
                    mtime_ns: nums.1,
                    executable,
                    mode: nums.2,
                    hash: Hash(hash),
                    inode: nums.3,
                    deleted,
                    version: VersionVector(vv.into_iter().map(|(d, c)| (DeviceId(d), c)).collect()),
                    blocks: blocks
                        .into_iter()
                        .map(|(offset, size, hash)| Block {
                            offset,
                            size,
                            hash: Hash(hash),
                        })
                        .collect(),
                    kind: [EntryKind::File, EntryKind::Dir, EntryKind::Symlink][kind as usize],
                    target,
                    sequence: nums.4,
                    modified_by: ids.0.map(DeviceId),
                    origin: ids.1.map(DeviceId),
                },
            )
    }

    proptest! {
        #[test]
        fn every_record_decodes_to_itself(rec in record()) {
            prop_assert_eq!(decode(&rec.path, &encode(&rec)), Some(rec));
        }

        /// A damaged record is refused, never a panic nor a wrong record of another length.
        #[test]
        fn a_truncated_or_extended_record_is_refused(rec in record(), cut in 1usize..200) {
            let bytes = encode(&rec);
            let short = &bytes[..bytes.len().saturating_sub(cut)];
            prop_assert_eq!(decode(&rec.path, short), None);
            let mut long = bytes.clone();
            long.push(0);
            prop_assert_eq!(decode(&rec.path, &long), None);
        }
    }

    #[test]
    fn records_of_older_stores_are_read_from_json() {
        let rec = FileRecord {
            path: "a/b".into(),
            size: 3,
            mtime_ns: 4,
            executable: false,
            mode: 0o644,
            hash: Hash([7; 32]),
            inode: 5,
            deleted: false,
            version: VersionVector::default(),
            blocks: vec![],
            kind: EntryKind::File,
            target: None,
            sequence: 6,
            modified_by: None,
            origin: None,
        };
        let json = serde_json::to_vec(&rec).unwrap();
        assert_eq!(decode("a/b", &json), Some(rec));
        assert_eq!(decode("a/b", b""), None, "empty");
        assert_eq!(decode("a/b", b"\x02rest"), None, "unknown format");
    }
}
