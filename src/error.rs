//! The engine's one error type: every layer's failure, classified by [`ErrorKind`].

use std::io;
use std::path::PathBuf;

/// Coarse classification of an [`Error`], stable across versions; the Python bindings map
/// each kind to one exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer does not know the shared secret (or tampered with the handshake).
    Auth,
    /// The peer broke the protocol (bad frame, bad message, version mismatch, failed AEAD).
    Protocol,
    /// A path was rejected at a trust boundary.
    Path,
    /// The listening address is already in use.
    AddressInUse,
    /// The sync folder is unusable.
    Folder,
    /// The connection could not be made, was refused, timed out or was lost.
    Connection,
    /// A local disk operation failed.
    Disk,
    /// The operation was cancelled by the user.
    Cancelled,
    /// The sync ran to its end, but some files could not be synced (the others were).
    Incomplete,
    /// The configuration is unsafe or unusable (an empty secret, the default secret beyond
    /// loopback); nothing was started.
    Config,
}

/// Every failure the engine reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch { ours: u32, theirs: u32 },
    #[error("the peer reported an error ({code}): {message}")]
    Remote { code: String, message: String },
    #[error("rejected path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("address {addr} is already in use (another program listens on port {port}); choose another port or stop that program")]
    AddressInUse { addr: String, port: u16 },
    #[error("sync folder {}: {reason}", path.display())]
    Folder { path: PathBuf, reason: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("index store: {0}")]
    Store(String),
    #[error("the disk is full (or the quota used up) writing {}: free some space and sync again; files finished so far are kept", path.display())]
    DiskFull { path: PathBuf },
    #[error("not enough space in {}: the sync needs {}, {} free; free some space and sync again", path.display(), human_bytes(*.needed), human_bytes(*.free))]
    NoRoom {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error("sync incomplete: {failed} of {total} files failed; first: {first}")]
    Incomplete {
        failed: u64,
        total: u64,
        first: String,
    },
    #[error("sync folder {}: another sync is using this folder{}; wait for it to finish or stop it", path.display(), holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    FolderBusy {
        path: PathBuf,
        holder: Option<String>,
    },
    #[error("sync folder {}: {reason}; nothing was deleted anywhere (if this is what you meant, sync again allowing mass deletion: allow_mass_delete / --allow-mass-delete)", path.display())]
    MassDeletion { path: PathBuf, reason: String },
    #[error("sync cancelled")]
    Cancelled,
    /// One line saying what is wrong and how to fix it.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The kind of this error, for callers that branch on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Auth(_) => ErrorKind::Auth,
            Error::Remote { code, .. } if code == "auth_failed" => ErrorKind::Auth,
            // The server refused us for now (too many failures): retrying later may work.
            Error::Remote { code, .. } if code == "rate_limited" => ErrorKind::Connection,
            // The server does not take changes: a setting on one side or the other.
            Error::Remote { code, .. } if code == "read_only" => ErrorKind::Config,
            Error::Remote { code, .. } if code == "mass_deletion" || code == "busy" => {
                ErrorKind::Folder
            }
            Error::Protocol(_) | Error::VersionMismatch { .. } | Error::Remote { .. } => {
                ErrorKind::Protocol
            }
            Error::BadPath { .. } => ErrorKind::Path,
            Error::AddressInUse { .. } => ErrorKind::AddressInUse,
            Error::Folder { .. } | Error::FolderBusy { .. } | Error::MassDeletion { .. } => {
                ErrorKind::Folder
            }
            Error::Connect { .. } | Error::ConnectionLost(_) | Error::Timeout(_) => {
                ErrorKind::Connection
            }
            Error::Io { .. } | Error::Store(_) | Error::DiskFull { .. } | Error::NoRoom { .. } => {
                ErrorKind::Disk
            }
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Incomplete { .. } => ErrorKind::Incomplete,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this is a local write that failed for lack of space or quota: every later
    /// write would fail too, so a sync stops at the first one.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::NoRoom { .. } | Error::DiskFull { .. } => true,
            Error::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            _ => false,
        }
    }

    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        Error::Protocol(msg.into())
    }
}

impl From<io::Error> for Error {
    /// Only the frame codec relies on this: its I/O errors are socket errors.
    fn from(e: io::Error) -> Self {
        Error::ConnectionLost(e.to_string())
    }
}

/// `n` bytes for people: "1.5 GiB (1610612736 bytes)", or "512 bytes".
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let (mut value, mut unit) = (n as f64 / 1024.0, 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({n} bytes)", UNITS[unit])
}

/// Adds context to I/O results.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
