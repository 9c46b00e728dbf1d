//! The runtime's error type: one enum, messages lowercase and naming what
//! failed and why, so the CLI can print them as they are.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container with this id under the state root.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// A container with this id already exists.
    #[error("container {0:?} already exists")]
    Exists(String),
    /// The id is empty, too long or has characters that are unsafe in paths.
    #[error("invalid container id {0:?}: use 1-1024 characters from [A-Za-z0-9_.+-], not starting with '.'")]
    InvalidId(String),
    /// config.json is missing, malformed or asks for something invalid.
    #[error("invalid config {path}: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The requested operation does not fit the container's status.
    #[error("container {id} is {status}: cannot {action}")]
    BadState {
        /// The container id.
        id: String,
        /// Its current status.
        status: String,
        /// The refused operation.
        action: &'static str,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::Error),
    /// The seccomp profile could not be compiled or loaded.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::Error),
    /// A hook failed or timed out.
    #[error("{kind} hook {path}: {msg}")]
    Hook {
        /// Which hook list (prestart, createRuntime, …).
        kind: &'static str,
        /// The hook's executable.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// The container's init process reported a setup failure.
    #[error("container init: {0}")]
    Init(String),
    /// A request that is well-formed but not supported on this host.
    #[error("{0}")]
    Unsupported(String),
    /// Any other failure, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

/// Shorthand result type of the runtime.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds a description of the failed operation to I/O-ish errors.
pub trait Context<T> {
    /// Wraps the error into [`Error::Io`] with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { context: context(), source })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io { context: context(), source: io::Error::from(e) })
    }
}

impl<T> Context<T> for std::result::Result<T, pathrs::error::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io { context: context(), source: pathrs_to_io(&e) })
    }
}

/// Converts a pathrs error into an `io::Error`, keeping the errno when the
/// failure came from a syscall (callers test for ENOENT and friends).
pub fn pathrs_to_io(e: &pathrs::error::Error) -> io::Error {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => io::Error::from_raw_os_error(errno),
        _ => io::Error::other(e.to_string()),
    }
}
