//! Peers that misbehave, during the handshake or after completing it: nothing may be read or
//! written outside the folder, and a bad peer closes only its own connection. (Guessing and
//! admission are tested in `tests/admission.rs`.)

mod common;

use common::{assert_a_client_syncs, entry, tree, write, Running, SECRET};
use futures_util::{SinkExt, StreamExt};
use ssp::net::{client_handshake, server_handshake};
use ssp::protocol::{
    ErrorCode, FileChunk, FileIndex, FileRequest, IndexEntry, Message, SyncRequest,
};
use ssp::{Client, ClientConfig, ErrorKind};
use std::time::{Duration, Instant};

const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(ssp::sync::HANDSHAKE_TIMEOUT_MS);
use tokio::net::{TcpListener, TcpStream};

/// What a fake server sends for every request: chunks as (offset, data, last).
type Reply = Vec<(u64, &'static [u8], bool)>;

/// The whole `content` in one chunk.
fn whole(content: &'static [u8]) -> Reply {
    vec![(0, content, true)]
}

/// A fake server that authenticates, answers SYNC_REQUEST with `index`, then sends `reply`
/// for every request. Returns the messages the client sent after the SYNC_REQUEST.
async fn hostile_server(
    index: Vec<IndexEntry>,
    reply: Reply,
) -> (u16, tokio::task::JoinHandle<Vec<Message>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = server_handshake(stream, SECRET.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        while let Some(Ok(msg)) = conn.reader.next().await {
            match &msg {
                Message::SyncRequest(r) => {
                    let reply = SyncRequest {
                        device: common::PEER_DEVICE,
                        ..r.clone()
                    };
                    conn.writer.send(Message::SyncRequest(reply)).await.unwrap();
                    let idx = Message::FileIndex(FileIndex {
                        entries: index.clone(),
                        last: true,
                    });
                    conn.writer.send(idx).await.unwrap();
                }
                Message::FileRequest(FileRequest { id, .. }) => {
                    for &(offset, data, last) in &reply {
                        let chunk = FileChunk {
                            id: *id,
                            offset,
                            last,
                            data: bytes::Bytes::from_static(data),
                        };
                        if conn.writer.send(Message::FileChunk(chunk)).await.is_err() {
                            break;
                        }
                    }
                }
                Message::SyncComplete(c) => {
                    let _ = conn.writer.send(Message::SyncComplete(c.clone())).await;
                }
                _ => {}
            }
            seen.push(msg);
        }
        seen
    });
    (port, task)
}

#[tokio::test]
async fn hostile_server_paths_are_refused_and_nothing_escapes() {
    // (offered path, why it is hostile)
    let table = [
        ("../escape", "parent directory"),
        ("sub/../../escape", "parent inside"),
        ("/tmp/ssp-absolute-escape", "absolute path"),
        // `C:/escape` is an ordinary name outside Windows (tests/writes.rs syncs it).
        (".ssp/index.redb", "metadata folder"),
        (".SSP/index.redb", "metadata folder, upper case"),
        ("x/.SSP-PART-1", "temp file name, upper case"),
        ("a\\..\\escape", "backslash"),
    ];
    for (path, why) in table {
        let base = tempfile::tempdir().unwrap();
        let folder = base.path().join("sync");
        let (port, server) = hostile_server(
            vec![entry("fine.txt", b"ok"), entry(path, b"evil")],
            whole(b"evil"),
        )
        .await;
        let client = Client::new(ClientConfig::new(SECRET, &folder, "127.0.0.1", port));
        let err = client.sync(None).await.expect_err(why);
        assert_eq!(err.kind(), ErrorKind::Path, "{why}: {err}");
        drop(client);
        let seen = server.await.unwrap();
        assert!(
            seen.iter()
                .any(|m| matches!(m, Message::Error(e) if e.code == ErrorCode::BadPath)),
            "{why}: the server was not told why: {seen:?}"
        );
        assert!(
            !seen.iter().any(|m| matches!(m, Message::FileRequest(_))),
            "{why}: a file was requested"
        );
        assert!(
            !base.path().join("escape").exists(),
            "{why}: wrote outside the folder"
        );
        assert!(
            !std::path::Path::new("/tmp/ssp-absolute-escape").exists(),
            "{why}"
        );
        assert!(
            tree(&folder).is_empty(),
            "{why}: wrote inside the folder after a hostile index"
        );
    }
}

#[tokio::test]
async fn content_that_does_not_match_its_hash_never_reaches_the_final_path() {
    let base = tempfile::tempdir().unwrap();
    let (port, server) = hostile_server(
        vec![entry("file.txt", b"the real content")],
        whole(b"forged content!!"),
    )
    .await;
    let client = Client::new(ClientConfig::new(SECRET, base.path(), "127.0.0.1", port));
    let err = client
        .sync(None)
        .await
        .expect_err("forged content must fail");
    assert!(err.to_string().contains("hash"), "{err}");
    assert!(
        tree(base.path()).is_empty(),
        "no file, no temp file: {:?}",
        tree(base.path())
    );
    drop(client);
    server.abort();
}

#[tokio::test]
async fn chunks_past_the_size_or_out_of_order_end_the_sync() {
    static MIB: [u8; 1 << 20] = [0x5a; 1 << 20];
    // (the case, the chunks a server sends for an 8-byte file, what the error says, the most
    // bytes that may reach the client's disk)
    let table: [(&str, Reply, &str, u64); 5] = [
        (
            "endless data for an 8-byte file",
            (0..64).map(|i| (i << 20, &MIB[..], false)).collect(),
            "announced size",
            0,
        ),
        (
            "the same chunk again and again",
            (0..10_000).map(|_| (0, &b"abcd"[..], false)).collect(),
            "out of order",
            4,
        ),
        (
            "a last chunk short of the size",
            vec![(0, b"abcd", true)],
            "must end at its announced size",
            4,
        ),
        (
            "all the bytes but no last flag",
            vec![(0, b"abcdefgh", false)],
            "must end at its announced size",
            8,
        ),
        (
            "a chunk after the last one",
            vec![(0, b"abcdefgh", true), (8, b"", true)],
            "after the last one",
            8,
        ),
    ];
    for (case, reply, says, most) in table {
        let base = tempfile::tempdir().unwrap();
        let (port, server) = hostile_server(vec![entry("file.bin", b"abcdefgh")], reply).await;
        let client = Client::new(ClientConfig::new(SECRET, base.path(), "127.0.0.1", port));
        let err = tokio::time::timeout(Duration::from_secs(60), client.sync(None))
            .await
            .unwrap_or_else(|_| panic!("{case}: the client kept taking chunks"))
            .expect_err(case);
        assert_eq!(err.kind(), ErrorKind::Protocol, "{case}: {err}");
        assert!(err.to_string().contains(says), "{case}: {err}");
        let written: u64 = walkdir::WalkDir::new(base.path())
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .filter(|e| !e.path().starts_with(base.path().join(".ssp")))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(written <= most, "{case}: {written} bytes reached the disk");
        drop(client);
        server.abort();
    }
}

/// Authenticates against a real server as a client and sends `msg` after a SYNC_REQUEST.
/// Returns what the server sent up to its first ERROR (or until it closed the connection).
async fn hostile_client(port: u16, msg: Message) -> Vec<Message> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut conn = client_handshake(stream, SECRET.as_bytes()).await.unwrap();
    conn.writer
        .send(Message::SyncRequest(SyncRequest {
            mode: ssp::protocol::SyncMode::Pull,
            device: common::PEER_DEVICE,
            read_only: false,
            allow_mass_delete: false,
            known: Default::default(),
        }))
        .await
        .unwrap();
    conn.writer.send(msg).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        while let Some(Ok(m)) = conn.reader.next().await {
            let is_error = matches!(m, Message::Error(_));
            got.push(m);
            if is_error {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("the server neither answered nor closed the connection");
    got
}

#[tokio::test]
async fn hostile_client_requests_are_refused_and_the_server_survives() {
    let base = tempfile::tempdir().unwrap();
    let folder = base.path().join("served");
    write(&folder, "public.txt", b"public");
    write(base.path(), "secret.txt", b"outside the folder");
    let server = Running::start(&folder).await;
    for path in [
        "../secret.txt",
        "../../etc/passwd",
        "/etc/passwd",
        "a/../../secret.txt",
        ".ssp/index.redb",
    ] {
        let got = hostile_client(
            server.port,
            Message::FileRequest(FileRequest {
                id: 1,
                path: path.into(),
                offset: 0,
            }),
        )
        .await;
        assert!(
            got.iter().any(
                |m| matches!(m, Message::Error(e) if e.code == ErrorCode::BadPath && e.id.is_none())
            ),
            "{path}: expected a fatal bad_path error, got {got:?}"
        );
        assert!(
            !got.iter().any(|m| matches!(m, Message::FileChunk(_))),
            "{path}: data was sent"
        );
    }
    // A valid path that is not in the index is a per-request error; the session goes on.
    let got = hostile_client(
        server.port,
        Message::FileRequest(FileRequest {
            id: 9,
            path: "nope.txt".into(),
            offset: 0,
        }),
    )
    .await;
    assert!(
        got.iter().any(
            |m| matches!(m, Message::Error(e) if e.code == ErrorCode::NotFound && e.id == Some(9))
        ),
        "{got:?}"
    );
    // An offset beyond the end is refused too.
    let got = hostile_client(
        server.port,
        Message::FileRequest(FileRequest {
            id: 3,
            path: "public.txt".into(),
            offset: 1 << 40,
        }),
    )
    .await;
    assert!(
        got.iter()
            .any(|m| matches!(m, Message::Error(e) if e.id == Some(3))),
        "{got:?}"
    );

    // The server still serves an honest client.
    let dst = base.path().join("honest");
    Client::new(ClientConfig::new(SECRET, &dst, "127.0.0.1", server.port))
        .sync(None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(dst.join("public.txt")).unwrap(), b"public");
    server.stop().await;
}

#[tokio::test]
async fn version_mismatch_names_both_versions() {
    use ssp::protocol::{FrameDecoder, FrameEncoder, Hello};
    use tokio_util::codec::{FramedRead, FramedWrite};
    let base = tempfile::tempdir().unwrap();
    let server = Running::start(base.path()).await;
    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (r, w) = stream.into_split();
    let mut writer = FramedWrite::new(w, FrameEncoder::default());
    let mut reader = FramedRead::new(r, FrameDecoder::default());
    writer
        .send(Message::Hello(Hello {
            version: 2,
            min_version: 2,
            software: "ssp/0.1.0 (one-way, v2)".into(),
        }))
        .await
        .unwrap();
    match reader.next().await {
        Some(Ok(Message::Error(e))) => {
            assert_eq!(e.code, ErrorCode::VersionMismatch);
            assert!(
                e.message.contains("server speaks 3") && e.message.contains("client speaks 2"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a version_mismatch error, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn garbage_before_the_handshake_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_base, server) = Running::serving_f(DEFAULT_HANDSHAKE_TIMEOUT).await;
    for garbage in [
        &b"\xff\xff\xff\xff"[..],
        b"\x00\x00\x00\x05\x63hello",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    }
    assert_a_client_syncs(server.port, &["f"]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_handshake_timeout_and_others_are_served() {
    use tokio::io::AsyncReadExt;
    // Only HELLO is due so soon: an honest client on a loaded machine keeps the default time
    // for the rest of its handshake (with 300 ms for all of it this test failed under load).
    let (_base, server) = Running::serving_f_with_hello_timeout(Duration::from_millis(300)).await;

    // Connects and never says HELLO: the server must hang up on its own.
    let mut silent = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut buf))
        .await
        .expect("the server kept a silent connection open past its HELLO timeout")
        .unwrap();
    assert!(buf.is_empty(), "the server sent {buf:?} to a silent client");
    assert!(started.elapsed() >= Duration::from_millis(300));

    assert_a_client_syncs(server.port, &["f"]).await;
    server.stop().await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_16_handshakes_open() {
    // Long enough that only the per-address limit can close a silent connection in this test.
    let (_base, server) = Running::serving_f(Duration::from_secs(120)).await;

    // 17 connections that never say HELLO: 16 wait for their handshake, one is closed at once.
    let mut silent = Vec::new();
    for _ in 0..17 {
        silent.push(
            TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.server.status().stats.refused_connections < 1 {
        assert!(Instant::now() < deadline, "no connection was refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The refused one reads end-of-stream (once its FIN is here); the other 16 stay open.
    let is_closed = |s: &TcpStream| {
        let mut buf = [0u8; 1];
        !matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    loop {
        let closed = silent.iter().filter(|s| is_closed(s)).count();
        if closed == 1 {
            break;
        }
        assert!(
            closed == 0,
            "{closed} connections closed; only one should be"
        );
        assert!(
            Instant::now() < deadline,
            "the refused connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.server.status().stats.refused_connections, 1);

    // Once they hang up, the address gets its slots back and a real client syncs.
    drop(silent);
    let dst = tempfile::tempdir().unwrap();
    let client = Client::new(ClientConfig::new(
        SECRET,
        dst.path(),
        "127.0.0.1",
        server.port,
    ));
    loop {
        match client.sync(None).await {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::Connection && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("sync after the flood: {e}"),
        }
    }
    assert_eq!(tree(dst.path()), ["f"]);
    server.stop().await;
}

#[tokio::test]
async fn a_file_that_changed_after_the_index_is_reported_not_sent() {
    let base = tempfile::tempdir().unwrap();
    write(base.path(), "grows.txt", b"abc");
    let server = Running::start(base.path()).await;
    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut conn = client_handshake(stream, SECRET.as_bytes()).await.unwrap();
    conn.send(Message::SyncRequest(SyncRequest {
        mode: ssp::protocol::SyncMode::Pull,
        device: common::PEER_DEVICE,
        read_only: false,
        allow_mass_delete: false,
        known: Default::default(),
    }))
    .await
    .unwrap();
    assert!(matches!(
        conn.recv().await.unwrap(),
        Message::SyncRequest(_)
    ));
    match conn.recv().await.unwrap() {
        Message::FileIndex(ix) => assert_eq!(ix.entries[0].size, 3),
        other => panic!("expected the index, got {other:?}"),
    }
    write(base.path(), "grows.txt", b"abcdef"); // changes between index and request
    conn.send(Message::FileRequest(FileRequest {
        id: 0,
        path: "grows.txt".into(),
        offset: 0,
    }))
    .await
    .unwrap();
    match conn.reader.next().await {
        Some(Ok(Message::Error(e))) => {
            assert_eq!((e.code, e.id), (ErrorCode::FileChanged, Some(0)), "{e:?}");
        }
        other => panic!("expected ERROR file_changed for request 0, got {other:?}"),
    }
    server.stop().await;
}
