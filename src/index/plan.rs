//! Pure planning: which files a pull must fetch, given the remote index and the local one.

use std::collections::HashMap;

use super::FileRecord;
use crate::protocol::IndexEntry;

/// What a pull has to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PullPlan {
    /// Content differs or is missing locally: transfer.
    pub fetch: Vec<IndexEntry>,
    /// Same content, different mtime or permission bits: fix metadata only.
    pub touch: Vec<IndexEntry>,
    /// Files already identical.
    pub unchanged: usize,
}

/// Compares the remote index with the local records (live, non-deleted ones). A local file
/// has the right mode when it has the remote's permission bits narrowed by `umask` (what a
/// pull gives it). Files only the local side has are left alone: pull never deletes.
pub fn plan_pull(
    remote: &[IndexEntry],
    local: &HashMap<String, FileRecord>,
    umask: u32,
) -> PullPlan {
    let mut plan = PullPlan::default();
    for entry in remote {
        match local.get(&entry.path).filter(|r| !r.deleted) {
            Some(rec) if rec.hash.to_hex() == entry.hash && rec.size == entry.size => {
                let mode = entry.permissions() & !umask;
                if rec.mtime_ns == entry.mtime_ns && rec.mode == mode {
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

    const UMASK: u32 = 0o022;

    /// A remote entry; `exec` picks mode 0o755 over 0o644.
    fn entry(path: &str, h: u8, mtime: i64, exec: bool) -> IndexEntry {
        with_mode(path, h, mtime, Some(if exec { 0o755 } else { 0o644 }))
    }

    fn with_mode(path: &str, h: u8, mtime: i64, mode: Option<u32>) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            size: 1,
            mtime_ns: mtime,
            executable: mode.is_some_and(|m| m & 0o111 != 0),
            mode,
            hash: Hash([h; 32]).to_hex(),
        }
    }

    fn rec(path: &str, h: u8, mtime: i64, exec: bool, deleted: bool) -> FileRecord {
        rec_mode(path, h, mtime, if exec { 0o755 } else { 0o644 }, deleted)
    }

    fn rec_mode(path: &str, h: u8, mtime: i64, mode: u32, deleted: bool) -> FileRecord {
        FileRecord {
            path: path.into(),
            size: 1,
            mtime_ns: mtime,
            executable: mode & 0o111 != 0,
            mode,
            hash: Hash([h; 32]),
            inode: 0,
            deleted,
            version: VersionVector::default(),
            blocks: vec![],
            kind: Default::default(),
            target: None,
            sequence: 0,
            modified_by: None,
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
                "0600 remote, 0644 local: narrowed",
                with_mode("a", 1, 5, Some(0o600)),
                Some(rec_mode("a", 1, 5, 0o644, false)),
                "touch",
            ),
            (
                "0666 remote is 0644 here under umask 022",
                with_mode("a", 1, 5, Some(0o666)),
                Some(rec_mode("a", 1, 5, 0o644, false)),
                "unchanged",
            ),
            (
                "setuid never travels",
                with_mode("a", 1, 5, Some(0o4755)),
                Some(rec_mode("a", 1, 5, 0o755, false)),
                "unchanged",
            ),
            (
                "older peer without mode, executable",
                IndexEntry {
                    executable: true,
                    ..with_mode("a", 1, 5, None)
                },
                Some(rec_mode("a", 1, 5, 0o755, false)),
                "unchanged",
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
            let plan = plan_pull(std::slice::from_ref(&remote), &map, UMASK);
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
        assert_eq!(plan_pull(&[], &map, UMASK), PullPlan::default());
    }
}
