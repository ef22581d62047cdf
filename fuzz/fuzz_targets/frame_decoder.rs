//! The frame decoder on arbitrary bytes, fed in arbitrary pieces, plaintext or sealed: it
//! returns messages or an error and never panics, and what it decodes survives a round trip.

#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use ssp::crypto::Sealer;
use ssp::crypto::Opener;
use ssp::protocol::{FrameDecoder, FrameEncoder, Message};
use tokio_util::codec::{Decoder, Encoder};

const KEY: [u8; 32] = [7; 32];

/// Drives `dec` over `wire`, handed over in pieces whose sizes come from `cuts`.
fn drive(dec: &mut FrameDecoder, wire: &[u8], cuts: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut rest = wire;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&255) as usize + 1).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return out,
            }
        }
    }
    out
}

fn roundtrips(m: &Message) {
    let mut buf = BytesMut::new();
    FrameEncoder::default()
        .encode(m.clone(), &mut buf)
        .expect("a decoded message re-encodes");
    let again = FrameDecoder::default().decode(&mut buf).expect("re-decodes");
    assert_eq!(again.as_ref(), Some(m));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (cuts, wire) = rest.split_at(rest.len().min(4));
    if mode & 1 == 0 {
        // Plaintext, as before the handshake completes.
        for m in drive(&mut FrameDecoder::default(), wire, cuts) {
            roundtrips(&m);
        }
    } else {
        // Sealed: every 0xFF-separated piece of the input becomes one record body, sealed with
        // the session key, so the decoder's message parsing behind the AEAD is reached too.
        let mut sealer = Sealer::new(&KEY);
        let mut sealed = BytesMut::new();
        for body in wire.split(|&b| b == 0xFF) {
            let mut body = body.to_vec();
            let Ok(tag) = sealer.seal(&mut body) else { return };
            sealed.put_u32((body.len() + tag.len()) as u32);
            sealed.extend_from_slice(&body);
            sealed.extend_from_slice(&tag);
        }
        let mut dec = FrameDecoder::default();
        dec.enable_encryption(Opener::new(&KEY));
        let _ = drive(&mut dec, &sealed, cuts);
    }
});
