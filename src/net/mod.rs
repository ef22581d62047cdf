//! Connections over TCP: framed, split halves, and the handshake drivers that run the
//! sans-I/O `crypto::handshake` states over a socket.

mod connection;

pub use connection::{
    client_handshake, recv, remote_error, server_handshake, server_handshake_guarded, Connection,
    FrameReader, FrameWriter,
};
