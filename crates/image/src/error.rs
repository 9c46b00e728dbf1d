//! The image store's error type: one enum, each variant naming the input
//! (digest, reference, layer entry, file) and what went wrong with it.

use std::path::PathBuf;

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The string as given.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Content did not hash to the digest it was fetched or stored under.
    #[error("digest mismatch for {expected}: content hashes to {actual}")]
    DigestMismatch {
        /// The digest the content was supposed to have.
        expected: String,
        /// What it really hashes to.
        actual: String,
    },
    /// Content was longer or shorter than its descriptor says.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// Size from the descriptor.
        expected: u64,
        /// Bytes actually received.
        actual: u64,
    },
    /// A blob is not in the content store.
    #[error("blob {0} not found in the content store")]
    BlobNotFound(String),
    /// The unpacker refused a layer while it was downloading (its own
    /// error says why); internal to a pull.
    #[error("layer refused by the unpacker")]
    LayerRefused,
    /// The request conflicts with the store's state (e.g. deleting an
    /// image with several names by id).
    #[error("{0}")]
    Conflict(String),
    /// A `--change` instruction was refused.
    #[error("invalid change {change:?}: {reason}")]
    InvalidChange {
        /// The instruction as given.
        change: String,
        /// Why.
        reason: String,
    },
    /// A manifest, index or config could not be understood.
    #[error("invalid {what}: {reason}")]
    InvalidManifest {
        /// "manifest", "index", "image config", …
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No manifest in an index matches the wanted platform.
    #[error("no image for platform {wanted} in {reference} (available: {available})")]
    NoMatchingPlatform {
        /// The platform asked for, `os/arch[/variant]`.
        wanted: String,
        /// The image reference.
        reference: String,
        /// Platforms the index offers.
        available: String,
    },
    /// A layer tar entry was refused (path escape, bad header, …).
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The layer's digest (or a description).
        layer: String,
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A layer could not be read as a tar stream.
    #[error("layer {layer}: {reason}")]
    BadLayer {
        /// The layer's digest (or a description).
        layer: String,
        /// What went wrong.
        reason: String,
    },
    /// The registry answered with an error or could not be reached.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// Host[:port] of the registry.
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// An image reference could not be parsed.
    #[error("invalid reference format {reference:?}: {reason}")]
    InvalidReference {
        /// The string as given.
        reference: String,
        /// Why.
        reason: String,
    },
    /// An image archive (`load`) or layout is malformed or hostile: a path
    /// escaping the archive, a missing or oversized file, bad JSON.
    #[error("invalid image archive: {reason}")]
    BadArchive {
        /// What is wrong with it.
        reason: String,
    },
    /// No such image in the local store.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// The metadata database failed.
    #[error("image metadata database {path}: {reason}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done ("writing blob sha256:…").
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds context to I/O errors.
pub trait IoContext<T> {
    /// Wraps an I/O error with `context()`.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { context: context(), source })
    }
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io { context: context(), source: e.into() })
    }
}
