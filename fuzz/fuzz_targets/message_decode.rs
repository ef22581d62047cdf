//! Every message decoder on arbitrary bodies: an error or a message, never a panic; a decoded
//! message encodes back to something that decodes to the same message.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ssp::protocol::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(Bytes::copy_from_slice(data)) {
        let mut buf = BytesMut::new();
        m.encode_into(&mut buf);
        let again = Message::decode(buf.freeze()).expect("our own encoding decodes");
        assert_eq!(again, m);
    }
});
