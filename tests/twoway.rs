//! Two-way sync end to end: a server and clients in this process, each on its own folder.
//! Every rule of the folder model has a case here: changes on either side and both, deletions
//! (kept in versions), conflicts (both versions kept), modes, the read-only server, the
//! mass-deletion guard, the hub, folders, symlinks, ignore rules, one sync per folder.

mod common;

use std::path::Path;

use common::{tree, write, Running, SECRET};
use ssp::protocol::SyncMode;
use ssp::{Client, ClientConfig, ErrorKind, ServerConfig};

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn config(folder: &Path, port: u16, mode: SyncMode) -> ClientConfig {
    let mut c = ClientConfig::new(SECRET, folder, "127.0.0.1", port);
    c.mode = mode;
    c
}

async fn sync_mode(folder: &Path, port: u16, mode: SyncMode) -> ssp::Result<Client> {
    let client = Client::new(config(folder, port, mode));
    client.sync(None).await?;
    Ok(client)
}

async fn sync(folder: &Path, port: u16) -> Client {
    sync_mode(folder, port, SyncMode::TwoWay)
        .await
        .expect("two-way sync")
}

/// Files under `root/.ssp/versions`.
fn versions(root: &Path) -> Vec<String> {
    let v = root.join(".ssp/versions");
    let mut out: Vec<String> = walkdir::WalkDir::new(&v)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(&v)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    out.sort();
    out
}

/// Both folders hold the same files with the same contents.
fn assert_same(a: &Path, b: &Path) {
    assert_eq!(tree(a), tree(b), "same files");
    for f in tree(a) {
        assert_eq!(read(a, &f), read(b, &f), "{f}");
    }
}

struct Pair {
    server_dir: tempfile::TempDir,
    client_dir: tempfile::TempDir,
    server: Running,
}

impl Pair {
    async fn new(files: &[(&str, &str)]) -> Pair {
        Self::with(files, |_| {}).await
    }

    async fn with(files: &[(&str, &str)], tune: impl FnOnce(&mut ServerConfig)) -> Pair {
        let server_dir = tempfile::tempdir().unwrap();
        let client_dir = tempfile::tempdir().unwrap();
        for (p, c) in files {
            write(server_dir.path(), p, c.as_bytes());
        }
        let mut cfg = ServerConfig::new(SECRET, server_dir.path(), "127.0.0.1", 0);
        tune(&mut cfg);
        let server = Running::start_with(cfg).await;
        Pair {
            server_dir,
            client_dir,
            server,
        }
    }

    fn s(&self) -> &Path {
        self.server_dir.path()
    }

    fn c(&self) -> &Path {
        self.client_dir.path()
    }

    async fn sync(&self) -> Client {
        sync(self.c(), self.server.port).await
    }
}

#[tokio::test]
async fn changes_on_either_side_reach_the_other() {
    let p = Pair::new(&[("a.txt", "server a"), ("dir/b.txt", "server b")]).await;
    p.sync().await;
    assert_same(p.s(), p.c());

    // (case, change on the client, change on the server)
    write(p.c(), "new-on-client.txt", b"from the client");
    write(p.s(), "dir/new-on-server.txt", b"from the server");
    std::fs::write(p.c().join("a.txt"), b"client edit of a").unwrap();
    std::fs::write(p.s().join("dir/b.txt"), b"server edit of b").unwrap();
    p.sync().await;
    assert_same(p.s(), p.c());
    assert_eq!(read(p.s(), "new-on-client.txt"), "from the client");
    assert_eq!(read(p.c(), "dir/new-on-server.txt"), "from the server");
    assert_eq!(read(p.s(), "a.txt"), "client edit of a");
    assert_eq!(read(p.c(), "dir/b.txt"), "server edit of b");
    p.server.stop().await;
}

#[tokio::test]
async fn deletions_propagate_both_ways_and_the_old_content_is_kept_in_versions() {
    let p = Pair::new(&[("keep", "k"), ("gone-here", "1"), ("gone-there", "2")]).await;
    p.sync().await;
    std::fs::remove_file(p.c().join("gone-here")).unwrap();
    std::fs::remove_file(p.s().join("gone-there")).unwrap();
    let client = p.sync().await;
    assert_eq!(tree(p.s()), ["keep"]);
    assert_same(p.s(), p.c());
    assert_eq!(
        client.status().stats.files_deleted,
        1,
        "one deletion applied here"
    );
    let (sv, cv) = (versions(p.s()), versions(p.c()));
    assert!(
        sv.len() == 1 && sv[0].starts_with("gone-here~"),
        "the server kept what the client deleted: {sv:?}"
    );
    assert!(
        cv.len() == 1 && cv[0].starts_with("gone-there~"),
        "the client kept what the server deleted: {cv:?}"
    );
    // Nothing comes back on the next sync.
    p.sync().await;
    assert_eq!(tree(p.c()), ["keep"]);
    p.server.stop().await;
}

#[tokio::test]
async fn an_edit_on_both_sides_keeps_both_versions_as_a_conflict_copy() {
    let p = Pair::new(&[("notes.txt", "original")]).await;
    p.sync().await;
    std::fs::write(p.s().join("notes.txt"), b"server version").unwrap();
    std::fs::write(p.c().join("notes.txt"), b"client version, longer").unwrap();
    let client = p.sync().await;
    let report = client.report();
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(client.status().stats.conflicts, 1);
    let copy = report.conflicts[0].copy.clone();
    assert!(
        copy.starts_with("notes.sync-conflict-") && copy.ends_with(".txt"),
        "{copy}"
    );
    // The same sync carried the copy made on one side to the other; a second changes nothing.
    assert_same(p.s(), p.c());
    p.sync().await;
    assert_same(p.s(), p.c());
    let files = tree(p.c());
    assert_eq!(files.len(), 2, "{files:?}");
    let mut contents: Vec<String> = files.iter().map(|f| read(p.c(), f)).collect();
    contents.sort();
    assert_eq!(contents, ["client version, longer", "server version"]);
    p.server.stop().await;
}

#[tokio::test]
async fn a_modification_beats_a_concurrent_deletion_on_either_side() {
    // (case, which side deletes)
    for deleter_is_client in [true, false] {
        let p = Pair::new(&[("f", "v1")]).await;
        p.sync().await;
        let (deleter, editor) = if deleter_is_client {
            (p.c(), p.s())
        } else {
            (p.s(), p.c())
        };
        std::fs::remove_file(deleter.join("f")).unwrap();
        // Keep one file on the deleting side, or the mass-deletion guard (rightly) stops it.
        write(deleter, "other", b"o");
        std::fs::write(editor.join("f"), b"v2 edited").unwrap();
        let client = p.sync().await;
        assert!(client.report().conflicts.is_empty());
        p.sync().await;
        assert_eq!(
            read(p.s(), "f"),
            "v2 edited",
            "deleter is client: {deleter_is_client}"
        );
        assert_same(p.s(), p.c());
        p.server.stop().await;
    }
}

#[tokio::test]
async fn pull_mode_applies_the_servers_changes_and_sends_nothing() {
    let p = Pair::new(&[("shared", "s1"), ("doomed", "d")]).await;
    sync_mode(p.c(), p.server.port, SyncMode::Pull)
        .await
        .unwrap();
    write(p.c(), "mine", b"local only");
    std::fs::write(p.c().join("shared"), b"local edit").unwrap();
    std::fs::write(p.s().join("shared"), b"server edit").unwrap();
    std::fs::remove_file(p.s().join("doomed")).unwrap();
    let client = sync_mode(p.c(), p.server.port, SyncMode::Pull)
        .await
        .unwrap();
    assert!(!p.s().join("mine").exists(), "pull sends nothing");
    assert_eq!(read(p.c(), "shared"), "server edit");
    assert!(!p.c().join("doomed").exists(), "deletions are pulled");
    let c = &client.report().conflicts;
    assert_eq!(
        c.len(),
        1,
        "the local edit became a conflict copy, not lost"
    );
    assert_eq!(read(p.c(), &c[0].copy), "local edit");
    p.server.stop().await;
}

#[tokio::test]
async fn push_mode_is_the_mirror_and_a_read_only_server_refuses_it() {
    let p = Pair::new(&[("s", "server file")]).await;
    write(p.c(), "c", b"client file");
    sync_mode(p.c(), p.server.port, SyncMode::Push)
        .await
        .unwrap();
    assert_eq!(read(p.s(), "c"), "client file");
    assert!(!p.c().join("s").exists(), "push takes nothing");
    p.server.stop().await;

    let ro = Pair::with(&[("s", "server file")], |c| c.read_only = true).await;
    write(ro.c(), "c", b"client file");
    let err = sync_mode(ro.c(), ro.server.port, SyncMode::Push)
        .await
        .err()
        .expect("a push to a read-only server fails");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    // Two-way against a read-only server pulls, and says what it could not send.
    let client = sync_mode(ro.c(), ro.server.port, SyncMode::TwoWay)
        .await
        .unwrap();
    assert_eq!(read(ro.c(), "s"), "server file");
    assert!(!ro.s().join("c").exists());
    assert!(
        client
            .report()
            .skipped
            .iter()
            .any(|s| s.reason.contains("read-only")),
        "{:?}",
        client.report().skipped
    );
    ro.server.stop().await;
}

#[tokio::test]
async fn every_file_gone_at_once_stops_the_sync_unless_confirmed() {
    let p = Pair::new(&[("a", "1"), ("b/c", "2")]).await;
    p.sync().await;
    std::fs::remove_file(p.c().join("a")).unwrap();
    std::fs::remove_dir_all(p.c().join("b")).unwrap();
    let err = sync_mode(p.c(), p.server.port, SyncMode::TwoWay)
        .await
        .err()
        .expect("the guard stops it");
    assert_eq!(err.kind(), ErrorKind::Folder, "{err}");
    assert!(err.to_string().contains("all 2 files are gone"), "{err}");
    assert_eq!(tree(p.s()), ["a", "b/c"], "nothing deleted on the server");
    let mut cfg = config(p.c(), p.server.port, SyncMode::TwoWay);
    cfg.allow_mass_delete = true;
    Client::new(cfg).sync(None).await.unwrap();
    assert!(tree(p.s()).is_empty(), "confirmed: deleted");
    assert_eq!(versions(p.s()).len(), 2, "and kept in versions");
    p.server.stop().await;
}

#[tokio::test]
async fn clients_syncing_through_one_server_converge() {
    let hub = Pair::new(&[("base", "b")]).await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = hub.server.port;
    sync(a.path(), port).await;
    sync(b.path(), port).await;
    write(a.path(), "from-a", b"A");
    write(b.path(), "from-b", b"B");
    std::fs::write(a.path().join("base"), b"edited on A").unwrap();
    for _ in 0..2 {
        sync(a.path(), port).await;
        sync(b.path(), port).await;
    }
    assert_same(a.path(), b.path());
    assert_same(a.path(), hub.s());
    assert_eq!(read(b.path(), "base"), "edited on A");
    assert_eq!(tree(b.path()), ["base", "from-a", "from-b"]);
    hub.server.stop().await;
}

#[tokio::test]
async fn empty_folders_and_folder_deletions_sync() {
    let p = Pair::new(&[("f", "x")]).await;
    std::fs::create_dir_all(p.s().join("empty/nested")).unwrap();
    p.sync().await;
    assert!(p.c().join("empty/nested").is_dir());
    std::fs::remove_dir_all(p.c().join("empty")).unwrap();
    p.sync().await;
    assert!(
        !p.s().join("empty").exists(),
        "the folder deletion propagated"
    );
    p.server.stop().await;
}

#[tokio::test]
async fn symlinks_inside_sync_as_links_and_outside_ones_are_reported() {
    let p = Pair::new(&[("target.txt", "t")]).await;
    std::os::unix::fs::symlink("target.txt", p.s().join("inside")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p.s().join("outside")).unwrap();
    p.sync().await;
    let link = std::fs::read_link(p.c().join("inside")).unwrap();
    assert_eq!(link, Path::new("target.txt"));
    assert!(std::fs::symlink_metadata(p.c().join("outside")).is_err());
    // The client's own outside link is named in its report.
    std::os::unix::fs::symlink("../../x", p.c().join("escape")).unwrap();
    let client = p.sync().await;
    let skipped = client.report().skipped;
    assert!(
        skipped
            .iter()
            .any(|s| s.path == "escape" && s.reason.contains("outside")),
        "{skipped:?}"
    );
    p.server.stop().await;
}

#[tokio::test]
async fn ignored_files_are_neither_sent_nor_deleted() {
    let p = Pair::new(&[("keep.txt", "k"), ("build/out.o", "server object")]).await;
    std::fs::write(p.c().join(".sspignore"), "*.log\nbuild/\n").unwrap();
    write(p.c(), "debug.log", b"local log");
    p.sync().await;
    assert!(!p.s().join("debug.log").exists(), "ignored: not sent");
    assert!(!p.c().join("build").exists(), "ignored: not fetched");
    assert!(
        !p.s().join(".sspignore").exists(),
        "the ignore file is a local setting"
    );
    p.sync().await;
    assert_eq!(
        read(p.c(), "debug.log"),
        "local log",
        "ignored: not deleted"
    );
    p.server.stop().await;
}

#[tokio::test]
async fn permission_bits_and_mtimes_travel_back() {
    use std::os::unix::fs::PermissionsExt;
    let p = Pair::new(&[("script.sh", "#!/bin/sh\n")]).await;
    p.sync().await;
    std::fs::set_permissions(
        p.c().join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    p.sync().await;
    let mode = std::fs::metadata(p.s().join("script.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o111,
        0o111 & !ssp::fs::umask(),
        "the executable bit reached the server"
    );
    p.server.stop().await;
}

#[tokio::test]
async fn a_second_sync_of_the_same_folder_is_refused_at_once() {
    let p = Pair::new(&[("big", &"x".repeat(4 << 20))]).await;
    let first = Client::new(config(p.c(), p.server.port, SyncMode::TwoWay));
    let second = Client::new(config(p.c(), p.server.port, SyncMode::TwoWay));
    let (a, b) = tokio::join!(first.sync(None), async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        second.sync(None).await
    });
    let errors: Vec<_> = [a.err(), b.err()].into_iter().flatten().collect();
    // One of them ran; if the other came while it ran, it was refused, never raced.
    for e in &errors {
        assert!(
            e.to_string().contains("another sync is using this folder"),
            "{e}"
        );
    }
    assert_eq!(read(p.c(), "big").len(), 4 << 20);
    p.server.stop().await;
}

#[tokio::test]
async fn no_temp_file_remains_after_a_successful_sync() {
    let p = Pair::new(&[("a.txt", "current content")]).await;
    // Left by interrupted syncs of content nobody offers any more: one old, one just made.
    write(
        p.c(),
        "sub/.ssp-part-000000000000000000000000-1111111111111111",
        b"old partial",
    );
    write(
        p.c(),
        ".ssp-part-222222222222222222222222-3333333333333333",
        b"recent partial",
    );
    p.sync().await;
    let left = common::temp_files(p.c());
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(read(p.c(), "a.txt"), "current content");
    p.server.stop().await;
}

#[tokio::test]
async fn names_that_would_clobber_each_other_elsewhere_are_held_back_and_reported() {
    let p = Pair::new(&[
        ("Readme.md", "capital"),
        ("readme.md", "lower"),
        ("ok.txt", "fine"),
    ])
    .await;
    // An NFD name (e + combining acute) is not the wire's form.
    write(p.s(), "cafe\u{301}.txt", b"nfd");
    write(p.s(), "a:b", b"colon");
    let client = p.sync().await;
    let report = client.report();
    assert_eq!(tree(p.c()), ["Readme.md", "a:b", "ok.txt"], "{report:?}");
    let skipped: Vec<&str> = report.skipped.iter().map(|s| s.path.as_str()).collect();
    assert!(
        skipped.is_empty(),
        "the server held them back, the client saw none: {skipped:?}"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.path == "a:b" && w.reason.contains("Windows")),
        "{:?}",
        report.warnings
    );
    // The client's own clash is named in its report.
    write(p.c(), "OK.TXT", b"shouting");
    let report = p.sync().await.report();
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.path == "ok.txt" || s.path == "OK.TXT"),
        "{:?}",
        report.skipped
    );
    assert_eq!(read(p.s(), "ok.txt"), "fine", "nothing was clobbered");
    p.server.stop().await;
}

#[tokio::test]
async fn files_ignored_before_arrive_once_the_pattern_is_dropped() {
    let p = Pair::new(&[("keep.txt", "k"), ("build/out.o", "server object")]).await;
    std::fs::write(p.c().join(".sspignore"), "build/\n").unwrap();
    p.sync().await;
    p.sync().await;
    assert!(!p.c().join("build").exists());
    // The server has nothing new since, but our rules changed: its whole index is due again.
    std::fs::write(p.c().join(".sspignore"), "# nothing ignored\n").unwrap();
    p.sync().await;
    assert_eq!(read(p.c(), "build/out.o"), "server object");
    p.server.stop().await;
}

#[tokio::test]
async fn a_rename_reuses_the_content_already_here_instead_of_sending_it_again() {
    let big = "r".repeat(1 << 20);
    let p = Pair::new(&[("old/name.bin", big.as_str())]).await;
    p.sync().await;
    std::fs::create_dir_all(p.s().join("new")).unwrap();
    std::fs::rename(p.s().join("old/name.bin"), p.s().join("new/name.bin")).unwrap();
    let client = p.sync().await;
    assert_eq!(read(p.c(), "new/name.bin"), big);
    assert!(!p.c().join("old/name.bin").exists(), "the old name is gone");
    let stats = client.status().stats;
    assert_eq!(stats.bytes_received, 0, "nothing was sent again: {stats:?}");
    p.server.stop().await;
}

#[tokio::test]
async fn a_conflict_is_resolved_once_and_a_second_resolve_says_it_is_gone() {
    let p = Pair::new(&[("n.txt", "base")]).await;
    p.sync().await;
    std::fs::write(p.s().join("n.txt"), b"server side").unwrap();
    std::fs::write(p.c().join("n.txt"), b"client side, longer").unwrap();
    p.sync().await;
    let client = p.sync().await;
    let conflicts = client.conflicts().await.unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let copy = conflicts[0].copy.clone();
    client
        .resolve(copy.clone(), ssp::sync::Keep::Original)
        .await
        .unwrap();
    assert!(!p.c().join(&copy).exists());
    let again = client
        .resolve(copy.clone(), ssp::sync::Keep::Original)
        .await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no such conflict copy")),
        "{again:?}"
    );
    p.server.stop().await;
}

#[tokio::test]
async fn a_vanished_folder_root_stops_the_sync_and_deletes_nothing_anywhere() {
    let p = Pair::new(&[("a", "1"), ("b/c", "2")]).await;
    let client = Client::new(config(p.c(), p.server.port, SyncMode::TwoWay));
    client.sync(None).await.unwrap();
    // An unmounted drive, a folder moved away: the root itself is gone.
    std::fs::remove_dir_all(p.c()).unwrap();
    let err = client.sync(None).await.expect_err("the sync stops");
    assert_eq!(err.kind(), ErrorKind::Folder, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(tree(p.s()), ["a", "b/c"], "nothing deleted on the server");
    drop(client);
    // A new start on the empty path is a new replica: it has no history to delete from, so it
    // takes the server's files back.
    p.sync().await;
    assert_same(p.s(), p.c());
    p.server.stop().await;
}

#[tokio::test]
async fn an_index_applied_in_segments_ends_as_one_applied_whole() {
    // (segment entries on both sides, case)
    for (segment, case) in [(2, "segments of two"), (ssp::SEGMENT_ENTRIES, "whole")] {
        let files: Vec<(String, String)> = (0..7)
            .flat_map(|i| {
                [
                    (format!("a/{i}/deep.txt"), format!("a{i}")),
                    (format!("b{i}.txt"), format!("b{i}")),
                ]
            })
            .collect();
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (&**p, &**c)).collect();
        let p = Pair::with(&files, |c| c.segment_entries = segment).await;
        let mut config = config(p.c(), p.server.port, SyncMode::TwoWay);
        config.segment_entries = segment;
        let client = Client::new(config);
        client
            .sync(None)
            .await
            .unwrap_or_else(|e| panic!("{case}: first sync: {e}"));
        assert_same(p.s(), p.c());
        // The server deletes a whole tree (its folders must go deepest first) and edits;
        // the client adds and edits: both reach the other side.
        std::fs::remove_dir_all(p.s().join("a")).unwrap();
        write(p.s(), "b1.txt", b"edited on the server");
        write(p.s(), "new/on/server.txt", b"new");
        write(p.c(), "b5.txt", b"edited on the client");
        write(p.c(), "c/new.txt", b"from the client");
        client
            .sync(None)
            .await
            .unwrap_or_else(|e| panic!("{case}: second sync: {e}"));
        client
            .sync(None)
            .await
            .unwrap_or_else(|e| panic!("{case}: third sync: {e}"));
        assert_same(p.s(), p.c());
        assert!(
            !p.c().join("a").exists(),
            "{case}: the deleted folders are gone"
        );
        assert_eq!(read(p.c(), "b1.txt"), "edited on the server", "{case}");
        assert_eq!(read(p.s(), "b5.txt"), "edited on the client", "{case}");
        assert_eq!(tree(p.s()).len(), 9, "{case}: {:?}", tree(p.s()));
        assert!(common::temp_files(p.c()).is_empty(), "{case}");
        let stats = client.sync(None).await.unwrap();
        assert_eq!(stats.files_total, 0, "{case}: nothing is left to fetch");
    }
}
