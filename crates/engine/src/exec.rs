//! `docker exec`: a process run inside a running container.
//!
//! The process is the container's own (its capabilities, seccomp filter,
//! environment) with the exec's command, user, env and working dir laid
//! over it, written as an OCI process.json and run by `berth runtime exec`
//! in the foreground: a single-threaded child of the daemon that joins the
//! container's namespaces and cgroup, and exits with the process's code.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};
use crate::record::Status;
use crate::user;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecConfig {
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// Extra environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// User (`name`, `uid`, `uid:gid`); empty: the container's.
    pub user: String,
    /// Working directory; empty: the container's.
    pub working_dir: String,
    /// Allocate a pty.
    pub tty: bool,
    /// All capabilities.
    pub privileged: bool,
}

impl Engine {
    /// Prepares an exec in container `id`: returns the command that runs
    /// it (stdio to be set by the caller), the process.json it uses, and
    /// the container as it was resolved (for the exec's events).
    pub fn exec_command(
        &self,
        id: &str,
        exec_id: &str,
        cfg: &ExecConfig,
    ) -> Result<(Command, PathBuf, crate::engine::Container)> {
        let c = self.resolve(id)?;
        if c.state.status != Status::Running {
            return Err(Error::Conflict(format!("container {} is not running", c.record.id)));
        }
        if cfg.cmd.is_empty() {
            return Err(Error::BadRequest("No exec command specified".into()));
        }
        let paths = self.container_paths(&c.record.id);
        let bundle: Value = serde_json::from_slice(
            &std::fs::read(paths.bundle().join("config.json")).ctx(|| "reading the container's config.json".into())?,
        )
        .map_err(|e| Error::BadRequest(format!("container config.json: {e}")))?;
        let mut process = bundle.get("process").cloned().unwrap_or_else(|| json!({}));
        process["args"] = json!(cfg.cmd);
        process["terminal"] = json!(cfg.tty);
        let mut env: Vec<String> =
            process["env"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
        for e in &cfg.env {
            let key = e.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        process["env"] = json!(env);
        if !cfg.working_dir.is_empty() {
            process["cwd"] = json!(cfg.working_dir);
        }
        if !cfg.user.is_empty() {
            let group_add = c.record.host_config.group_add.clone().unwrap_or_default();
            let u = user::resolve(&paths.rootfs(), &cfg.user, &group_add)?;
            process["user"] = json!({"uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids});
        }
        if cfg.privileged {
            let all = crate::spec::capabilities(&bollard_stubs::models::HostConfig {
                privileged: Some(true),
                ..Default::default()
            })?;
            process["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
        }
        // The container's rlimits apply to its execs too (as Docker); its
        // OOM score was set on the container already.
        if let Some(p) = process.as_object_mut() {
            p.remove("oomScoreAdj");
        }
        let dir = self.paths().run_root.join("exec");
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let file = dir.join(format!("{exec_id}.json"));
        let data = serde_json::to_vec(&process).map_err(|e| Error::BadRequest(e.to_string()))?;
        berth_runtime::state::write_atomic(&file, &data, 0o600)?;
        let mut cmd = self.berth_command();
        cmd.arg("runtime").arg("--root").arg(self.paths().runtime_root()).arg("exec").arg("--process").arg(&file);
        if cfg.tty {
            cmd.arg("--tty");
        }
        cmd.arg(&c.record.id);
        Ok((cmd, file, c))
    }
}
