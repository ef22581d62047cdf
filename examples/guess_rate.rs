//! Measures online guessing: how many wrong-secret guesses per minute a client can test against
//! a local SSP server, from one source address or from many (127.0.0.1..127.0.0.N).
//!
//! Each guess is one handshake up to the server's PAKE_REPLY (which lets the client check its
//! guess offline), ended with a HEARTBEAT instead of a confirmation, the cheapest way out.
//!
//! ```text
//! cargo run --example guess_rate -- [ADDRESSES] [SECONDS] [PER_ADDRESS]
//! ```
//! Defaults: 1 address, 20 s, 4 concurrent guessers per address. The server runs in-process on
//! 127.0.0.1 with a random folder. It uses only the crate's public wire types, so it also builds
//! against older versions of the crate (for before/after figures).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ssp::crypto::ClientAwaitReply;
use ssp::protocol::{Auth, FrameDecoder, FrameEncoder, Hello, Message};
use ssp::{Server, ServerConfig};
use tokio::net::TcpSocket;
use tokio_util::codec::{FramedRead, FramedWrite};

/// Counts of what the guessers saw.
#[derive(Default)]
struct Tally {
    /// Handshakes that reached PAKE_REPLY: one guess tested each.
    guesses: AtomicU64,
    /// Connections the server closed or refused before its reply.
    refused: AtomicU64,
}

/// One guess from `source`; true if the server sent its PAKE_REPLY.
async fn guess(port: u16, source: Ipv4Addr) -> std::io::Result<bool> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let stream = socket.connect((Ipv4Addr::LOCALHOST, port).into()).await?;
    let (r, w) = stream.into_split();
    let mut reader = FramedRead::new(r, FrameDecoder::default());
    let mut writer = FramedWrite::new(w, FrameEncoder::default());
    let hello = Hello {
        version: 2,
        min_version: 2,
        software: "guess_rate".into(),
    };
    if writer.send(Message::Hello(hello)).await.is_err() {
        return Ok(false);
    }
    match reader.next().await {
        Some(Ok(Message::Hello(_))) => {}
        _ => return Ok(false),
    }
    let (_, msg_a) = ClientAwaitReply::start(b"a wrong guess", b"", b"");
    let pake = Message::Auth(Auth::Pake {
        msg: hex::encode(msg_a),
    });
    if writer.send(pake).await.is_err() {
        return Ok(false);
    }
    match reader.next().await {
        Some(Ok(Message::Auth(Auth::PakeReply { .. }))) => {
            // The guess is tested now (offline); leave without confirming.
            let _ = writer.send(Message::Heartbeat).await;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addresses: u8 = args.next().map_or(Ok(1), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(20), |a| a.parse())?;
    let per_address: u32 = args.next().map_or(Ok(4), |a| a.parse())?;

    let folder = std::env::temp_dir().join(format!("ssp-guess-rate-{}", std::process::id()));
    let config = ServerConfig::new("the real secret is long", &folder, "127.0.0.1", 0);
    let server = Arc::new(Server::new(config));
    let port = server.bind().await?.port();
    let serving = {
        let s = Arc::clone(&server);
        tokio::spawn(async move { s.serve().await })
    };

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for a in 0..addresses {
        let source = Ipv4Addr::new(127, 0, 0, a.saturating_add(1));
        for _ in 0..per_address {
            let tally = Arc::clone(&tally);
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    match guess(port, source).await {
                        Ok(true) => {
                            tally.guesses.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                            // A refusal is free for the attacker; pause a little so the
                            // measurement does not just burn the CPU it shares with the server.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    let guesses = tally.guesses.load(Ordering::Relaxed);
    println!(
        "{addresses} address(es), {seconds} s: {guesses} guesses tested ({:.0}/min), {} refused connections",
        guesses as f64 * 60.0 / seconds as f64,
        tally.refused.load(Ordering::Relaxed)
    );
    server.stop().await;
    serving.await??;
    let _ = std::fs::remove_dir_all(&folder);
    Ok(())
}
