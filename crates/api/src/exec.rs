//! `/containers/{id}/exec`, `/exec/{id}/start|json|resize`: Docker's exec
//! instances. An instance is created, then started (hijacked stream, or
//! detached); its exit code is read back from `/exec/{id}/json`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_engine::exec::ExecConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::containers::frame;
use crate::error::{blocking, ApiError, ApiResult};
use crate::AppState;

/// One exec instance.
#[derive(Debug, Clone)]
pub struct ExecInstance {
    /// Container id.
    pub container: String,
    /// What to run.
    pub config: ExecConfig,
    /// Streams wanted.
    pub stdin: bool,
    /// Streams wanted.
    pub stdout: bool,
    /// Streams wanted.
    pub stderr: bool,
    /// Started and not yet exited.
    pub running: bool,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// Pid of the runtime exec process while running.
    pub pid: u32,
    /// Bytes that detach a tty session (`DetachKeys`, default ctrl-p,ctrl-q).
    pub detach_keys: Vec<u8>,
}

/// The daemon's exec instances.
#[derive(Debug, Default)]
pub struct Execs(Mutex<HashMap<String, ExecInstance>>);

impl Execs {
    fn get(&self, id: &str) -> Option<ExecInstance> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }
    fn update(&self, id: &str, f: impl FnOnce(&mut ExecInstance)) {
        if let Some(e) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            f(e);
        }
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key).and_then(|a| a.as_array()).into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

/// `POST /containers/{id}/exec`.
pub async fn create(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let config = ExecConfig {
        cmd: strings(&v, "Cmd"),
        env: strings(&v, "Env"),
        user: v.get("User").and_then(|u| u.as_str()).unwrap_or_default().to_string(),
        working_dir: v.get("WorkingDir").and_then(|u| u.as_str()).unwrap_or_default().to_string(),
        tty: v.get("Tty").and_then(|t| t.as_bool()).unwrap_or(false),
        privileged: v.get("Privileged").and_then(|t| t.as_bool()).unwrap_or(false),
    };
    if config.cmd.is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    let flag = |k: &str| v.get(k).and_then(|t| t.as_bool()).unwrap_or(false);
    let (stdin, stdout, stderr) = (flag("AttachStdin"), flag("AttachStdout"), flag("AttachStderr"));
    let s2 = s.clone();
    let container = blocking(move || {
        let c = s2.resolve(&id)?;
        if c.state.status != berth_engine::record::Status::Running {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!("container {} is not running", c.record.id),
            });
        }
        Ok(c)
    })
    .await?;
    let keys = v
        .get("DetachKeys")
        .and_then(|k| k.as_str())
        .filter(|k| !k.is_empty())
        .unwrap_or(berth_engine::detach::DEFAULT_DETACH_KEYS);
    let detach_keys = berth_engine::detach::parse_detach_keys(keys).map_err(ApiError::bad_request)?;
    let eid = berth_engine::engine::random_id()?;
    s.events.container(&container, &format!("exec_create: {}", config.cmd.join(" ")), &[("execID", eid.clone())]);
    let inst = ExecInstance {
        container: container.record.id,
        config,
        stdin,
        stdout,
        stderr,
        running: false,
        exit_code: None,
        pid: 0,
        detach_keys,
    };
    s.execs.0.lock().unwrap_or_else(|e| e.into_inner()).insert(eid.clone(), inst);
    Ok((StatusCode::CREATED, Json(json!({"Id": eid}))))
}

/// `GET /exec/{id}/json`.
pub async fn inspect(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    let e = s
        .execs
        .get(&id)
        .ok_or_else(|| ApiError { status: StatusCode::NOT_FOUND, message: format!("No such exec instance: {id}") })?;
    Ok(Json(json!({
        "ID": id,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "ProcessConfig": {
            "tty": e.config.tty, "entrypoint": e.config.cmd.first(), "arguments": e.config.cmd.iter().skip(1).collect::<Vec<_>>(),
            "privileged": e.config.privileged, "user": e.config.user,
        },
        "OpenStdin": e.stdin, "OpenStderr": e.stderr, "OpenStdout": e.stdout,
        "CanRemove": false,
        "ContainerID": e.container,
        "DetachKeys": "",
        "Pid": e.pid,
    })))
}

/// `POST /exec/{id}/resize` (accepted; the size follows the client's pty
/// through the runtime's proxy).
pub async fn resize(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    s.execs
        .get(&id)
        .ok_or_else(|| ApiError { status: StatusCode::NOT_FOUND, message: format!("No such exec instance: {id}") })?;
    Ok(StatusCode::OK)
}

/// `POST /exec/{id}/start`.
pub async fn start(State(s): State<AppState>, Path(id): Path<String>, mut req: Request) -> ApiResult<Response> {
    let inst = s
        .execs
        .get(&id)
        .ok_or_else(|| ApiError { status: StatusCode::NOT_FOUND, message: format!("No such exec instance: {id}") })?;
    if inst.running || inst.exit_code.is_some() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("exec instance {id} has already been started"),
        });
    }
    let body = axum::body::to_bytes(std::mem::take(req.body_mut()), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    let detach = v.get("Detach").and_then(|d| d.as_bool()).unwrap_or(false);
    let (s2, eid, cfg, cid) = (s.clone(), id.clone(), inst.config.clone(), inst.container.clone());
    let (cmd, file, container) = blocking(move || Ok(s2.exec_command(&cid, &eid, &cfg)?)).await?;
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(if inst.stdin && !detach { Stdio::piped() } else { Stdio::null() })
        .stdout(if detach { Stdio::null() } else { Stdio::piped() })
        .stderr(if detach { Stdio::null() } else { Stdio::piped() })
        .kill_on_drop(false);
    let mut child = cmd.spawn().map_err(|e| ApiError::internal(format!("starting exec: {e}")))?;
    let pid = child.id().unwrap_or(0);
    s.execs.update(&id, |e| {
        e.running = true;
        e.pid = pid;
    });
    s.events.container(&container, &format!("exec_start: {}", inst.config.cmd.join(" ")), &[("execID", id.clone())]);
    let finish = {
        let s = s.clone();
        let id = id.clone();
        move |code: i32| {
            s.execs.update(&id, |e| {
                e.running = false;
                e.exit_code = Some(code);
                e.pid = 0;
            });
            let _ = std::fs::remove_file(&file);
            s.events.container(&container, "exec_die", &[("execID", id.clone()), ("exitCode", code.to_string())]);
        }
    };
    if detach {
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|st| st.code()).unwrap_or(-1);
            finish(code);
        });
        return Ok(StatusCode::OK.into_response());
    }
    let tty = inst.config.tty;
    let keys = inst.detach_keys.clone();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let Ok(upgraded) = on_upgrade.await else {
            let _ = child.start_kill();
            let code = child.wait().await.ok().and_then(|st| st.code()).unwrap_or(-1);
            finish(code);
            return;
        };
        let (cr, mut cw) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let (detached_tx, mut detached_rx) = tokio::sync::oneshot::channel::<()>();
        // Detach keys end a tty session; the process runs on.
        let scanner = berth_engine::detach::DetachScanner::new(if tty { keys } else { Vec::new() });
        let input = tokio::spawn(async move {
            if let Some(w) = stdin.take() {
                crate::containers::copy_input(cr, w, scanner, detached_tx).await;
            }
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
        // The tail of stderr: the runtime reports a failed exec there.
        let err_tail = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
        let pump = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    stream: u8,
                    tx: tokio::sync::mpsc::Sender<bytes::Bytes>| {
            let tail = err_tail.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream == 2 {
                                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                                t.extend_from_slice(&buf[..n]);
                                let excess = t.len().saturating_sub(4096);
                                t.drain(..excess);
                            }
                            let b =
                                if tty { bytes::Bytes::copy_from_slice(&buf[..n]) } else { frame(stream, &buf[..n]) };
                            if tx.send(b).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        };
        if let Some(o) = stdout {
            pump(Box::new(o), 1, tx.clone());
        }
        if let Some(e) = stderr {
            pump(Box::new(e), 2, tx.clone());
        }
        drop(tx);
        // After a detach the output is still drained (a process writing to
        // a closed pipe would die of SIGPIPE), just not sent anywhere.
        let mut attached = true;
        // A oneshot must not be polled again once it has answered.
        let mut watching = true;
        loop {
            tokio::select! {
                b = rx.recv() => match b {
                    None => break,
                    Some(b) => {
                        if attached && cw.write_all(&b).await.is_err() {
                            attached = false;
                        }
                    }
                },
                r = &mut detached_rx, if watching => {
                    watching = false;
                    if r.is_ok() {
                        attached = false;
                        let _ = cw.shutdown().await;
                    }
                }
            }
        }
        let mut code = child.wait().await.ok().and_then(|st| st.code()).unwrap_or(-1);
        let tail = String::from_utf8_lossy(&err_tail.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        if code == 1 && tail.contains("berth-runtime: ") {
            // The process never ran: Docker's 126/127 for exec failures.
            code = berth_engine::monitor::start_failure_code(&tail);
        }
        finish(code);
        let _ = cw.shutdown().await;
        input.abort();
    });
    Ok(crate::containers::upgraded_response(tty))
}
