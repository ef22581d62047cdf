//! Property tests at the trust boundaries: whatever bytes a peer sends, parsing returns a value
//! or an error (never a panic); whatever path a peer names, an accepted one stays inside the
//! folder; and the pure pull planner accounts for every remote file exactly once.

use std::path::{Component, Path};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ssp::crypto::{Opener, Sealer};
use ssp::fs::RelPath;
use ssp::protocol::{FileChunk, FrameDecoder, FrameEncoder, Message};
use tokio_util::codec::{Decoder, Encoder};

/// Components that break naive path handling, joined by `/`, sometimes with a leading `/`;
/// or strings of the characters involved.
fn dangerous_path() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "a",
        "é",
        ".",
        "..",
        "",
        "...",
        "a..b",
        ".ssp",
        ".ssp-part-x",
        "C:",
        "c:x",
        "a\\b",
        "\\",
        "\0",
        "a\0",
        "~",
        " ",
        "-",
        "x/",
    ];
    let joined = (
        any::<bool>(),
        prop::collection::vec(prop::sample::select(PIECES), 0..6),
    )
        .prop_map(|(lead, parts)| format!("{}{}", if lead { "/" } else { "" }, parts.join("/")));
    prop_oneof![joined, "[a./\\\\:\u{0}é ~-]{0,24}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A message body of any bytes parses or fails; it never panics.
    #[test]
    fn any_message_body_parses_or_fails(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(Bytes::from(body));
    }

    /// Likewise for the body after a valid type byte, where the JSON and binary parsers start.
    #[test]
    fn any_payload_after_each_type_byte_parses_or_fails(
        kind in 0u8..=11,
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut body = vec![kind];
        body.extend(payload);
        let _ = Message::decode(Bytes::from(body));
    }

    /// A byte stream of frames, plaintext or encrypted, decodes or fails; never panics, and
    /// never asks for more than the frame limit.
    #[test]
    fn any_byte_stream_decodes_or_fails(
        stream in prop::collection::vec(any::<u8>(), 0..1024),
        sealed in any::<bool>(),
    ) {
        let mut dec = FrameDecoder::default();
        if sealed {
            dec.enable_encryption(Opener::new(&[9u8; 32]));
        }
        let mut buf = BytesMut::from(&stream[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
        prop_assert!(buf.capacity() <= ssp::protocol::MAX_FRAME_BYTES + 4 + stream.len());
    }

    /// Every FILE_CHUNK survives encryption, framing and parsing unchanged.
    #[test]
    fn file_chunks_roundtrip_through_sealed_frames(
        id in any::<u32>(),
        offset in any::<u64>(),
        last in any::<bool>(),
        data in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let chunk = Message::FileChunk(FileChunk { id, offset, last, data: Bytes::from(data) });
        let mut enc = FrameEncoder::default();
        enc.enable_encryption(Sealer::new(&[3u8; 32]));
        let mut dec = FrameDecoder::default();
        dec.enable_encryption(Opener::new(&[3u8; 32]));
        let mut wire = BytesMut::new();
        enc.encode(chunk.clone(), &mut wire).unwrap();
        prop_assert_eq!(dec.decode(&mut wire).unwrap(), Some(chunk));
        prop_assert!(wire.is_empty());
    }

    /// Paths built from the pieces that make paths dangerous: an accepted one is relative,
    /// made of plain names only, and joins to a place under the folder.
    #[test]
    fn accepted_paths_stay_inside_the_folder(s in dangerous_path()) {
        if let Ok(rel) = RelPath::parse(&s) {
            prop_assert_eq!(rel.as_str(), s.as_str());
            let root = Path::new("/srv/folder");
            let joined = rel.under(root);
            prop_assert!(joined.starts_with(root));
            let inside = joined.strip_prefix(root).unwrap();
            prop_assert!(inside.components().all(|c| matches!(c, Component::Normal(_))), "{:?}", inside);
            prop_assert!(!s.contains('\\') && !s.contains('\0'));
            prop_assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
            prop_assert!(s.split('/').next() != Some(".ssp"), "inside the metadata folder");
            prop_assert!(!s.split('/').any(|c| c.starts_with(".ssp-part-")), "a temp file name");
        }
    }
}
