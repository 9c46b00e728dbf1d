//! berth-engine: containers with Docker's semantics, built from images
//! (berth-image) and run by per-container monitors (berth-runtime).
//!
//! - [`engine`]: the facade the API drives: create, start, stop, kill,
//!   remove, wait, list, logs, and recovery after a daemon restart.
//! - [`monitor`]: the `berth monitor` process, one per container: holds
//!   stdio, writes logs, records exits, restarts; serves a unix socket.
//! - [`detach`]: detach keys (ctrl-p,ctrl-q), parsed and scanned for.
//! - [`disk_usage`]: `system df` (images, containers, volumes).
//! - [`archive`]: cp in/out, export, diff (paths resolved inside the root).
//! - [`client`]: the daemon's side of that socket.
//! - [`exec`]: processes run inside a running container.
//! - [`health`]: health checks, run by the monitor.
//! - [`zygote`]: a monitor started ahead, idle until a container starts.
//! - [`stats`]: resource usage from the cgroup (`docker stats`).
//! - [`spec`]: Docker's Config/HostConfig → OCI config.json, with Docker's
//!   defaults (caps, seccomp, masked paths).
//! - [`user`]: `--user` resolved against the image's passwd/group.
//! - [`volumes`], [`mounts`]: named/anonymous volumes, binds, tmpfs.
//! - [`logs`]: the json-file log format, writer and reader.
//! - [`record`], [`db`], [`paths`]: what is stored, and where.
//!
//! Synchronous: the API layer runs engine calls on blocking threads.

pub mod archive;
pub mod client;
pub mod db;
pub mod detach;
pub mod disk_usage;
pub mod engine;
pub mod error;
pub mod exec;
pub mod health;
pub mod logs;
pub mod monitor;
pub mod mounts;
pub mod paths;
pub mod record;
pub mod spec;
pub mod stats;
pub mod sys;
pub mod user;
pub mod volumes;
pub mod zygote;

pub use engine::Engine;
pub use error::{Error, Result};
