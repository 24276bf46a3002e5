//! Errors of the storage layer. An I/O failure is an error, never a panic; a detected
//! corruption is its own variant so that callers can stop the node (fail-stop) instead of
//! serving bad data.

use thiserror::Error;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The engine or the (simulated) disk reported an I/O failure.
    #[error("I/O error: {0}")]
    Io(String),
    /// Stored bytes failed a checksum or could not be decoded: the data is corrupt.
    #[error("corruption detected: {0}")]
    Corruption(String),
    /// A snapshot stream was malformed (truncated, wrong magic, bad checksum, ...).
    #[error("snapshot stream: {0}")]
    Stream(#[from] crate::storage::stream::StreamError),
    /// A snapshot id that this storage does not (or no longer) holds.
    #[error("unknown snapshot {0}")]
    UnknownSnapshot(String),
    /// A key or value over the limits of the storage layer.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Which field was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The engine refused the operation for another reason.
    #[error("engine error: {0}")]
    Engine(String),
    /// The storage was poisoned by an earlier failure and refuses further work.
    #[error("storage stopped after an earlier failure: {0}")]
    Stopped(String),
}

/// Result alias of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}
