//! A fake registry that serves an OCI image layout over HTTP on loopback,
//! and misbehaves on request: corrupts a blob, or stalls mid-blob (to kill
//! a client at a known point). The real registry cannot be made to do
//! either.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the fake registry misbehaves.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Serve everything faithfully.
    None,
    /// Serve this blob (`sha256:…`) with one byte flipped.
    Corrupt(String),
    /// Serve the first `bytes` of this blob, then hold the connection open
    /// without sending more until the registry is dropped.
    Stall(String, usize),
}

/// The running fake registry; stops on drop.
pub struct FakeRegistry {
    /// "127.0.0.1:<port>".
    pub host: String,
    stop: Arc<AtomicBool>,
    /// Blob requests served so far.
    pub blob_requests: Arc<AtomicUsize>,
    /// `Range` headers seen on blob requests.
    pub ranges: Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeRegistry {
    /// Serves the OCI layout at `layout` (tags from index.json's
    /// `org.opencontainers.image.ref.name`) under any repository name.
    pub fn start(layout: &Path, fault: Fault) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake registry");
        listener.set_nonblocking(true).expect("nonblocking");
        let host = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let blob_requests = Arc::new(AtomicUsize::new(0));
        let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (layout, stop2, reqs, ranges2) =
            (layout.to_path_buf(), stop.clone(), blob_requests.clone(), ranges.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (layout, fault, stop, reqs, ranges) =
                            (layout.clone(), fault.clone(), stop2.clone(), reqs.clone(), ranges2.clone());
                        std::thread::spawn(move || serve(conn, &layout, &fault, &stop, &reqs, &ranges));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeRegistry { host, stop, blob_requests, ranges }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn blob_path(layout: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(layout.join("blobs/sha256").join(hex))
}

fn tag_digest(layout: &Path, tag: &str) -> Option<(String, String)> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).ok()?).ok()?;
    let m = index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m.pointer("/annotations/org.opencontainers.image.ref.name").and_then(|v| v.as_str()) == Some(tag))?;
    Some((m["digest"].as_str()?.to_string(), m["mediaType"].as_str()?.to_string()))
}

fn serve(
    conn: TcpStream,
    layout: &Path,
    fault: &Fault,
    stop: &AtomicBool,
    reqs: &AtomicUsize,
    ranges: &std::sync::Mutex<Vec<String>>,
) {
    let _ = conn.set_nonblocking(false);
    let mut reader = BufReader::new(conn.try_clone().expect("clone conn"));
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) =
            (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.trim().to_string());
                }
            }
        }
        let head = method == "HEAD";
        let reply = |conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]| {
            let mut h = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            h.push_str("Docker-Distribution-Api-Version: registry/2.0\r\n\r\n");
            let _ = conn.write_all(h.as_bytes());
            if !head {
                let _ = conn.write_all(body);
            }
        };
        let not_found = br#"{"errors":[{"code":"NOT_FOUND","message":"not found"}]}"#;
        if path == "/v2/" {
            reply(&mut conn, "200 OK", &[("Content-Type", "application/json".into())], b"{}");
            continue;
        }
        if let Some((_, reference)) = path.split_once("/manifests/") {
            let found = if reference.starts_with("sha256:") {
                blob_path(layout, reference).and_then(|p| std::fs::read(p).ok()).map(|b| {
                    let mt = serde_json::from_slice::<serde_json::Value>(&b)
                        .ok()
                        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    (b, mt, reference.to_string())
                })
            } else {
                tag_digest(layout, reference)
                    .and_then(|(d, mt)| blob_path(layout, &d).and_then(|p| std::fs::read(p).ok()).map(|b| (b, mt, d)))
            };
            match found {
                Some((body, mt, d)) => {
                    let body = match fault {
                        Fault::Corrupt(c) if *c == d => flip(body),
                        _ => body,
                    };
                    reply(&mut conn, "200 OK", &[("Content-Type", mt), ("Docker-Content-Digest", d)], &body)
                }
                None => reply(&mut conn, "404 Not Found", &[("Content-Type", "application/json".into())], not_found),
            }
            continue;
        }
        if let Some((_, digest)) = path.split_once("/blobs/") {
            reqs.fetch_add(1, Ordering::SeqCst);
            let Some(mut body) = blob_path(layout, digest).and_then(|p| std::fs::read(p).ok()) else {
                reply(&mut conn, "404 Not Found", &[("Content-Type", "application/json".into())], not_found);
                continue;
            };
            if let Fault::Corrupt(c) = fault {
                if c == digest {
                    body = flip(body);
                }
            }
            let start = range
                .as_deref()
                .inspect(|r| ranges.lock().expect("lock").push(r.to_string()))
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|s| *s < body.len());
            if let Fault::Stall(s, n) = fault {
                if s == digest && !head {
                    let h = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(h.as_bytes());
                    let _ = conn.write_all(&body[..(*n).min(body.len())]);
                    let _ = conn.flush();
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
            }
            match start {
                Some(s) => {
                    let total = body.len();
                    reply(
                        &mut conn,
                        "206 Partial Content",
                        &[
                            ("Content-Type", "application/octet-stream".into()),
                            ("Content-Range", format!("bytes {s}-{}/{total}", total - 1)),
                        ],
                        &body[s..],
                    )
                }
                None => reply(&mut conn, "200 OK", &[("Content-Type", "application/octet-stream".into())], &body),
            }
            continue;
        }
        reply(&mut conn, "404 Not Found", &[("Content-Type", "application/json".into())], not_found);
    }
}

fn flip(mut b: Vec<u8>) -> Vec<u8> {
    let i = b.len() / 2;
    if let Some(x) = b.get_mut(i) {
        *x ^= 0x55;
    }
    b
}
