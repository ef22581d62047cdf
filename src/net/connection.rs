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
    Auth, ErrorCode, ErrorMsg, FrameDecoder, FrameEncoder, Hello, Message, HELLO_TIMEOUT_MS,
    MAX_HANDSHAKE_FRAME_BYTES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

/// Incoming frames, decoded (and decrypted once the handshake is done).
pub type FrameReader = FramedRead<OwnedReadHalf, FrameDecoder>;
/// Outgoing frames; `feed` buffers, `flush` writes.
pub type FrameWriter = FramedWrite<OwnedWriteHalf, FrameEncoder>;

/// Outgoing bytes buffered before `feed` starts writing to the socket.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Read buffer of a connection that has not authenticated: a handshake frame and its prefix,
/// so hundreds of unauthenticated connections cost little memory.
const HANDSHAKE_READ_BUFFER_BYTES: usize = MAX_HANDSHAKE_FRAME_BYTES + 4;
/// Read buffer once authenticated: room for a few default chunks per read.
const SESSION_READ_BUFFER_BYTES: usize = 256 * 1024;

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
            reader: FramedRead::with_capacity(
                r,
                FrameDecoder::default(),
                HANDSHAKE_READ_BUFFER_BYTES,
            ),
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

    /// Switches both directions to the record layer and gives the read buffer its session size
    /// (it was kept small while the peer was unauthenticated).
    fn enable_encryption(&mut self, sealer: crate::crypto::Sealer, opener: crate::crypto::Opener) {
        self.writer.encoder_mut().enable_encryption(sealer);
        self.reader.decoder_mut().enable_encryption(opener);
        self.reader
            .read_buffer_mut()
            .reserve(SESSION_READ_BUFFER_BYTES);
    }

    /// Receives a HELLO and the exact payload bytes it arrived as (for the transcript).
    async fn recv_hello(&mut self) -> Result<std::result::Result<(Hello, Vec<u8>), Message>> {
        match self.recv().await? {
            Message::Hello(h) => {
                let body = self
                    .reader
                    .decoder_mut()
                    .take_plaintext_body()
                    .ok_or_else(|| Error::protocol("HELLO without its raw bytes"))?;
                // The payload follows the type byte.
                Ok(Ok((h, body.get(1..).unwrap_or_default().to_vec())))
            }
            m => Ok(Err(m)),
        }
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

/// The payload of HELLO exactly as the encoder puts it on the wire (the frame body after the
/// type byte): the transcript hashes these bytes.
fn hello_payload(h: &Hello) -> Vec<u8> {
    let mut body = bytes::BytesMut::new();
    Message::Hello(h.clone()).encode_into(&mut body);
    body.get(1..).unwrap_or_default().to_vec()
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
    let hello_c_bytes = hello_payload(&hello_c);
    conn.send(Message::Hello(hello_c)).await?;
    let (hello_s, hello_s_bytes) = match conn.recv_hello().await? {
        Ok(h) => h,
        Err(m) => return Err(unexpected(&m, "HELLO")),
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
    let (state, msg_a) = ClientAwaitReply::start(secret, &hello_c_bytes, &hello_s_bytes);
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
    conn.enable_encryption(sealer, opener);
    Ok(conn)
}

/// Runs the server side of the handshake on a freshly accepted stream, with the default HELLO
/// timeout and no guessing limits (see [`server_handshake_guarded`]).
pub async fn server_handshake(stream: TcpStream, secret: &[u8]) -> Result<Connection> {
    server_handshake_guarded(
        stream,
        secret,
        Duration::from_millis(HELLO_TIMEOUT_MS),
        || Ok(()),
    )
    .await
}

/// Runs the server side of the handshake on a freshly accepted stream.
///
/// The client must send its HELLO within `hello_timeout`. `before_reply` runs just before
/// PAKE_REPLY goes out, which is when the client gets to test one guess of the secret: the
/// caller counts the attempt as failed there (and clears that once this function returns
/// `Ok`), so no way of ending the handshake after the reply escapes the count. If it returns
/// `Err(reason)`, the reply is not sent: the client gets `ERROR rate_limited` with `reason`.
pub async fn server_handshake_guarded(
    stream: TcpStream,
    secret: &[u8],
    hello_timeout: Duration,
    before_reply: impl FnOnce() -> std::result::Result<(), String>,
) -> Result<Connection> {
    let mut conn = Connection::new(stream)?;
    let hello = tokio::time::timeout(hello_timeout, conn.recv_hello())
        .await
        .map_err(|_| Error::Timeout("waiting for the client's HELLO"))?;
    let (hello_c, hello_c_bytes) = match hello? {
        Ok(h) => h,
        Err(m) => {
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
    let hello_s_bytes = hello_payload(&hello_s);
    conn.send(Message::Hello(hello_s)).await?;
    let msg_a = match conn.recv().await? {
        Message::Auth(Auth::Pake { msg }) => unhex(&msg, "msg")?,
        m => {
            let err = unexpected(&m, "AUTH");
            conn.send_error(ErrorCode::BadMessage, err.to_string())
                .await;
            return Err(err);
        }
    };
    let (state, msg_b, confirm) =
        ServerAwaitConfirm::respond(secret, &hello_c_bytes, &hello_s_bytes, &msg_a)?;
    if let Err(reason) = before_reply() {
        conn.send_error(ErrorCode::RateLimited, reason.clone())
            .await;
        return Err(Error::Auth(format!("refused before the guess: {reason}")));
    }
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
    conn.enable_encryption(sealer, opener);
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
