//! Health checks (`HEALTHCHECK` in the image, `--health-*` on the command
//! line), run by the container's monitor so they keep working without the
//! daemon. Each check is the container's process with the check's command,
//! run by `berth runtime exec` as a child of the monitor; its result,
//! the failing streak and the last five outputs are kept in the run state,
//! which `inspect` shows as `State.Health`.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard_stubs::models::HealthConfig;
use serde::{Deserialize, Serialize};

/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;
/// Results kept.
const KEEP: usize = 5;
/// Output kept per result.
const MAX_OUTPUT: usize = 4096;

/// One check's result (Docker's HealthcheckResult).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckResult {
    /// Start, RFC 3339.
    pub start: String,
    /// End, RFC 3339.
    pub end: String,
    /// 0 healthy, 1 unhealthy, -1 could not run (timeout).
    pub exit_code: i64,
    /// Output (stdout and stderr, truncated).
    pub output: String,
}

/// A container's health (Docker's Health).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Consecutive failures.
    pub failing_streak: u32,
    /// The last results.
    pub log: Vec<CheckResult>,
}

/// A check's settings, with Docker's defaults filled in.
#[derive(Debug, Clone)]
pub struct Check {
    /// argv to run.
    pub argv: Vec<String>,
    /// Between checks.
    pub interval: Duration,
    /// Per check.
    pub timeout: Duration,
    /// Failures before unhealthy.
    pub retries: u32,
    /// Failures in this window do not count.
    pub start_period: Duration,
}

fn dur(ns: Option<i64>, default: Duration) -> Duration {
    match ns {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

/// The check a config asks for, if any (`NONE` or no test: none).
pub fn check(cfg: Option<&HealthConfig>) -> Option<Check> {
    let cfg = cfg?;
    let test = cfg.test.clone().unwrap_or_default();
    let argv = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
        _ => return None,
    };
    if argv.is_empty() {
        return None;
    }
    Some(Check {
        argv,
        interval: dur(cfg.interval, DEFAULT_INTERVAL),
        timeout: dur(cfg.timeout, DEFAULT_TIMEOUT),
        retries: cfg.retries.filter(|r| *r > 0).map_or(DEFAULT_RETRIES, |r| r as u32),
        start_period: dur(cfg.start_period, Duration::ZERO),
    })
}

/// A check in flight.
#[derive(Debug)]
pub struct Running {
    /// The `berth runtime exec` child.
    pub child: std::process::Child,
    started: Instant,
    start: String,
    output: PathBuf,
}

/// Starts one check: `exe runtime --root R exec --process P id`, output
/// to a file beside the process description.
pub fn spawn(exe: &Path, runtime_root: &Path, process: &Path, id: &str) -> std::io::Result<Running> {
    let output = process.with_extension("out");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&output)?;
    let child = std::process::Command::new(exe)
        .arg("runtime")
        .arg("--root")
        .arg(runtime_root)
        .arg("exec")
        .arg("--process")
        .arg(process)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    Ok(Running { child, started: Instant::now(), start: berth_runtime::state::now_rfc3339(), output })
}

impl Running {
    /// Time since the check started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the check ran past `timeout`.
    pub fn overdue(&self, timeout: Duration) -> bool {
        self.started.elapsed() > timeout
    }

    /// The result once the child exited with `code` (None: killed by the timeout).
    pub fn result(self, code: Option<i32>) -> CheckResult {
        let mut output = std::fs::read(&self.output).unwrap_or_default();
        output.truncate(MAX_OUTPUT);
        let _ = std::fs::remove_file(&self.output);
        let (exit_code, output) = match code {
            Some(c) => (i64::from(c != 0), String::from_utf8_lossy(&output).into_owned()),
            None => (-1, "Health check exceeded timeout".to_string()),
        };
        CheckResult { start: self.start, end: berth_runtime::state::now_rfc3339(), exit_code, output }
    }
}

/// Folds a result into the health, Docker's way: success makes it healthy;
/// `retries` failures in a row (outside the start period) unhealthy.
pub fn record(h: &mut Health, r: CheckResult, check: &Check, since_start: Duration) {
    if r.exit_code == 0 {
        h.status = "healthy".into();
        h.failing_streak = 0;
    } else if since_start >= check.start_period || h.status != "starting" {
        h.failing_streak += 1;
        if h.failing_streak >= check.retries {
            h.status = "unhealthy".into();
        }
    }
    h.log.push(r);
    let excess = h.log.len().saturating_sub(KEEP);
    h.log.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i64) -> CheckResult {
        CheckResult { start: String::new(), end: String::new(), exit_code: code, output: String::new() }
    }

    #[test]
    fn parses_and_counts_like_docker() {
        let cfg = HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), "test -e /ok".into()]),
            retries: Some(2),
            ..Default::default()
        };
        let c = check(Some(&cfg)).expect("check");
        assert_eq!(c.argv, vec!["/bin/sh", "-c", "test -e /ok"]);
        assert_eq!((c.interval, c.retries), (DEFAULT_INTERVAL, 2));
        assert!(check(Some(&HealthConfig { test: Some(vec!["NONE".into()]), ..Default::default() })).is_none());
        let mut h = Health { status: "starting".into(), failing_streak: 0, log: vec![] };
        record(&mut h, result(1), &c, Duration::from_secs(1));
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 1));
        record(&mut h, result(1), &c, Duration::from_secs(2));
        assert_eq!(h.status, "unhealthy");
        record(&mut h, result(0), &c, Duration::from_secs(3));
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        for _ in 0..10 {
            record(&mut h, result(0), &c, Duration::from_secs(4));
        }
        assert_eq!(h.log.len(), KEEP);
    }
}
