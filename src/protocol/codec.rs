//! Frame codec: a 4-byte big-endian length, then the body; after the handshake the body is an
//! AEAD record (see `crypto::record`). Sizes are checked before anything is allocated; before
//! encryption the limit is [`MAX_HANDSHAKE_FRAME_BYTES`], after it [`MAX_FRAME_BYTES`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Message, MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES};
use crate::crypto::{Opener, Sealer};
use crate::error::{Error, Result};

const LEN_BYTES: usize = 4;
/// Most the read buffer is grown at once for a frame still arriving: it grows as bytes come,
/// so a length prefix alone never costs the announced size.
const RESERVE_STEP_BYTES: usize = 1024 * 1024;

/// Reads frames; decrypts them once [`FrameDecoder::enable_encryption`] was called.
#[derive(Default)]
pub struct FrameDecoder {
    /// `None` during the plaintext handshake.
    opener: Option<Opener>,
    /// The body of the last plaintext frame exactly as received, for the handshake transcript
    /// (which must hash what was on the wire, not a re-serialisation).
    last_plaintext_body: Option<Bytes>,
}

impl FrameDecoder {
    /// From the next frame on, every frame must be a valid record under `opener`.
    pub fn enable_encryption(&mut self, opener: Opener) {
        self.opener = Some(opener);
        self.last_plaintext_body = None;
    }

    /// Takes the exact body (type byte and payload) of the last plaintext frame decoded.
    pub fn take_plaintext_body(&mut self) -> Option<Bytes> {
        self.last_plaintext_body.take()
    }

    /// The largest frame body accepted in the current state.
    pub fn frame_limit(&self) -> usize {
        if self.opener.is_some() {
            MAX_FRAME_BYTES
        } else {
            MAX_HANDSHAKE_FRAME_BYTES
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = Message;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>> {
        if src.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        let limit = self.frame_limit();
        if len > limit {
            let when = if self.opener.is_some() {
                ""
            } else {
                " before authentication"
            };
            return Err(Error::protocol(format!(
                "frame of {len} bytes exceeds the {limit}-byte limit{when}"
            )));
        }
        if src.len() < LEN_BYTES + len {
            // Only authenticated peers get room ahead of their bytes (saves copies on large
            // chunks), and at most a step of it.
            if self.opener.is_some() {
                src.reserve((LEN_BYTES + len - src.len()).min(RESERVE_STEP_BYTES));
            }
            return Ok(None);
        }
        src.advance(LEN_BYTES);
        let mut body = src.split_to(len);
        match &mut self.opener {
            Some(opener) => opener.open(&mut body)?,
            None => {
                let body = body.freeze();
                self.last_plaintext_body = Some(body.clone());
                return Message::decode(body).map(Some);
            }
        }
        Message::decode(body.freeze()).map(Some)
    }
}

/// Writes frames; encrypts them once [`FrameEncoder::enable_encryption`] was called.
#[derive(Default)]
pub struct FrameEncoder {
    /// `None` during the plaintext handshake.
    sealer: Option<Sealer>,
}

impl FrameEncoder {
    /// From the next frame on, every frame is sealed with `sealer`.
    pub fn enable_encryption(&mut self, sealer: Sealer) {
        self.sealer = Some(sealer);
    }
}

impl Encoder<Message> for FrameEncoder {
    type Error = Error;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<()> {
        let start = dst.len();
        dst.put_u32(0);
        msg.encode_into(dst);
        if let Some(sealer) = &mut self.sealer {
            let tag = sealer.seal(&mut dst[start + LEN_BYTES..])?;
            dst.extend_from_slice(&tag);
        }
        let len = dst.len() - start - LEN_BYTES;
        if len > MAX_FRAME_BYTES {
            dst.truncate(start);
            return Err(Error::protocol(format!(
                "refusing to send a frame of {len} bytes"
            )));
        }
        dst[start..start + LEN_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::record_pair;
    use crate::protocol::{FileChunk, Hello};
    use bytes::Bytes;

    fn hello() -> Message {
        Message::Hello(Hello {
            version: 2,
            min_version: 2,
            software: "test".into(),
        })
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut enc = FrameEncoder::default();
        let mut buf = BytesMut::new();
        enc.encode(hello(), &mut buf).unwrap();
        let full = buf.clone();
        let mut dec = FrameDecoder::default();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(dec.decode(&mut part).unwrap().is_none(), "cut at {cut}");
        }
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(hello()));
    }

    #[test]
    fn oversized_length_is_rejected_before_allocation() {
        let mut buf = BytesMut::from(&(u32::MAX).to_be_bytes()[..]);
        let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    /// (announced body length, encrypted?, accepted?)
    #[test]
    fn frame_limits_are_tighter_before_authentication() {
        let cases = [
            (MAX_HANDSHAKE_FRAME_BYTES, false, true),
            (MAX_HANDSHAKE_FRAME_BYTES + 1, false, false),
            (MAX_FRAME_BYTES, false, false),
            (MAX_HANDSHAKE_FRAME_BYTES + 1, true, true),
            (MAX_FRAME_BYTES, true, true),
            (MAX_FRAME_BYTES + 1, true, false),
        ];
        for (len, encrypted, accepted) in cases {
            let mut dec = if encrypted {
                sealed_pair().1
            } else {
                FrameDecoder::default()
            };
            let mut buf = BytesMut::from(&(len as u32).to_be_bytes()[..]);
            buf.extend_from_slice(b"\x01{");
            let r = dec.decode(&mut buf);
            assert_eq!(
                matches!(r, Ok(None)),
                accepted,
                "{len} bytes, encrypted {encrypted}: {r:?}"
            );
        }
    }

    #[test]
    fn a_length_prefix_alone_does_not_grow_the_buffer_to_the_announced_size() {
        // Before authentication: nothing reserved ahead of the bytes.
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&(MAX_HANDSHAKE_FRAME_BYTES as u32).to_be_bytes());
        buf.extend_from_slice(b"\x01{");
        assert!(FrameDecoder::default().decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() < MAX_HANDSHAKE_FRAME_BYTES,
            "{}",
            buf.capacity()
        );
        // After: at most one step ahead, not the announced 8 MiB.
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&(MAX_FRAME_BYTES as u32).to_be_bytes());
        assert!(sealed_pair().1.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= 2 * RESERVE_STEP_BYTES,
            "{}",
            buf.capacity()
        );
    }

    #[test]
    fn the_exact_plaintext_body_is_kept_for_the_transcript() {
        let body = b"\x01{\"version\":2,\"min_version\":2,\"software\":\"x\",\"extra\":1}";
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(body);
        let mut dec = FrameDecoder::default();
        assert!(matches!(dec.decode(&mut buf), Ok(Some(Message::Hello(_)))));
        assert_eq!(dec.take_plaintext_body().as_deref(), Some(&body[..]));
        assert_eq!(dec.take_plaintext_body(), None);
    }

    fn sealed_pair() -> (FrameEncoder, FrameDecoder) {
        let (sealer, opener) = record_pair([7u8; 32]);
        let mut enc = FrameEncoder::default();
        enc.enable_encryption(sealer);
        let mut dec = FrameDecoder::default();
        dec.enable_encryption(opener);
        (enc, dec)
    }

    fn chunk(n: u8) -> Message {
        Message::FileChunk(FileChunk {
            id: 1,
            offset: 0,
            last: false,
            data: Bytes::from(vec![n; 100]),
        })
    }

    #[test]
    fn sealed_frames_roundtrip_and_hide_content() {
        let (mut enc, mut dec) = sealed_pair();
        let mut buf = BytesMut::new();
        enc.encode(chunk(0x42), &mut buf).unwrap();
        assert!(
            !buf.windows(8).any(|w| w == [0x42; 8]),
            "plaintext visible on the wire"
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(chunk(0x42)));
    }

    #[test]
    fn tampered_frame_is_rejected() {
        let (mut enc, mut dec) = sealed_pair();
        let mut buf = BytesMut::new();
        enc.encode(chunk(1), &mut buf).unwrap();
        let last = buf.len() - 20;
        buf[last] ^= 1;
        assert!(matches!(dec.decode(&mut buf), Err(Error::Protocol(_))));
    }

    #[test]
    fn replayed_and_reordered_frames_are_rejected() {
        let (mut enc, mut dec) = sealed_pair();
        let mut first = BytesMut::new();
        enc.encode(chunk(1), &mut first).unwrap();
        let mut second = BytesMut::new();
        enc.encode(chunk(2), &mut second).unwrap();
        // Reordered: the second frame arrives first.
        let (_, mut dec2) = sealed_pair();
        assert!(dec2.decode(&mut second.clone()).is_err());
        // Replayed: the first frame arrives twice.
        let replay = first.clone();
        assert!(dec.decode(&mut first).unwrap().is_some());
        assert!(dec.decode(&mut replay.clone()).is_err());
    }

    /// Keeps the worked example of docs/protocol.md honest: its frame lengths, in order, and
    /// the JSON it quotes. A two-way client with an empty folder syncs with a server holding
    /// `empty` and `hello.txt`.
    #[test]
    fn worked_example_in_the_docs_has_these_frame_lengths() {
        use crate::index::{DeviceId, VersionVector};
        use crate::protocol::{
            Auth, FileIndex, FileRequest, IndexEntry, SyncComplete, SyncMode, SyncRequest,
        };
        fn body_len(enc: &mut FrameEncoder, m: Message) -> usize {
            let mut buf = BytesMut::new();
            enc.encode(m, &mut buf).unwrap();
            buf.len() - LEN_BYTES
        }
        let mut plain = FrameEncoder::default();
        let hello = Message::Hello(Hello {
            version: 3,
            min_version: 3,
            software: "ssp/0.2.0".into(),
        });
        let (a, b, mac) = ("41".repeat(33), "42".repeat(33), "9f".repeat(32));
        let handshake = [
            (hello, 53),
            (Message::Auth(Auth::Pake { msg: a }), 91),
            (
                Message::Auth(Auth::PakeReply {
                    msg: b,
                    confirm: mac.clone(),
                }),
                174,
            ),
            (Message::Auth(Auth::Confirm { confirm: mac }), 96),
            (Message::Auth(Auth::Ok {}), 14),
        ];
        for (m, len) in handshake {
            assert_eq!(body_len(&mut plain, m.clone()), len, "{m:?}");
        }
        let (client, server) = (
            DeviceId(0x0123_4567_89AB_CDEF),
            DeviceId(0xFEDC_BA98_7654_3210),
        );
        let sync_request = |device| {
            Message::SyncRequest(SyncRequest {
                mode: SyncMode::TwoWay,
                device,
                read_only: false,
                allow_mass_delete: false,
                known: Default::default(),
            })
        };
        // The server's first scan: each file is a change of its own, version {server: 1},
        // sequence numbers in path order.
        let entry = |path: &str, content: &[u8], sequence| IndexEntry {
            path: path.into(),
            size: content.len() as u64,
            mtime_ns: 1_732_640_000_000_000_000,
            executable: false,
            mode: Some(0o644),
            hash: blake3::hash(content).to_hex().to_string(),
            version: VersionVector([(server, 1)].into_iter().collect()),
            sequence,
            modified_by: Some(server),
            ..Default::default()
        };
        let index = |entries| {
            Message::FileIndex(FileIndex {
                entries,
                last: true,
            })
        };
        let request = |id, path: &str| {
            Message::FileRequest(FileRequest {
                id,
                path: path.into(),
                offset: 0,
            })
        };
        let chunk = |id, data: &'static [u8]| {
            Message::FileChunk(FileChunk {
                id,
                offset: 0,
                last: true,
                data: Bytes::from_static(data),
            })
        };
        let complete = |files, bytes, sequence| {
            Message::SyncComplete(SyncComplete {
                files,
                bytes,
                failed: 0,
                sequence,
            })
        };
        let server_index = vec![entry("empty", b"", 1), entry("hello.txt", b"hello\n", 2)];
        assert_eq!(
            serde_json::to_string(&server_index[1]).unwrap(),
            concat!(
                r#"{"path":"hello.txt","size":6,"mtime_ns":1732640000000000000,"#,
                r#""executable":false,"mode":420,"#,
                r#""hash":"8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99","#,
                r#""kind":"file","version":{"FEDCBA9876543210":1},"sequence":2,"#,
                r#""modified_by":"FEDCBA9876543210"}"#
            ),
            "the entry quoted in the docs"
        );
        let mut quoted = BytesMut::new();
        sync_request(client).encode_into(&mut quoted);
        assert_eq!(
            &quoted[..],
            &b"\x0a{\"mode\":\"two-way\",\"device\":\"0123456789ABCDEF\",\"read_only\":false}"[..],
            "the SYNC_REQUEST quoted in the docs"
        );
        let (mut enc, _) = sealed_pair();
        // (message, encrypted frame body length), in the order the docs show them.
        let session = [
            (sync_request(client), 81),
            (sync_request(server), 81),
            (index(vec![]), 43),
            (index(server_index), 554),
            (request(0, "empty"), 51),
            (request(1, "hello.txt"), 55),
            (complete(0, 0, 2), 62),
            (chunk(0, b""), 33),
            (chunk(1, b"hello\n"), 39),
            (complete(2, 6, 0), 62),
        ];
        for (m, len) in session {
            assert_eq!(body_len(&mut enc, m.clone()), len, "{m:?}");
        }
        assert_eq!(
            blake3::hash(b"").to_hex().as_str(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "the empty file's hash quoted in the docs"
        );
    }

    #[test]
    fn plaintext_frame_after_encryption_is_rejected() {
        let (_, mut dec) = sealed_pair();
        let mut buf = BytesMut::new();
        FrameEncoder::default().encode(hello(), &mut buf).unwrap();
        assert!(dec.decode(&mut buf).is_err());
    }
}
