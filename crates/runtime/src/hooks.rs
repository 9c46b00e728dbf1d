//! Runs OCI lifecycle hooks: each hook gets the container state as JSON on
//! stdin, its own args/env, and is killed when its timeout expires.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::state::OciState;

/// Runs `hooks` in order; the first failure stops the list and is returned.
pub fn run(kind: &'static str, hooks: &[Hook], state: &OciState) -> Result<()> {
    let json = serde_json::to_vec(state).map_err(|e| Error::Other(format!("encoding state for hooks: {e}")))?;
    for hook in hooks {
        run_one(kind, hook, &json)?;
    }
    Ok(())
}

/// Runs `hooks`, reporting failures as warnings on stderr: used for
/// poststart and poststop, whose failures must not fail the operation.
pub fn run_warn(kind: &'static str, hooks: &[Hook], state: &OciState) {
    let Ok(json) = serde_json::to_vec(state) else { return };
    for hook in hooks {
        if let Err(e) = run_one(kind, hook, &json) {
            eprintln!("warning: {e}");
        }
    }
}

fn run_one(kind: &'static str, hook: &Hook, state_json: &[u8]) -> Result<()> {
    let path = hook.path().clone();
    let fail = |msg: String| Error::Hook { kind, path: path.clone(), msg };
    let mut cmd = Command::new(hook.path());
    let args = hook.args().as_deref().unwrap_or_default();
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(args.iter().skip(1));
    cmd.env_clear();
    for kv in hook.env().as_deref().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook.timeout().filter(|t| *t > 0).map(|t| Instant::now() + Duration::from_secs(t as u64));
    let mut delay = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(fail(format!("failed: {status}"))),
            Ok(None) => {}
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("timed out after {}s", hook.timeout().unwrap_or(0))));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}
