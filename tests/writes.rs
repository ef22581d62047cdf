//! End-to-end write safety: permission bits across a real sync, names that are fine on this
//! platform, and a real race against a local process swapping folders for symlinks.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{write, Running, SECRET};
use ssp::{Client, ClientConfig};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Each file arrives with the server's permission bits narrowed by our umask (so a 0600 file
/// stays 0600, never 0644), special bits never travel, and a mode-only change is applied as a
/// metadata fix without a transfer.
#[tokio::test]
async fn permission_bits_travel_and_never_widen() {
    let src = tempfile::tempdir().unwrap();
    // (file, mode on the server)
    let table: &[(&str, u32)] = &[
        ("private", 0o600),
        ("script", 0o755),
        ("shared", 0o666),
        ("group/read", 0o640),
        ("setuid", 0o4755),
        ("nothing", 0o000),
    ];
    for (name, m) in table {
        write(src.path(), name, name.as_bytes());
        chmod(&src.path().join(name), *m);
    }
    let server = Running::start(src.path()).await;
    let dst = tempfile::tempdir().unwrap();
    let client = Client::new(ClientConfig::new(
        SECRET,
        dst.path(),
        "127.0.0.1",
        server.port,
    ));
    let stats = client.sync(None).await.unwrap();
    assert_eq!(stats.files_received, table.len() as u64);
    let umask = ssp::fs::umask();
    for (name, m) in table {
        let got = mode(&dst.path().join(name));
        assert_eq!(got, m & 0o777 & !umask, "{name}: {m:o} arrived {got:o}");
        assert_eq!(got & !m, 0, "{name}: wider than the source");
    }
    assert_eq!(mode(&dst.path().join(".ssp")), 0o700);
    assert_eq!(mode(&dst.path().join(".ssp/index.redb")), 0o600);

    chmod(&src.path().join("private"), 0o640);
    chmod(&src.path().join("script"), 0o700);
    let stats = client.sync(None).await.unwrap();
    // files_total counts this sync's transfers (files_received is cumulative).
    assert_eq!(stats.files_total, 0, "a mode change is not a transfer");
    assert_eq!(mode(&dst.path().join("private")), 0o640 & !umask);
    assert_eq!(mode(&dst.path().join("script")), 0o700 & !umask);
    let stats = client.sync(None).await.unwrap();
    assert_eq!(
        stats.files_unchanged,
        table.len() as u64,
        "and then settled"
    );
    client.disconnect(None).await;
    server.stop().await;
}

/// `a:b` is an ordinary name outside Windows: the server lists it and the client writes it.
#[cfg(not(windows))]
#[tokio::test]
async fn a_name_with_a_colon_syncs_end_to_end() {
    let src = tempfile::tempdir().unwrap();
    for name in ["a:b", "C:/x", "dir/c:d"] {
        write(src.path(), name, name.as_bytes());
    }
    let server = Running::start(src.path()).await;
    common::assert_a_client_syncs(server.port, &["C:/x", "a:b", "dir/c:d"]).await;
    server.stop().await;
}

/// Folders the server offers (each holding `FILES_PER_DIR` files).
const RACE_DIRS: usize = 16;
const FILES_PER_DIR: usize = 12;

/// Swaps `dst/dNN` for a symlink to `outside` and back, folder after folder, until `stop`.
fn attacker(dst: &Path, outside: &Path, stop: &AtomicBool) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let dir = dst.join(format!("d{:02}", i % RACE_DIRS));
        let real = dst.join(format!("d{:02}.real", i % RACE_DIRS));
        i += 1;
        if std::fs::rename(&dir, &real).is_err() {
            // Not created yet: plant the symlink where the client will want its folder.
            let _ = std::os::unix::fs::symlink(outside, &dir);
            std::thread::yield_now();
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(&dir);
            }
            continue;
        }
        let _ = std::os::unix::fs::symlink(outside, &dir);
        std::thread::yield_now();
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&dir);
        }
        let _ = std::fs::rename(&real, &dir);
    }
}

/// Every file under `root` with (mode, mtime, content).
fn snapshot(root: &Path) -> Vec<(String, u32, i64, Vec<u8>)> {
    let mut out: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| {
            let md = e.path().symlink_metadata().unwrap();
            let content = if md.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.path().display().to_string(),
                md.mode(),
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                content,
            )
        })
        .collect();
    out.sort();
    out
}

/// A real race: while a client pulls many files, another thread keeps swapping the folders it
/// writes into for symlinks to an outside folder. Nothing may be created, replaced, chmod-ed
/// or touched outside. `SSP_RACE_TRIES=100` for the long run (a few tries by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_swap_race_never_writes_outside() {
    let tries: usize = std::env::var("SSP_RACE_TRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let src = tempfile::tempdir().unwrap();
    for d in 0..RACE_DIRS {
        for f in 0..FILES_PER_DIR {
            write(src.path(), &format!("d{d:02}/f{f:02}"), &[d as u8; 700]);
            chmod(&src.path().join(format!("d{d:02}/f{f:02}")), 0o755);
        }
    }
    let server = Running::start(src.path()).await;
    let mut won = 0;
    for t in 0..tries {
        let base = tempfile::tempdir().unwrap();
        let (dst, outside) = (base.path().join("dst"), base.path().join("outside"));
        std::fs::create_dir_all(&dst).unwrap();
        // The outside folder holds a file of the name the client writes, to catch a rename,
        // a chmod or an mtime change through the symlink as well as a new file.
        write(&outside, "f00", b"outside");
        chmod(&outside.join("f00"), 0o600);
        for d in 0..RACE_DIRS / 2 {
            std::fs::create_dir(dst.join(format!("d{d:02}"))).unwrap();
        }
        let before = snapshot(&outside);
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (dst, outside, stop) = (dst.clone(), outside.clone(), Arc::clone(&stop));
            std::thread::spawn(move || attacker(&dst, &outside, &stop))
        };
        let client = Client::new(ClientConfig::new(SECRET, &dst, "127.0.0.1", server.port));
        let result = tokio::time::timeout(std::time::Duration::from_secs(60), client.sync(None))
            .await
            .expect("the sync did not hang");
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        client.disconnect(None).await;
        if snapshot(&outside) != before {
            won += 1;
            eprintln!("try {t}: the attacker won ({result:?})");
        }
    }
    println!("races won by the attacker: {won} of {tries}");
    assert_eq!(won, 0, "races won by the attacker: {won} of {tries}");
    server.stop().await;
}
