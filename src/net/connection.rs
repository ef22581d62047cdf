//! A `Connection` owns one socket as a framed reader and writer; the handshake functions turn a
//! fresh `TcpStream` into an authenticated, encrypted `Connection`.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::crypto::{ClientAwaitReply, ServerAwaitConfirm};
use crate::error::{Error, Result};
use crate::protocol::{
    Auth, ErrorCode, ErrorMsg, FrameDecoder, FrameEncoder, Hello, Message, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};

/// Incoming frames, decoded (and decrypted once the handshake is done).
pub type FrameReader = FramedRead<OwnedReadHalf, FrameDecoder>;
/// Outgoing frames; `feed` buffers, `flush` writes.
pub type FrameWriter = FramedWrite<OwnedWriteHalf, FrameEncoder>;

/// Outgoing bytes buffered before `feed` starts writing to the socket.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// TCP keepalive: after this long without traffic the kernel starts probing the peer...
const KEEPALIVE_IDLE_S: u64 = 30;
/// ...this often...
const KEEPALIVE_INTERVAL_S: u64 = 10;
/// ...and gives up after this many unanswered probes, so a peer whose host died or whose
/// network vanished (no RST ever comes) fails reads after about a minute instead of never.
const KEEPALIVE_RETRIES: u32 = 3;

fn enable_keepalive(stream: &TcpStream) {
    let params = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(KEEPALIVE_IDLE_S))
        .with_interval(Duration::from_secs(KEEPALIVE_INTERVAL_S))
        .with_retries(KEEPALIVE_RETRIES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&params) {
        tracing::debug!("cannot enable TCP keepalive: {e}");
    }
}

/// One peer connection.
pub struct Connection {
    pub reader: FrameReader,
    pub writer: FrameWriter,
    pub peer: SocketAddr,
}

impl Connection {
    fn new(stream: TcpStream) -> Result<Connection> {
        // We batch frames ourselves; Nagle would only add latency to the last one.
        let _ = stream.set_nodelay(true);
        enable_keepalive(&stream);
        let peer = stream
            .peer_addr()
            .map_err(|e| Error::ConnectionLost(e.to_string()))?;
        let (r, w) = stream.into_split();
        let mut writer = FramedWrite::new(w, FrameEncoder::default());
        writer.set_backpressure_boundary(WRITE_BUFFER_BYTES);
        Ok(Connection {
            reader: FramedRead::with_capacity(r, FrameDecoder::default(), 256 * 1024),
            writer,
            peer,
        })
    }

    /// Sends one message and flushes.
    pub async fn send(&mut self, msg: Message) -> Result<()> {
        self.writer.send(msg).await
    }

    /// Receives one message; a peer ERROR becomes `Err`.
    pub async fn recv(&mut self) -> Result<Message> {
        recv(&mut self.reader).await
    }

    /// Best effort: tell the peer why we are closing.
    pub async fn send_error(&mut self, code: ErrorCode, message: impl Into<String>) {
        let _ = self
            .send(Message::Error(ErrorMsg::fatal(code, message)))
            .await;
    }
}

/// Converts a peer's ERROR into our error, its text made safe to show
/// ([`crate::protocol::peer_text`]): it reaches terminals, logs and the web page.
pub fn remote_error(e: ErrorMsg) -> Error {
    let message = crate::protocol::peer_text(&e.message);
    match e.code {
        ErrorCode::AuthFailed => Error::Auth(format!("the server rejected us: {message}")),
        _ => Error::Remote {
            code: e.code.as_str().to_owned(),
            message,
        },
    }
}

/// Reads the next message; end of stream is `ConnectionLost`, a peer ERROR is `Err`.
pub async fn recv(reader: &mut FrameReader) -> Result<Message> {
    match reader.next().await {
        Some(Ok(Message::Error(e))) => Err(remote_error(e)),
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(e),
        None => Err(Error::ConnectionLost(
            "the peer closed the connection".into(),
        )),
    }
}

fn our_hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        software: format!("ssp/{}", env!("CARGO_PKG_VERSION")),
    }
}

fn hello_bytes(h: &Hello) -> Vec<u8> {
    serde_json::to_vec(h).unwrap_or_default()
}

fn unhex(s: &str, what: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|_| Error::protocol(format!("{what} is not hex")))
}

fn unexpected(m: &Message, during: &str) -> Error {
    Error::protocol(format!("unexpected {:?} during {during}", m.message_type()))
}

/// Runs the client side of the handshake on a fresh stream.
pub async fn client_handshake(stream: TcpStream, secret: &[u8]) -> Result<Connection> {
    let mut conn = Connection::new(stream)?;
    let hello_c = our_hello();
    conn.send(Message::Hello(hello_c.clone())).await?;
    let hello_s = match conn.recv().await? {
        Message::Hello(h) => h,
        m => return Err(unexpected(&m, "HELLO")),
    };
    if hello_s.version < MIN_PROTOCOL_VERSION || hello_s.min_version > PROTOCOL_VERSION {
        let err = Error::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: hello_s.version,
        };
        conn.send_error(ErrorCode::VersionMismatch, err.to_string())
            .await;
        return Err(err);
    }
    let (state, msg_a) =
        ClientAwaitReply::start(secret, &hello_bytes(&hello_c), &hello_bytes(&hello_s));
    conn.send(Message::Auth(Auth::Pake {
        msg: hex::encode(msg_a),
    }))
    .await?;
    let (msg_b, server_confirm) = match conn.recv().await? {
        Message::Auth(Auth::PakeReply { msg, confirm }) => {
            (unhex(&msg, "msg")?, unhex(&confirm, "confirm")?)
        }
        m => return Err(unexpected(&m, "AUTH")),
    };
    let (confirm, keys) = state.finish(&msg_b, &server_confirm)?;
    conn.send(Message::Auth(Auth::Confirm {
        confirm: hex::encode(confirm),
    }))
    .await?;
    match conn.recv().await? {
        Message::Auth(Auth::Ok {}) => {}
        m => return Err(unexpected(&m, "AUTH")),
    }
    let (sealer, opener) = keys.client_side();
    conn.writer.encoder_mut().enable_encryption(sealer);
    conn.reader.decoder_mut().enable_encryption(opener);
    Ok(conn)
}

/// Runs the server side of the handshake on a freshly accepted stream.
pub async fn server_handshake(stream: TcpStream, secret: &[u8]) -> Result<Connection> {
    let mut conn = Connection::new(stream)?;
    let hello_c = match conn.recv().await? {
        Message::Hello(h) => h,
        m => {
            let err = unexpected(&m, "HELLO");
            conn.send_error(ErrorCode::BadMessage, err.to_string())
                .await;
            return Err(err);
        }
    };
    if hello_c.version < MIN_PROTOCOL_VERSION || hello_c.min_version > PROTOCOL_VERSION {
        let msg = format!(
            "protocol version mismatch: server speaks {PROTOCOL_VERSION} (accepts {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}), client speaks {}",
            hello_c.version
        );
        conn.send_error(ErrorCode::VersionMismatch, msg).await;
        return Err(Error::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: hello_c.version,
        });
    }
    let hello_s = our_hello();
    conn.send(Message::Hello(hello_s.clone())).await?;
    let msg_a = match conn.recv().await? {
        Message::Auth(Auth::Pake { msg }) => unhex(&msg, "msg")?,
        m => {
            let err = unexpected(&m, "AUTH");
            conn.send_error(ErrorCode::BadMessage, err.to_string())
                .await;
            return Err(err);
        }
    };
    let (state, msg_b, confirm) = ServerAwaitConfirm::respond(
        secret,
        &hello_bytes(&hello_c),
        &hello_bytes(&hello_s),
        &msg_a,
    )?;
    conn.send(Message::Auth(Auth::PakeReply {
        msg: hex::encode(msg_b),
        confirm: hex::encode(confirm),
    }))
    .await?;
    let client_confirm = match conn.recv().await {
        Ok(Message::Auth(Auth::Confirm { confirm })) => unhex(&confirm, "confirm")?,
        Ok(m) => return Err(unexpected(&m, "AUTH")),
        // A client that closes here found out our confirmation did not match its secret.
        Err(Error::ConnectionLost(_)) => {
            return Err(Error::Auth(
                "the client does not know our shared secret".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    let keys = match state.finish(&client_confirm) {
        Ok(keys) => keys,
        Err(e) => {
            conn.send_error(ErrorCode::AuthFailed, "authentication failed")
                .await;
            return Err(e);
        }
    };
    conn.send(Message::Auth(Auth::Ok {})).await?;
    let (sealer, opener) = keys.server_side();
    conn.writer.encoder_mut().enable_encryption(sealer);
    conn.reader.decoder_mut().enable_encryption(opener);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_ends_probe_a_silent_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        for stream in [client.unwrap(), accepted.unwrap().0] {
            let conn = Connection::new(stream).unwrap();
            let sock = socket2::SockRef::from(conn.reader.get_ref().as_ref());
            assert!(sock.keepalive().unwrap());
            assert_eq!(
                sock.tcp_keepalive_time().unwrap(),
                Duration::from_secs(KEEPALIVE_IDLE_S)
            );
            assert_eq!(
                sock.tcp_keepalive_interval().unwrap(),
                Duration::from_secs(KEEPALIVE_INTERVAL_S)
            );
        }
    }
}
