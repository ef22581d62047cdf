//! The reconcile rules: for one path, what this replica does with a peer's record (pure, no I/O).
//!
//! Two-way sync is Syncthing's model: every record carries a version vector, and comparing ours
//! with the peer's says whether one history contains the other (take the newer) or each side
//! changed the path without seeing the other's change (concurrent). Concurrent changes to
//! different contents are conflicts: one version keeps the name, the other survives as a
//! `.sync-conflict-` copy named the same way on every replica. Deletions are tombstones with
//! their own versions, and a modification always beats a concurrent deletion. The replica that
//! gives up its record for the peer's makes that resolution a change of its own (a bumped
//! version), so that equal versions always mean equal records.
//!
//! [`reconcile`] decides; the executor acts (fetching, archiving what is in the way, moving the
//! loser to its copy) and then stores [`Decision::record`].

use std::cmp::Ordering;

use super::{Causality, DeviceId, EntryKind, FileRecord};

/// Who wins a conflict on this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictRule {
    /// Both replicas apply the same rule and reach the same winner (two-way with a peer that
    /// also pulls from us).
    Deterministic,
    /// The peer's version always takes the name; ours becomes the conflict copy (pull mode, or
    /// a peer that will not take our changes: read-only server, push-mode client seen from the
    /// server).
    PeerWins,
}

/// What to do on disk so that the path holds the remote entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Transfer the remote file's content.
    Fetch,
    /// Create the directory.
    MakeDir,
    /// Create the symlink to the remote record's `target`.
    MakeLink,
    /// Remove what is at the path (the remote record is a tombstone).
    Delete,
}

impl Apply {
    /// The disk change that makes a path hold `record`.
    pub fn to_hold(record: &FileRecord) -> Apply {
        match (record.deleted, record.kind) {
            (true, _) => Apply::Delete,
            (false, EntryKind::File) => Apply::Fetch,
            (false, EntryKind::Dir) => Apply::MakeDir,
            (false, EntryKind::Symlink) => Apply::MakeLink,
        }
    }
}

/// What this replica does about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do (same version, or ours is newer or wins: the peer pulls ours).
    Keep,
    /// No disk change; store the decision's record (a remote tombstone for a path we never had
    /// or already deleted, identical content reached concurrently, same content and metadata).
    Adopt,
    /// Same content, other mtime/permission bits: fix metadata on disk, then store the record.
    Touch,
    /// Make the disk hold the remote entry (the executor archives whatever is in the way).
    Apply(Apply),
    /// Concurrent change, the remote wins the name: move our entry to `copy` (a path in the same
    /// folder) first, then apply.
    ///
    /// Every replica names a loser's copy the same, so if the store already holds a record at
    /// `copy` (live or a tombstone), the loser was copied there before: it survives there, or a
    /// user has replaced or deleted that copy since. Then the executor archives our entry
    /// instead of moving it, so as not to overwrite what is at `copy` or revive a copy the
    /// user deleted.
    ConflictCopy { copy: String, then: Apply },
}

/// The outcome of [`reconcile`] for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// What the store holds for the path once the action succeeded (None for Keep). Where
    /// histories met (conflicts, concurrent identical content, modify-vs-delete) its version is
    /// the remote's merged with ours, bumped for this replica unless both records were the same
    /// in all the disk shows, so it is Newer than both and names this record only. Its mode is
    /// the one the disk gets (the remote's narrowed by our umask), so the next scan sees no
    /// change. The executor fills inode/sequence.
    pub record: Option<FileRecord>,
    /// Set for every true conflict (both changed, contents differ), whichever side won:
    /// reported to users.
    pub conflict: Option<Conflict>,
}

/// A true conflict: both replicas changed the path and the contents differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The contested path.
    pub path: String,
    /// Where the losing version lives (made by the losing replica).
    pub copy: String,
    /// Which version kept the name.
    pub winner: Side,
    /// Our version.
    pub local: FileRecord,
    /// The peer's version.
    pub remote: FileRecord,
}

/// One side of a reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This replica.
    Local,
    /// The peer.
    Remote,
}

/// Decides what this replica does with the peer's `remote` record for one path, given `local`,
/// our record after a fresh scan (None: never seen). `umask` narrows the permission bits the
/// disk gets from the peer. `device` is this replica: resolving concurrent records into one
/// that differs from ours is a change made here, and gets a version bumped for it.
pub fn reconcile(
    local: Option<&FileRecord>,
    remote: &FileRecord,
    rule: ConflictRule,
    umask: u32,
    device: DeviceId,
) -> Decision {
    let Some(local) = local else {
        // A tombstone for a path we never had is still stored: a hub relays deletes to peers
        // that did have it.
        return if remote.deleted {
            Decision::store(Action::Adopt, remote.clone())
        } else {
            Decision::store(Action::Apply(Apply::to_hold(remote)), held(remote, umask))
        };
    };
    match local.version.compare(&remote.version) {
        Causality::Equal | Causality::Newer => Decision::keep(),
        Causality::Older => take_newer(local, remote, umask),
        Causality::Concurrent => concurrent(local, remote, rule, umask, device),
    }
}

/// The remote record contains our history: take it.
fn take_newer(local: &FileRecord, remote: &FileRecord, umask: u32) -> Decision {
    let record = held(remote, umask);
    let action = match (local.deleted, remote.deleted) {
        (true, true) => Action::Adopt,
        (false, true) => Action::Apply(Apply::Delete),
        (true, false) => Action::Apply(Apply::to_hold(remote)),
        (false, false) if same_content(local, remote) => metadata_action(local, &record),
        (false, false) => Action::Apply(Apply::to_hold(remote)),
    };
    Decision::store(action, record)
}

/// Each side changed the path without seeing the other's change.
///
/// A version vector must name one record: two replicas holding equal versions see nothing to
/// do, so if their records differed they would differ for ever, and a later edit of one
/// (Newer than both) would silently replace the other. Versions made by a device's bump are
/// unique (its counter is new, and larger than every counter it saw), but a bare join of two
/// histories is not: another pair of histories can join to the same vector and resolve to
/// another record (a tombstone here, the file there). So only records equal in everything the
/// disk shows are joined as they are (both replicas then store the same record); otherwise the
/// replica whose path changes makes the resolution its own change, the joined version bumped
/// for `device`, and the other keeps its record until it takes that newer one.
fn concurrent(
    local: &FileRecord,
    remote: &FileRecord,
    rule: ConflictRule,
    umask: u32,
    device: DeviceId,
) -> Decision {
    let mut version = local.version.clone();
    version.merge(&remote.version);
    if precedence(local, remote) == Ordering::Equal {
        // The same entry reached on both sides: nothing on disk to change, and the joined
        // record is the same whichever replica makes it.
        return Decision::store(
            Action::Adopt,
            FileRecord {
                version,
                ..local.clone()
            },
        );
    }
    let remote_wins = match (local.deleted, remote.deleted) {
        // Modify versus delete keeps the modification, on both sides.
        (false, true) => false,
        (true, false) => true,
        _ => winner(rule, local, remote) == Side::Remote,
    };
    // A true conflict: both sides hold live entries with different contents.
    let conflict = (!local.deleted && !remote.deleted && !same_content(local, remote)).then(|| {
        let loser = if remote_wins { local } else { remote };
        Conflict {
            path: remote.path.clone(),
            copy: conflict_name(&loser.path, loser.mtime_ns, loser.modified_by),
            winner: if remote_wins {
                Side::Remote
            } else {
                Side::Local
            },
            local: local.clone(),
            remote: remote.clone(),
        }
    });
    if !remote_wins {
        // The peer resolves it when it reconciles our record (making the copy if there is
        // one), and we take its resolution then.
        return Decision {
            action: Action::Keep,
            record: None,
            conflict,
        };
    }
    version.bump(device);
    let record = FileRecord {
        version,
        ..held(remote, umask)
    };
    let action = match (&conflict, local.deleted, remote.deleted) {
        (Some(c), _, _) => Action::ConflictCopy {
            copy: c.copy.clone(),
            then: Apply::to_hold(remote),
        },
        (None, true, true) => Action::Adopt,
        (None, false, false) => metadata_action(local, &record),
        (None, _, _) => Action::Apply(Apply::to_hold(remote)),
    };
    Decision {
        action,
        record: Some(record),
        conflict,
    }
}

/// The side whose version keeps the name (or, for equal contents, the metadata).
fn winner(rule: ConflictRule, local: &FileRecord, remote: &FileRecord) -> Side {
    match rule {
        ConflictRule::PeerWins => Side::Remote,
        // Strictly greater, so that two records that differ in anything the disk shows are
        // ordered the same way on both replicas; records equal in all of it tie (`concurrent`
        // joins those before asking).
        ConflictRule::Deterministic => match precedence(remote, local) {
            Ordering::Greater => Side::Remote,
            Ordering::Less | Ordering::Equal => Side::Local,
        },
    }
}

/// Syncthing's order: a directory beats anything else (it may hold other changes), then the
/// newer mtime, then the larger device ID, then the larger hash. The remaining fields make it
/// total over everything the disk shows, which makes the rule antisymmetric.
fn precedence(a: &FileRecord, b: &FileRecord) -> Ordering {
    let key = |r: &FileRecord| {
        (
            r.kind == EntryKind::Dir,
            r.mtime_ns,
            r.modified_by,
            r.hash.0,
            kind_rank(r.kind),
            r.size,
            r.target.clone(),
            r.mode,
            r.deleted,
        )
    };
    key(a).cmp(&key(b))
}

fn kind_rank(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::File => 0,
        EntryKind::Symlink => 1,
        EntryKind::Dir => 2,
    }
}

/// Same kind and, for files, same hash and size; for symlinks, same target. Both live.
fn same_content(a: &FileRecord, b: &FileRecord) -> bool {
    a.kind == b.kind
        && match a.kind {
            EntryKind::File => a.hash == b.hash && a.size == b.size,
            EntryKind::Symlink => a.target == b.target,
            EntryKind::Dir => true,
        }
}

/// Touch when the disk's metadata differs from what `record` (already narrowed) says, else
/// Adopt. A directory's mtime is not synced: it changes whenever an entry inside it does,
/// writes of our own included. A symlink has no permission bits, and its mtime is not synced.
fn metadata_action(local: &FileRecord, record: &FileRecord) -> Action {
    let differs = match record.kind {
        EntryKind::File => local.mtime_ns != record.mtime_ns || local.mode != record.mode,
        EntryKind::Dir => local.mode != record.mode,
        EntryKind::Symlink => false,
    };
    if differs {
        Action::Touch
    } else {
        Action::Adopt
    }
}

/// The remote record as our disk will hold it: the peer's permission bits narrowed by our
/// umask (setuid and friends never travel), as `plan_pull` does.
fn held(remote: &FileRecord, umask: u32) -> FileRecord {
    let mut record = remote.clone();
    if !remote.deleted && remote.kind != EntryKind::Symlink {
        // A peer's record has real permission bits (`from_entry` derived them for a peer that
        // sent none): 0o000 is a real mode and stays one. Folder modes do not travel.
        let mode = match (remote.kind, remote.mode & 0o777) {
            (EntryKind::Dir, 0) => 0o755,
            (_, m) => m,
        };
        record.set_mode(mode & !umask);
    }
    record
}

impl Decision {
    fn keep() -> Decision {
        Decision {
            action: Action::Keep,
            record: None,
            conflict: None,
        }
    }

    fn store(action: Action, record: FileRecord) -> Decision {
        Decision {
            action,
            record: Some(record),
            conflict: None,
        }
    }
}

/// The marker between a conflict copy's stem and its time stamp.
const CONFLICT_MARKER: &str = ".sync-conflict-";

/// `dir/stem.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext` (Syncthing's pattern), where the time is
/// the LOSER's mtime in UTC and DEVICE is `modified_by.short()` of the loser ("0000000" if
/// none): deterministic, so every replica names the same copy the same way. `ext` is what
/// follows the last dot of the file name unless the name starts with that dot (".bashrc" has no
/// ext); no ext → no trailing dot.
pub fn conflict_name(path: &str, mtime_ns: i64, device: Option<DeviceId>) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(i) => path.split_at(i + 1),
        None => ("", path),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    let secs = mtime_ns.div_euclid(1_000_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let second = secs.rem_euclid(86_400);
    let (h, m, s) = (second / 3600, second % 3600 / 60, second % 60);
    let device = device.map_or_else(|| "0000000".to_owned(), |d| d.short());
    format!(
        "{dir}{stem}{CONFLICT_MARKER}{year:04}{month:02}{day:02}-{h:02}{m:02}{s:02}-{device}{ext}"
    )
}

/// True when the last component of `name` is a conflict copy's name (what [`conflict_name`]
/// makes, possibly of a name that was one already).
pub fn is_conflict_name(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.match_indices(CONFLICT_MARKER).any(|(i, _)| {
        let rest = &file.as_bytes()[i + CONFLICT_MARKER.len()..];
        // YYYYMMDD-HHMMSS-DEVICE, then the end or the extension.
        let pattern = b"dddddddd-dddddd-xxxxxxx";
        rest.len() >= pattern.len()
            && pattern.iter().zip(rest).all(|(p, c)| match p {
                b'd' => c.is_ascii_digit(),
                b'x' => c.is_ascii_digit() || (b'A'..=b'F').contains(c),
                _ => p == c,
            })
            && rest.get(pattern.len()).map_or(true, |&c| c == b'.')
    })
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): eras of 400 years, each starting on March 1st so the leap day is last.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use proptest::prelude::*;

    use super::*;
    use crate::index::{Hash, VersionVector};

    /// This replica.
    const A: DeviceId = DeviceId(0xAAAA_AAAA_0000_0001);
    /// The peer.
    const B: DeviceId = DeviceId(0xBBBB_BBBB_0000_0002);
    const UMASK: u32 = 0o022;
    const S: i64 = 1_000_000_000;

    /// The histories of the table: both sides once held the path at BASE; OURS is our change
    /// since, THEIRS the peer's; NONE is a record from before versions.
    const BASE: &[(DeviceId, u64)] = &[(A, 1)];
    const OURS: &[(DeviceId, u64)] = &[(A, 2)];
    const THEIRS: &[(DeviceId, u64)] = &[(A, 1), (B, 2)];
    const NONE: &[(DeviceId, u64)] = &[];

    fn vv(pairs: &[(DeviceId, u64)]) -> VersionVector {
        VersionVector(pairs.iter().copied().collect())
    }

    fn record(kind: EntryKind, mtime_s: i64, version: &[(DeviceId, u64)]) -> FileRecord {
        FileRecord {
            path: "d/f.txt".into(),
            size: 0,
            mtime_ns: mtime_s * S,
            executable: false,
            mode: 0,
            hash: Hash([0; 32]),
            inode: 0,
            deleted: false,
            version: vv(version),
            blocks: vec![],
            kind,
            target: None,
            sequence: 0,
            modified_by: None,
            origin: None,
        }
    }

    /// A 10-byte file whose content is `h`, mode 0644.
    fn file(h: u8, mtime_s: i64, version: &[(DeviceId, u64)]) -> FileRecord {
        let mut r = record(EntryKind::File, mtime_s, version);
        r.size = 10;
        r.hash = Hash([h; 32]);
        r.mode(0o644)
    }

    fn dir(mtime_s: i64, version: &[(DeviceId, u64)]) -> FileRecord {
        record(EntryKind::Dir, mtime_s, version).mode(0o755)
    }

    fn link(target: &str, mtime_s: i64, version: &[(DeviceId, u64)]) -> FileRecord {
        let mut r = record(EntryKind::Symlink, mtime_s, version);
        r.target = Some(target.into());
        r.hash = Hash(*blake3::hash(target.as_bytes()).as_bytes());
        r.size = target.len() as u64;
        r
    }

    /// A tombstone of a file.
    fn gone(mtime_s: i64, version: &[(DeviceId, u64)]) -> FileRecord {
        FileRecord {
            deleted: true,
            ..file(0, mtime_s, version)
        }
    }

    trait With {
        fn by(self, device: DeviceId) -> Self;
        fn mode(self, mode: u32) -> Self;
    }

    impl With for FileRecord {
        fn by(mut self, device: DeviceId) -> Self {
            self.modified_by = Some(device);
            self
        }
        fn mode(mut self, mode: u32) -> Self {
            self.set_mode(mode);
            self
        }
    }

    /// The expected action; a conflict copy's name is the loser's, checked by the test.
    #[derive(Debug, Clone, Copy)]
    enum Do {
        Keep,
        Adopt,
        Touch,
        Apply(Apply),
        CopyThen(Apply),
    }

    /// The expected stored record (modes in the table survive the umask unchanged).
    #[derive(Debug, Clone, Copy)]
    enum Want {
        Nothing,
        /// The peer's record as it is.
        Remote,
        /// The peer's record with both histories joined and bumped for us (A): a resolution
        /// is our change.
        Resolved,
        /// Ours with both histories joined (the records were the same in all the disk shows).
        Joined,
    }

    /// (case, local record, remote record, rule, action, stored record, conflict winner)
    type Row = (
        &'static str,
        Option<FileRecord>,
        FileRecord,
        ConflictRule,
        Do,
        Want,
        Option<Side>,
    );

    use Apply::{Delete, Fetch, MakeDir, MakeLink};
    use ConflictRule::{Deterministic as DET, PeerWins as PEER};

    #[test]
    fn reconcile_table() {
        #[rustfmt::skip]
        let cases: Vec<Row> = vec![
            // --- rule 1: we never had the path, or hold a tombstone
            ("peer created a file", None, file(1, 5, THEIRS), DET, Do::Apply(Fetch), Want::Remote, None),
            ("peer created a dir", None, dir(5, THEIRS), DET, Do::Apply(MakeDir), Want::Remote, None),
            ("peer created a symlink", None, link("t", 5, THEIRS), DET, Do::Apply(MakeLink), Want::Remote, None),
            ("peer's tombstone of a path we never had is kept to relay", None, gone(5, THEIRS), DET, Do::Adopt, Want::Remote, None),
            ("we deleted, the peer recreated after seeing it", Some(gone(5, BASE)), file(2, 6, THEIRS), DET, Do::Apply(Fetch), Want::Remote, None),
            ("we deleted after the peer's version", Some(gone(6, OURS)), file(1, 5, BASE), DET, Do::Keep, Want::Nothing, None),
            ("we deleted while the peer edited: the edit wins", Some(gone(9, OURS)), file(2, 5, THEIRS), DET, Do::Apply(Fetch), Want::Resolved, None),
            ("we deleted while the peer made a dir there", Some(gone(9, OURS)), dir(5, THEIRS), DET, Do::Apply(MakeDir), Want::Resolved, None),
            ("both deleted, the peer's tombstone is later", Some(gone(5, OURS)), gone(6, THEIRS), DET, Do::Adopt, Want::Resolved, None),
            ("both deleted, ours is later: the peer takes ours", Some(gone(6, OURS)), gone(5, THEIRS), DET, Do::Keep, Want::Nothing, None),
            ("identical tombstones: both store the joined history", Some(gone(6, OURS).by(B)), gone(6, THEIRS).by(B), DET, Do::Adopt, Want::Joined, None),
            ("both deleted, PeerWins takes the peer's tombstone", Some(gone(6, OURS)), gone(5, THEIRS), PEER, Do::Adopt, Want::Resolved, None),
            ("the peer deleted after our delete", Some(gone(5, BASE)), gone(6, THEIRS), DET, Do::Adopt, Want::Remote, None),
            ("our tombstone is newer than the peer's", Some(gone(6, OURS)), gone(5, BASE), DET, Do::Keep, Want::Nothing, None),
            // --- rule 2: equal or newer on our side
            ("same version", Some(file(1, 5, BASE)), file(1, 5, BASE), DET, Do::Keep, Want::Nothing, None),
            ("we edited since", Some(file(2, 6, OURS)), file(1, 5, BASE), DET, Do::Keep, Want::Nothing, None),
            ("we edited since, under PeerWins too", Some(file(2, 6, OURS)), file(1, 5, BASE), PEER, Do::Keep, Want::Nothing, None),
            ("we deleted since", Some(gone(6, OURS)), file(1, 5, BASE), PEER, Do::Keep, Want::Nothing, None),
            // --- rule 2: the peer's is newer
            ("peer edited", Some(file(1, 5, BASE)), file(2, 6, THEIRS), DET, Do::Apply(Fetch), Want::Remote, None),
            ("peer edited, same hash but another size", Some(file(1, 5, BASE)), FileRecord { size: 11, ..file(1, 5, THEIRS) }, DET, Do::Apply(Fetch), Want::Remote, None),
            ("peer changed the mtime only", Some(file(1, 5, BASE)), file(1, 6, THEIRS), DET, Do::Touch, Want::Remote, None),
            ("peer set the exec bit only", Some(file(1, 5, BASE)), file(1, 5, THEIRS).mode(0o755), DET, Do::Touch, Want::Remote, None),
            ("peer saved identical content and metadata", Some(file(1, 5, BASE)), file(1, 5, THEIRS), DET, Do::Adopt, Want::Remote, None),
            ("peer deleted", Some(file(1, 5, BASE)), gone(6, THEIRS), DET, Do::Apply(Delete), Want::Remote, None),
            ("peer deleted a dir", Some(dir(5, BASE)), gone(6, THEIRS), DET, Do::Apply(Delete), Want::Remote, None),
            ("peer deleted a symlink", Some(link("t", 5, BASE)), gone(6, THEIRS), DET, Do::Apply(Delete), Want::Remote, None),
            ("file became a dir", Some(file(1, 5, BASE)), dir(6, THEIRS), DET, Do::Apply(MakeDir), Want::Remote, None),
            ("dir became a file", Some(dir(5, BASE)), file(1, 6, THEIRS), DET, Do::Apply(Fetch), Want::Remote, None),
            ("file became a symlink", Some(file(1, 5, BASE)), link("t", 6, THEIRS), DET, Do::Apply(MakeLink), Want::Remote, None),
            ("symlink became a file", Some(link("t", 5, BASE)), file(1, 6, THEIRS), DET, Do::Apply(Fetch), Want::Remote, None),
            ("dir became a symlink", Some(dir(5, BASE)), link("t", 6, THEIRS), DET, Do::Apply(MakeLink), Want::Remote, None),
            ("symlink became a dir", Some(link("t", 5, BASE)), dir(6, THEIRS), DET, Do::Apply(MakeDir), Want::Remote, None),
            ("a file holding a link's target is not that link", Some(FileRecord { kind: EntryKind::File, ..link("t", 5, BASE) }), link("t", 5, THEIRS), DET, Do::Apply(MakeLink), Want::Remote, None),
            ("symlink retargeted", Some(link("t", 5, BASE)), link("u", 6, THEIRS), DET, Do::Apply(MakeLink), Want::Remote, None),
            ("symlink mtime only: not synced", Some(link("t", 5, BASE)), link("t", 6, THEIRS), DET, Do::Adopt, Want::Remote, None),
            ("dir mode changed", Some(dir(5, BASE)), dir(5, THEIRS).mode(0o700), DET, Do::Touch, Want::Remote, None),
            ("dir mtime only: not synced", Some(dir(5, BASE)), dir(6, THEIRS), DET, Do::Adopt, Want::Remote, None),
            // --- rule 2: concurrent, one side deleted (live wins, no conflict)
            ("we edited, the peer deleted: our edit stays", Some(file(2, 6, OURS)), gone(9, THEIRS), DET, Do::Keep, Want::Nothing, None),
            ("we edited, the peer deleted, under PeerWins too", Some(file(2, 6, OURS)), gone(9, THEIRS), PEER, Do::Keep, Want::Nothing, None),
            ("we deleted a dir, the peer changed its mode", Some(gone(9, OURS)), dir(5, THEIRS).mode(0o700), PEER, Do::Apply(MakeDir), Want::Resolved, None),
            // --- rule 2: concurrent, same content
            ("both wrote the same bytes at the same mtime", Some(file(2, 6, OURS).by(A)), file(2, 6, THEIRS).by(B), DET, Do::Adopt, Want::Resolved, None),
            ("same bytes, the peer's mtime is newer", Some(file(2, 6, OURS).by(A)), file(2, 7, THEIRS).by(B), DET, Do::Touch, Want::Resolved, None),
            ("same bytes, our mtime is newer: the peer takes ours", Some(file(2, 7, OURS).by(A)), file(2, 6, THEIRS).by(B), DET, Do::Keep, Want::Nothing, None),
            ("identical on both sides: both store the joined history", Some(file(2, 6, OURS).by(B)), file(2, 6, THEIRS).by(B), DET, Do::Adopt, Want::Joined, None),
            ("identical on both sides, under PeerWins too", Some(file(2, 6, OURS).by(B)), file(2, 6, THEIRS).by(B), PEER, Do::Adopt, Want::Joined, None),
            ("same bytes, PeerWins takes the peer's older mtime", Some(file(2, 7, OURS).by(A)), file(2, 6, THEIRS).by(B), PEER, Do::Touch, Want::Resolved, None),
            ("same bytes and mtime, the peer's mode wins by device", Some(file(2, 6, OURS).by(A)), file(2, 6, THEIRS).by(B).mode(0o755), DET, Do::Touch, Want::Resolved, None),
            ("both made the dir", Some(dir(5, OURS).by(A)), dir(6, THEIRS).by(B), DET, Do::Adopt, Want::Resolved, None),
            ("both made the same symlink", Some(link("t", 5, OURS)), link("t", 6, THEIRS), DET, Do::Adopt, Want::Resolved, None),
            // --- rule 2: concurrent, true conflicts
            ("both edited, the peer's mtime is newer", Some(file(2, 6, OURS).by(A)), file(3, 7, THEIRS).by(B), DET, Do::CopyThen(Fetch), Want::Resolved, Some(Side::Remote)),
            ("both edited, ours is newer", Some(file(2, 7, OURS).by(A)), file(3, 6, THEIRS).by(B), DET, Do::Keep, Want::Nothing, Some(Side::Local)),
            ("same mtime: the larger device wins (the peer's)", Some(file(3, 6, OURS).by(A)), file(2, 6, THEIRS).by(B), DET, Do::CopyThen(Fetch), Want::Resolved, Some(Side::Remote)),
            ("same mtime: the larger device wins (ours)", Some(file(2, 6, OURS).by(B)), file(3, 6, THEIRS).by(A), DET, Do::Keep, Want::Nothing, Some(Side::Local)),
            ("same mtime and device: the larger hash wins (ours)", Some(file(3, 6, OURS).by(A)), file(2, 6, THEIRS).by(A), DET, Do::Keep, Want::Nothing, Some(Side::Local)),
            ("same mtime, no devices: the larger hash wins (the peer's)", Some(file(2, 6, OURS)), file(3, 6, THEIRS), DET, Do::CopyThen(Fetch), Want::Resolved, Some(Side::Remote)),
            ("PeerWins: the peer's older edit still takes the name", Some(file(2, 7, OURS).by(A)), file(3, 6, THEIRS).by(B), PEER, Do::CopyThen(Fetch), Want::Resolved, Some(Side::Remote)),
            ("our file against the peer's older dir: the dir wins", Some(file(2, 9, OURS)), dir(5, THEIRS), DET, Do::CopyThen(MakeDir), Want::Resolved, Some(Side::Remote)),
            ("our dir against the peer's newer file: the dir stays", Some(dir(5, OURS)), file(2, 9, THEIRS), DET, Do::Keep, Want::Nothing, Some(Side::Local)),
            ("our dir against the peer's file under PeerWins: our dir is the copy", Some(dir(5, OURS)), file(2, 9, THEIRS), PEER, Do::CopyThen(Fetch), Want::Resolved, Some(Side::Remote)),
            ("our file against the peer's newer symlink", Some(file(2, 5, OURS)), link("t", 6, THEIRS), DET, Do::CopyThen(MakeLink), Want::Resolved, Some(Side::Remote)),
            ("symlink retargeted on both", Some(link("u", 5, OURS)), link("t", 6, THEIRS), DET, Do::CopyThen(MakeLink), Want::Resolved, Some(Side::Remote)),
            // --- rule 3: records from before versions (empty vectors)
            ("both from before versions: equal", Some(file(1, 5, NONE)), file(2, 6, NONE), DET, Do::Keep, Want::Nothing, None),
            ("ours from before versions, the peer's versioned", Some(file(1, 5, NONE)), file(2, 6, THEIRS), DET, Do::Apply(Fetch), Want::Remote, None),
            ("ours from before versions, same content", Some(file(1, 5, NONE)), file(1, 5, THEIRS), DET, Do::Adopt, Want::Remote, None),
            ("the peer's from before versions", Some(file(1, 5, BASE)), file(2, 6, NONE), DET, Do::Keep, Want::Nothing, None),
            ("our tombstone from before versions", Some(gone(5, NONE)), file(1, 6, THEIRS), DET, Do::Apply(Fetch), Want::Remote, None),
        ];
        for (case, local, remote, rule, want_action, want_record, want_conflict) in cases {
            let got = reconcile(local.as_ref(), &remote, rule, UMASK, A);
            let merged = |r: &FileRecord, bump: bool| {
                let mut version = local
                    .as_ref()
                    .map(|l| l.version.clone())
                    .unwrap_or_default();
                version.merge(&remote.version);
                if bump {
                    version.bump(A);
                }
                FileRecord {
                    version,
                    ..r.clone()
                }
            };
            let loser = |side| match side {
                Side::Local => &remote,
                Side::Remote => local.as_ref().expect("a conflict has a local side"),
            };
            let copy_of = |r: &FileRecord| conflict_name(&r.path, r.mtime_ns, r.modified_by);
            let action = match want_action {
                Do::Keep => Action::Keep,
                Do::Adopt => Action::Adopt,
                Do::Touch => Action::Touch,
                Do::Apply(a) => Action::Apply(a),
                Do::CopyThen(then) => Action::ConflictCopy {
                    copy: copy_of(local.as_ref().expect("a copy of something")),
                    then,
                },
            };
            let record = match want_record {
                Want::Nothing => None,
                Want::Remote => Some(remote.clone()),
                Want::Resolved => Some(merged(&remote, true)),
                Want::Joined => Some(merged(local.as_ref().expect("local"), false)),
            };
            let conflict = want_conflict.map(|winner| Conflict {
                path: remote.path.clone(),
                copy: copy_of(loser(winner)),
                winner,
                local: local.clone().expect("local"),
                remote: remote.clone(),
            });
            assert_eq!(
                got,
                Decision {
                    action,
                    record,
                    conflict
                },
                "{case}"
            );
            // What the brief promises of every stored record: newer than both sides.
            if let Some(stored) = &got.record {
                assert_eq!(
                    stored.version.compare(&remote.version),
                    if matches!(want_record, Want::Remote) {
                        Causality::Equal
                    } else {
                        Causality::Newer
                    },
                    "{case}: version"
                );
                if let Some(l) = &local {
                    assert_eq!(
                        stored.version.compare(&l.version),
                        Causality::Newer,
                        "{case}: newer than ours"
                    );
                }
            }
        }
    }

    /// Found by the three-replica model: two replicas resolved different pairs of concurrent
    /// records whose histories join to the same vector ({0:2, 1:1, 2:1}). Replica 0 took a file
    /// over its own deletion (the modification wins), replica 2 the later of two deletions. As
    /// bare joins both stored that one version for different records: equal versions, so
    /// neither ever took the other's, and a later edit of either would have replaced the other
    /// unseen. A resolution that changes what a replica holds is a change of its own.
    #[test]
    fn different_resolutions_never_share_a_version() {
        let [d0, d1, d2] = DEVICES;
        let deleted_on_0 = gone(11, &[(d0, 2)]).by(d0);
        let revived_on_1 = file(3, 3, &[(d0, 1), (d1, 1), (d2, 1)]).by(d0);
        let deleted_on_2 = gone(8, &[(d1, 1), (d2, 1)]).by(d1);
        let on_0 = reconcile(Some(&deleted_on_0), &revived_on_1, DET, UMASK, d0);
        let on_2 = reconcile(Some(&deleted_on_2), &deleted_on_0, DET, UMASK, d2);
        assert_eq!(
            on_0.action,
            Action::Apply(Fetch),
            "the file beats the deletion"
        );
        assert_eq!(on_2.action, Action::Adopt, "the later deletion");
        let (r0, r2) = (on_0.record.expect("stored"), on_2.record.expect("stored"));
        assert_ne!(shown(&r0), shown(&r2));
        assert_ne!(r0.version, r2.version, "one version for two records");
        // Replicas holding them settle on one (the file), whichever side looks.
        for (here, there, device) in [(&r0, &r2, d0), (&r2, &r0, d2)] {
            let d = reconcile(Some(here), there, DET, UMASK, device);
            let held = d.record.clone().unwrap_or_else(|| here.clone());
            assert!(!held.deleted, "{d:?}");
            assert_eq!(held.hash, r0.hash, "{d:?}");
        }
    }

    #[test]
    fn umask_narrows_the_modes_the_disk_gets() {
        // (case, kind, local mode or none, remote mode, remote executable, umask, action, stored mode)
        #[rustfmt::skip]
        let cases = [
            ("0666 is 0644 here under 022", EntryKind::File, Some(0o644), 0o666, false, 0o022, Do::Adopt, 0o644),
            ("0600 is narrower than our 0644", EntryKind::File, Some(0o644), 0o600, false, 0o022, Do::Touch, 0o600),
            ("setuid never travels", EntryKind::File, Some(0o755), 0o4755, true, 0o022, Do::Adopt, 0o755),
            ("umask 002 keeps group write", EntryKind::File, Some(0o664), 0o664, false, 0o002, Do::Adopt, 0o664),
            ("our 0644 under umask 002 is not the peer's 0664", EntryKind::File, Some(0o644), 0o664, false, 0o002, Do::Touch, 0o664),
            ("umask 077 narrows a fetched file", EntryKind::File, None, 0o755, true, 0o077, Do::Apply(Fetch), 0o700),
            ("mode 0000 is a real mode, never widened", EntryKind::File, None, 0, false, 0o022, Do::Apply(Fetch), 0),
            ("a 0777 dir is 0755 here", EntryKind::Dir, Some(0o755), 0o777, true, 0o022, Do::Adopt, 0o755),
            ("an old dir record without mode", EntryKind::Dir, None, 0, false, 0o022, Do::Apply(MakeDir), 0o755),
        ];
        for (case, kind, local_mode, remote_mode, executable, umask, want, want_mode) in cases {
            let local = local_mode.map(|m| record(kind, 5, BASE).mode(m));
            let remote = FileRecord {
                mode: remote_mode,
                executable,
                ..record(kind, 5, THEIRS)
            };
            let got = reconcile(local.as_ref(), &remote, DET, umask, A);
            let want = match want {
                Do::Adopt => Action::Adopt,
                Do::Touch => Action::Touch,
                Do::Apply(a) => Action::Apply(a),
                other => unreachable!("{other:?}"),
            };
            assert_eq!(got.action, want, "{case}");
            let stored = got.record.expect("a stored record");
            assert_eq!(stored.mode, want_mode, "{case}");
            assert_eq!(stored.executable, want_mode & 0o111 != 0, "{case}");
        }
    }

    #[test]
    fn conflict_name_table() {
        let dev = Some(DeviceId(0x0123_4567_89AB_CDEF));
        let leap = 1_709_251_199 * S; // 2024-02-29 23:59:59 UTC
                                      // (case, path, mtime ns, device, name)
        #[rustfmt::skip]
        let cases = [
            ("epoch, no device", "notes.txt", 0, None, "notes.sync-conflict-19700101-000000-0000000.txt"),
            ("leap day, no ext", "Makefile", leap, dev, "Makefile.sync-conflict-20240229-235959-0123456"),
            ("the last nanosecond of the leap day", "Makefile", leap + S - 1, dev, "Makefile.sync-conflict-20240229-235959-0123456"),
            ("the day after", "Makefile", leap + S, dev, "Makefile.sync-conflict-20240301-000000-0123456"),
            ("dotfile has no ext", ".bashrc", leap, dev, ".bashrc.sync-conflict-20240229-235959-0123456"),
            ("dotfile with an ext", ".config.json", leap, dev, ".config.sync-conflict-20240229-235959-0123456.json"),
            ("nested dir, multi-dot: the last dot", "a/b/c.tar.gz", leap, dev, "a/b/c.tar.sync-conflict-20240229-235959-0123456.gz"),
            ("a dot in the dir is not an ext", "v1.2/README", leap, dev, "v1.2/README.sync-conflict-20240229-235959-0123456"),
            ("a dotfile in a dir", "home/.profile", leap, dev, "home/.profile.sync-conflict-20240229-235959-0123456"),
            ("a trailing dot is an empty ext", "x.", leap, dev, "x.sync-conflict-20240229-235959-0123456."),
            ("one nanosecond before the epoch", "f", -1, None, "f.sync-conflict-19691231-235959-0000000"),
            ("one day before the epoch", "f", -86_400 * S, None, "f.sync-conflict-19691231-000000-0000000"),
            ("a leap century", "f", 951_825_600 * S, None, "f.sync-conflict-20000229-120000-0000000"),
            ("2100 is not a leap year", "f", 4_107_456_000 * S, None, "f.sync-conflict-21000228-000000-0000000"),
            ("and March follows February 28th", "f", 4_107_542_400 * S, None, "f.sync-conflict-21000301-000000-0000000"),
            ("the latest time", "f", i64::MAX, None, "f.sync-conflict-22620411-234716-0000000"),
            ("the earliest time", "f", i64::MIN, None, "f.sync-conflict-16770921-001243-0000000"),
            ("a high device", "f", 0, Some(DeviceId(u64::MAX)), "f.sync-conflict-19700101-000000-FFFFFFF"),
            ("a copy of a copy", "f.sync-conflict-19700101-000000-0000000.txt", leap, dev, "f.sync-conflict-19700101-000000-0000000.sync-conflict-20240229-235959-0123456.txt"),
        ];
        for (case, path, mtime_ns, device, want) in cases {
            assert_eq!(conflict_name(path, mtime_ns, device), want, "{case}");
            assert!(is_conflict_name(want), "{case}: recognised");
            assert!(
                !is_conflict_name(path) || case == "a copy of a copy",
                "{case}"
            );
        }
    }

    #[test]
    fn is_conflict_name_table() {
        // (name, is a conflict copy)
        #[rustfmt::skip]
        let cases = [
            ("notes.txt", false),
            ("", false),
            ("a.sync-conflict-.txt", false),
            ("a.sync-conflict-2024022-235959-0123456", false),
            ("a.sync-conflict-20240229-23595-0123456", false),
            ("a.sync-conflict-20240229-235959-012345", false),
            ("a.sync-conflict-20240229-235959-012345f", false),
            ("a.sync-conflict-20240229-235959-0123456x", false),
            ("a.sync-conflict-20240229_235959-0123456", false),
            ("dir.sync-conflict-20240229-235959-0123456/file", false),
            ("a-sync-conflict-20240229-235959-0123456", false),
            ("a.sync-conflict-20240229-235959-0123456", true),
            ("a.sync-conflict-20240229-235959-0123456.txt", true),
            ("x/y/a.sync-conflict-20240229-235959-ABCDEF0.tar.gz", true),
            (".sync-conflict-20240229-235959-0123456", true),
            ("a.sync-conflict-junk.sync-conflict-20240229-235959-0123456", true),
        ];
        for (name, want) in cases {
            assert_eq!(is_conflict_name(name), want, "{name:?}");
        }
    }

    /// Month lengths, written out independently of `civil_from_days`.
    fn days_in_month(year: i64, month: u32) -> u32 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    proptest! {
        /// Every day is followed by the next calendar day (anchored at 1970-01-01 by the
        /// table), over the whole range of i64 nanoseconds.
        #[test]
        fn days_follow_the_calendar(days in -106_752i64..106_751) {
            let (y, m, d) = civil_from_days(days);
            let next = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            prop_assert_eq!(civil_from_days(days + 1), next);
        }

        /// A copy stays in its folder, is a new name, and is recognised as a copy.
        #[test]
        fn conflict_names_stay_in_the_folder(
            dir in "([a-z.]{1,4}/){0,2}",
            name in "\\.?[a-z]{0,3}(\\.[a-z]{0,2}){0,2}",
            mtime_ns: i64,
            device in proptest::option::of(any::<u64>().prop_map(DeviceId)),
        ) {
            prop_assume!(!name.is_empty());
            let path = format!("{dir}{name}");
            let copy = conflict_name(&path, mtime_ns, device);
            prop_assert!(copy.starts_with(&dir));
            prop_assert!(!copy[dir.len()..].contains('/'));
            prop_assert_ne!(&copy, &path);
            prop_assert!(is_conflict_name(&copy));
            prop_assert!(!is_conflict_name(&path));
        }
    }

    // --- property tests of the rule itself

    const DEVICES: [DeviceId; 3] = [
        DeviceId(0x1111_0000_0000_0000),
        DeviceId(0x2222_0000_0000_0000),
        DeviceId(0x3333_0000_0000_0000),
    ];

    /// A record from a small space, so that equal contents, mtimes and devices are common.
    fn small_record() -> impl Strategy<Value = FileRecord> {
        (
            0..4u8,
            0..3u8,
            0..3i64,
            proptest::option::of(0..3usize),
            any::<bool>(),
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(kind, h, mtime, by, exec, deleted)| {
                let mut r = match kind {
                    0 | 1 => file(h, mtime, NONE).mode(if exec { 0o755 } else { 0o644 }),
                    2 => dir(mtime, NONE).mode(if exec { 0o755 } else { 0o700 }),
                    _ => link(&format!("t{h}"), mtime, NONE),
                };
                r.modified_by = by.map(|i| DEVICES[i]);
                r.deleted = deleted;
                r
            })
    }

    /// Two concurrent versions: a common history, then changes on each side that the other
    /// has not seen (device 0 only on the first, device 1 only on the second).
    fn concurrent_versions() -> impl Strategy<Value = (VersionVector, VersionVector)> {
        (
            proptest::collection::btree_map(0..3usize, 0..4u64, 0..3),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(base, a_more, b_more)| {
                let base = VersionVector(base.into_iter().map(|(d, c)| (DEVICES[d], c)).collect());
                let (mut a, mut b) = (base.clone(), base);
                a.bump(DEVICES[0]);
                b.bump(DEVICES[1]);
                if a_more {
                    a.bump(DEVICES[2]);
                }
                if b_more {
                    b.bump(DEVICES[2]);
                }
                (a, b)
            })
    }

    /// A record without what only one replica knows (its version and store bookkeeping).
    fn shown(r: &FileRecord) -> FileRecord {
        FileRecord {
            version: VersionVector::default(),
            inode: 0,
            sequence: 0,
            ..r.clone()
        }
    }

    proptest! {
        /// Deterministic is antisymmetric: of two records that differ in anything the disk
        /// shows, exactly one wins, whichever side looks.
        #[test]
        fn the_deterministic_winner_is_antisymmetric(x in small_record(), y in small_record()) {
            let (xy, yx) = (winner(DET, &x, &y), winner(DET, &y, &x));
            if shown(&x) != shown(&y) {
                prop_assert_ne!(xy, yx);
            }
        }

        /// Each replica reconciling the other's concurrent record picks the same content and
        /// metadata and reports the same conflict with opposite winners. Records the same in
        /// all the disk shows are joined on both sides; otherwise exactly one side gives up its
        /// record and stores the winner as a change of its own (the joined version bumped for
        /// it). One more exchange leaves both holding the identical record.
        #[test]
        fn replicas_agree_on_concurrent_changes(
            a in small_record(),
            b in small_record(),
            (va, vb) in concurrent_versions(),
        ) {
            let a = FileRecord { version: va, ..a };
            let b = FileRecord { version: vb, ..b };
            prop_assert_eq!(a.version.compare(&b.version), Causality::Concurrent);
            let mut merged = a.version.clone();
            merged.merge(&b.version);

            // Replica a is device 0, b device 1 (see `concurrent_versions`).
            let (dev_a, dev_b) = (DEVICES[0], DEVICES[1]);
            let on_a = reconcile(Some(&a), &b, DET, 0, dev_a);
            let on_b = reconcile(Some(&b), &a, DET, 0, dev_b);
            match (&on_a.conflict, &on_b.conflict) {
                (None, None) => {}
                (Some(x), Some(y)) => {
                    prop_assert_eq!(&x.copy, &y.copy);
                    prop_assert_ne!(x.winner, y.winner);
                }
                _ => prop_assert!(false, "one side saw a conflict: {:?} / {:?}", on_a, on_b),
            }
            let bumped = |device| merged.clone().bump(device).clone();
            match (&on_a.record, &on_b.record) {
                (Some(x), Some(y)) => {
                    prop_assert_eq!(shown(&a), shown(&b), "both changed: {:?} / {:?}", on_a, on_b);
                    prop_assert_eq!(&x.version, &merged);
                    prop_assert_eq!(&y.version, &merged);
                }
                (Some(x), None) => prop_assert_eq!(&x.version, &bumped(dev_a)),
                (None, Some(y)) => prop_assert_eq!(&y.version, &bumped(dev_b)),
                // Both keeping would leave the replicas concurrent for ever.
                (None, None) => prop_assert!(false, "both kept: {:?} / {:?}", a, b),
            }
            let held_a = on_a.record.clone().unwrap_or_else(|| a.clone());
            let held_b = on_b.record.clone().unwrap_or_else(|| b.clone());
            prop_assert_eq!(shown(&held_a), shown(&held_b));

            // The side that kept its record takes the other's merged one without a conflict.
            let settle = |held: FileRecord, other: &FileRecord, device| -> Result<FileRecord, TestCaseError> {
                let d = reconcile(Some(&held), other, DET, 0, device);
                prop_assert!(matches!(d.action, Action::Adopt | Action::Touch | Action::Keep), "{:?}", d);
                prop_assert!(d.conflict.is_none());
                Ok(d.record.unwrap_or(held))
            };
            let final_a = settle(held_a, &held_b, dev_a)?;
            let final_b = settle(held_b, &final_a, dev_b)?;
            prop_assert_eq!(&final_a, &final_b);
        }
    }

    // --- the model: three replicas, local edits, pairwise syncs

    /// Paths edits pick from (besides what a replica already holds: conflict copies).
    const PATHS: [&str; 3] = ["a", "b.txt", "d/c"];
    /// Rounds of all-pairs syncing after which the replicas must be quiet.
    const MAX_FINAL_ROUNDS: usize = 8;

    #[derive(Debug, Clone)]
    enum Step {
        /// New content at a path: a file, a dir or a symlink (`kind` 0..=1, 2, 3).
        Write {
            at: usize,
            path: usize,
            kind: u8,
            exec: bool,
        },
        Delete {
            at: usize,
            path: usize,
        },
        /// Metadata only: a new mtime, the exec bit flipped.
        Touch {
            at: usize,
            path: usize,
        },
        /// `to` reconciles every record of `from`.
        Sync {
            to: usize,
            from: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let at = 0..3usize;
        let path = 0..8usize;
        prop_oneof![
            3 => (at.clone(), path.clone(), 0..4u8, any::<bool>())
                .prop_map(|(at, path, kind, exec)| Step::Write { at, path, kind, exec }),
            1 => (at.clone(), path.clone()).prop_map(|(at, path)| Step::Delete { at, path }),
            1 => (at, path).prop_map(|(at, path)| Step::Touch { at, path }),
            3 => (0..3usize, 0..3usize).prop_map(|(to, from)| Step::Sync { to, from }),
        ]
    }

    #[derive(Default)]
    struct Model {
        replicas: [BTreeMap<String, FileRecord>; 3],
        /// One tick per step: the mtime of what it writes, and what makes contents unique.
        clock: i64,
        /// Every file or symlink content ever written.
        written: HashSet<Hash>,
        /// Contents a user replaced or deleted while their replica showed them.
        superseded: HashSet<Hash>,
    }

    impl Model {
        fn path(&self, at: usize, pick: usize) -> String {
            let mut paths: BTreeSet<String> = PATHS.iter().map(|p| p.to_string()).collect();
            paths.extend(self.replicas[at].keys().cloned());
            paths
                .into_iter()
                .nth(pick % 8)
                .unwrap_or_else(|| PATHS[pick % 3].to_owned())
        }

        fn live(&self, at: usize, path: &str) -> Option<&FileRecord> {
            self.replicas[at].get(path).filter(|r| !r.deleted)
        }

        /// A local change at `path`: the next version of whatever was there. Unless only the
        /// metadata changed, the content the user saw there is superseded.
        fn change(&mut self, at: usize, path: &str, new: FileRecord) {
            if let Some(old) = self.live(at, path).filter(|r| r.kind != EntryKind::Dir) {
                if new.deleted || !same_content(old, &new) {
                    self.superseded.insert(old.hash);
                }
            }
            let mut version = self.replicas[at]
                .get(path)
                .map(|r| r.version.clone())
                .unwrap_or_default();
            version.bump(DEVICES[at]);
            let record = FileRecord {
                path: path.to_owned(),
                version,
                modified_by: Some(DEVICES[at]),
                mtime_ns: self.clock * S,
                ..new
            };
            self.replicas[at].insert(path.to_owned(), record);
        }

        fn run(&mut self, step: &Step) {
            self.clock += 1;
            match *step {
                Step::Write {
                    at,
                    path,
                    kind,
                    exec,
                } => {
                    let path = self.path(at, path);
                    let mut tick = [0u8; 32];
                    tick[..8].copy_from_slice(&self.clock.to_be_bytes());
                    let new = match kind {
                        0 | 1 => FileRecord {
                            hash: Hash(tick),
                            ..file(0, 0, NONE)
                        }
                        .mode(if exec { 0o755 } else { 0o644 }),
                        2 => dir(0, NONE),
                        _ => link(&format!("t{}", self.clock), 0, NONE),
                    };
                    if new.kind != EntryKind::Dir {
                        self.written.insert(new.hash);
                    }
                    self.change(at, &path, new);
                }
                Step::Delete { at, path } => {
                    let path = self.path(at, path);
                    if let Some(old) = self.live(at, &path).cloned() {
                        self.change(
                            at,
                            &path,
                            FileRecord {
                                deleted: true,
                                ..old
                            },
                        );
                    }
                }
                Step::Touch { at, path } => {
                    let path = self.path(at, path);
                    if let Some(old) = self
                        .live(at, &path)
                        .filter(|r| r.kind == EntryKind::File)
                        .cloned()
                    {
                        let mode = old.mode ^ 0o111;
                        self.change(at, &path, old.mode(mode));
                    }
                }
                Step::Sync { to, from } => {
                    if to != from {
                        self.sync(to, from);
                    }
                }
            }
        }

        /// Replicas holding equal versions of a path hold the same record: otherwise neither
        /// would ever take the other's, and an edit of one (newer than both) would replace the
        /// other unseen.
        fn versions_name_one_record(&self) -> Result<(), TestCaseError> {
            for (i, here) in self.replicas.iter().enumerate() {
                for there in &self.replicas[i + 1..] {
                    for (path, r) in here {
                        if let Some(t) = there.get(path).filter(|t| t.version == r.version) {
                            prop_assert_eq!(shown(r), shown(t), "one version, two records");
                        }
                    }
                }
            }
            Ok(())
        }

        /// `to` reconciles each of `from`'s records; "apply" copies the record, and a conflict
        /// copy becomes a new local record (what the next scan of the loser's side finds).
        /// Returns whether `to` changed.
        fn sync(&mut self, to: usize, from: usize) -> bool {
            let theirs: Vec<FileRecord> = self.replicas[from].values().cloned().collect();
            let before = self.replicas[to].clone();
            for remote in &theirs {
                let local = self.replicas[to].get(&remote.path).cloned();
                let d = reconcile(local.as_ref(), remote, DET, UMASK, DEVICES[to]);
                // A copy the store already knows is not made again (see `Action::ConflictCopy`):
                // the loser goes to the archive, which the model does not keep.
                let copy = match &d.action {
                    Action::ConflictCopy { copy, .. } if !self.replicas[to].contains_key(copy) => {
                        Some(copy)
                    }
                    _ => None,
                };
                if let Some(copy) = copy {
                    let loser = local.clone().expect("a conflict copy moves our entry");
                    let record = FileRecord {
                        path: copy.clone(),
                        version: VersionVector::default().bump(DEVICES[to]).clone(),
                        modified_by: Some(DEVICES[to]),
                        ..loser
                    };
                    self.replicas[to].insert(copy.clone(), record);
                }
                if let Some(stored) = d.record {
                    self.replicas[to].insert(stored.path.clone(), stored);
                }
            }
            self.replicas[to] != before
        }
    }

    proptest! {
        /// Random local edits and pairwise syncs on three replicas, then all-pairs rounds until
        /// quiet: every replica holds the same records, and every content ever written is live
        /// somewhere (at its path or a conflict copy) unless a user replaced or deleted it.
        #[test]
        fn three_replicas_converge_and_lose_nothing(steps in proptest::collection::vec(step(), 0..40)) {
            let mut model = Model::default();
            for s in &steps {
                model.run(s);
                model.versions_name_one_record()?;
            }
            let mut quiet = false;
            for _ in 0..MAX_FINAL_ROUNDS {
                let mut changed = false;
                for to in 0..3 {
                    for from in 0..3 {
                        if to != from {
                            changed |= model.sync(to, from);
                        }
                    }
                }
                model.versions_name_one_record()?;
                if !changed {
                    quiet = true;
                    break;
                }
            }
            prop_assert!(quiet, "still changing after {} rounds", MAX_FINAL_ROUNDS);
            prop_assert_eq!(&model.replicas[0], &model.replicas[1]);
            prop_assert_eq!(&model.replicas[0], &model.replicas[2]);
            let live: HashSet<Hash> = model.replicas[0]
                .values()
                .filter(|r| !r.deleted && r.kind != EntryKind::Dir)
                .map(|r| r.hash)
                .collect();
            for content in &model.written {
                prop_assert!(
                    live.contains(content) || model.superseded.contains(content),
                    "lost {:?}", content
                );
            }
        }
    }
}
