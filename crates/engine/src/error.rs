//! The engine's errors. Each maps to the HTTP status Docker answers with
//! ([`Error::status`]), so the API layer stays a thin translation.

/// An engine error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such container (404).
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// No such image (404).
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// No such path in a container (404).
    #[error("Could not find the file {0} in container")]
    NoSuchPath(String),
    /// No such volume (404).
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    /// The request conflicts with the current state (409), e.g. a name in use.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed or asks for something impossible (400).
    #[error("{0}")]
    BadRequest(String),
    /// The container's process could not be started (500 in Docker, and
    /// 126/127 exit codes for `run`).
    #[error("failed to start container: {0}")]
    Start(String),
    /// From the image store.
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// From the runtime.
    #[error(transparent)]
    Runtime(#[from] berth_runtime::error::Error),
    /// The state database.
    #[error("container database: {0}")]
    Db(String),
    /// A filesystem or process operation.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status Docker uses for this kind of error.
    pub fn status(&self) -> u16 {
        match self {
            Error::NoSuchContainer(_) | Error::NoSuchImage(_) | Error::NoSuchVolume(_) | Error::NoSuchPath(_) => 404,
            Error::Image(berth_image::Error::ImageNotFound(_)) => 404,
            Error::Conflict(_) | Error::Image(berth_image::Error::Conflict(_)) => 409,
            Error::BadRequest(_) => 400,
            Error::Image(berth_image::Error::InvalidReference { .. }) => 400,
            _ => 500,
        }
    }
}

/// Result with the engine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to I/O errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { context: f(), source })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io { context: f(), source: e.into() })
    }
}
