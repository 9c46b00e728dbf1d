//! berth-runtime: turns an OCI bundle (config.json + rootfs) into an isolated
//! Linux process, and manages it through the OCI lifecycle.
//!
//! Synchronous by design (no async runtime): the code between fork and exec
//! must run in a single-threaded process. All raw syscalls live in [`sys`].

pub mod cgroups;
pub mod seccomp;
pub mod sys;
