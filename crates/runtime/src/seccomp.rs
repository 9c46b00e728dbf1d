//! TEMPORARY STUB written by the lead so the rest of the crate compiles;
//! the seccomp helper replaces this whole file.
#![allow(missing_docs, dead_code, unused_variables)]
#[derive(Debug, thiserror::Error)]
pub enum Error { #[error("seccomp stub")] Stub }
pub type Result<T> = std::result::Result<T, Error>;
pub struct Filter;
pub fn compile(s: &oci_spec::runtime::LinuxSeccomp) -> Result<Filter> { Ok(Filter) }
impl Filter { pub fn load(&self) -> Result<Option<std::os::fd::OwnedFd>> { Ok(None) } }
