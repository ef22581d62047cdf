//! The handshake state machines with hostile inputs: a forged SPAKE2 message or confirmation is
//! an error (never a panic, never keys), and honest runs agree on keys exactly when the secrets
//! are equal, whatever the HELLO bytes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ssp::crypto::{ClientAwaitReply, ServerAwaitConfirm};

fn split(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == 0).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let parts = split(rest);
    let part = |i: usize| parts.get(i).copied().unwrap_or(b"");
    let (hello_c, hello_s) = (part(0), part(1));
    match mode % 3 {
        0 => {
            // A client answered by a forged PAKE_REPLY.
            let (client, _msg_a) = ClientAwaitReply::start(b"secret", hello_c, hello_s);
            assert!(client.finish(part(2), part(3)).is_err(), "forged reply accepted");
        }
        1 => {
            // A server given a forged message A and then a forged confirmation.
            if let Ok((server, _msg_b, _confirm)) =
                ServerAwaitConfirm::respond(b"secret", hello_c, hello_s, part(2))
            {
                assert!(server.finish(part(3)).is_err(), "forged confirm accepted");
            }
        }
        _ => {
            // Honest peers, secrets from the input: keys match iff the secrets do.
            let (sc, ss) = (part(2), part(3));
            let (client, msg_a) = ClientAwaitReply::start(sc, hello_c, hello_s);
            let (server, msg_b, confirm) =
                ServerAwaitConfirm::respond(ss, hello_c, hello_s, &msg_a).expect("honest A");
            match client.finish(&msg_b, &confirm) {
                Ok((client_confirm, ckeys)) => {
                    assert_eq!(sc, ss, "different secrets authenticated the server");
                    let skeys = server.finish(&client_confirm).expect("honest confirm");
                    let (mut sealer, _) = ckeys.client_side();
                    let (_, mut opener) = skeys.server_side();
                    let mut record = BytesMut::from(&b"ping"[..]);
                    let tag = sealer.seal(&mut record).expect("seal");
                    record.extend_from_slice(&tag);
                    opener.open(&mut record).expect("keys agree");
                    assert_eq!(&record[..], b"ping");
                }
                Err(_) => assert_ne!(sc, ss, "equal secrets failed"),
            }
        }
    }
});
