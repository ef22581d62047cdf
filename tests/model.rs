//! A model-based property test of two-way sync on real folders: three clients (A, B, C) and
//! the folder of the server S they all sync through. A case is a random short history of
//! writes, deletions, renames and folder deletions on any of the four folders (edits on the server's own folder
//! are legal), interleaved with two-way syncs of a random client. After a final round (every
//! client syncs; at most three rounds) the test checks that
//! - the four folders hold identical trees (files, folders and contents, conflict copies too);
//! - no content ever written is lost: it is in some folder (at any path) or in some folder's
//!   `.ssp/versions/`, unless the test itself replaced or deleted it on every folder it was
//!   ever seen in (the folders are looked at after every step);
//! - no `.ssp-part-` temp file remains anywhere.
//!
//! The default case count fits in about a minute on a two-core machine; `SSP_MODEL_CASES=N`
//! runs `N` cases instead (e.g. `SSP_MODEL_CASES=2000 cargo test --test model`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{temp_files, Running, SECRET};
use proptest::prelude::*;
use ssp::{Client, ClientConfig};

/// Cases run by default (see the module doc for raising it).
const DEFAULT_CASES: u32 = 200;

/// The paths operations touch: top-level files and files one and two folders deep, so writes
/// create folders and renames move files between them.
const PATHS: [&str; 4] = ["a.txt", "b", "d/c.txt", "d/e/f.md"];

/// Replica 0 is the server's folder; 1..=3 are the clients'.
const REPLICAS: usize = 4;
const NAMES: [&str; REPLICAS] = ["S", "A", "B", "C"];

/// One step of a history.
#[derive(Debug, Clone)]
enum Op {
    /// Create or overwrite `PATHS[path]` on `replica` with fresh content of about `len` bytes.
    Write {
        replica: usize,
        path: usize,
        len: usize,
    },
    /// Delete `PATHS[path]` on `replica` if it is there.
    Delete { replica: usize, path: usize },
    /// Rename `PATHS[from]` to `PATHS[to]` on `replica` (replacing what is there) if it exists.
    Rename {
        replica: usize,
        from: usize,
        to: usize,
    },
    /// Delete the folder `d` (and all in it) on `replica` if it is there.
    DeleteFolder { replica: usize },
    /// Two-way sync of client `client` (1..=3) with the server.
    Sync { client: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let replica = 0..REPLICAS;
    let path = 0..PATHS.len();
    prop_oneof![
        // Lengths from a small range, so that modifications often keep the size and only the
        // mtime (set explicitly, see `write_content`) tells the scan.
        4 => (replica.clone(), path.clone(), 0usize..6)
            .prop_map(|(replica, path, len)| Op::Write { replica, path, len }),
        2 => (replica.clone(), path.clone()).prop_map(|(replica, path)| Op::Delete { replica, path }),
        2 => (replica, path.clone(), path)
            .prop_map(|(replica, from, to)| Op::Rename { replica, from, to }),
        1 => (0..REPLICAS).prop_map(|replica| Op::DeleteFolder { replica }),
        4 => (1..REPLICAS).prop_map(|client| Op::Sync { client }),
    ]
}

/// What the test knows about one content it wrote.
#[derive(Debug, Default)]
struct Written {
    /// The replica it was written on.
    replica: usize,
    /// The step it was written at.
    step: usize,
    /// The replicas it was ever seen on (at any path), checked after every step.
    seen_on: BTreeSet<usize>,
    /// The replicas on which the test itself replaced or deleted it.
    destroyed_on: BTreeSet<usize>,
}

impl Written {
    /// Gone by the user's own hand: on every replica it ever reached, the test replaced or
    /// deleted it (a causally later edit), so no sync had to keep it.
    fn destroyed_by_the_test(&self) -> bool {
        self.seen_on.is_subset(&self.destroyed_on)
    }
}

/// The history's bookkeeping: every content written, where it was seen and destroyed.
struct Model {
    written: BTreeMap<Vec<u8>, Written>,
    /// A fake clock for mtimes: every write gets a distinct one, a second apart.
    clock: SystemTime,
}

impl Model {
    fn new() -> Model {
        Model {
            written: BTreeMap::new(),
            clock: SystemTime::now() - Duration::from_secs(24 * 3600),
        }
    }

    /// The test is about to replace or delete what `root/rel` (on `replica`) holds.
    fn destroying(&mut self, replica: usize, root: &Path, rel: &str) {
        let Ok(content) = std::fs::read(root.join(rel)) else {
            return;
        };
        if let Some(w) = self.written.get_mut(&content) {
            w.destroyed_on.insert(replica);
        }
    }

    /// Notes which replica holds which content now.
    fn observe(&mut self, roots: &[&Path]) {
        for (i, root) in roots.iter().enumerate() {
            for content in tree(root).into_values().flatten() {
                if let Some(w) = self.written.get_mut(&content) {
                    w.seen_on.insert(i);
                }
            }
        }
    }
}

/// Writes `content` at `root/rel` (creating folders) with an mtime from the model's clock.
fn write_content(model: &mut Model, root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    model.clock += Duration::from_secs(1);
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(model.clock).unwrap();
}

/// Every file and folder under `root` outside `.ssp`: path → `Some(content)` for files,
/// `None` for folders.
fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || e.file_name() != ".ssp")
        .map(|e| {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap();
            let rel = rel.to_string_lossy().into_owned();
            let body = if e.file_type().is_dir() {
                None
            } else {
                Some(std::fs::read(e.path()).unwrap())
            };
            (rel, body)
        })
        .collect()
}

/// Every file's content under `root`, `.ssp/versions` included.
fn contents(root: &Path) -> BTreeSet<Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            let rel = e.path().strip_prefix(root).unwrap();
            !rel.starts_with(".ssp") || rel.starts_with(".ssp/versions")
        })
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect()
}

fn show(t: &BTreeMap<String, Option<Vec<u8>>>) -> String {
    t.iter()
        .map(|(p, c)| match c {
            Some(c) => format!("{p}={}", String::from_utf8_lossy(c)),
            None => format!("{p}/"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs one history; `Err` says what went wrong (with the folders' trees).
async fn run(ops: Vec<Op>) -> Result<(), String> {
    let dirs: Vec<tempfile::TempDir> = (0..REPLICAS)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let roots: Vec<&Path> = dirs.iter().map(|d| d.path()).collect();
    // The server and client B plan and apply the peer's index in segments of two and three
    // entries (through the store), as a million-file index is; A and C hold it whole.
    let mut config = ssp::ServerConfig::new(SECRET, roots[0], "127.0.0.1", 0);
    config.segment_entries = 3;
    let server = Running::start_with(config).await;
    let clients: Vec<Client> = (1..REPLICAS)
        .map(|i| {
            let mut c = ClientConfig::new(SECRET, roots[i], "127.0.0.1", server.port);
            // Deleting every file is a legal history here, not an unmounted drive.
            c.allow_mass_delete = true;
            if NAMES[i] == "B" {
                c.segment_entries = 2;
            }
            Client::new(c)
        })
        .collect();
    let mut model = Model::new();
    let mut log = Vec::new();
    let result = async {
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Write { replica, path, len } => {
                    let rel = PATHS[path];
                    model.destroying(replica, roots[replica], rel);
                    let content = format!("{}{step}:{}", NAMES[replica], "x".repeat(len));
                    write_content(&mut model, roots[replica], rel, content.as_bytes());
                    model.written.insert(
                        content.into_bytes(),
                        Written {
                            replica,
                            step,
                            ..Written::default()
                        },
                    );
                }
                Op::Delete { replica, path } => {
                    let rel = PATHS[path];
                    model.destroying(replica, roots[replica], rel);
                    let _ = std::fs::remove_file(roots[replica].join(rel));
                }
                Op::DeleteFolder { replica } => {
                    // Everything in it goes by the user's hand, conflict copies included.
                    let doomed: Vec<String> = tree(roots[replica])
                        .into_keys()
                        .filter(|p| p.starts_with("d/"))
                        .collect();
                    for rel in &doomed {
                        model.destroying(replica, roots[replica], rel);
                    }
                    let _ = std::fs::remove_dir_all(roots[replica].join("d"));
                }
                Op::Rename { replica, from, to } => {
                    let (from, to) = (PATHS[from], PATHS[to]);
                    let root = roots[replica];
                    if from != to && root.join(from).is_file() {
                        model.destroying(replica, root, to);
                        std::fs::create_dir_all(root.join(to).parent().unwrap()).unwrap();
                        std::fs::rename(root.join(from), root.join(to)).unwrap();
                    }
                }
                Op::Sync { client } => {
                    let outcome = clients[client - 1].sync(None).await;
                    outcome.map_err(|e| format!("step {step}: sync of {}: {e}", NAMES[client]))?;
                }
            }
            model.observe(&roots);
            log.push(format!("{step}: {op:?}"));
        }
        // The final round: every client syncs until all four agree (three rounds at most).
        for round in 0..3 {
            for (i, c) in clients.iter().enumerate() {
                c.sync(None)
                    .await
                    .map_err(|e| format!("final round {round}: sync of {}: {e}", NAMES[i + 1]))?;
            }
            model.observe(&roots);
            let first = tree(roots[0]);
            if roots[1..].iter().all(|r| tree(r) == first) {
                break;
            }
        }
        let trees: Vec<_> = roots.iter().map(|r| tree(r)).collect();
        if trees[1..].iter().any(|t| *t != trees[0]) {
            let all: Vec<String> = (0..REPLICAS)
                .map(|i| format!("{}: {}", NAMES[i], show(&trees[i])))
                .collect();
            return Err(format!("the replicas differ:\n{}", all.join("\n")));
        }
        let kept: BTreeSet<Vec<u8>> = roots.iter().flat_map(|r| contents(r)).collect();
        for (content, w) in &model.written {
            if !w.destroyed_by_the_test() && !kept.contains(content) {
                return Err(format!(
                    "{:?} (written on {} at step {}) is nowhere, not even in versions; \
                     final tree: {}",
                    String::from_utf8_lossy(content),
                    NAMES[w.replica],
                    w.step,
                    show(&trees[0])
                ));
            }
        }
        let temps: Vec<String> = roots.iter().flat_map(|r| temp_files(r)).collect();
        if !temps.is_empty() {
            return Err(format!("temp files remain: {temps:?}"));
        }
        Ok(())
    }
    .await;
    for c in &clients {
        c.disconnect(None).await;
    }
    server.stop().await;
    result.map_err(|e| format!("{e}\nhistory:\n{}", log.join("\n")))
}

fn cases() -> u32 {
    std::env::var("SSP_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Shrinking re-runs whole histories on disk; a few hundred tries find a short one.
        max_shrink_iters: 400,
        ..ProptestConfig::default()
    })]

    /// Any history of edits on any replica and syncs in any order ends, after a final round,
    /// with four identical folders, no content lost and no temp file left.
    #[test]
    fn random_histories_converge_and_lose_nothing(ops in prop::collection::vec(op(), 4..=12)) {
        let outcome = runtime().block_on(run(ops));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// Found by the model (reported, not fixed here): the server deletes a folder while a client
/// edits a file in it. The edit beats the deletion, so the folder must survive; instead the
/// client's sync fails ("d: a folder with files in it is in the way").
#[tokio::test]
async fn an_edit_inside_a_folder_deleted_on_the_server_keeps_the_folder() {
    let (s, a) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::write(s.path(), "d/c.txt", b"v1");
    common::write(s.path(), "keep", b"k");
    let server = Running::start(s.path()).await;
    let client = common::client_of(a.path(), server.port);
    client.sync(None).await.unwrap();
    std::fs::remove_dir_all(s.path().join("d")).unwrap();
    std::fs::write(a.path().join("d/c.txt"), b"v2, edited").unwrap();
    let mut errors = Vec::new();
    for round in 0..2 {
        if let Err(e) = client.sync(None).await {
            errors.push(format!("sync {round}: {e}"));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        std::fs::read(s.path().join("d/c.txt")).unwrap(),
        b"v2, edited"
    );
    server.stop().await;
}

/// Found by the model: a conflict is resolved after the indexes crossed, on the side whose
/// version loses (it makes the copy). The other side used to see the copy only at the next
/// sync, so a client that had synced before needed a third sync; a chain of two conflicts
/// (the seed in `model.proptest-regressions`) outlasted the final rounds. One sync now leaves
/// both sides of a conflict holding both versions, whichever side lost.
#[tokio::test]
async fn one_sync_leaves_both_sides_of_a_conflict_holding_both_versions() {
    // (case, the server's edit is the newer one: the client's version loses)
    let cases = [("the client loses", true), ("the server loses", false)];
    for (case, server_newer) in cases {
        let (s, a) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        common::write(s.path(), "notes.txt", b"base");
        let server = Running::start(s.path()).await;
        let client = common::client_of(a.path(), server.port);
        client.sync(None).await.unwrap();
        let mut model = Model::new();
        let (first, second) = if server_newer {
            (a.path(), s.path())
        } else {
            (s.path(), a.path())
        };
        write_content(&mut model, first, "notes.txt", b"older edit");
        write_content(&mut model, second, "notes.txt", b"newer edit");
        client.sync(None).await.unwrap();
        assert_eq!(client.report().conflicts.len(), 1, "{case}");
        let (on_s, on_a) = (tree(s.path()), tree(a.path()));
        assert_eq!(
            on_s,
            on_a,
            "{case}:\nS: {}\nA: {}",
            show(&on_s),
            show(&on_a)
        );
        let mut kept: Vec<Vec<u8>> = on_s.into_values().flatten().collect();
        kept.sort();
        assert_eq!(
            kept,
            [b"newer edit".to_vec(), b"older edit".to_vec()],
            "{case}"
        );
        client.disconnect(None).await;
        server.stop().await;
    }
}
