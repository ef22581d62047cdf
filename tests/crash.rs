//! kill -9 during two-way syncs of a mixed tree (a few hundred small files in folders, a few
//! MB-size files, edits on both sides): first of the client at random moments (several seeds),
//! then, separately, of the server. After each kill every file at a final path is a complete
//! version that was written (none torn), the killed side's store opens and scans, and after a
//! restart the two folders converge with no temp file left.
//!
//! The server and the client run in child processes: this test binary re-executes itself
//! (`--exact crash_child`) with `SSP_CRASH_CHILD` saying "serve FOLDER PORT" or "sync FOLDER
//! PORT", so that a real process can be SIGKILLed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{temp_files, SECRET};

/// The variable telling a re-executed test binary what to run.
const CHILD_ENV: &str = "SSP_CRASH_CHILD";

/// Clients killed at random moments, one per seed.
const CLIENT_SEEDS: [u64; 4] = [1, 2, 3, 4];
/// Servers killed at random moments, one per seed.
const SERVER_SEEDS: [u64; 2] = [11, 12];

/// The child side: does nothing unless re-executed by a test below.
#[test]
fn crash_child() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    let words: Vec<&str> = what.split(' ').collect();
    let [verb, folder, port] = words[..] else {
        panic!("bad {CHILD_ENV}: {what}");
    };
    let port: u16 = port.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        match verb {
            "serve" => {
                let server =
                    ssp::Server::new(ssp::ServerConfig::new(SECRET, folder, "127.0.0.1", port));
                let addr = server.bind().await.unwrap();
                println!("READY {}", addr.port());
                server.serve().await.unwrap();
            }
            "sync" => {
                let client =
                    ssp::Client::new(ssp::ClientConfig::new(SECRET, folder, "127.0.0.1", port));
                // Said in one line: a killed server makes this fail on purpose.
                if let Err(e) = client.sync(None).await {
                    eprintln!("sync child: {e}");
                    std::process::exit(1);
                }
                println!("SYNCED");
            }
            _ => panic!("bad {CHILD_ENV}: {what}"),
        }
    });
}

/// A child process, SIGKILLed when dropped (so a failing test leaves no server behind).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This test binary run as a child doing `what`; its stdout is piped if `piped`.
fn spawn(what: String, piped: bool) -> Proc {
    let stdout = if piped { Stdio::piped() } else { Stdio::null() };
    Proc(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, what)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// A server child on `folder` (on a port of its choosing); returns it with its port once it
/// listens.
fn serve(folder: &Path) -> (Proc, u16) {
    let mut child = spawn(format!("serve {} 0", folder.display()), true);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("the server child said READY").unwrap();
        // libtest may have printed the test's name on this line first.
        if let Some((_, p)) = line.split_once("READY ") {
            break p.trim().parse().unwrap();
        }
    };
    // Keep reading, so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

/// Longest a sync child may take before the test calls it hung.
const SYNC_DEADLINE: Duration = Duration::from_secs(60);

/// Waits for `child` to exit by itself (killing it after [`SYNC_DEADLINE`]); its status.
fn wait(child: &mut Proc) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(t.elapsed() < SYNC_DEADLINE, "a sync child hung");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Syncs `folder` with the server on `port` in a child, to the end; panics if it fails.
fn sync_to_end(folder: &Path, port: u16) -> Duration {
    let t = Instant::now();
    let status = wait(&mut spawn(
        format!("sync {} {port}", folder.display()),
        false,
    ));
    assert!(status.success(), "sync child: {status:?}");
    t.elapsed()
}

/// SIGKILLs `child` (if it still runs) and reaps it; true if it was killed, false if it had
/// finished already.
fn kill(child: &mut Proc) -> bool {
    let done = child.0.try_wait().unwrap().is_some();
    let _ = child.0.kill();
    let status = child.0.wait().unwrap();
    !done && !status.success()
}

/// A small deterministic generator (xorshift), so a seed replays its case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The two folders and every content ever written into either.
struct Case {
    server_dir: tempfile::TempDir,
    client_dir: tempfile::TempDir,
    /// Hashes of every version written (the only contents a final path may hold).
    written: HashSet<blake3::Hash>,
    /// Distinct mtimes, a second apart, so every edit is visible to the scan.
    clock: SystemTime,
    rng: Rng,
}

const SMALL_FILES: u64 = 200;
const FOLDERS: u64 = 12;
const BIG_FILES: u64 = 3;
const BIG_FILE_BYTES: usize = 1 << 20;

fn small_path(i: u64) -> String {
    // Three levels: d0/…, d3/sub/…, d7/sub/deeper/….
    match (i % FOLDERS) % 3 {
        0 => format!("d{}/s{i}.txt", i % FOLDERS),
        1 => format!("d{}/sub/s{i}.txt", i % FOLDERS),
        _ => format!("d{}/sub/deeper/s{i}", i % FOLDERS),
    }
}

fn big_path(i: u64) -> String {
    format!("big/b{i}.bin")
}

impl Case {
    fn new(seed: u64) -> Case {
        Case {
            server_dir: tempfile::tempdir().unwrap(),
            client_dir: tempfile::tempdir().unwrap(),
            written: HashSet::new(),
            clock: SystemTime::now() - Duration::from_secs(24 * 3600),
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D)),
        }
    }

    fn s(&self) -> PathBuf {
        self.server_dir.path().to_path_buf()
    }

    fn c(&self) -> PathBuf {
        self.client_dir.path().to_path_buf()
    }

    /// Writes a new version of `rel` under `root`: `tag` then filler up to `len` bytes.
    fn write(&mut self, root: &Path, rel: &str, tag: &str, len: usize) {
        let mut content = format!("{tag} {rel}\n").into_bytes();
        let mut x = self.rng.next() | 1;
        while content.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            content.extend_from_slice(&x.to_le_bytes());
        }
        content.truncate(len.max(tag.len() + rel.len() + 2));
        self.written.insert(blake3::hash(&content));
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &content).unwrap();
        self.clock += Duration::from_secs(1);
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(self.clock).unwrap();
    }

    /// The starting tree, on the server.
    fn populate(&mut self) {
        let s = self.s();
        for i in 0..SMALL_FILES {
            let len = 16 + self.rng.below(2000) as usize;
            self.write(&s, &small_path(i), "v0", len);
        }
        for i in 0..BIG_FILES {
            self.write(&s, &big_path(i), "v0", BIG_FILE_BYTES);
        }
        std::fs::create_dir_all(s.join("empty/folder")).unwrap();
    }

    /// Edits on both sides, so the next sync moves changes both ways (and meets conflicts):
    /// each side rewrites some small files and one big file, adds files and deletes a few.
    fn edit_both(&mut self, round: u64) {
        for (side, root) in [("S", self.s()), ("C", self.c())] {
            let tag = format!("{side}{round}");
            for _ in 0..30 {
                let i = self.rng.below(SMALL_FILES);
                let len = 16 + self.rng.below(3000) as usize;
                self.write(&root, &small_path(i), &tag, len);
            }
            let b = self.rng.below(BIG_FILES);
            let len = BIG_FILE_BYTES + self.rng.below(1 << 16) as usize;
            self.write(&root, &big_path(b), &tag, len);
            for k in 0..5 {
                let len = 100 + self.rng.below(100) as usize;
                self.write(&root, &format!("new/{tag}-{k}.txt"), &tag, len);
            }
            for _ in 0..3 {
                let i = self.rng.below(SMALL_FILES);
                let _ = std::fs::remove_file(root.join(small_path(i)));
            }
        }
    }

    /// Every file at a final path under `root` (outside `.ssp`, not a temp file) is a
    /// complete version that was written.
    fn assert_no_torn_file(&self, root: &Path, when: &str) {
        for (rel, content) in files(root) {
            if rel.contains(ssp::fs::PART_PREFIX) {
                continue;
            }
            assert!(
                self.written.contains(&blake3::hash(&content)),
                "{when}: {rel} ({} bytes) is no version that was written",
                content.len()
            );
        }
    }
}

/// Every file under `root` outside `.ssp`: relative path → content.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || e.file_name() != ".ssp")
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The store of `root` (no process has it open) opens, keeps its device ID (if known) and
/// scans; returns the device ID.
fn assert_store_opens(
    root: &Path,
    device: Option<ssp::index::DeviceId>,
    when: &str,
) -> ssp::index::DeviceId {
    let folder = ssp::sync::Folder::open(root, false)
        .unwrap_or_else(|e| panic!("{when}: the store of {} opens: {e}", root.display()));
    if let Some(d) = device {
        assert_eq!(folder.device(), d, "{when}: the device ID survived");
    }
    folder
        .scan(
            false,
            ssp::sync::days(ssp::sync::DEFAULT_TOMBSTONE_KEEP_DAYS),
        )
        .unwrap_or_else(|e| panic!("{when}: {} scans: {e}", root.display()));
    folder.device()
}

fn device(root: &Path) -> ssp::index::DeviceId {
    ssp::sync::Folder::open(root, false).unwrap().device()
}

/// Syncs to the end until both folders hold the same files (three syncs at most), then
/// checks that no temp file is left on either side.
fn converge(case: &Case, port: u16, when: &str) {
    let (s, c) = (case.s(), case.c());
    for _ in 0..3 {
        sync_to_end(&c, port);
        if files(&s) == files(&c) {
            break;
        }
    }
    let (fs, fc) = (files(&s), files(&c));
    let differ: Vec<&String> = fs
        .keys()
        .chain(fc.keys())
        .filter(|k| fs.get(*k) != fc.get(*k))
        .collect();
    assert!(differ.is_empty(), "{when}: the sides differ at {differ:?}");
    case.assert_no_torn_file(&s, when);
    for root in [&s, &c] {
        let left = temp_files(root);
        assert!(left.is_empty(), "{when}: temp files remain: {left:?}");
    }
}

/// A case with the starting tree on the server, synced to the client, then one round of edits
/// synced (timed); the server runs.
fn started(seed: u64) -> (Case, Proc, u16, Duration) {
    let mut case = Case::new(seed);
    case.populate();
    let (server, port) = serve(&case.s());
    sync_to_end(&case.c(), port);
    // Kill moments are drawn from the length of a sync like the ones killed (the first one
    // writes every file, and its length says little about them).
    case.edit_both(0);
    let full = sync_to_end(&case.c(), port);
    sync_to_end(&case.c(), port);
    eprintln!("seed {seed}: an edit sync took {full:?}");
    (case, server, port, full)
}

#[test]
fn a_client_killed_mid_sync_leaves_no_torn_file_and_recovers() {
    let (mut case, mut server, port, full) = started(0);
    let client_device = device(&case.c());
    let mut killed_mid_sync = 0;
    for seed in CLIENT_SEEDS {
        let when = format!("client killed, seed {seed}");
        case.rng = Rng(case.rng.0 ^ seed);
        case.edit_both(seed);
        let delay = kill_moment(&mut case.rng, full);
        let mut child = spawn(format!("sync {} {port}", case.c().display()), false);
        std::thread::sleep(delay);
        let mid = kill(&mut child);
        killed_mid_sync += u32::from(mid);
        eprintln!("{when}: after {delay:?}, mid-sync: {mid}");
        case.assert_no_torn_file(&case.c(), &when);
        case.assert_no_torn_file(&case.s(), &when);
        assert_store_opens(&case.c(), Some(client_device), &when);
        converge(&case, port, &when);
    }
    kill(&mut server);
    assert!(
        killed_mid_sync > 0,
        "no seed killed the client before it finished (a sync takes {full:?})"
    );
}

#[test]
fn a_server_killed_mid_sync_leaves_no_torn_file_and_recovers() {
    let (mut case, mut server, mut port, full) = started(10);
    let mut server_device = None;
    let mut killed_mid_sync = 0;
    for seed in SERVER_SEEDS {
        let when = format!("server killed, seed {seed}");
        case.rng = Rng(case.rng.0 ^ seed);
        case.edit_both(seed);
        let delay = kill_moment(&mut case.rng, full);
        let mut client = spawn(format!("sync {} {port}", case.c().display()), false);
        std::thread::sleep(delay);
        let mid = client.0.try_wait().unwrap().is_none();
        killed_mid_sync += u32::from(mid);
        eprintln!("{when}: after {delay:?}, mid-sync: {mid}");
        kill(&mut server);
        // The client fails (or had finished); either way it exits by itself.
        wait(&mut client);
        case.assert_no_torn_file(&case.s(), &when);
        case.assert_no_torn_file(&case.c(), &when);
        let d = assert_store_opens(&case.s(), server_device, &when);
        server_device = Some(d);
        assert_store_opens(&case.c(), None, &when);
        // A fresh port: the old one may linger in TIME_WAIT.
        (server, port) = serve(&case.s());
        converge(&case, port, &when);
    }
    kill(&mut server);
    assert!(killed_mid_sync > 0, "no seed killed the server mid-sync");
}

/// A random moment to kill at, within the first four fifths of a sync as long as `sync` (a
/// kill after the end tests nothing).
fn kill_moment(rng: &mut Rng, sync: Duration) -> Duration {
    Duration::from_micros(rng.below(sync.as_micros() as u64 * 4 / 5 + 1))
}
