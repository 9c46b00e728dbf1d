//! What the engine keeps about a container.
//!
//! Two halves with one writer each, so the daemon and a container's monitor
//! never race on a file:
//! - [`ContainerRecord`]: what the user asked for (Docker's `Config` and
//!   `HostConfig`, name, image). Written by the daemon, in the state DB,
//!   and mirrored to `<root>/containers/<id>/config.json` for the monitor.
//! - [`RunState`]: what happened (status, pid, exit code, times). Written
//!   by the monitor while it lives (`state.json`, atomically), by the
//!   daemon otherwise. A daemon restarted after `kill -9` rebuilds its view
//!   from these two files alone.

use bollard_stubs::models::{ContainerConfig, HostConfig};
use serde::{Deserialize, Serialize};

/// A container's definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    /// 64-hex id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Creation time, RFC 3339 with nanoseconds.
    pub created: String,
    /// The image as the user named it (`Config.Image`).
    pub image_name: String,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// Docker's container config, with the image's defaults merged in.
    pub config: ContainerConfig,
    /// Docker's host config as given.
    pub host_config: HostConfig,
    /// Path of the json-file log.
    pub log_path: String,
    /// The image's layer chain ids, base first (the overlay's lower dirs).
    pub layers: Vec<String>,
    /// Anonymous volumes made for this container: target → volume name.
    #[serde(default)]
    pub anon_volumes: std::collections::HashMap<String, String>,
}

/// Docker's container statuses.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started (or its start failed).
    #[default]
    Created,
    /// Its process runs.
    Running,
    /// Frozen.
    Paused,
    /// Exited, waiting to be started again by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Its process exited.
    Exited,
    /// Unrecoverable (its monitor died while it ran).
    Dead,
}

impl Status {
    /// Docker's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// What happened to a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RunState {
    /// Current status.
    pub status: Status,
    /// Host pid of the container's init while running; 0 otherwise.
    pub pid: i32,
    /// Pid of the monitor while it lives; 0 otherwise.
    pub monitor_pid: i32,
    /// Last exit code.
    pub exit_code: i32,
    /// Why the last start failed, if it did.
    pub error: String,
    /// Last start, RFC 3339 (Docker's zero time when never started).
    pub started_at: String,
    /// Last exit, RFC 3339 (zero time when never exited).
    pub finished_at: String,
    /// Restarts done by the restart policy.
    pub restart_count: u32,
    /// Stopped by the user (`stop`/`kill`): the restart policy must not
    /// bring it back (Docker's HasBeenManuallyStopped).
    pub manually_stopped: bool,
    /// The kernel OOM-killed a process of the last run.
    pub oom_killed: bool,
    /// Start attempts so far (lets a waiting attach notice a failed start).
    #[serde(default)]
    pub start_attempts: u64,
    /// Health, for containers with a health check.
    #[serde(default)]
    pub health: Option<crate::health::Health>,
    /// How many times the health changed to healthy or unhealthy, over all
    /// runs: numbers the changes, so each becomes one `health_status`
    /// event however the daemon learns of it (see `Request::Health`).
    #[serde(default)]
    pub health_changes: u64,
}

/// Docker's zero time, shown for times that never happened.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl RunState {
    /// The state of a container that was just created.
    pub fn created() -> RunState {
        RunState { started_at: ZERO_TIME.into(), finished_at: ZERO_TIME.into(), ..RunState::default() }
    }
}
