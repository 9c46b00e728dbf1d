//! The daemon's side of the monitor socket: connect, send one request,
//! read the answer (or keep the stream, for attach).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::monitor::Request;
use crate::paths::ContainerPaths;

/// Connects to a container's monitor and sends `req`; None when no
/// monitor listens (the container is not running).
pub fn send(paths: &ContainerPaths, req: &Request) -> Option<UnixStream> {
    let mut s = UnixStream::connect(&paths.socket).ok()?;
    let mut line = serde_json::to_vec(req).ok()?;
    line.push(b'\n');
    s.write_all(&line).ok()?;
    Some(s)
}

/// Sends `req` and reads the one-line JSON answer (waiting up to
/// `timeout`; None waits as long as it takes).
pub fn call(paths: &ContainerPaths, req: &Request, timeout: Option<Duration>) -> Result<Option<serde_json::Value>> {
    let Some(s) = send(paths, req) else { return Ok(None) };
    s.set_read_timeout(timeout).map_err(|e| Error::Io { context: "monitor socket".into(), source: e })?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| Error::Io { context: format!("talking to the monitor of {}", paths.dir.display()), source: e })?;
    if line.trim().is_empty() {
        // The monitor went away mid-request (the container ended).
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| Error::BadRequest(format!("bad answer from monitor: {e}")))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(Error::Conflict(e.to_string()));
    }
    Ok(Some(v))
}
