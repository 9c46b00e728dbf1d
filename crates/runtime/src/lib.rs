//! berth-runtime: turns an OCI bundle (config.json + rootfs) into an isolated
//! Linux process, and manages it through the OCI lifecycle.
//!
//! Synchronous by design (no async runtime): the code between fork and exec
//! must run in a single-threaded process. All raw syscalls live in [`sys`].
//! Start reading at [`container::Runtime`]; [`launcher`] shows the process
//! model (parent → stage 1 → container init).

pub mod cgroups;
pub mod console;
pub mod container;
pub mod error;
pub mod features;
pub mod foreground;
pub mod hooks;
pub mod init;
pub mod inroot;
pub mod launcher;
pub mod mount_options;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spec_default;
pub mod state;
pub mod sync;
pub mod sys;
