//! The server's folder watch end to end: a watched server walks its folder only when something
//! changed (or records were committed), and its clients still get everything they should.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{tree, write, Running, SECRET};
use ssp::protocol::SyncMode;
use ssp::sync::Folder;
use ssp::{Client, ClientConfig};

async fn sync(folder: &Path, port: u16) {
    let mut c = ClientConfig::new(SECRET, folder, "127.0.0.1", port);
    c.mode = SyncMode::TwoWay;
    Client::new(c).sync(None).await.expect("two-way sync");
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Both folders hold the same files with the same contents.
fn assert_same(a: &Path, b: &Path) {
    assert_eq!(tree(a), tree(b), "same files");
    for f in tree(a) {
        assert_eq!(read(a, &f), read(b, &f), "{f}");
    }
}

/// A running server on a folder holding `files`, and its folder model (shared with the
/// server: one model per folder in the process).
async fn serve(files: &[(&str, &str)]) -> (tempfile::TempDir, Running, Arc<Folder>) {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        write(dir.path(), p, c.as_bytes());
    }
    let server = Running::start(dir.path()).await;
    let folder = Folder::open(dir.path(), false).unwrap();
    (dir, server, folder)
}

const FILES: &[(&str, &str)] = &[("a.txt", "aaaa"), ("b.txt", "bbbb"), ("d/c.txt", "cccc")];

#[tokio::test]
async fn no_op_syncs_against_a_watched_server_walk_its_folder_once() {
    let (s, server, folder) = serve(FILES).await;
    let (c1, c2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sync(c1.path(), server.port).await;
    sync(c1.path(), server.port).await;
    // A new client gets the whole folder from the index the first walk left.
    sync(c2.path(), server.port).await;
    assert_same(s.path(), c1.path());
    assert_same(s.path(), c2.path());
    assert_eq!(folder.full_scans(), 1, "three rounds, one walk");
    server.stop().await;
}

#[tokio::test]
async fn changes_made_on_the_server_right_before_a_sync_reach_the_client_in_that_sync() {
    let (s, server, folder) = serve(FILES).await;
    let c = tempfile::tempdir().unwrap();
    sync(c.path(), server.port).await;
    assert_eq!(folder.full_scans(), 1);
    // No pause between the changes and the sync: the watch's barrier must catch them.
    write(s.path(), "d/new.txt", b"new on the server");
    std::fs::write(s.path().join("a.txt"), b"AAAA").unwrap(); // same size
    std::fs::remove_file(s.path().join("b.txt")).unwrap();
    sync(c.path(), server.port).await;
    assert_same(s.path(), c.path());
    assert_eq!(read(c.path(), "d/new.txt"), "new on the server");
    assert_eq!(read(c.path(), "a.txt"), "AAAA");
    assert!(!c.path().join("b.txt").exists(), "the deletion");
    assert_eq!(folder.full_scans(), 2);
    // And nothing since: no walk.
    sync(c.path(), server.port).await;
    assert_eq!(folder.full_scans(), 2);
    server.stop().await;
}

#[tokio::test]
async fn what_a_client_pushed_reaches_the_next_client() {
    let (s, server, folder) = serve(&[("same.txt", "same bytes")]).await;
    // The server's copy is newer than the client's identical one: the server keeps its file
    // as it is and only stores the versions merged (a commit with no change on disk, which
    // the watch cannot see: the commit itself must make the next round walk).
    let newer = SystemTime::now();
    let older = newer - Duration::from_secs(3600);
    let set_mtime = |p: &Path, t| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap()
    };
    set_mtime(&s.path().join("same.txt"), newer);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sync(b.path(), server.port).await; // the server's first walk, cached
    write(a.path(), "same.txt", b"same bytes");
    set_mtime(&a.path().join("same.txt"), older);
    // A takes the server's record (merged, and bumped by A as the side that gave way); its
    // second sync gives that newer record back to the server.
    sync(a.path(), server.port).await;
    sync(a.path(), server.port).await;
    sync(b.path(), server.port).await;
    // B holds the record the server stored after A's sync: both histories.
    let version = |root: &Path| {
        let records = Folder::open(root, false).unwrap().records().unwrap();
        records["same.txt"].version.clone()
    };
    let on_server = version(s.path());
    let a_device = Folder::open(a.path(), false).unwrap().device();
    assert!(on_server.0.contains_key(&a_device), "{on_server:?}");
    assert_eq!(version(b.path()), on_server, "B got the merged versions");
    assert_eq!(folder.full_scans(), 2, "the commit made B's round walk");

    // A file pushed by A (written on the server by its round) reaches B too.
    write(a.path(), "pushed.txt", b"from a");
    sync(a.path(), server.port).await;
    assert_eq!(read(s.path(), "pushed.txt"), "from a");
    sync(b.path(), server.port).await;
    assert_same(s.path(), b.path());
    server.stop().await;
}

#[tokio::test]
async fn a_failed_watch_falls_back_to_walking_every_round() {
    let (s, server, folder) = serve(FILES).await;
    let c = tempfile::tempdir().unwrap();
    sync(c.path(), server.port).await;
    sync(c.path(), server.port).await;
    assert_eq!(folder.full_scans(), 1, "watched");
    folder.fail_watch("test: the watch is gone");
    for round in 2..=3 {
        sync(c.path(), server.port).await;
        assert_eq!(folder.full_scans(), round, "round {round} walked");
    }
    write(s.path(), "late.txt", b"after the watch failed");
    sync(c.path(), server.port).await;
    assert_same(s.path(), c.path());
    assert_eq!(
        folder.watch().map_err(|e| e.to_string()),
        Ok(()),
        "started once"
    );
    server.stop().await;
}
