//! Where a container's files live.
//!
//! - `<root>/containers/<id>/`: `config.json` (the record, for the
//!   monitor), `state.json` (run state), `bundle/` (OCI bundle; `rootfs`
//!   is the overlay mount point), `upper/` + `work/` (the writable layer),
//!   `<id>-json.log`, `hosts`, `hostname`, `resolv.conf`, `monitor.log`.
//! - `<run-root>/mon/<first 32 hex of id>.sock`: the monitor's socket
//!   (kept short: unix socket paths are limited to 107 bytes).
//! - `<run-root>/runtime/`: the OCI runtime's state root.

use std::path::{Path, PathBuf};

/// The engine's two roots.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Persistent state (`--root`).
    pub root: PathBuf,
    /// Runtime state (`--run-root`), on tmpfs in production.
    pub run_root: PathBuf,
}

impl Paths {
    /// The directory of all containers.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// One container's files.
    pub fn container(&self, id: &str) -> ContainerPaths {
        ContainerPaths {
            dir: self.containers().join(id),
            // 128 bits of the id: unique, and short enough for deep run roots.
            socket: self.run_root.join("mon").join(format!("{}.sock", id.get(..32).unwrap_or(id))),
            id: id.to_string(),
        }
    }

    /// The OCI runtime's state root.
    pub fn runtime_root(&self) -> PathBuf {
        self.run_root.join("runtime")
    }
}

/// One container's files; see the module docs.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    /// `<root>/containers/<id>`.
    pub dir: PathBuf,
    /// The monitor's socket.
    pub socket: PathBuf,
    id: String,
}

impl ContainerPaths {
    /// The record, as the monitor reads it.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// The run state.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The OCI bundle.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    /// The rootfs mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    /// Overlay upper dir (the container's changes).
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// Overlay work dir.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The json-file log.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.id))
    }
    /// The monitor's own diagnostics.
    pub fn monitor_log(&self) -> PathBuf {
        self.dir.join("monitor.log")
    }
    /// A file bind-mounted into the container (`hosts`, `hostname`, `resolv.conf`).
    pub fn etc_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// Where the monitor receives the pty master of a `-t` container.
    pub fn console_socket(&self) -> PathBuf {
        let mut p = self.socket.clone().into_os_string();
        p.push(".tty");
        PathBuf::from(p)
    }
    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}
