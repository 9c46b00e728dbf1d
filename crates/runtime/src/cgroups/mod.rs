//! TEMPORARY STUB written by the lead so the rest of the crate compiles;
//! the cgroups helper replaces this whole file.
#![allow(missing_docs, dead_code, unused_variables)]
#[derive(Debug, thiserror::Error)]
pub enum Error { #[error("cgroup stub")] Stub }
pub type Result<T> = std::result::Result<T, Error>;
pub enum Mode { V1, V2 }
pub struct Manager { path: String }
impl Manager {
    pub fn new(path: &str, systemd: bool) -> Result<Manager> { Ok(Manager { path: path.into() }) }
    pub fn path(&self) -> &str { &self.path }
    pub fn apply(&self, pid: i32) -> Result<()> { Ok(()) }
    pub fn set(&self, r: &oci_spec::runtime::LinuxResources) -> Result<()> { Ok(()) }
    pub fn pids(&self) -> Result<Vec<i32>> { Ok(vec![]) }
    pub fn freeze(&self) -> Result<()> { Ok(()) }
    pub fn thaw(&self) -> Result<()> { Ok(()) }
    pub fn is_frozen(&self) -> Result<bool> { Ok(false) }
    pub fn host_dirs(&self) -> Vec<(String, std::path::PathBuf)> { vec![] }
    pub fn destroy(&self) -> Result<()> { Ok(()) }
}
