//! Raw HTTP over the daemon's socket for the streams whose framing depends
//! on the container: attach and exec (hijacked connections, raw with a tty,
//! multiplexed without) and logs. bollard decodes these by guessing from
//! the first byte; the client knows whether there is a tty, so it reads
//! them itself.

use std::io::Write;
use std::os::fd::AsFd;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{CliError, CliResult, Conn, Target};

/// The version prefix on every path, as the docker CLI sends it.
const PREFIX: &str = "/v1.47";

/// What a request carries.
pub enum ReqBody {
    /// Nothing.
    Empty,
    /// A JSON document.
    Json(serde_json::Value),
    /// A byte stream (an archive), read on a plain thread as it is sent.
    Stream(Box<dyn std::io::Read + Send>),
}

impl std::fmt::Debug for ReqBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReqBody::Empty => "Empty",
            ReqBody::Json(_) => "Json",
            ReqBody::Stream(_) => "Stream",
        })
    }
}

type Boxed = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A reader as a streamed request body (a thread reads, a channel carries).
fn stream_body(mut r: Box<dyn std::io::Read + Send>) -> Boxed {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<hyper::body::Frame<Bytes>>>(8);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(&buf[..n])))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    BodyExt::boxed(http_body_util::StreamBody::new(stream))
}

/// Sends one request on a fresh connection; an error status becomes
/// [`CliError::Daemon`] with the daemon's message.
pub async fn request(
    conn: &Conn,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    upgrade: bool,
) -> CliResult<Response<Incoming>> {
    let body = body.map_or(ReqBody::Empty, ReqBody::Json);
    request_with(conn, method, path, &[], body, upgrade).await
}

/// [`request`] with extra headers and any kind of body.
pub async fn request_with(
    conn: &Conn,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: ReqBody,
    upgrade: bool,
) -> CliResult<Response<Incoming>> {
    let mut b = Request::builder().method(method).uri(format!("{PREFIX}{path}")).header("Host", "berth");
    if upgrade {
        b = b.header("Connection", "Upgrade").header("Upgrade", "tcp");
    }
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    let payload: Boxed = match body {
        ReqBody::Json(v) => {
            b = b.header("Content-Type", "application/json");
            let bytes = Bytes::from(serde_json::to_vec(&v).map_err(|e| CliError::Other(e.to_string()))?);
            BodyExt::boxed(Full::new(bytes).map_err(|never| match never {}))
        }
        ReqBody::Empty => BodyExt::boxed(Full::new(Bytes::new()).map_err(|never| match never {})),
        ReqBody::Stream(r) => {
            b = b.header("Content-Type", "application/x-tar");
            stream_body(r)
        }
    };
    let req = b.body(payload).map_err(|e| CliError::Other(e.to_string()))?;
    let resp = match &conn.target {
        Target::Unix(socket) => {
            let kept = conn.take_first().and_then(|s| {
                s.set_nonblocking(true).ok()?;
                tokio::net::UnixStream::from_std(s).ok()
            });
            let s = match kept {
                Some(s) => s,
                None => tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| CliError::Other(format!("connecting to unix://{}: {e}", socket.display())))?,
            };
            send(s, req).await?
        }
        Target::Tls { addr, server_name, config } => {
            let tcp = tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(|e| CliError::Other(format!("connecting to tcp://{addr}: {e}")))?;
            let name = rustls::pki_types::ServerName::try_from(server_name.clone())
                .map_err(|e| CliError::Other(format!("server name {server_name:?}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| CliError::Other(format!("TLS handshake with tcp://{addr}: {e}")))?;
            send(tls, req).await?
        }
    };
    if resp.status().is_client_error() || resp.status().is_server_error() {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&body).trim()));
        return Err(CliError::Daemon(msg));
    }
    Ok(resp)
}

/// Reads a JSON response body.
pub async fn read_json(resp: hyper::Response<hyper::body::Incoming>) -> CliResult<Value> {
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.map_err(|e| CliError::Other(format!("reading the response: {e}")))?;
    let bytes = body.to_bytes();
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| CliError::Other(format!("decoding the daemon's answer: {e}")))
}

/// Sends `req` on a fresh HTTP/1.1 connection over `stream`.
async fn send<S>(stream: S, req: Request<Boxed>) -> CliResult<Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Boxed>(TokioIo::new(stream))
        .await
        .map_err(|e| CliError::Other(format!("talking to the daemon: {e}")))?;
    tokio::spawn(conn.with_upgrades());
    sender.send_request(req).await.map_err(|e| CliError::Other(format!("talking to the daemon: {e}")))
}

/// Reads a newline-delimited JSON stream (events, pull and push
/// progress), handing each document to `f` as it arrives; lines that are
/// not JSON are skipped.
pub async fn json_lines(mut body: Incoming, mut f: impl FnMut(Value) -> CliResult<()>) -> CliResult<()> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CliError::Other(format!("reading the daemon's stream: {e}")))?;
        let Some(d) = frame.data_ref() else { continue };
        buf.extend_from_slice(d);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                f(v)?;
            }
        }
    }
    Ok(())
}

/// A hijacked connection: the raw byte stream after `101 UPGRADED`.
pub type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

/// POSTs `path` asking to hijack the connection.
pub async fn hijack(conn: &Conn, path: &str, body: Option<serde_json::Value>) -> CliResult<Hijacked> {
    let resp = request(conn, "POST", path, body, true).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(CliError::Other(format!("the daemon did not hijack the connection ({})", resp.status())));
    }
    let up = hyper::upgrade::on(resp).await.map_err(|e| CliError::Other(format!("hijacking the connection: {e}")))?;
    Ok(TokioIo::new(up))
}

/// Copies a daemon stream to stdout/stderr until it ends: raw with a tty,
/// else Docker's 8-byte-header frames (stream 1 stdout, 2 stderr).
pub async fn copy_output<R: AsyncRead + Unpin>(mut r: R, tty: bool) -> CliResult<()> {
    if tty {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = r.read(&mut buf).await.map_err(|e| CliError::Other(format!("reading the stream: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            write_out(1, &buf[..n]);
        }
    }
    let mut header = [0u8; 8];
    loop {
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(CliError::Other(format!("reading the stream: {e}"))),
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.map_err(|e| CliError::Other(format!("reading the stream: {e}")))?;
        write_out(if header[0] == 2 { 2 } else { 1 }, &payload);
    }
}

fn write_out(fd: i32, data: &[u8]) {
    if fd == 2 {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(data);
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(data);
        let _ = o.flush();
    }
}

/// Parses Docker's detach-key notation (`ctrl-p,ctrl-q`, `a,ctrl-@`).
pub fn parse_detach_keys(s: &str) -> CliResult<Vec<u8>> {
    berth_engine::detach::parse_detach_keys(s).map_err(CliError::Other)
}

/// How an interactive session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The stream ended (the process exited, or closed its output).
    Eof,
    /// The user typed the detach keys.
    Detached,
}

/// Reads stdin on a plain thread: a blocking read cannot be cancelled, and
/// a thread left behind must not keep the process (or a runtime shutdown)
/// waiting. Chunks arrive on the channel; `None` at EOF.
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = vec![0u8; 16 * 1024];
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            match lock.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Runs an attached session over `io`: output to stdout/stderr; with
/// `stdin`, input from stdin (EOF closes the container's stdin); with
/// `detach` keys (tty sessions), typing them ends the session.
pub async fn session<S>(io: S, tty: bool, stdin: bool, detach: &[u8]) -> CliResult<Ended>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, mut w) = tokio::io::split(io);
    let mut output = Box::pin(copy_output(r, tty));
    if !stdin {
        output.await?;
        return Ok(Ended::Eof);
    }
    let mut input = stdin_chunks();
    let mut scanner = berth_engine::detach::DetachScanner::new(detach.to_vec());
    let mut input_open = true;
    loop {
        tokio::select! {
            r = &mut output => { r?; return Ok(Ended::Eof); }
            chunk = input.recv(), if input_open => match chunk.flatten() {
                None => {
                    input_open = false;
                    let _ = w.shutdown().await;
                }
                Some(data) => {
                    if tty && !detach.is_empty() {
                        let (send, detached) = scanner.feed(&data);
                        if w.write_all(&send).await.is_err() {
                            input_open = false;
                        }
                        if detached {
                            return Ok(Ended::Detached);
                        }
                    } else if w.write_all(&data).await.is_err() {
                        input_open = false;
                    }
                }
            },
        }
    }
}

/// Puts the terminal on stdin in raw mode for as long as it lives.
pub struct RawTerminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawTerminal {
    /// Raw mode when stdin is a terminal; a no-op guard otherwise.
    pub fn enable() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else { return RawTerminal { saved: None } };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        // Keep output post-processing: the container's tty already turns
        // \n into \r\n, but local messages should not staircase.
        raw.output_flags = saved.output_flags;
        if tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal { saved: None };
        }
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin().as_fd(), nix::sys::termios::SetArg::TCSANOW, s);
        }
    }
}

/// docker's `--sig-proxy`: signals this CLI receives (SIGINT, SIGTERM,
/// SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) are sent to the container instead
/// of killing the CLI.
///
/// The handlers are installed when this is built, synchronously, so a
/// caller that builds it before starting the container cannot lose a
/// signal that arrives as soon as the container prints something (a task
/// that installed them later would let the default action kill the CLI).
pub struct SignalProxy {
    streams: Vec<(tokio::signal::unix::Signal, &'static str)>,
}

impl SignalProxy {
    /// Installs the handlers now; signals are queued until [`Self::forward`].
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
            (SignalKind::quit(), "SIGQUIT"),
            (SignalKind::user_defined1(), "SIGUSR1"),
            (SignalKind::user_defined2(), "SIGUSR2"),
        ];
        let streams = kinds.into_iter().filter_map(|(k, name)| signal(k).ok().map(|s| (s, name))).collect();
        Self { streams }
    }

    /// Sends each received signal to container `id`. Runs until aborted.
    pub async fn forward(self, conn: Conn, id: String) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(8);
        for (mut sig, name) in self.streams {
            let tx = tx.clone();
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    if tx.send(name).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        while let Some(name) = rx.recv().await {
            let _ = request(&conn, "POST", &format!("/containers/{id}/kill?signal={name}"), None, false).await;
        }
    }
}

/// The size of the terminal on stdout (or stdin), as (height, width).
pub fn terminal_size() -> Option<(u16, u16)> {
    for fd in [std::io::stdout().as_fd(), std::io::stdin().as_fd()] {
        if let Ok(ws) = rustix::termios::tcgetwinsize(fd) {
            if ws.ws_row > 0 && ws.ws_col > 0 {
                return Some((ws.ws_row, ws.ws_col));
            }
        }
    }
    None
}

/// Keeps the remote tty's size in step with the local terminal: once now,
/// then on every SIGWINCH. `path` is `/containers/ID/resize` or
/// `/exec/ID/resize`. Runs until aborted.
pub async fn follow_resize(conn: Conn, path: String) {
    let send = |conn: Conn, path: String| async move {
        if let Some((h, w)) = terminal_size() {
            let _ = request(&conn, "POST", &format!("{path}?h={h}&w={w}"), None, false).await;
        }
    };
    send(conn.clone(), path.clone()).await;
    let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else { return };
    while sig.recv().await.is_some() {
        send(conn.clone(), path.clone()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn demultiplexes_frames() {
        // Frames only: the output goes to this process's stdout/stderr, so
        // this checks that parsing stops cleanly at EOF and on a cut frame.
        let mut data = vec![1u8, 0, 0, 0, 0, 0, 0, 3];
        data.extend_from_slice(b"hi\n");
        copy_output(&data[..], false).await.unwrap();
        let cut = [1u8, 0, 0, 0, 0, 0, 0, 9, b'x'];
        assert!(copy_output(&cut[..], false).await.is_err());
    }
}
