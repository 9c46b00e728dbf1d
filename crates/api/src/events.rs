//! `/events`: Docker's event stream. Handlers publish container and image
//! events on a bus; a container's exits (`die`) are seen by a watcher per
//! started container (and per running container when the daemon starts,
//! after a live restore). Recent events are kept for `since`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::containers::{parse_filters, tokio_stream};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// How many past events `since` can reach back to.
const HISTORY: usize = 1024;

/// The event bus.
#[derive(Debug)]
pub struct Events {
    tx: tokio::sync::broadcast::Sender<Value>,
    recent: Mutex<VecDeque<Value>>,
    /// Per container, the exit (`FinishedAt`) last reported as `die`.
    dies: Mutex<HashMap<String, String>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            tx: tokio::sync::broadcast::channel(256).0,
            recent: Mutex::new(VecDeque::new()),
            dies: Mutex::new(HashMap::new()),
        }
    }
}

impl Events {
    /// Publishes an event of `typ` (`container`, `image`) with `action`.
    pub fn emit(&self, typ: &str, action: &str, id: &str, attributes: HashMap<String, String>) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut ev = json!({
            "Type": typ, "Action": action,
            "Actor": {"ID": id, "Attributes": attributes},
            "scope": "local", "time": now.as_secs(), "timeNano": now.as_nanos() as u64,
        });
        if typ == "container" || typ == "image" {
            // The legacy fields docker CLI still reads.
            ev["status"] = json!(action);
            ev["id"] = json!(id);
            if let Some(img) = attributes.get("image") {
                ev["from"] = json!(img);
            }
        }
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.push_back(ev.clone());
        if r.len() > HISTORY {
            r.pop_front();
        }
        drop(r);
        let _ = self.tx.send(ev);
    }

    /// Publishes an image event (`pull`, `push`, `tag`, `untag`, `delete`,
    /// `import`, `load`, `save`, `prune`): `id` as docker names it (a
    /// reference for pull/push, else the image id), `name` the reference.
    pub fn image(&self, action: &str, id: &str, name: &str) {
        self.emit("image", action, id, HashMap::from([("name".to_string(), name.to_string())]));
    }

    /// Publishes a volume event (`create`, `destroy`, `prune`).
    pub fn volume(&self, action: &str, name: &str) {
        self.emit("volume", action, name, HashMap::from([("driver".to_string(), "local".to_string())]));
    }

    /// The JSON items of an image removal, publishing `untag`/`delete`
    /// for each (`id`: the image's id when known).
    pub fn removed(&self, removed: Vec<berth_image::docker_view::Removed>, id: Option<&str>) -> Vec<Value> {
        use berth_image::docker_view::Removed;
        removed
            .into_iter()
            .map(|r| match r {
                Removed::Untagged(n) => {
                    self.image("untag", id.unwrap_or(&n), &n);
                    json!({"Untagged": n})
                }
                Removed::Deleted(d) => {
                    self.image("delete", &d, &d);
                    json!({"Deleted": d})
                }
            })
            .collect()
    }

    /// Publishes a container event with Docker's attributes (image, name, labels).
    pub fn container(&self, c: &berth_engine::engine::Container, action: &str, extra: &[(&str, String)]) {
        let mut a: HashMap<String, String> = c.record.config.labels.clone().unwrap_or_default();
        a.insert("image".into(), c.record.image_name.clone());
        a.insert("name".into(), c.record.name.clone());
        for (k, v) in extra {
            a.insert(k.to_string(), v.clone());
        }
        self.emit("container", action, &c.record.id, a);
    }
}

impl Events {
    /// Publishes `die` for the container's last exit unless it was
    /// published already (the watcher and `rm` both call this, so the
    /// order is always die, then destroy), followed by an `unmount` event
    /// for each volume it used (`volumes`: its mount points), as Docker.
    pub fn die(&self, c: &berth_engine::engine::Container, volumes: &[berth_engine::mounts::MountPoint]) {
        let st = &c.state;
        if st.finished_at == berth_engine::record::ZERO_TIME
            || matches!(st.status, berth_engine::record::Status::Running | berth_engine::record::Status::Created)
        {
            return;
        }
        let mut d = self.dies.lock().unwrap_or_else(|e| e.into_inner());
        if d.get(&c.record.id) == Some(&st.finished_at) {
            return;
        }
        d.insert(c.record.id.clone(), st.finished_at.clone());
        drop(d);
        self.container(c, "die", &[("exitCode", st.exit_code.to_string())]);
        self.volume_mounts(c, volumes, "unmount");
    }

    /// Docker's volume `mount` (at a start) or `unmount` (after the exit)
    /// events, one per volume among the container's mount points.
    pub fn volume_mounts(
        &self,
        c: &berth_engine::engine::Container,
        points: &[berth_engine::mounts::MountPoint],
        action: &str,
    ) {
        for m in points.iter().filter(|m| m.typ == "volume" && !m.name.is_empty()) {
            let mut a = HashMap::from([
                ("container".to_string(), c.record.id.clone()),
                ("driver".to_string(), if m.driver.is_empty() { "local".into() } else { m.driver.clone() }),
            ]);
            if action == "mount" {
                a.insert("destination".into(), m.destination.clone());
                a.insert("propagation".into(), m.propagation.clone());
                a.insert("read/write".into(), m.rw.to_string());
            }
            self.emit("volume", action, &m.name, a);
        }
    }

    /// Forgets a removed container.
    pub fn forget(&self, id: &str) {
        self.dies.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// Watches a container: publishes `die` at each exit while it runs (its
/// restart policy may bring it back). `finished_before` is the container's
/// last exit time before the start being watched, so an exit that happened
/// before the watcher got going is still reported.
pub fn watch(s: AppState, id: String, finished_before: String) {
    let has_check =
        s.resolve(&id).is_ok_and(|c| berth_engine::health::check(c.record.config.healthcheck.as_ref()).is_some());
    if has_check {
        watch_health(s.clone(), id.clone());
    }
    tokio::task::spawn_blocking(move || {
        if let Ok(c) = s.resolve(&id) {
            // The exit before this start is not news.
            s.events.dies.lock().unwrap_or_else(|e| e.into_inner()).entry(id.clone()).or_insert(finished_before);
            let _ = c;
        }
        loop {
            let Ok(c) = s.resolve(&id) else { return };
            let running = matches!(
                c.state.status,
                berth_engine::record::Status::Running | berth_engine::record::Status::Restarting
            );
            if !running {
                s.events.die(&c, &s.mount_points(&c.record));
                if c.state.monitor_pid == 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            if s.wait(&id).is_err() {
                return;
            }
            if let Ok(c) = s.resolve(&id) {
                s.events.die(&c, &s.mount_points(&c.record));
            }
        }
    });
}

/// Publishes `health_status: X` when a running container's health changes.
fn watch_health(s: AppState, id: String) {
    tokio::task::spawn_blocking(move || {
        let mut last: Option<String> = None;
        loop {
            let Ok(c) = s.resolve(&id) else { return };
            if !matches!(
                c.state.status,
                berth_engine::record::Status::Running | berth_engine::record::Status::Restarting
            ) {
                return;
            }
            let now = c.state.health.as_ref().map(|h| h.status.clone());
            if now != last {
                if let Some(h) = &now {
                    if h != "starting" {
                        s.events.container(&c, &format!("health_status: {h}"), &[]);
                    }
                }
                last = now;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

fn matches(ev: &Value, filters: &HashMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(k, vals)| {
        vals.iter().any(|v| match k.as_str() {
            "type" => ev["Type"] == *v,
            "event" => ev["Action"] == *v,
            "container" => {
                ev["Type"] == "container"
                    && (ev["Actor"]["ID"].as_str().is_some_and(|id| id.starts_with(v.as_str()))
                        || ev["Actor"]["Attributes"]["name"] == *v)
            }
            "image" => ev["Actor"]["Attributes"]["image"] == *v || ev["Actor"]["ID"] == *v,
            "volume" => ev["Type"] == "volume" && ev["Actor"]["ID"] == *v,
            "scope" => ev["scope"] == *v,
            "label" => match v.split_once('=') {
                Some((lk, lv)) => ev["Actor"]["Attributes"][lk] == lv,
                None => !ev["Actor"]["Attributes"][v.as_str()].is_null(),
            },
            // network, daemon: berth publishes no such events yet.
            _ => false,
        })
    })
}

fn parse_ts(v: Option<&String>) -> ApiResult<Option<f64>> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<f64>()
            .map(Some)
            .or_else(|_| berth_engine::logs::parse_time(s).map(Some).ok_or(()))
            .map_err(|()| ApiError::bad_request(format!("invalid timestamp {s:?}"))),
    }
}

/// `GET /events?since=&until=&filters=`.
pub async fn stream(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let filters = parse_filters(&q)?;
    const KEYS: &[&str] = &["type", "event", "container", "image", "label", "volume", "scope", "network", "daemon"];
    if let Some(k) = filters.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
    }
    let since = parse_ts(q.get("since"))?;
    let until = parse_ts(q.get("until"))?;
    let mut live = s.events.tx.subscribe();
    let past: Vec<Value> = match since {
        Some(t) => {
            let r = s.events.recent.lock().unwrap_or_else(|e| e.into_inner());
            r.iter()
                .filter(|e| {
                    let ts = e["timeNano"].as_u64().unwrap_or(0) as f64 / 1e9;
                    ts >= t && until.is_none_or(|u| ts <= u)
                })
                .cloned()
                .collect()
        }
        None => Vec::new(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |v: &Value| Ok(bytes::Bytes::from(format!("{v}\n")));
        for e in past.iter().filter(|e| matches(e, &filters)) {
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        if until.is_some_and(|u| u <= now) {
            return;
        }
        let deadline = until.map(|u| tokio::time::Instant::now() + Duration::from_secs_f64((u - now).max(0.0)));
        loop {
            let next = async {
                match live.recv().await {
                    Ok(v) => Some(v),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(Value::Null),
                    Err(_) => None,
                }
            };
            let got = match deadline {
                Some(d) => match tokio::time::timeout_at(d, next).await {
                    Ok(v) => v,
                    Err(_) => return,
                },
                None => next.await,
            };
            let Some(v) = got else { return };
            if v.is_null() || !matches(&v, &filters) {
                continue;
            }
            if tx.send(line(&v)).await.is_err() {
                return;
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(tokio_stream(rx))).into_response())
}
