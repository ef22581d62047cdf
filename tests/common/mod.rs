//! Shared helpers for the integration tests: temp folders, a running server, a raw peer.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ssp::{Client, ClientConfig, Server, ServerConfig};

pub const SECRET: &str = "correct horse battery staple";

/// A server on 127.0.0.1 with a free port, serving `folder` in the background.
pub struct Running {
    pub server: Arc<Server>,
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(folder: &Path) -> Running {
        Self::start_with(ServerConfig::new(SECRET, folder, "127.0.0.1", 0)).await
    }

    pub async fn start_with(config: ServerConfig) -> Running {
        let server = Arc::new(Server::new(config));
        let port = server.bind().await.expect("bind").port();
        let s = Arc::clone(&server);
        let task = tokio::spawn(async move { s.serve().await.expect("serve") });
        Running { server, port, task }
    }

    /// A server on a fresh folder holding one file, `f`, with the given handshake timeout (also
    /// the time allowed for HELLO). Keep the returned folder alive as long as the server.
    pub async fn serving_f(handshake_timeout: Duration) -> (tempfile::TempDir, Running) {
        let base = tempfile::tempdir().unwrap();
        write(base.path(), "f", b"x");
        let mut config = ServerConfig::new(SECRET, base.path(), "127.0.0.1", 0);
        config.handshake_timeout = handshake_timeout;
        config.hello_timeout = handshake_timeout;
        let server = Self::start_with(config).await;
        (base, server)
    }

    /// A server on a one-file folder that gives a new connection `hello_timeout` to say HELLO
    /// (and the default time for the rest of the handshake, so honest clients on a loaded
    /// machine are not cut off).
    pub async fn serving_f_with_hello_timeout(
        hello_timeout: Duration,
    ) -> (tempfile::TempDir, Running) {
        let base = tempfile::tempdir().unwrap();
        write(base.path(), "f", b"x");
        let mut config = ServerConfig::new(SECRET, base.path(), "127.0.0.1", 0);
        config.hello_timeout = hello_timeout;
        let server = Self::start_with(config).await;
        (base, server)
    }

    pub async fn stop(self) {
        self.server.stop().await;
        self.task.await.expect("serve task");
    }
}

/// The index entry a server would send for a file `path` holding `content`.
pub fn entry(path: &str, content: &[u8]) -> ssp::protocol::IndexEntry {
    ssp::protocol::IndexEntry {
        path: path.into(),
        size: content.len() as u64,
        mtime_ns: 1_600_000_000_000_000_000,
        executable: false,
        mode: None,
        hash: blake3::hash(content).to_hex().to_string(),
        kind: ssp::index::EntryKind::File,
        target: None,
        deleted: false,
        version: ssp::index::VersionVector([(PEER_DEVICE, 1)].into_iter().collect()),
        sequence: 1,
        modified_by: Some(PEER_DEVICE),
    }
}

/// The device ID fake peers announce.
pub const PEER_DEVICE: ssp::index::DeviceId = ssp::index::DeviceId(0x0123_4567_89AB_CDEF);

/// Writes `content` at `rel` under `root`, creating folders.
pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Every file under `root` (relative, sorted), excluding the metadata folder.
pub fn tree(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| !p.starts_with(".ssp/"))
        .collect();
    out.sort();
    out
}

/// A client of the test server on `port`, syncing `folder`.
pub fn client_of(folder: &Path, port: u16) -> Client {
    Client::new(ClientConfig::new(SECRET, folder, "127.0.0.1", port))
}

/// A well-behaved client pulls from the server on `port` into a fresh folder and gets exactly
/// `files`: whatever a bad peer did, the server still serves others.
pub async fn assert_a_client_syncs(port: u16, files: &[&str]) {
    let dst = tempfile::tempdir().unwrap();
    client_of(dst.path(), port).sync(None).await.unwrap();
    assert_eq!(tree(dst.path()), files);
}

/// Temp files (`.ssp-part-*`) anywhere under `root`, `.ssp` included.
pub fn temp_files(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(ssp::fs::PART_PREFIX)
        })
        .map(|e| e.path().display().to_string())
        .collect()
}
