//! The PAKE handshake, sans I/O: SPAKE2 (Ed25519 group) from the shared secret, then key
//! confirmation in both directions, then HKDF-SHA256 for the per-direction record keys.
//!
//! Nothing on the wire lets an eavesdropper or a fake peer test password guesses offline:
//! SPAKE2 messages are indistinguishable from random group elements, and each confirmation
//! MAC is keyed by the SPAKE2 output, so one connection tests one guess at most.
//!
//! Each step consumes the previous state (`ClientAwaitReply` → keys,
//! `ServerAwaitConfirm` → keys), so a step cannot be repeated or skipped.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use super::{Opener, Sealer};
use crate::error::{Error, Result};

const ID_CLIENT: &[u8] = b"ssp/2 client";
const ID_SERVER: &[u8] = b"ssp/2 server";

/// The record keys of one authenticated session.
pub struct SessionKeys {
    client_to_server: [u8; 32],
    server_to_client: [u8; 32],
}

impl SessionKeys {
    /// The client's (sealer, opener).
    pub fn client_side(&self) -> (Sealer, Opener) {
        (
            Sealer::new(&self.client_to_server),
            Opener::new(&self.server_to_client),
        )
    }

    /// The server's (sealer, opener).
    pub fn server_side(&self) -> (Sealer, Opener) {
        (
            Sealer::new(&self.server_to_client),
            Opener::new(&self.client_to_server),
        )
    }
}

/// Keys derived from the SPAKE2 output and the transcript.
struct Schedule {
    transcript: [u8; 32],
    client_confirm: [u8; 32],
    server_confirm: [u8; 32],
    keys: SessionKeys,
}

fn transcript_hash(
    hello_client: &[u8],
    hello_server: &[u8],
    msg_a: &[u8],
    msg_b: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ssp/2 handshake transcript");
    for part in [hello_client, hello_server, msg_a, msg_b] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn schedule(shared: &[u8], transcript: [u8; 32]) -> Schedule {
    let hk = Hkdf::<Sha256>::new(Some(&transcript), shared);
    let expand = |label: &[u8]| {
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
        let _ = hk.expand(label, &mut out);
        out
    };
    Schedule {
        transcript,
        client_confirm: expand(b"ssp/2 confirm client"),
        server_confirm: expand(b"ssp/2 confirm server"),
        keys: SessionKeys {
            client_to_server: expand(b"ssp/2 key client->server"),
            server_to_client: expand(b"ssp/2 key server->client"),
        },
    }
}

fn mac(key: &[u8; 32], transcript: &[u8; 32]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(transcript);
    m.finalize().into_bytes().to_vec()
}

fn verify(key: &[u8; 32], transcript: &[u8; 32], tag: &[u8]) -> bool {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(transcript);
    m.verify_slice(tag).is_ok()
}

/// The client after sending SPAKE2 message A.
pub struct ClientAwaitReply {
    spake: Spake2<Ed25519Group>,
    msg_a: Vec<u8>,
    hello_client: Vec<u8>,
    hello_server: Vec<u8>,
}

impl ClientAwaitReply {
    /// Starts the handshake; returns the state and message A to send.
    pub fn start(secret: &[u8], hello_client: &[u8], hello_server: &[u8]) -> (Self, Vec<u8>) {
        let (spake, msg_a) = Spake2::<Ed25519Group>::start_a(
            &Password::new(secret),
            &Identity::new(ID_CLIENT),
            &Identity::new(ID_SERVER),
        );
        let state = Self {
            spake,
            msg_a: msg_a.clone(),
            hello_client: hello_client.to_vec(),
            hello_server: hello_server.to_vec(),
        };
        (state, msg_a)
    }

    /// Checks the server's confirmation; returns our confirmation to send and the keys.
    /// Fails with [`Error::Auth`] if the server does not know the secret.
    pub fn finish(self, msg_b: &[u8], server_confirm: &[u8]) -> Result<(Vec<u8>, SessionKeys)> {
        let shared = self
            .spake
            .finish(msg_b)
            .map_err(|e| Error::protocol(format!("bad SPAKE2 message from the server: {e:?}")))?;
        let t = transcript_hash(&self.hello_client, &self.hello_server, &self.msg_a, msg_b);
        let s = schedule(&shared, t);
        if !verify(&s.server_confirm, &s.transcript, server_confirm) {
            return Err(Error::Auth(
                "the server does not know our shared secret (check the secret on both sides)"
                    .into(),
            ));
        }
        Ok((mac(&s.client_confirm, &s.transcript), s.keys))
    }
}

/// The server after answering message A, waiting for the client's confirmation.
pub struct ServerAwaitConfirm {
    schedule: Schedule,
}

impl ServerAwaitConfirm {
    /// Answers the client's message A; returns the state, message B and our confirmation.
    pub fn respond(
        secret: &[u8],
        hello_client: &[u8],
        hello_server: &[u8],
        msg_a: &[u8],
    ) -> Result<(Self, Vec<u8>, Vec<u8>)> {
        let (spake, msg_b) = Spake2::<Ed25519Group>::start_b(
            &Password::new(secret),
            &Identity::new(ID_CLIENT),
            &Identity::new(ID_SERVER),
        );
        let shared = spake
            .finish(msg_a)
            .map_err(|e| Error::protocol(format!("bad SPAKE2 message from the client: {e:?}")))?;
        let t = transcript_hash(hello_client, hello_server, msg_a, &msg_b);
        let schedule = schedule(&shared, t);
        let confirm = mac(&schedule.server_confirm, &schedule.transcript);
        Ok((Self { schedule }, msg_b, confirm))
    }

    /// Checks the client's confirmation. Fails with [`Error::Auth`] on a wrong secret.
    pub fn finish(self, client_confirm: &[u8]) -> Result<SessionKeys> {
        let s = self.schedule;
        if verify(&s.client_confirm, &s.transcript, client_confirm) {
            Ok(s.keys)
        } else {
            Err(Error::Auth(
                "the client does not know our shared secret".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(client_secret: &[u8], server_secret: &[u8]) -> Result<(SessionKeys, SessionKeys)> {
        let (hc, hs) = (b"hello-c".as_slice(), b"hello-s".as_slice());
        let (client, msg_a) = ClientAwaitReply::start(client_secret, hc, hs);
        let (server, msg_b, sconf) = ServerAwaitConfirm::respond(server_secret, hc, hs, &msg_a)?;
        let (cconf, ckeys) = client.finish(&msg_b, &sconf)?;
        let skeys = server.finish(&cconf)?;
        Ok((ckeys, skeys))
    }

    #[test]
    fn same_secret_gives_matching_directional_keys() {
        let (c, s) = run(b"secret", b"secret").unwrap();
        assert_eq!(c.client_to_server, s.client_to_server);
        assert_eq!(c.server_to_client, s.server_to_client);
        assert_ne!(c.client_to_server, c.server_to_client);
    }

    #[test]
    fn wrong_secret_fails_at_the_client_with_auth_error() {
        assert!(matches!(run(b"secret", b"other"), Err(Error::Auth(_))));
    }

    #[test]
    fn server_rejects_a_forged_client_confirmation() {
        let (client, msg_a) = ClientAwaitReply::start(b"s", b"c", b"s");
        drop(client);
        let (server, _, _) = ServerAwaitConfirm::respond(b"s", b"c", b"s", &msg_a).unwrap();
        assert!(matches!(server.finish(&[0u8; 32]), Err(Error::Auth(_))));
    }

    #[test]
    fn tampered_hello_breaks_the_confirmation() {
        let (client, msg_a) = ClientAwaitReply::start(b"s", b"hello v2", b"server");
        let (_, msg_b, sconf) =
            ServerAwaitConfirm::respond(b"s", b"hello v1", b"server", &msg_a).unwrap();
        assert!(matches!(client.finish(&msg_b, &sconf), Err(Error::Auth(_))));
    }

    #[test]
    fn garbage_spake_message_is_a_protocol_error() {
        assert!(matches!(
            ServerAwaitConfirm::respond(b"s", b"c", b"s", b"short"),
            Err(Error::Protocol(_))
        ));
    }
}
