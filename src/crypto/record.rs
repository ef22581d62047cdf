//! AEAD records: AES-256-GCM, one key per direction, nonce = 32 zero bits ‖ 64-bit counter.
//!
//! The counter is never sent: a dropped, replayed or reordered record fails authentication,
//! which closes the connection.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use bytes::BytesMut;

use crate::error::{Error, Result};

/// Bytes of the authentication tag appended to each record.
pub const TAG_BYTES: usize = 16;

fn nonce(counter: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

/// Encrypts outgoing records.
pub struct Sealer {
    cipher: Aes256Gcm,
    /// Number of records sealed so far: the next nonce.
    counter: u64,
}

impl Sealer {
    /// A sealer for the direction keyed by `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
            counter: 0,
        }
    }

    /// Encrypts `buf` in place and returns the tag to append.
    pub fn seal(&mut self, buf: &mut [u8]) -> Result<[u8; TAG_BYTES]> {
        let n = nonce(self.counter);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| Error::protocol("record counter exhausted"))?;
        let tag = self
            .cipher
            .encrypt_inout_detached(&n, b"", buf.into())
            .map_err(|_| Error::protocol("record too large to encrypt"))?;
        let mut out = [0u8; TAG_BYTES];
        out.copy_from_slice(&tag);
        Ok(out)
    }
}

/// Decrypts incoming records.
pub struct Opener {
    cipher: Aes256Gcm,
    /// Number of records opened so far: the nonce the next record must use.
    counter: u64,
}

impl Opener {
    /// An opener for the direction keyed by `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
            counter: 0,
        }
    }

    /// Authenticates and decrypts `body` (ciphertext ‖ tag) in place, leaving the plaintext.
    pub fn open(&mut self, body: &mut BytesMut) -> Result<()> {
        let split = body
            .len()
            .checked_sub(TAG_BYTES)
            .ok_or_else(|| Error::protocol("record shorter than its tag"))?;
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&body[split..]);
        let n = nonce(self.counter);
        self.cipher
            .decrypt_inout_detached(&n, b"", (&mut body[..split]).into(), &tag.into())
            .map_err(|_| {
                Error::protocol("record failed authentication (tampered, replayed or reordered)")
            })?;
        self.counter += 1;
        body.truncate(split);
        Ok(())
    }
}

/// A sealer and the matching opener, for tests.
#[cfg(test)]
pub(crate) fn pair(key: [u8; 32]) -> (Sealer, Opener) {
    (Sealer::new(&key), Opener::new(&key))
}
