//! Authentication and encryption: the SPAKE2 handshake with key confirmation, the key schedule,
//! and the AES-256-GCM record layer with per-direction keys and counter nonces.

pub mod handshake;
mod record;

pub use handshake::{ClientAwaitReply, ServerAwaitConfirm, SessionKeys};
pub use record::{Opener, Sealer};

#[cfg(test)]
pub(crate) use record::pair as record_pair;
