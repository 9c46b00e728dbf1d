//! `/containers/…`: Docker's container endpoints over the engine.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_engine::engine::Container;
use berth_engine::logs::{self, ReadOptions};
use berth_engine::monitor::Request as MonitorRequest;
use berth_engine::record::{Status, ZERO_TIME};
use bollard_stubs::models::{ContainerConfig, HostConfig};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::error::{blocking, ApiError, ApiResult};
use crate::AppState;

/// Docker's truthy query values.
fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE" | "yes"))
}

/// `POST /containers/create?name=`.
pub async fn create(
    State(engine): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let config: ContainerConfig = serde_json::from_value(v.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid container config: {e}")))?;
    let host: HostConfig = match v.get("HostConfig") {
        Some(h) if !h.is_null() => {
            serde_json::from_value(h.clone()).map_err(|e| ApiError::bad_request(format!("invalid HostConfig: {e}")))?
        }
        _ => HostConfig::default(),
    };
    if let Some(mode) = host.network_mode.as_deref() {
        if !matches!(mode, "" | "default" | "bridge" | "none" | "host") {
            return Err(ApiError::bad_request(format!(
                "network mode {mode:?} is not supported yet (none and host are; bridge gives a private namespace with loopback only)"
            )));
        }
    }
    let name = q.get("name").cloned();
    let e2 = engine.clone();
    // Volumes the create makes on demand get their `create` event: note
    // which exist first (only when the request can name any).
    let may_make_volumes = host.binds.as_ref().is_some_and(|b| !b.is_empty())
        || host.mounts.as_ref().is_some_and(|m| !m.is_empty())
        || config.volumes.as_ref().is_some_and(|v| !v.is_empty());
    let (c, made) = blocking(move || {
        let before: Option<std::collections::HashSet<String>> =
            may_make_volumes.then(|| e2.volume_list().unwrap_or_default().into_iter().map(|v| v.name).collect());
        let rec = e2.create(name.as_deref(), config, host)?;
        let c = e2.resolve(&rec.id)?;
        let made: Vec<String> = match before {
            Some(before) => e2
                .mount_points(&c.record)
                .into_iter()
                .filter(|m| m.typ == "volume" && !m.name.is_empty() && !before.contains(&m.name))
                .map(|m| m.name)
                .collect(),
            None => Vec::new(),
        };
        Ok((c, made))
    })
    .await?;
    for v in made {
        engine.events.volume("create", &v);
    }
    engine.events.container(&c, "create", &[]);
    Ok((StatusCode::CREATED, Json(json!({"Id": c.record.id, "Warnings": []}))))
}

/// `POST /containers/{id}/start`.
pub async fn start(State(engine): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let e2 = engine.clone();
    let res = blocking(move || {
        let c = e2.resolve(&id)?;
        if c.state.status == Status::Running {
            return Ok(None);
        }
        if let Err(e) = e2.start(&c.record.id) {
            // `run --rm` whose start failed leaves nothing behind, as Docker.
            if c.record.host_config.auto_remove.unwrap_or(false) {
                let _ = e2.remove(&c.record.id, true);
            }
            return Err(e.into());
        }
        Ok(Some(c))
    })
    .await?;
    match res {
        None => Ok(StatusCode::NOT_MODIFIED.into_response()),
        Some(c) => {
            engine.events.volume_mounts(&c, &engine.mount_points(&c.record), "mount");
            engine.events.container(&c, "start", &[]);
            engine.changes.changed();
            crate::events::watch(engine.clone(), c.record.id.clone(), c.state.finished_at.clone());
            if c.record.host_config.auto_remove.unwrap_or(false) {
                watch_auto_remove(engine, c.record.id.clone());
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}

/// `--rm`: removes the container once it exits (in the background).
fn watch_auto_remove(engine: AppState, id: String) {
    tokio::task::spawn_blocking(move || {
        let _ = engine.wait(&id);
        // Let the monitor finish its teardown (unmounts) first.
        let monitor = engine.current_state(&id).monitor_pid;
        if monitor > 0 {
            wait_process_exit(monitor, Duration::from_secs(2));
        }
        if let Ok(c) = engine.resolve(&id) {
            engine.events.die(&c, &engine.mount_points(&c.record));
            if engine.remove_exited_auto(&id).is_ok() {
                engine.changes.removed(&id, c.state.exit_code);
                engine.events.container(&c, "destroy", &[]);
                engine.events.forget(&id);
            }
        }
    });
}

/// Blocks until process `pid` exits or `limit` passes: a pidfd becomes
/// readable at the exit, so this wakes at once instead of polling.
fn wait_process_exit(pid: i32, limit: Duration) {
    use std::os::fd::AsFd;
    let Some(p) = rustix::process::Pid::from_raw(pid) else { return };
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => {
            let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
            let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        }
        // Gone already (ESRCH), or no pidfd: fall back to looking.
        Err(_) => {
            let deadline = std::time::Instant::now() + limit;
            while std::path::Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Query of stop/restart.
#[derive(Debug, Deserialize)]
pub struct StopQuery {
    t: Option<i64>,
    signal: Option<String>,
}

/// `POST /containers/{id}/stop`.
pub async fn stop(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<Response> {
    let e2 = engine.clone();
    let (stopped, c) = blocking(move || {
        let c = e2.resolve(&id)?;
        Ok((e2.stop(&c.record.id, q.signal.as_deref(), q.t)?, c))
    })
    .await?;
    if stopped {
        engine.events.container(&c, "stop", &[]);
    }
    Ok(if stopped { StatusCode::NO_CONTENT } else { StatusCode::NOT_MODIFIED }.into_response())
}

/// `POST /containers/{id}/restart`.
pub async fn restart(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<Response> {
    let e2 = engine.clone();
    let c = blocking(move || {
        let c = e2.resolve(&id)?;
        e2.stop(&c.record.id, q.signal.as_deref(), q.t)?;
        e2.start(&c.record.id)?;
        Ok(c)
    })
    .await?;
    engine.events.container(&c, "restart", &[]);
    let finished = engine.current_state(&c.record.id).finished_at;
    crate::events::watch(engine.clone(), c.record.id.clone(), finished);
    if c.record.host_config.auto_remove.unwrap_or(false) {
        watch_auto_remove(engine, c.record.id);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let sig = q.get("signal").cloned().unwrap_or_else(|| "SIGKILL".into());
    let (e2, sig2) = (engine.clone(), sig.clone());
    let c = blocking(move || {
        let c = e2.resolve(&id)?;
        e2.kill(&c.record.id, &sig2)?;
        Ok(c)
    })
    .await?;
    let num = berth_engine::engine::parse_signal(&sig).unwrap_or(9);
    engine.events.container(&c, "kill", &[("signal", num.to_string())]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`.
///
/// The status line and headers go out at once (clients set their read
/// timeouts by them); the body comes when the condition is met.
pub async fn wait(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let condition = q.get("condition").cloned().unwrap_or_else(|| "not-running".into());
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!("invalid condition: {condition:?}")));
    }
    let e2 = engine.clone();
    let c = blocking(move || Ok(e2.resolve(&id)?)).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<Value>();
    tokio::task::spawn_blocking(move || {
        let code = wait_condition(&engine, &c, &condition);
        let _ = tx.send(json!({"StatusCode": code, "Error": null}));
    });
    let body = Body::from_stream(futures_util::stream::once(async move {
        let v = rx.await.unwrap_or_else(|_| json!({"StatusCode": -1, "Error": {"Message": "wait failed"}}));
        Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{v}\n")))
    }));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn running(s: Status) -> bool {
    matches!(s, Status::Running | Status::Restarting | Status::Paused)
}

/// Blocks until `condition` holds; returns the exit code. Exits come
/// from the monitor (`engine.wait`); starts and removals wake the waiter
/// through [`crate::changes::Changes`]; anything else (a restart policy's
/// restart) is seen within a second.
fn wait_condition(engine: &crate::Server, c: &Container, condition: &str) -> i64 {
    let id = c.record.id.clone();
    let first_start = c.state.started_at.clone();
    let was_running = running(c.state.status);
    let mut last_exit = c.state.exit_code;
    loop {
        let seen = engine.changes.generation();
        if let Some(code) = engine.changes.removed_code(&id) {
            return i64::from(code);
        }
        if engine.resolve(&id).is_err() {
            // Removed. An auto-removal announces the exit code just after
            // the record goes, and a waiter that slept through the whole
            // run has no code of its own yet: give the announcement a
            // moment before settling for the last code seen.
            let until = std::time::Instant::now() + Duration::from_millis(500);
            loop {
                let g = engine.changes.generation();
                if let Some(code) = engine.changes.removed_code(&id) {
                    return i64::from(code);
                }
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return i64::from(last_exit);
                }
                engine.changes.wait(g, left);
            }
        }
        let st = engine.current_state(&id);
        let restarted = st.started_at != first_start && st.started_at != ZERO_TIME;
        match condition {
            "not-running" if !running(st.status) => return i64::from(st.exit_code),
            "next-exit" | "removed" if running(st.status) => {
                let code = match engine.wait(&id) {
                    Ok(code) => code,
                    Err(_) if engine.resolve(&id).is_err() => {
                        // Removed meanwhile (its state files may be gone
                        // too): the removal branch above answers.
                        continue;
                    }
                    Err(_) => {
                        // The monitor stopped answering: the container
                        // exited as we asked, and the monitor is finishing.
                        // Its record has the code once it says not running
                        // (the state read above may predate the exit).
                        let now = engine.current_state(&id);
                        if running(now.status) {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        now.exit_code
                    }
                };
                if condition == "next-exit" {
                    return i64::from(code);
                }
                last_exit = code;
                continue;
            }
            // Started and already exited between two looks.
            "next-exit" if restarted && !running(st.status) && !was_running => return i64::from(st.exit_code),
            "removed" if !running(st.status) => last_exit = st.exit_code,
            _ => {}
        }
        engine.changes.wait(seen, Duration::from_secs(1));
    }
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let force = truthy(q.get("force"));
    let remove_volumes = truthy(q.get("v"));
    let e2 = engine.clone();
    let c = blocking(move || {
        let c = e2.resolve(&id)?;
        e2.remove_with_volumes(&c.record.id, force, remove_volumes)?;
        e2.changes.removed(&c.record.id, c.state.exit_code);
        Ok(c)
    })
    .await?;
    engine.events.die(&c, &engine.mount_points(&c.record));
    engine.events.container(&c, "destroy", &[]);
    engine.events.forget(&c.record.id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/prune`.
pub async fn prune(State(engine): State<AppState>) -> ApiResult<impl IntoResponse> {
    blocking(move || {
        let mut deleted = Vec::new();
        for c in engine.list()? {
            if !running(c.state.status) {
                engine.remove(&c.record.id, false)?;
                engine.changes.removed(&c.record.id, c.state.exit_code);
                deleted.push(c.record.id);
            }
        }
        Ok(Json(json!({"ContainersDeleted": deleted, "SpaceReclaimed": 0})))
    })
    .await
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn since(t: &str) -> u64 {
    logs::parse_time(t).map_or(0, |t| (now() - t).max(0.0) as u64)
}

/// Docker's `Status` column: "Up 5 seconds", "Exited (0) 3 minutes ago".
fn status_text(c: &Container) -> String {
    let st = &c.state;
    let health = match st.health.as_ref().map(|h| h.status.as_str()) {
        Some("starting") => " (health: starting)".to_string(),
        Some(h) => format!(" ({h})"),
        None => String::new(),
    };
    match st.status {
        Status::Running => format!("Up {}{health}", berth_image::docker_view::human_duration(since(&st.started_at))),
        Status::Paused => format!("Up {} (Paused)", berth_image::docker_view::human_duration(since(&st.started_at))),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            st.exit_code,
            berth_image::docker_view::human_duration(since(&st.finished_at))
        ),
        Status::Exited if st.started_at != ZERO_TIME => {
            format!(
                "Exited ({}) {} ago",
                st.exit_code,
                berth_image::docker_view::human_duration(since(&st.finished_at))
            )
        }
        Status::Exited | Status::Created => "Created".into(),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
    }
}

fn command_line(c: &Container) -> String {
    berth_engine::spec::argv(&c.record.config).join(" ")
}

/// One `ps` row, as Docker's ContainerSummary.
pub fn summary(c: &Container) -> Value {
    let r = &c.record;
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image_name,
        "ImageID": r.image_id,
        "Command": command_line(c),
        "Created": logs::parse_time(&r.created).unwrap_or(0.0) as i64,
        "Ports": [],
        "Labels": r.config.labels.clone().unwrap_or_default(),
        "State": c.state.status.as_str(),
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": r.host_config.network_mode.clone().unwrap_or_else(|| "none".into())},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    })
}

/// The `ps` filter keys berth knows (Docker's, less swarm's).
const PS_FILTERS: &[&str] = &[
    "status", "name", "id", "label", "ancestor", "exited", "health", "before", "since", "volume", "network", "is-task",
];

fn matches_filters(c: &Container, all: &[Container], filters: &HashMap<String, Vec<String>>) -> bool {
    let created_of = |name: &str| {
        all.iter()
            .find(|o| o.record.id.starts_with(name) || o.record.name == name.trim_start_matches('/'))
            .map(|o| o.record.created.clone())
    };
    filters.iter().all(|(k, vals)| {
        vals.iter().any(|v| match k.as_str() {
            "status" => c.state.status.as_str() == v,
            "name" => c.record.name.contains(v.trim_start_matches('/')),
            "id" => c.record.id.starts_with(v.as_str()),
            "label" => {
                let labels = c.record.config.labels.clone().unwrap_or_default();
                match v.split_once('=') {
                    Some((lk, lv)) => labels.get(lk).is_some_and(|x| x == lv),
                    None => labels.contains_key(v),
                }
            }
            "ancestor" => c.record.image_name == *v || c.record.image_id.contains(v.as_str()),
            "exited" => c.state.status == Status::Exited && c.state.exit_code.to_string() == *v,
            "health" => c.state.health.as_ref().map_or("none", |h| h.status.as_str()) == v,
            "before" => created_of(v).is_some_and(|t| c.record.created < t),
            "since" => created_of(v).is_some_and(|t| c.record.created > t),
            "volume" => {
                berth_engine::mounts::volume_names(&c.record).iter().any(|n| n == v)
                    || c.record.host_config.binds.iter().flatten().any(|b| b.split(':').nth(1) == Some(v.as_str()))
            }
            "network" => c.record.host_config.network_mode.as_deref().unwrap_or("default") == v,
            _ => false,
        })
    })
}

/// Parses Docker's `filters` query: `{"status":["running"]}` (or the
/// old `{"status":{"running":true}}` form).
pub fn parse_filters(q: &HashMap<String, String>) -> ApiResult<HashMap<String, Vec<String>>> {
    let Some(raw) = q.get("filters").filter(|f| !f.is_empty()) else { return Ok(HashMap::new()) };
    let v: Value = serde_json::from_str(raw).map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
    let mut out = HashMap::new();
    for (k, vals) in v.as_object().into_iter().flatten() {
        let list: Vec<String> = match vals {
            Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter {k}"))),
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

/// `GET /containers/json?all=&filters=&limit=`.
pub async fn list(
    State(engine): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let all = truthy(q.get("all"));
    let filters = parse_filters(&q)?;
    if let Some(k) = filters.keys().find(|k| !PS_FILTERS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
    }
    let limit: Option<usize> = q.get("limit").and_then(|l| l.parse().ok()).filter(|l: &usize| *l > 0);
    blocking(move || {
        let everything = engine.list()?;
        for c in &everything {
            crate::events::sync_health(&engine, c);
        }
        let mut rows: Vec<Value> = everything
            .iter()
            .filter(|c| all || limit.is_some() || filters.contains_key("status") || running(c.state.status))
            .filter(|c| matches_filters(c, &everything, &filters))
            .map(summary)
            .collect();
        if let Some(n) = limit {
            rows.truncate(n);
        }
        Ok(Json(Value::Array(rows)))
    })
    .await
}

/// `GET /containers/{id}/json`: Docker's ContainerInspectResponse.
pub async fn inspect(State(engine): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    blocking(move || {
        let c = engine.resolve(&id)?;
        crate::events::sync_health(&engine, &c);
        let r = &c.record;
        let st = &c.state;
        let paths = engine.container_paths(&r.id);
        let argv = berth_engine::spec::argv(&r.config);
        let lower: Vec<String> = r
            .layers
            .iter()
            .rev()
            .filter_map(|l| l.parse().ok())
            .map(|d| engine.images().snapshots().path(&d).display().to_string())
            .collect();
        let mut config = serde_json::to_value(&r.config).unwrap_or_else(|_| json!({}));
        config["Hostname"] = json!(berth_engine::spec::hostname(&r.id, &r.config));
        config["Image"] = json!(r.image_name);
        let mut host_config = serde_json::to_value(&r.host_config).unwrap_or_else(|_| json!({}));
        if host_config.get("NetworkMode").is_none() {
            host_config["NetworkMode"] = json!("none");
        }
        if host_config.get("LogConfig").is_none() {
            host_config["LogConfig"] = json!({"Type": "json-file", "Config": {}});
        }
        if host_config.get("RestartPolicy").is_none() {
            host_config["RestartPolicy"] = json!({"Name": "no", "MaximumRetryCount": 0});
        }
        Ok(Json(json!({
            "Id": r.id,
            "Created": r.created,
            "Path": argv.first().cloned().unwrap_or_default(),
            "Args": argv.iter().skip(1).cloned().collect::<Vec<_>>(),
            "State": {
                "Status": st.status.as_str(),
                "Running": matches!(st.status, Status::Running | Status::Paused),
                "Paused": st.status == Status::Paused,
                "Restarting": st.status == Status::Restarting,
                "OOMKilled": st.oom_killed,
                "Dead": st.status == Status::Dead,
                "Pid": st.pid,
                "ExitCode": st.exit_code,
                "Error": st.error,
                "StartedAt": st.started_at,
                "FinishedAt": st.finished_at,
                "Health": st.health,
            },
            "Image": r.image_id,
            "ResolvConfPath": paths.etc_file("resolv.conf"),
            "HostnamePath": paths.etc_file("hostname"),
            "HostsPath": paths.etc_file("hosts"),
            "LogPath": r.log_path,
            "Name": format!("/{}", r.name),
            "RestartCount": st.restart_count,
            "Driver": "overlayfs",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": null,
            "HostConfig": host_config,
            "GraphDriver": {
                "Name": "overlayfs",
                "Data": {
                    "LowerDir": lower.join(":"),
                    "UpperDir": paths.upper(),
                    "WorkDir": paths.work(),
                    "MergedDir": paths.rootfs(),
                },
            },
            "Mounts": engine.mount_points(r),
            "Config": config,
            "NetworkSettings": {
                "Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
                "HairpinMode": false, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
                "Networks": {"none": {"NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}},
            },
        })))
    })
    .await
}

/// A frame of Docker's multiplexed stream: `[stream, 0, 0, 0, len BE u32] + data`.
pub fn frame(stream: u8, data: &[u8]) -> bytes::Bytes {
    let mut f = Vec::with_capacity(data.len() + 8);
    f.extend_from_slice(&[stream, 0, 0, 0]);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f.into()
}

/// `GET /containers/{id}/logs`.
pub async fn logs(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let parse_t = |k: &str| -> ApiResult<Option<f64>> {
        match q.get(k).filter(|v| !v.is_empty() && *v != "0") {
            None => Ok(None),
            Some(v) => v.parse::<f64>().map(Some).map_err(|_| ApiError::bad_request(format!("invalid {k}: {v}"))),
        }
    };
    let mut opts = ReadOptions {
        stdout: truthy(q.get("stdout")),
        stderr: truthy(q.get("stderr")),
        tail: q.get("tail").filter(|t| *t != "all").and_then(|t| t.parse().ok()),
        since: parse_t("since")?,
        until: parse_t("until")?,
    };
    if !opts.stdout && !opts.stderr {
        return Err(ApiError::bad_request("Bad parameters: you must choose at least one stream"));
    }
    let follow = truthy(q.get("follow"));
    let timestamps = truthy(q.get("timestamps"));
    let e2 = engine.clone();
    let c = blocking(move || Ok(e2.resolve(&id)?)).await?;
    let tty = c.record.config.tty.unwrap_or(false);
    let path = std::path::PathBuf::from(&c.record.log_path);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    let cid = c.record.id.clone();
    tokio::task::spawn_blocking(move || {
        let render = |e: &logs::Entry| -> bytes::Bytes {
            let mut line = String::new();
            if timestamps {
                line.push_str(&e.time);
                line.push(' ');
            }
            line.push_str(&e.log);
            if tty {
                bytes::Bytes::from(line)
            } else {
                frame(if e.stream == "stderr" { 2 } else { 1 }, line.as_bytes())
            }
        };
        let Ok((entries, mut offset)) = logs::read_with_offset(&path, &opts) else { return };
        for e in &entries {
            if tx.blocking_send(Ok(render(e))).is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        opts.tail = None;
        loop {
            let alive = running(engine.current_state(&cid).status);
            let Ok((new, next)) = logs::read_from(&path, offset, &opts) else { return };
            offset = next;
            for e in &new {
                if tx.blocking_send(Ok(render(e))).is_err() {
                    return;
                }
            }
            if !alive || tx.is_closed() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let body = Body::from_stream(tokio_stream(rx));
    let ctype = if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" };
    Ok(([(header::CONTENT_TYPE, ctype)], body).into_response())
}

/// A stream over an mpsc receiver.
pub fn tokio_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// `POST /containers/{id}/resize?h=&w=`.
pub async fn resize(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let h: u16 = q.get("h").and_then(|v| v.parse().ok()).ok_or_else(|| ApiError::bad_request("invalid h"))?;
    let w: u16 = q.get("w").and_then(|v| v.parse().ok()).ok_or_else(|| ApiError::bad_request("invalid w"))?;
    blocking(move || {
        let c = engine.resolve(&id)?;
        let paths = engine.container_paths(&c.record.id);
        berth_engine::client::call(&paths, &MonitorRequest::Resize { h, w }, Some(Duration::from_secs(5)))?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /containers/{id}/attach?stream=1&stdin=&stdout=&stderr=`: hijacks
/// the connection (101 UPGRADED) and splices it to the monitor's attach
/// stream. Before the container starts, the attach is registered so the
/// monitor waits for it: `docker run` attaches first, and none of a short
/// command's output may be lost.
pub async fn attach(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    mut req: Request,
) -> ApiResult<Response> {
    let e2 = engine.clone();
    let c = blocking(move || Ok(e2.resolve(&id)?)).await?;
    let id = c.record.id.clone();
    let tty = c.record.config.tty.unwrap_or(false);
    let want = MonitorRequest::Attach {
        stdin: truthy(q.get("stdin")),
        stdout: truthy(q.get("stdout")),
        stderr: truthy(q.get("stderr")),
    };
    let logs_first = truthy(q.get("logs"));
    // Detach keys end a tty session (docker applies them to pipes too, where
    // they corrupt binary input; berth does not).
    let keys = match q.get("detachKeys").map(String::as_str).filter(|k| !k.is_empty()) {
        Some(k) => berth_engine::detach::parse_detach_keys(k).map_err(ApiError::bad_request)?,
        None => berth_engine::detach::parse_detach_keys(berth_engine::detach::DEFAULT_DETACH_KEYS).unwrap_or_default(),
    };
    let scanner = berth_engine::detach::DetachScanner::new(if tty { keys } else { Vec::new() });
    let pending = !running(c.state.status);
    if pending {
        engine.attach_pending(&id);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let paths = engine.container_paths(&id);
    let attempts_before = c.state.start_attempts;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(_) => {
                if pending {
                    engine.attach_done(&id);
                }
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(upgraded);
        if logs_first {
            let path = std::path::PathBuf::from(&c.record.log_path);
            let opts = ReadOptions { stdout: true, stderr: true, ..Default::default() };
            if let Ok(entries) = logs::read(&path, &opts) {
                for e in entries {
                    let b = if tty {
                        bytes::Bytes::from(e.log)
                    } else {
                        frame(if e.stream == "stderr" { 2 } else { 1 }, e.log.as_bytes())
                    };
                    let _ = client.write_all(&b).await;
                }
            }
        }
        // Connect to the monitor once it listens (the container may not
        // have started yet), unless the container goes away.
        let mut line = serde_json::to_vec(&want).unwrap_or_default();
        line.push(b'\n');
        let monitor = loop {
            if let Ok(mut s) = tokio::net::UnixStream::connect(&paths.socket).await {
                if s.write_all(&line).await.is_ok() {
                    break Some(s);
                }
            }
            let st = engine.current_state(&id);
            let gone = engine.resolve(&id).is_err();
            let start_failed = st.start_attempts > attempts_before && !running(st.status) && !st.error.is_empty();
            if gone || start_failed || (!pending && !running(st.status)) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if pending {
            engine.attach_done(&id);
        }
        let Some(monitor) = monitor else {
            let _ = client.shutdown().await;
            return;
        };
        let (mut mr, mw) = monitor.into_split();
        let (cr, mut cw) = tokio::io::split(client);
        let (detached_tx, detached_rx) = tokio::sync::oneshot::channel::<()>();
        let input = tokio::spawn(copy_input(cr, mw, scanner, detached_tx));
        tokio::select! {
            _ = tokio::io::copy(&mut mr, &mut cw) => {}
            Ok(()) = detached_rx => {}
        }
        let _ = cw.shutdown().await;
        input.abort();
    });
    Ok(upgraded_response(tty))
}

/// Copies a hijacked client's input to the container until EOF (then
/// closes the container's stdin) or until the detach keys (then tells
/// `detached` and leaves stdin open: the container keeps running).
pub(crate) async fn copy_input<R, W>(
    mut from: R,
    mut to: W,
    mut scanner: berth_engine::detach::DetachScanner,
    detached: tokio::sync::oneshot::Sender<()>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (data, done) = scanner.feed(&buf[..n]);
        if to.write_all(&data).await.is_err() {
            return;
        }
        if done {
            let _ = detached.send(());
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Docker's answer to a hijack: 101 UPGRADED to a raw (tty) or
/// multiplexed stream.
pub fn upgraded_response(tty: bool) -> Response {
    let ctype = if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    resp
}

/// `POST /containers/{id}/pause`.
pub async fn pause(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let e2 = s.clone();
    let c = blocking(move || {
        e2.pause(&id, true)?;
        Ok(e2.resolve(&id)?)
    })
    .await?;
    s.events.container(&c, "pause", &[]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let e2 = s.clone();
    let c = blocking(move || {
        e2.pause(&id, false)?;
        Ok(e2.resolve(&id)?)
    })
    .await?;
    s.events.container(&c, "unpause", &[]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let name = q.get("name").cloned().unwrap_or_default();
    let e2 = s.clone();
    let c = blocking(move || {
        e2.rename(&id, &name)?;
        Ok(e2.resolve(&name)?)
    })
    .await?;
    s.events.container(&c, "rename", &[]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /containers/{id}/top?ps_args=`: `ps` on the host, limited to the
/// container's processes (Docker's way).
pub async fn top(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let args = q.get("ps_args").cloned().filter(|a| !a.is_empty()).unwrap_or_else(|| "-ef".into());
    blocking(move || {
        let pids = s.pids(&id)?;
        let out = std::process::Command::new("ps")
            .args(args.split_whitespace())
            .output()
            .map_err(|e| ApiError::internal(format!("running ps: {e}")))?;
        if !out.status.success() {
            return Err(ApiError::internal(format!("ps: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let header: Vec<String> = lines.next().unwrap_or_default().split_whitespace().map(str::to_string).collect();
        let pid_col = header
            .iter()
            .position(|h| h == "PID")
            .ok_or_else(|| ApiError::internal("Couldn't find PID field in ps output".to_string()))?;
        let n = header.len();
        let rows: Vec<Vec<String>> = lines
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let pid: i32 = f.get(pid_col)?.parse().ok()?;
                if !pids.contains(&pid) || f.len() < n {
                    return None;
                }
                let mut row: Vec<String> = f[..n - 1].iter().map(|x| x.to_string()).collect();
                row.push(f[n - 1..].join(" "));
                Some(row)
            })
            .collect();
        Ok(Json(json!({"Titles": header, "Processes": rows})))
    })
    .await
}

/// A `Write` that sends what is written to a response body, for tar
/// streams produced on a blocking thread.
pub(crate) struct BodyWriter(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>);

impl std::io::Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A streamed tar body produced by `f` on a blocking thread.
pub(crate) fn tar_body(f: impl FnOnce(BodyWriter) + Send + 'static) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::task::spawn_blocking(move || f(BodyWriter(tx)));
    Body::from_stream(tokio_stream(rx))
}

fn stat_header(st: &berth_engine::archive::PathStat) -> HeaderValue {
    use base64::Engine as _;
    let json = serde_json::to_vec(st).unwrap_or_default();
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json))
        .unwrap_or(HeaderValue::from_static(""))
}

fn archive_path(q: &HashMap<String, String>) -> ApiResult<String> {
    q.get("path").cloned().filter(|p| !p.is_empty()).ok_or_else(|| ApiError::bad_request("path is required"))
}

/// `HEAD /containers/{id}/archive?path=`.
pub async fn archive_head(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let path = archive_path(&q)?;
    let st = blocking(move || Ok(s.archive_stat(&id, &path)?)).await?;
    Ok(([("X-Docker-Container-Path-Stat", stat_header(&st))], StatusCode::OK).into_response())
}

/// `GET /containers/{id}/archive?path=`: a tar of the path.
pub async fn archive_get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let path = archive_path(&q)?;
    let (s2, id2, p2) = (s.clone(), id.clone(), path.clone());
    let st = blocking(move || Ok(s2.archive_stat(&id2, &p2)?)).await?;
    let body = tar_body(move |w| {
        let _ = s.archive_get(&id, &path, w);
    });
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar")),
            (header::HeaderName::from_static("x-docker-container-path-stat"), stat_header(&st)),
        ],
        body,
    )
        .into_response())
}

/// `PUT /containers/{id}/archive?path=`: extracts the tar in the body.
pub async fn archive_put(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> ApiResult<Response> {
    let path = archive_path(&q)?;
    let (reader, body_done) = crate::body_reader::blocking_reader(body);
    let result = blocking(move || Ok(s.archive_put(&id, &path, reader)?)).await;
    body_done.wait().await;
    result?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /containers/{id}/export`.
pub async fn export(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (s2, id2) = (s.clone(), id.clone());
    blocking(move || Ok(s2.resolve(&id2).map(|_| ())?)).await?;
    let body = tar_body(move |w| {
        let _ = s.export(&id, w);
    });
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

/// `GET /containers/{id}/changes`.
pub async fn changes(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    blocking(move || {
        let d = s.diff(&id)?;
        Ok(Json(Value::Array(d.into_iter().map(|(p, k)| json!({"Path": p, "Kind": k})).collect())))
    })
    .await
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: one document, or one a
/// second until the client goes away or the container stops.
pub async fn stats(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let stream = !matches!(q.get("stream").map(String::as_str), Some("0" | "false"));
    let (s2, id2) = (s.clone(), id.clone());
    let id = blocking(move || Ok(berth_engine::stats::ensure(&s2, &id2)?)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        // A first sample a moment earlier gives CPU usage a base, as Docker.
        let mut prev = s.stats(&id, None).ok();
        std::thread::sleep(Duration::from_millis(if stream { 1000 } else { 500 }));
        loop {
            let Ok(doc) = s.stats(&id, prev.as_ref()) else { return };
            if tx.blocking_send(Ok(bytes::Bytes::from(format!("{doc}\n")))).is_err() || !stream {
                return;
            }
            if !running(s.current_state(&id).status) {
                return;
            }
            prev = Some(doc);
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(tokio_stream(rx))).into_response())
}
