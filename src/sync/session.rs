//! One sync round over a [`Link`], the same code on both ends: exchange SYNC_REQUESTs (modes
//! and device IDs), scan, exchange indexes, reconcile each path of the peer's index with ours
//! (`index::reconcile`), apply the result (conflict copies, folders, symlinks, metadata,
//! fetches through the write stage, deletions into versions), then exchange SYNC_COMPLETE.
//!
//! Each side only ever changes its own folder: what the other side must apply, it pulls.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::folder::Folder;
use super::incoming::Remote;
use super::link::{Indexed, Link};
use super::pull::{
    apply_local, delete_local, emit_final, fetch_all, find_sources, receive_index, LocalPlan,
    PlanTally, PullHooks, PullLimits, SegmentOf, Wire,
};
use crate::error::{Error, Result};
use crate::fs::{
    clashes, fold_key, folds_to_itself, to_wire, umask, windows_problem, ScanResult, Skipped,
};
use crate::index::{reconcile, Action, Conflict, ConflictRule, DeviceId, FileRecord};
use crate::progress::TransferCounters;
use crate::protocol::{
    ErrorCode, FileIndex, Message, SyncComplete, SyncMode, SyncRequest, INDEX_BATCH_ENTRIES,
    MAX_KNOWN_PEERS, SCAN_HEARTBEAT_INTERVAL_MS,
};

/// How one side takes part in rounds (from its own config).
#[derive(Debug, Clone)]
pub(crate) struct RoundConfig {
    pub chunk_size: usize,
    pub limits: PullLimits,
    /// Let a scan or a peer's index delete every file of the folder.
    pub allow_mass_delete: bool,
    pub tombstone_keep: Duration,
    /// How long replaced and deleted files are kept in `.ssp/versions/` (`None`: not kept).
    pub versions_keep: Option<Duration>,
}

/// What one round did on this side.
#[derive(Debug, Default, Clone)]
pub(crate) struct RoundOutcome {
    pub files_received: u64,
    pub bytes_received: u64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub unchanged: u64,
    pub deleted: u64,
    /// Files written from content already here (renames, copies) instead of fetched.
    pub copied_locally: u64,
    pub conflicts: Vec<Conflict>,
    /// Entries not synced, with why (ours from the scan, the peer's from planning).
    pub skipped: Vec<Skipped>,
    /// Entries synced with a caveat (a name Windows cannot hold).
    pub warnings: Vec<Skipped>,
    /// Local changes this round's scan found.
    pub local_changes: usize,
    /// (path, reason) of changes that failed.
    pub failures: Vec<(String, String)>,
    /// Changes this round had to apply here (fetches, deletions, folders, metadata, ...).
    pub changes: u64,
    /// The peer's device ID.
    pub peer_device: Option<crate::index::DeviceId>,
}

/// Runs one round as the client: asks for `mode`.
pub(crate) async fn client_round(
    link: &mut Link,
    folder: &Arc<Folder>,
    mode: SyncMode,
    cfg: &RoundConfig,
    hooks: &PullHooks<'_>,
) -> Result<RoundOutcome> {
    let patience = cfg.limits.progress_timeout;
    let known = known_peers(folder).await?;
    link.send(Message::SyncRequest(SyncRequest {
        mode,
        device: folder.device(),
        read_only: false,
        allow_mass_delete: cfg.allow_mass_delete,
        known: known.into_iter().take(MAX_KNOWN_PEERS).collect(),
    }))
    .await?;
    let reply = match link.next(patience, "the server's SYNC_REQUEST").await? {
        Message::SyncRequest(r) => r,
        m => {
            let e = Error::protocol(format!("expected SYNC_REQUEST, got {:?}", m.message_type()));
            link.fail(ErrorCode::BadMessage, e.to_string()).await;
            return Err(e);
        }
    };
    let i_pull = mode.client_pulls();
    let peer_pulls = mode.server_pulls() && !reply.read_only;
    let peer = Peer {
        device: reply.device,
        knows: reply.known.get(&folder.device()).copied().unwrap_or(0),
    };
    let mut out = round(link, folder, i_pull, peer_pulls, peer, cfg, hooks).await?;
    out.peer_device = Some(reply.device);
    if reply.read_only && mode.server_pulls() {
        note_read_only(&mut out);
    }
    Ok(out)
}

/// Runs one round as the server, answering the client's `request`.
pub(crate) async fn server_round(
    link: &mut Link,
    folder: &Arc<Folder>,
    request: &SyncRequest,
    read_only: bool,
    cfg: &RoundConfig,
    hooks: &PullHooks<'_>,
) -> Result<RoundOutcome> {
    if read_only && request.mode == SyncMode::Push {
        let why = "this server is read-only: it takes no changes (sync in pull or two-way mode)";
        link.fail(ErrorCode::ReadOnly, why).await;
        return Err(Error::Remote {
            code: "read_only".into(),
            message: why.into(),
        });
    }
    if request.known.len() > MAX_KNOWN_PEERS {
        let e = Error::protocol(format!(
            "a SYNC_REQUEST naming more than {MAX_KNOWN_PEERS} peers"
        ));
        link.fail(ErrorCode::BadMessage, e.to_string()).await;
        return Err(e);
    }
    let ours = known_peers(folder).await?;
    let known = ours
        .get(&request.device)
        .map(|&seq| (request.device, seq))
        .into_iter()
        .collect();
    link.send(Message::SyncRequest(SyncRequest {
        mode: request.mode,
        device: folder.device(),
        read_only,
        allow_mass_delete: false,
        known,
    }))
    .await?;
    let mut cfg = cfg.clone();
    cfg.allow_mass_delete |= request.allow_mass_delete;
    let cfg = &cfg;
    let i_pull = request.mode.server_pulls() && !read_only;
    let peer_pulls = request.mode.client_pulls();
    let peer = Peer {
        device: request.device,
        knows: request.known.get(&folder.device()).copied().unwrap_or(0),
    };
    let mut out = round(link, folder, i_pull, peer_pulls, peer, cfg, hooks).await?;
    out.peer_device = Some(request.device);
    Ok(out)
}

/// What the folder knows of each peer's index (blocking store reads, off the runtime).
async fn known_peers(folder: &Arc<Folder>) -> Result<std::collections::BTreeMap<DeviceId, u64>> {
    let f = Arc::clone(folder);
    tokio::task::spawn_blocking(move || f.known_peers())
        .await
        .map_err(|e| Error::Store(e.to_string()))?
}

/// A two-way client against a read-only server: what we changed does not reach it. Said, not
/// silent.
fn note_read_only(out: &mut RoundOutcome) {
    if out.local_changes > 0 {
        out.skipped.push(Skipped {
            path: String::new(),
            reason: format!(
                "the server is read-only: {} change(s) made here since the last sync were not \
                 sent to it",
                out.local_changes
            ),
        });
    }
}

/// The other end of a round.
#[derive(Debug, Clone, Copy)]
struct Peer {
    device: crate::index::DeviceId,
    /// The sequence up to which it applied our index: we send only records changed since.
    knows: u64,
}

/// The round both ends run once the modes are agreed.
async fn round(
    link: &mut Link,
    folder: &Arc<Folder>,
    i_pull: bool,
    peer_pulls: bool,
    peer: Peer,
    cfg: &RoundConfig,
    hooks: &PullHooks<'_>,
) -> Result<RoundOutcome> {
    let patience = cfg.limits.progress_timeout;
    let (mut scan, snapshot) = scan_with_heartbeats(link, folder, cfg).await?;
    tracing::info!(
        "scan: {} live files, {} hashed, {} not synced; the peer {}",
        scan.live_files,
        scan.hashed,
        scan.skipped.len(),
        if peer_pulls {
            "pulls from us"
        } else {
            "takes nothing"
        }
    );
    let mut out = RoundOutcome {
        skipped: scan.skipped.clone(),
        local_changes: scan.versioned,
        ..Default::default()
    };
    // Our index is complete, for the peer, only up to the first record held back (so a held
    // record is offered again once its clash is gone).
    let names = check_local_names(&scan.odd_names, &snapshot, &mut out)?;
    let complete_to = names.first_held.map_or(scan.sequence, |seq| {
        seq.saturating_sub(1).min(scan.sequence)
    });
    // Live files of ours that this round may change or keep.
    let live = scan.live_files.saturating_sub(names.held_files);
    // What the peer may request from us: our live files as indexed.
    let files = Arc::new(Indexed::new(snapshot, names.held));
    *super::lock(&link.offered) = if peer_pulls {
        Arc::clone(&files)
    } else {
        Arc::default()
    };
    // Send ours and receive theirs at once: both may be large, and neither side may wait for
    // the other to finish sending before it reads.
    let send_index = tokio::task::spawn_blocking({
        let (files, sender) = (Arc::clone(&files), link.sender());
        let (knows, sequence) = (peer.knows, scan.sequence);
        let device = peer_pulls.then_some(peer.device);
        move || send_index(&files, &sender, device, knows, sequence)
    });
    let (sent, remote) = tokio::join!(send_index, receive_index(link, folder, &cfg.limits));
    let remote = remote?;
    if let Err(e) = sent
        .map_err(|e| Error::Store(e.to_string()))
        .and_then(|r| r)
    {
        link.fail(
            ErrorCode::Io,
            format!("the peer cannot read its index: {e}"),
        )
        .await;
        return Err(e);
    }
    let mut peer_done: Option<SyncComplete> = None;
    let skipped_before = out.skipped.len();
    if i_pull {
        let local = &*files;
        let ignore = folder.ignore_rules()?;
        let dropped = check_peer_names(&remote, local, &scan.odd_names, &mut out)?;
        let planner = Planner {
            local,
            remote: &remote,
            dropped: &dropped,
            rule: if peer_pulls {
                ConflictRule::Deterministic
            } else {
                ConflictRule::PeerWins
            },
            ignore: &ignore,
            mask: umask(),
            us: folder.device(),
            peer: peer.device,
        };
        let parts = std::mem::take(&mut scan.parts);
        let mut pull = Pulling {
            link,
            folder,
            parts: &parts,
            cfg,
            hooks,
            peer_done: &mut peer_done,
            out: &mut out,
        };
        if remote.spilled() {
            pull.in_segments(&planner, live).await?;
        } else {
            pull.whole(&planner, live).await?;
        }
    }
    link.send(Message::SyncComplete(SyncComplete {
        files: out.files_received,
        bytes: out.bytes_received,
        failed: out.failures.len() as u64,
        sequence: complete_to,
    }))
    .await?;
    let done = loop {
        if let Some(done) = peer_done.take() {
            break done;
        }
        match link.next(patience, "the peer to finish").await? {
            Message::SyncComplete(c) => peer_done = Some(c),
            m => {
                let e = Error::protocol(format!(
                    "unexpected {:?} at the end of a round",
                    m.message_type()
                ));
                link.fail(ErrorCode::BadMessage, e.to_string()).await;
                return Err(e);
            }
        }
    };
    // Everything of the peer's index was applied (nothing failed, nothing held back): next
    // round it sends only what changed after this.
    let clean = out.failures.is_empty() && out.skipped.len() == skipped_before;
    if i_pull && clean {
        let f = Arc::clone(folder);
        let (device, seq) = (peer.device, done.sequence);
        tokio::task::spawn_blocking(move || f.set_known(device, seq))
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
    }
    Ok(out)
}

/// What [`check_local_names`] decided.
struct LocalNames {
    /// Paths held back: their records stay here; the peer does not see them.
    held: HashSet<String>,
    /// The lowest sequence among them.
    first_held: Option<u64>,
    /// How many of them are files.
    held_files: usize,
}

/// Names are checked before they travel: a name not in Unicode NFC (the wire's one normal
/// form) or differing from another only in case or normalisation (one file on Windows and
/// macOS) is held back and reported; a name Windows cannot hold is synced with a warning.
///
/// Only the scan's `odd` names can fail a check (see [`crate::fs::is_odd`]); a lowercase
/// ASCII path clashes only with one of them, as its fold key, looked up in `index`.
fn check_local_names(
    odd: &[(String, u64)],
    index: &crate::index::Snapshot,
    out: &mut RoundOutcome,
) -> Result<LocalNames> {
    let mut held: HashMap<String, u64> = HashMap::new();
    for (path, seq) in odd {
        if to_wire(path) != path.as_str() {
            held.insert(path.clone(), *seq);
            out.skipped.push(Skipped {
                path: path.clone(),
                reason: "its name is not in Unicode NFC, the form names travel in (rename it to \
                         sync it)"
                    .into(),
            });
        }
    }
    // The lowercase ASCII paths that are the fold key of an odd name (and live here) are the
    // only others a clash can involve.
    let mut keys: Vec<String> = odd
        .iter()
        .filter(|(p, _)| !folds_to_itself(p))
        .map(|(p, _)| fold_key(p))
        .filter(|k| folds_to_itself(k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut plain: Vec<(String, u64)> = Vec::new();
    for k in keys {
        if let Some(r) = index.get(&k)? {
            if !r.deleted {
                plain.push((k, r.sequence));
            }
        }
    }
    let sequences: HashMap<&str, u64> = odd
        .iter()
        .chain(plain.iter())
        .map(|(p, s)| (p.as_str(), *s))
        .collect();
    let mut candidates: Vec<&str> = odd
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| !folds_to_itself(p) && !held.contains_key(*p))
        .chain(plain.iter().map(|(p, _)| p.as_str()))
        .collect();
    candidates.sort_unstable();
    for clash in clashes(candidates) {
        let (keep, rest) = match clash.paths().split_first() {
            Some(x) => x,
            None => continue,
        };
        for p in rest {
            held.insert(p.clone(), sequences.get(p.as_str()).copied().unwrap_or(0));
            out.skipped.push(Skipped {
                path: p.clone(),
                reason: format!(
                    "differs from {keep:?} only in case or Unicode form: one file on Windows and \
                     macOS, so it is not synced (rename one of them)"
                ),
            });
        }
    }
    for (path, _) in odd.iter().filter(|(p, _)| !held.contains_key(p)) {
        if let Some(why) = windows_problem(path) {
            out.warnings.push(Skipped {
                path: path.clone(),
                reason: format!("synced, but cannot exist on Windows: {why}"),
            });
        }
    }
    let first_held = held.values().copied().min();
    let mut held_files = 0;
    for p in held.keys() {
        if index
            .get(p)?
            .is_some_and(|r| r.kind == crate::index::EntryKind::File)
        {
            held_files += 1;
        }
    }
    Ok(LocalNames {
        held: held.into_keys().collect(),
        first_held,
        held_files,
    })
}

/// Picks (and reports) peer entries whose names are not NFC or would clash here with another
/// name (case or normalisation), so none is ever written over another: the returned paths
/// are left out of the plan. `odd` are our live paths that may clash ([`crate::fs::is_odd`]).
fn check_peer_names(
    remote: &Remote,
    local: &Indexed,
    odd: &[(String, u64)],
    out: &mut RoundOutcome,
) -> Result<HashSet<String>> {
    let mut drop: HashSet<String> = HashSet::new();
    if remote.is_empty() {
        return Ok(drop);
    }
    // Each folded name (case and Unicode form) and the path that holds it: ours first, then
    // the peer's in its (sorted) order; a later path with a taken key would clobber it.
    // Only keys of names with uppercase or non-ASCII letters can be shared by two paths (see
    // `folds_to_itself`): those keys, and the paths holding them, are all that is tracked.
    let ours_odd = || {
        odd.iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| !folds_to_itself(p))
    };
    let mut keys: HashSet<String> = ours_odd().map(fold_key).collect();
    for r in remote.iter()? {
        let r = r?;
        if !r.deleted && !folds_to_itself(&r.path) {
            keys.insert(fold_key(&r.path));
        }
    }
    let may_clash = |p: &str| !keys.is_empty() && (!folds_to_itself(p) || keys.contains(p));
    // Ours: the odd names (held ones included) and the plain paths that are one of the keys.
    let mut taken: HashMap<String, String> = HashMap::new();
    let mut plain: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| folds_to_itself(k))
        .collect();
    plain.sort_unstable();
    for k in plain {
        if local.get(k)?.is_some_and(|r| !r.deleted) {
            taken.insert(k.to_owned(), k.to_owned());
        }
    }
    for p in ours_odd() {
        taken.insert(fold_key(p), p.to_owned());
    }
    for r in remote.iter()? {
        let r = r?;
        // Held back here: whatever the peer has at that name waits until it is renamed.
        let dropped = if to_wire(&r.path) != r.path.as_str() || local.is_held(&r.path) {
            true
        } else if r.deleted || !may_clash(&r.path) {
            false
        } else {
            match taken.get(&fold_key(&r.path)) {
                Some(p) => *p != r.path,
                None => {
                    taken.insert(fold_key(&r.path), r.path.clone());
                    false
                }
            }
        };
        if r.deleted {
            if dropped {
                drop.insert(r.path);
            }
            continue;
        }
        if dropped {
            out.skipped.push(Skipped {
                reason: "the peer's name is not NFC or differs from another only in case or \
                         Unicode form; not written, so no file is clobbered"
                    .into(),
                path: r.path.clone(),
            });
            drop.insert(r.path);
        } else if let Some(why) = windows_problem(&r.path) {
            if !local.contains_key(r.path.as_str())? {
                out.warnings.push(Skipped {
                    path: r.path.clone(),
                    reason: format!("synced, but cannot exist on Windows: {why}"),
                });
            }
        }
    }
    Ok(drop)
}

/// Sends our index to a peer that pulls (`peer`; `None`: an empty index), from a blocking
/// thread: only the records changed since `knows`, the sequence up to which it applied ours
/// (everything when it claims more than our `sequence`, which a lost store causes), never
/// one it gave us itself.
fn send_index(
    files: &Indexed,
    sender: &tokio::sync::mpsc::Sender<Message>,
    peer: Option<DeviceId>,
    knows: u64,
    sequence: u64,
) -> Result<()> {
    let send = |entries: Vec<crate::protocol::IndexEntry>, last: bool| {
        sender
            .blocking_send(Message::FileIndex(FileIndex { entries, last }))
            .is_ok()
    };
    let Some(peer) = peer.filter(|_| knows != sequence) else {
        // Nothing changed since the peer's last round (or it takes nothing): one empty batch.
        send(Vec::new(), true);
        return Ok(());
    };
    let mut batch = Vec::with_capacity(INDEX_BATCH_ENTRIES);
    for r in files.records()? {
        let r = r?;
        if (r.sequence > knows || knows > sequence) && r.origin != Some(peer) {
            batch.push(r.to_entry());
            let full = batch.len() == INDEX_BATCH_ENTRIES;
            let next = || Vec::with_capacity(INDEX_BATCH_ENTRIES);
            if full && !send(std::mem::replace(&mut batch, next()), false) {
                return Ok(());
            }
        }
    }
    send(batch, true);
    Ok(())
}

/// Decides paths of the peer's index against ours.
struct Planner<'a> {
    local: &'a Indexed,
    remote: &'a Remote,
    /// Paths left out ([`check_peer_names`]).
    dropped: &'a HashSet<String>,
    rule: ConflictRule,
    ignore: &'a crate::fs::IgnoreRules,
    mask: u32,
    us: DeviceId,
    peer: DeviceId,
}

impl Planner<'_> {
    /// Decides each of `records` (the peer's, in order) and hands every change to `each`
    /// (our record, the action, what the path becomes, whether a conflict copy's name is
    /// taken). Conflicts found go to `conflicts` when given (once per round).
    fn each(
        &self,
        records: impl Iterator<Item = Result<FileRecord>>,
        mut conflicts: Option<&mut Vec<Conflict>>,
        mut each: impl FnMut(Option<FileRecord>, Action, FileRecord, bool),
    ) -> Result<()> {
        for r in records {
            let r = r?;
            // Ignored here: neither fetched nor deleted, whatever the peer did.
            if self.dropped.contains(&r.path)
                || self
                    .ignore
                    .is_ignored(&r.path, r.kind == crate::index::EntryKind::Dir)
            {
                continue;
            }
            let here = self.local.get(&r.path)?;
            let d = reconcile(here.as_ref(), &r, self.rule, self.mask, self.us);
            if let (Some(c), Some(cs)) = (d.conflict, conflicts.as_deref_mut()) {
                cs.push(c);
            }
            match (d.action, d.record) {
                (Action::Keep, _) | (_, None) => {}
                (action, Some(mut record)) => {
                    // Conflict copies the peer already has (made there in an earlier round):
                    // ours would land on the same name with the same loser, so ours goes into
                    // versions instead.
                    let copy_taken = match &action {
                        Action::ConflictCopy { copy, .. } => {
                            self.remote.contains(copy)? || self.local.contains_key(copy)?
                        }
                        _ => false,
                    };
                    // Taken as the peer sent it: no need to send it back to that peer.
                    if record.version == r.version {
                        record.origin = Some(self.peer);
                    }
                    each(here, action, record, copy_taken);
                }
            }
        }
        Ok(())
    }
}

/// The applying half of a round on the side that pulls.
struct Pulling<'a, 'h> {
    link: &'a mut Link,
    folder: &'a Arc<Folder>,
    parts: &'a [crate::fs::PartFile],
    cfg: &'a RoundConfig,
    hooks: &'a PullHooks<'h>,
    peer_done: &'a mut Option<SyncComplete>,
    out: &'a mut RoundOutcome,
}

impl Pulling<'_, '_> {
    /// Reports what the plan does and refuses a mass deletion (`live`: our live files).
    async fn check(&mut self, tally: &PlanTally, live: usize) -> Result<()> {
        // Files this round leaves as they are (most of them: the peer sent only its changes).
        self.out.unchanged = live.saturating_sub(tally.changes) as u64;
        self.out.changes = tally.changes as u64;
        tracing::info!(
            "plan: {} of the peer's entries to apply here ({} deletions), {} conflicts, {} unchanged",
            tally.changes,
            tally.deleted_files,
            self.out.conflicts.len(),
            self.out.unchanged
        );
        if let Err(e) = guard_mass_deletion(self.folder, live, tally, self.cfg) {
            self.link.fail(ErrorCode::MassDeletion, e.to_string()).await;
            return Err(e);
        }
        Ok(())
    }

    /// Applies one plan: everything but deletions, then the fetches.
    async fn apply(&mut self, mut plan: LocalPlan, segment: &SegmentOf) -> Result<LocalPlan> {
        let fetches = apply_local(self.folder, &mut plan, self.cfg, self.out).await?;
        let wire = Wire {
            link: self.link,
            peer_done: self.peer_done,
        };
        let fetched = fetch_all(
            wire,
            self.folder,
            fetches,
            self.parts,
            self.cfg,
            self.hooks,
            segment,
        )
        .await?;
        self.out.files_total += fetched.files_total;
        self.out.bytes_total = self.out.bytes_total.saturating_add(fetched.bytes_total);
        self.out.files_received += fetched.received;
        self.out.bytes_received = self.out.bytes_received.saturating_add(fetched.bytes);
        self.out.failures.extend(fetched.failures);
        Ok(plan)
    }

    /// The peer's index fits in memory: planned whole, then applied.
    async fn whole(&mut self, planner: &Planner<'_>, live: usize) -> Result<()> {
        let mut plan = LocalPlan::default();
        planner.each(
            planner.remote.iter()?,
            Some(&mut self.out.conflicts),
            |here, action, record, taken| plan.push(here, action, record, taken),
        )?;
        let tally = plan.tally(live > 0);
        self.check(&tally, live).await?;
        if tally.writes_files {
            // Content already here, by hash: a renamed or copied file is copied, not fetched.
            plan.sources = Arc::new(find_sources(planner.local, &tally.wanted)?);
        }
        let segment = SegmentOf {
            counters: None,
            last: true,
        };
        let plan = self.apply(plan, &segment).await?;
        delete_local(self.folder, plan, self.cfg, self.out).await
    }

    /// A big index (in the store): counted whole (the guard, the totals, the hashes to look
    /// for here), then planned and applied a segment at a time: everything but deletions in
    /// path order (parents first), then deletions from the last path back (deepest first).
    async fn in_segments(&mut self, planner: &Planner<'_>, live: usize) -> Result<()> {
        let mut tally = PlanTally::new(live > 0);
        planner.each(
            planner.remote.iter()?,
            Some(&mut self.out.conflicts),
            |here, action, record, _| tally.add(here.as_ref(), &action, &record),
        )?;
        self.check(&tally, live).await?;
        let sources = Arc::new(if tally.writes_files {
            find_sources(planner.local, &tally.wanted)?
        } else {
            HashMap::new()
        });
        drop(tally.wanted);
        // The whole round must fit on the disk before its first request (each segment checks
        // its own part again); resumable temp files may hold some of it already.
        let root = self.folder.root();
        let resumable: u64 = self
            .parts
            .iter()
            .filter(|p| p.resumable)
            .fold(0, |sum, p| sum.saturating_add(p.len));
        crate::sync::pull::ensure_room(
            root,
            tally.fetch_bytes.saturating_sub(resumable),
            crate::sync::pull::free_bytes(root),
        )?;
        let counters = TransferCounters::new(tally.fetches, tally.fetch_bytes, self.cfg.chunk_size);
        if let Some(sink) = self.hooks.events {
            sink(crate::progress::Event::Progress(
                crate::progress::Progress {
                    phase: "requesting",
                    files_to_request: tally.fetches,
                    files_total: tally.fetches,
                    bytes_total: tally.fetch_bytes,
                    progress: 0.0,
                    ..Default::default()
                },
            ));
        }
        let n = self.cfg.limits.segment_entries.max(1);
        let total = planner.remote.len();
        let (mut cursor, mut seen): (Option<String>, usize) = (None, 0);
        loop {
            let chunk = planner.remote.chunk(cursor.as_deref(), n, false)?;
            let Some(last) = chunk.last() else { break };
            cursor = Some(last.path.clone());
            seen += chunk.len();
            let mut plan = LocalPlan::default();
            plan.sources = Arc::clone(&sources);
            planner.each(
                chunk.into_iter().map(Ok),
                None,
                |here, action, record, taken| {
                    if !matches!(action, Action::Apply(crate::index::Apply::Delete)) {
                        plan.push(here, action, record, taken)
                    }
                },
            )?;
            let segment = SegmentOf {
                counters: Some(Arc::clone(&counters)),
                last: seen >= total,
            };
            self.apply(plan, &segment).await?;
            // What the segment freed goes back to the system, so the next one starts from
            // the same footprint instead of the allocator's high-water mark.
            crate::fs::release_free_memory();
        }
        emit_final(self.hooks, &counters);
        cursor = None;
        loop {
            let chunk = planner.remote.chunk(cursor.as_deref(), n, true)?;
            let Some(last) = chunk.last() else { break };
            cursor = Some(last.path.clone());
            let mut plan = LocalPlan::default();
            planner.each(
                chunk.into_iter().map(Ok),
                None,
                |here, action, record, taken| {
                    if matches!(action, Action::Apply(crate::index::Apply::Delete)) {
                        plan.push(here, action, record, taken)
                    }
                },
            )?;
            delete_local(self.folder, plan, self.cfg, self.out).await?;
        }
        Ok(())
    }
}

/// Refuses a peer index that would delete every file we have (`live` of them) (a peer whose folder vanished
/// and whose own guard was overridden, or a hostile one), unless allowed.
fn guard_mass_deletion(
    folder: &Folder,
    live: usize,
    plan: &PlanTally,
    cfg: &RoundConfig,
) -> Result<()> {
    let deleting = plan.deleted_files;
    if cfg.allow_mass_delete || live == 0 || deleting < live || plan.writes_files {
        return Ok(());
    }
    Err(Error::MassDeletion {
        path: folder.root().to_path_buf(),
        reason: format!("the peer's index deletes all {live} files here"),
    })
}

/// Scans on a blocking thread, sending a HEARTBEAT every [`SCAN_HEARTBEAT_INTERVAL_MS`]
/// meanwhile: the first scan of a big folder hashes for minutes, and the peer's progress
/// timeout must not take that for silence.
async fn scan_with_heartbeats(
    link: &Link,
    folder: &Arc<Folder>,
    cfg: &RoundConfig,
) -> Result<(ScanResult, crate::index::Snapshot)> {
    let f = Arc::clone(folder);
    let (allow, keep, versions) = (cfg.allow_mass_delete, cfg.tombstone_keep, cfg.versions_keep);
    let scan = tokio::task::spawn_blocking(move || {
        if let Some(v) = versions {
            f.prune_versions_if_due(v);
        }
        f.scan(allow, keep)
    });
    let period = Duration::from_millis(SCAN_HEARTBEAT_INTERVAL_MS);
    let out = link.sender();
    let scanned = with_heartbeats(scan, &out, period)
        .await
        .map_err(|e| Error::Store(e.to_string()))?;
    if let Err(e) = &scanned {
        let code = match e {
            Error::MassDeletion { .. } => ErrorCode::MassDeletion,
            _ => ErrorCode::Io,
        };
        link.fail(code, format!("the peer cannot sync: {e}")).await;
    }
    scanned
}

/// Awaits `work`, sending a HEARTBEAT every `period` meanwhile.
pub(crate) async fn with_heartbeats<T>(
    mut work: tokio::task::JoinHandle<T>,
    out: &tokio::sync::mpsc::Sender<Message>,
    period: Duration,
) -> Result<T, tokio::task::JoinError> {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = beat.tick() => {
                // A peer that is gone shows up at the next send; keep working until then.
                let _ = out.send(Message::Heartbeat).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_long_scan_sends_heartbeats_and_a_short_one_none() {
        // (case, scan time, heartbeats at least, at most)
        let table = [("long scan", 400, 1, 9), ("instant scan", 0, 0, 0)];
        for (case, scan_ms, least, most) in table {
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            let scan = tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(scan_ms));
                7
            });
            let got = with_heartbeats(scan, &tx, Duration::from_millis(100)).await;
            assert_eq!(got.unwrap(), 7, "{case}: the scan's result");
            drop(tx);
            let mut beats = 0;
            while let Some(m) = rx.recv().await {
                assert!(matches!(m, Message::Heartbeat), "{case}");
                beats += 1;
            }
            assert!(
                (least..=most).contains(&beats),
                "{case}: {beats} heartbeats"
            );
        }
    }
}
