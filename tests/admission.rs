//! Who gets to talk to the server before authenticating: every guess counts however it ends,
//! penalised sources are refused at once, a slot flood does not lock out an honest client,
//! unauthenticated connections cost little memory, the transcript covers the HELLO bytes as
//! sent, and unsafe secrets never listen.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{assert_a_client_syncs, Running, SECRET};
use futures_util::{SinkExt, StreamExt};
use ssp::crypto::ClientAwaitReply;
use ssp::protocol::{
    Auth, ErrorCode, ErrorMsg, FrameDecoder, FrameEncoder, Hello, Message, MAX_FRAME_BYTES,
    MAX_HANDSHAKE_FRAME_BYTES,
};
use ssp::sync::admission::FREE_FAILURES_PER_SOURCE;
use ssp::{Client, ClientConfig, ErrorKind, Server, ServerConfig, DEFAULT_SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite};

/// The tests that measure the process or flood the server run one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 127.0.0.`n`: every loopback address is ours, so each can be a separate source.
fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

async fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    socket.connect((Ipv4Addr::LOCALHOST, port).into()).await
}

/// Raises the open-file limit (soft, up to the hard limit) for tests holding ~1,000 sockets.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// How a guessing client ends its handshake after the server's PAKE_REPLY.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Heartbeat,
    NonHexConfirm,
    ErrorFrame,
    Garbage,
    HangUp,
    Silence,
}

#[derive(Debug)]
enum Outcome {
    /// The server sent PAKE_REPLY: one guess tested.
    Replied,
    /// The server refused with ERROR rate_limited.
    Refused(String),
}

/// One guess from `source`, ended as `ending` (what an attacker does to test guesses offline).
async fn raw_guess(port: u16, source: Ipv4Addr, ending: Ending) -> Outcome {
    let stream = connect_from(source, port).await.unwrap();
    let (r, w) = stream.into_split();
    let mut reader = FramedRead::new(r, FrameDecoder::default());
    let mut writer = FramedWrite::new(w, FrameEncoder::default());
    let refused = |m: Option<Result<Message, ssp::Error>>| match m {
        Some(Ok(Message::Error(ErrorMsg {
            code: ErrorCode::RateLimited,
            message,
            ..
        }))) => Outcome::Refused(message),
        other => panic!("expected a reply or rate_limited, got {other:?}"),
    };
    let hello = Message::Hello(Hello {
        version: ssp::PROTOCOL_VERSION,
        min_version: ssp::PROTOCOL_VERSION,
        software: "guesser".into(),
    });
    // A refused source may be closed before it gets to write anything.
    if writer.send(hello).await.is_err() {
        return refused(reader.next().await);
    }
    match reader.next().await {
        Some(Ok(Message::Hello(_))) => {}
        other => return refused(other),
    }
    let (_, msg_a) = ClientAwaitReply::start(b"a wrong guess", b"c", b"s");
    writer
        .send(Message::Auth(Auth::Pake {
            msg: hex::encode(msg_a),
        }))
        .await
        .unwrap();
    match reader.next().await {
        Some(Ok(Message::Auth(Auth::PakeReply { .. }))) => {}
        other => return refused(other),
    }
    let mut writer = Some(writer);
    if let Some(w) = writer.as_mut() {
        let _ = match ending {
            Ending::Heartbeat => w.send(Message::Heartbeat).await,
            Ending::NonHexConfirm => {
                w.send(Message::Auth(Auth::Confirm {
                    confirm: "not hex".into(),
                }))
                .await
            }
            Ending::ErrorFrame => {
                w.send(Message::Error(ErrorMsg::fatal(ErrorCode::Io, "bye")))
                    .await
            }
            Ending::Garbage => w
                .get_mut()
                .write_all(b"\x00\x00\x00\x03\xff\xfe\xfd")
                .await
                .map_err(ssp::Error::from),
            Ending::HangUp => Ok(()),
            Ending::Silence => Ok(()),
        };
    }
    if matches!(ending, Ending::HangUp) {
        writer.take();
        drop(reader);
        return Outcome::Replied;
    }
    // Wait for the server to close (at once, or at its handshake timeout for silence).
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(_)) = reader.next().await {}
    })
    .await;
    assert!(drained.is_ok(), "the server kept a failed handshake open");
    Outcome::Replied
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_guess_ended_any_way_after_pake_reply_is_counted_and_penalised() {
    let endings = [
        Ending::Heartbeat,
        Ending::NonHexConfirm,
        Ending::ErrorFrame,
        Ending::Garbage,
        Ending::HangUp,
        Ending::Silence,
    ];
    for ending in endings {
        // Short, so the silent endings time out soon; long enough for a loaded machine.
        let (_base, server) = Running::serving_f(Duration::from_millis(1500)).await;
        for n in 1..=FREE_FAILURES_PER_SOURCE {
            let outcome = raw_guess(server.port, loopback(1), ending).await;
            assert!(
                matches!(outcome, Outcome::Replied),
                "{ending:?}: free guess {n} got {outcome:?}"
            );
        }
        let s = &server.server;
        wait_for(&format!("{ending:?} counted"), || {
            s.status().stats.auth_failures == u64::from(FREE_FAILURES_PER_SOURCE)
        })
        .await;
        match raw_guess(server.port, loopback(1), ending).await {
            Outcome::Refused(message) => {
                assert!(message.contains("try again in"), "{ending:?}: {message}")
            }
            Outcome::Replied => panic!("{ending:?}: a penalised source was sent another reply"),
        }
        // Another source is not affected.
        let other = raw_guess(server.port, loopback(2), ending).await;
        assert!(matches!(other, Outcome::Replied), "{ending:?}: {other:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_penalised_honest_client_is_told_to_wait_and_then_gets_in() {
    let (_base, server) = Running::serving_f(Duration::from_secs(10)).await;
    let dst = tempfile::tempdir().unwrap();
    let client = |secret: &str| {
        Client::new(ClientConfig::new(
            secret,
            dst.path(),
            "127.0.0.1",
            server.port,
        ))
    };
    for _ in 0..FREE_FAILURES_PER_SOURCE {
        let e = client("a typo").connect(None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    }
    let s = &server.server;
    wait_for("three failures counted", || {
        s.status().stats.auth_failures == u64::from(FREE_FAILURES_PER_SOURCE)
    })
    .await;
    let e = client(SECRET).connect(None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.to_string().contains("try again in 1 s"), "{e}");
    // The first penalty is one second; then the right secret gets in and clears the record.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client(SECRET).connect(None).await {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::Connection && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("after the penalty: {e}"),
        }
    }
    let e = client("one more typo").connect(None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "the record was not cleared: {e}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_client_gets_in_while_32_addresses_flood_the_slots() {
    let _heavy = HEAVY.lock().await;
    raise_fd_limit(4096);
    let base = tempfile::tempdir().unwrap();
    common::write(base.path(), "f", b"x");
    // Default timeouts: 2 s for HELLO, 10 s for the handshake (the honest client's too).
    let server = Running::start_with(ServerConfig::new(SECRET, base.path(), "127.0.0.1", 0)).await;
    let port = server.port;
    let stop = tokio_util::sync::CancellationToken::new();
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flooders = Vec::new();
    // 32 addresses × 16 silent connections = every one of the server's 512 permits, each
    // reconnecting as soon as the server drops it.
    for a in 0..32u8 {
        for _ in 0..16 {
            let stop = stop.clone();
            let connected = connected.clone();
            flooders.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let Ok(mut s) = connect_from(loopback(10 + a), port).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut buf = [0u8; 64];
                    tokio::select! {
                        _ = s.read(&mut buf) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }));
        }
    }
    wait_for("512 flooding connections", || {
        connected.load(std::sync::atomic::Ordering::Relaxed) >= 512
    })
    .await;
    // Let the server accept them: every permit is now held by a silent connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_a_client_syncs(port, &["f"]).await;
    eprintln!(
        "honest client synced {:?} into a flood of 512 silent connections",
        started.elapsed()
    );
    stop.cancel();
    for f in flooders {
        f.await.unwrap();
    }
    server.stop().await;
}

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_small_with_512_unauthenticated_connections() {
    const BOUND_BYTES: u64 = 64 << 20;
    const SENT_PER_CONNECTION: usize = 512 * 1024;
    let _heavy = HEAVY.lock().await;
    raise_fd_limit(4096);
    let base = tempfile::tempdir().unwrap();
    common::write(base.path(), "f", b"x");
    let mut config = ServerConfig::new(SECRET, base.path(), "127.0.0.1", 0);
    // Long, so only the frame limit can end a connection in this test.
    config.handshake_timeout = Duration::from_secs(60);
    config.hello_timeout = Duration::from_secs(60);
    let server = Running::start_with(config).await;
    let port = server.port;
    let before = rss_bytes();

    // 512 connections announce the largest frame and send half a MiB of it; all stay open
    // (unless the server closes them).
    static JUNK: [u8; SENT_PER_CONNECTION] = [0x41; SENT_PER_CONNECTION];
    let big = (0..512u32).map(|i| async move {
        let mut s = connect_from(loopback(10 + (i / 16) as u8), port)
            .await
            .ok()?;
        let write = async {
            s.write_all(&(MAX_FRAME_BYTES as u32).to_be_bytes()).await?;
            s.write_all(&JUNK).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
        Some(s)
    });
    let mut held: Vec<TcpStream> = futures_util::future::join_all(big)
        .await
        .into_iter()
        .flatten()
        .collect();
    // Time for the server to read whatever the kernel holds for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_big = rss_bytes().saturating_sub(before);
    // And up to 512 connections each send a whole handshake-size frame but its last byte.
    for i in 0..512u32 {
        let connect = connect_from(loopback(10 + (i / 16) as u8), port);
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
            continue;
        };
        let _ = s
            .write_all(&(MAX_HANDSHAKE_FRAME_BYTES as u32).to_be_bytes())
            .await;
        let _ = s.write_all(&JUNK[..MAX_HANDSHAKE_FRAME_BYTES - 1]).await;
        held.push(s);
    }
    // Time for the server to read whatever the kernel holds for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = rss_bytes().saturating_sub(before).max(after_big);
    eprintln!(
        "RSS grew {:.1} MB with 512 unauthenticated connections that announced 8 MiB and sent 512 KiB, {:.1} MB with 512 more holding a 4 KiB frame",
        after_big as f64 / 1e6,
        grown as f64 / 1e6
    );
    assert!(
        grown < BOUND_BYTES,
        "RSS grew by {grown} bytes with 512 unauthenticated connections"
    );
    drop(held);
    server.stop().await;
}

/// Which HELLO a man in the middle extends with a field that serde ignores.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tamper {
    Nothing,
    ClientHello,
    ServerHello,
}

/// Copies the first frame from `from` to `to`, with `,"x":1` added to its JSON if `tamper`.
async fn relay_first_frame(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    tamper: bool,
) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    from.read_exact(&mut body).await?;
    if tamper && body.last() == Some(&b'}') {
        body.pop();
        body.extend_from_slice(br#","x":1}"#);
    }
    to.write_all(&(body.len() as u32).to_be_bytes()).await?;
    to.write_all(&body).await
}

async fn man_in_the_middle(server_port: u16, tamper: Tamper) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)).await else {
            return;
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = async {
            relay_first_frame(&mut cr, &mut sw, tamper == Tamper::ClientHello).await?;
            tokio::io::copy(&mut cr, &mut sw).await
        };
        let down = async {
            relay_first_frame(&mut sr, &mut cw, tamper == Tamper::ServerHello).await?;
            tokio::io::copy(&mut sr, &mut cw).await
        };
        let _ = tokio::join!(up, down);
    });
    port
}

#[tokio::test]
async fn a_man_in_the_middle_who_adds_a_field_to_hello_breaks_authentication() {
    let (_base, server) = Running::serving_f(Duration::from_secs(10)).await;
    let dst = tempfile::tempdir().unwrap();
    for (tamper, authenticates) in [
        (Tamper::Nothing, true),
        (Tamper::ClientHello, false),
        (Tamper::ServerHello, false),
    ] {
        let port = man_in_the_middle(server.port, tamper).await;
        let client = Client::new(ClientConfig::new(SECRET, dst.path(), "127.0.0.1", port));
        let result = client.connect(None).await;
        match (authenticates, result) {
            (true, Ok(())) => {}
            (false, Err(e)) => assert_eq!(e.kind(), ErrorKind::Auth, "{tamper:?}: {e}"),
            (_, r) => panic!("{tamper:?}: {r:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn unsafe_secrets_never_listen_and_an_empty_one_never_connects() {
    let base = tempfile::tempdir().unwrap();
    let cases = [
        // (secret, host, listens?)
        (DEFAULT_SECRET, "0.0.0.0", false),
        (DEFAULT_SECRET, "::", false),
        (DEFAULT_SECRET, "127.0.0.1", true),
        (DEFAULT_SECRET, "localhost", true),
        ("", "127.0.0.1", false),
        ("", "0.0.0.0", false),
        (SECRET, "0.0.0.0", true),
    ];
    for (secret, host, listens) in cases {
        let server = Server::new(ServerConfig::new(secret, base.path(), host, 0));
        match (server.bind().await, listens) {
            (Ok(_), true) => {}
            (Err(e), false) => {
                assert_eq!(e.kind(), ErrorKind::Config, "{secret:?} on {host}: {e}");
                assert!(e.to_string().contains("SSP_SECRET"), "{e}");
            }
            (r, _) => panic!("{secret:?} on {host}: {r:?}"),
        }
        server.stop().await;
    }
    // The client refuses before it connects: a closed port proves nothing was dialled.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dst = tempfile::tempdir().unwrap();
    let client = Client::new(ClientConfig::new("", dst.path(), "127.0.0.1", port));
    let e = client.connect(None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}

#[tokio::test]
async fn honest_clients_behind_one_address_authenticate_at_once() {
    let (_base, server) = Running::serving_f(Duration::from_secs(10)).await;
    let dsts: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let clients: Vec<Client> = dsts
        .iter()
        .map(|d| {
            Client::new(ClientConfig::new(
                SECRET,
                d.path(),
                "127.0.0.1",
                server.port,
            ))
        })
        .collect();
    let results = futures_util::future::join_all(clients.iter().map(|c| c.connect(None))).await;
    for r in results {
        r.unwrap();
    }
    server.stop().await;
}
