//! `docker stats`: a container's resource usage read from its cgroup (v1
//! controllers or the v2 unified hierarchy), in the Engine API's shape.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::record::Status;

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// Host CPU time in nanoseconds (all CPUs), from /proc/stat.
fn system_cpu_ns() -> u64 {
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .map(|l| l.split_whitespace().skip(1).take(7).filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    ticks * 10_000_000
}

struct Sample {
    cpu_ns: u64,
    mem_usage: u64,
    mem_limit: u64,
    inactive_file: u64,
    pids: u64,
}

fn sample(id: &str) -> Sample {
    let rel = PathBuf::from("berth").join(id);
    let v1 = |ctrl: &str, file: &str| Path::new("/sys/fs/cgroup").join(ctrl).join(&rel).join(file);
    let v2 = |file: &str| Path::new("/sys/fs/cgroup").join(&rel).join(file);
    let host_mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
        .unwrap_or(0)
        * 1024;
    if v1("memory", "memory.usage_in_bytes").exists() {
        let limit = read_u64(&v1("memory", "memory.limit_in_bytes")).unwrap_or(u64::MAX).min(host_mem);
        Sample {
            cpu_ns: read_u64(&v1("cpuacct", "cpuacct.usage")).unwrap_or(0),
            mem_usage: read_u64(&v1("memory", "memory.usage_in_bytes")).unwrap_or(0),
            mem_limit: limit,
            inactive_file: stat_field(&v1("memory", "memory.stat"), "total_inactive_file").unwrap_or(0),
            pids: read_u64(&v1("pids", "pids.current")).unwrap_or(0),
        }
    } else {
        let limit = std::fs::read_to_string(v2("memory.max"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(host_mem)
            .min(host_mem);
        Sample {
            cpu_ns: stat_field(&v2("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
            mem_usage: read_u64(&v2("memory.current")).unwrap_or(0),
            mem_limit: limit,
            inactive_file: stat_field(&v2("memory.stat"), "inactive_file").unwrap_or(0),
            pids: read_u64(&v2("pids.current")).unwrap_or(0),
        }
    }
}

impl Engine {
    /// One stats document for container `id`; `previous` is the last one
    /// sent (its cpu figures become `precpu_stats`, as Docker does).
    pub fn stats(&self, id: &str, previous: Option<&Value>) -> Result<Value> {
        let c = self.resolve(id)?;
        let running = matches!(c.state.status, Status::Running | Status::Paused);
        if !running {
            // Docker answers zeros for a stopped container.
            return Ok(json!({
                "id": c.record.id, "name": format!("/{}", c.record.name), "read": berth_runtime::state::now_rfc3339(),
                "cpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": 0},
                "precpu_stats": {"cpu_usage": {"total_usage": 0}},
                "memory_stats": {}, "pids_stats": {}, "blkio_stats": {}, "networks": {},
            }));
        }
        let s = sample(&c.record.id);
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let precpu = previous
            .and_then(|p| p.get("cpu_stats").cloned())
            .unwrap_or_else(|| json!({"cpu_usage": {"total_usage": 0}}));
        let preread = previous.and_then(|p| p.get("read").cloned()).unwrap_or(json!("0001-01-01T00:00:00Z"));
        Ok(json!({
            "id": c.record.id,
            "name": format!("/{}", c.record.name),
            "read": berth_runtime::state::now_rfc3339(),
            "preread": preread,
            "num_procs": 0,
            "pids_stats": {"current": s.pids},
            "cpu_stats": {
                "cpu_usage": {"total_usage": s.cpu_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "system_cpu_usage": system_cpu_ns(),
                "online_cpus": cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
            },
            "precpu_stats": precpu,
            "memory_stats": {
                "usage": s.mem_usage,
                "limit": s.mem_limit,
                "stats": {"inactive_file": s.inactive_file, "total_inactive_file": s.inactive_file},
            },
            "blkio_stats": {"io_service_bytes_recursive": null},
            "networks": {},
        }))
    }
}

/// Checks a container exists (for handlers that stream stats).
pub fn ensure(engine: &Engine, id: &str) -> Result<String> {
    engine.resolve(id).map(|c| c.record.id).map_err(|_| Error::NoSuchContainer(id.to_string()))
}
