//! Pure planning: which files a pull must fetch, given the remote index and the local one.

use std::collections::HashMap;

use super::FileRecord;
use crate::protocol::IndexEntry;

/// What a pull has to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PullPlan {
    /// Content differs or is missing locally: transfer.
    pub fetch: Vec<IndexEntry>,
    /// Same content, different mtime or executable bit: fix metadata only.
    pub touch: Vec<IndexEntry>,
    /// Files already identical.
    pub unchanged: usize,
}

/// Compares the remote index with the local records (live, non-deleted ones).
/// Files only the local side has are left alone: pull never deletes.
pub fn plan_pull(remote: &[IndexEntry], local: &HashMap<String, FileRecord>) -> PullPlan {
    let mut plan = PullPlan::default();
    for entry in remote {
        match local.get(&entry.path).filter(|r| !r.deleted) {
            Some(rec) if rec.hash.to_hex() == entry.hash && rec.size == entry.size => {
                if rec.mtime_ns == entry.mtime_ns && rec.executable == entry.executable {
                    plan.unchanged += 1;
                } else {
                    plan.touch.push(entry.clone());
                }
            }
            _ => plan.fetch.push(entry.clone()),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Hash, VersionVector};

    fn entry(path: &str, h: u8, mtime: i64, exec: bool) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            size: 1,
            mtime_ns: mtime,
            executable: exec,
            hash: Hash([h; 32]).to_hex(),
        }
    }

    fn rec(path: &str, h: u8, mtime: i64, exec: bool, deleted: bool) -> FileRecord {
        FileRecord {
            path: path.into(),
            size: 1,
            mtime_ns: mtime,
            executable: exec,
            hash: Hash([h; 32]),
            inode: 0,
            deleted,
            version: VersionVector::default(),
            blocks: vec![],
        }
    }

    #[test]
    fn plan_table() {
        // (case, remote entry, local record, expected: fetch / touch / unchanged)
        let cases = [
            ("missing locally", entry("a", 1, 5, false), None, "fetch"),
            (
                "same everything",
                entry("a", 1, 5, false),
                Some(rec("a", 1, 5, false, false)),
                "unchanged",
            ),
            (
                "content differs",
                entry("a", 2, 5, false),
                Some(rec("a", 1, 5, false, false)),
                "fetch",
            ),
            (
                "mtime differs only",
                entry("a", 1, 6, false),
                Some(rec("a", 1, 5, false, false)),
                "touch",
            ),
            (
                "exec bit differs only",
                entry("a", 1, 5, true),
                Some(rec("a", 1, 5, false, false)),
                "touch",
            ),
            (
                "local tombstone",
                entry("a", 1, 5, false),
                Some(rec("a", 1, 5, false, true)),
                "fetch",
            ),
        ];
        for (case, remote, local, want) in cases {
            let map: HashMap<_, _> = local.into_iter().map(|r| (r.path.clone(), r)).collect();
            let plan = plan_pull(std::slice::from_ref(&remote), &map);
            let got = if !plan.fetch.is_empty() {
                "fetch"
            } else if !plan.touch.is_empty() {
                "touch"
            } else {
                assert_eq!(plan.unchanged, 1);
                "unchanged"
            };
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn local_only_files_are_left_alone() {
        let map: HashMap<_, _> = [rec("mine", 1, 1, false, false)]
            .into_iter()
            .map(|r| (r.path.clone(), r))
            .collect();
        assert_eq!(plan_pull(&[], &map), PullPlan::default());
    }
}
