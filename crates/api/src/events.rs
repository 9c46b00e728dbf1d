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

/// How many removed containers [`Events::die`] remembers as removed.
const REMOVED_KEPT: usize = 256;

/// The `die` events published so far.
#[derive(Debug, Default)]
struct Dies {
    /// Per container, the exit (`FinishedAt`) last reported.
    last: HashMap<String, String>,
    /// Containers removed lately (most recent last): no more `die` for them.
    removed: VecDeque<String>,
}

/// The event bus.
#[derive(Debug)]
pub struct Events {
    tx: tokio::sync::broadcast::Sender<Value>,
    recent: Mutex<VecDeque<Value>>,
    /// Per container, the exit (`FinishedAt`) last reported as `die`.
    dies: Mutex<Dies>,
    /// Per watched container, the number of the last health change
    /// published (`RunState::health_changes`).
    health: Mutex<HashMap<String, u64>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            tx: tokio::sync::broadcast::channel(256).0,
            recent: Mutex::new(VecDeque::new()),
            dies: Mutex::new(Dies::default()),
            health: Mutex::new(HashMap::new()),
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
        if d.removed.contains(&c.record.id) || d.last.get(&c.record.id) == Some(&st.finished_at) {
            return;
        }
        d.last.insert(c.record.id.clone(), st.finished_at.clone());
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
        let mut d = self.dies.lock().unwrap_or_else(|e| e.into_inner());
        d.last.remove(id);
        // A watcher that read the record just before the removal may
        // still call `die`: the exit was published, or `rm` published it.
        d.removed.push_back(id.to_string());
        if d.removed.len() > REMOVED_KEPT {
            d.removed.pop_front();
        }
        drop(d);
        self.health.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Publishes `health_status: X` for each of `changes` (numbered, see
    /// `Request::Health`) not published yet, in order. Whoever learns of a
    /// change first (the watcher, or a handler about to show the new
    /// status) publishes it; the numbers keep it to one event each.
    pub fn health_changes(&self, c: &berth_engine::engine::Container, changes: &[(u64, String)]) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = h.get_mut(&c.record.id) else { return };
        for (n, status) in changes {
            if *n > *last {
                *last = *n;
                // Under the lock, so that events go out in change order.
                self.container(c, &format!("health_status: {status}"), &[]);
            }
        }
    }

    /// The last health change published for a watched container.
    fn health_published(&self, id: &str) -> Option<u64> {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }
}

/// Before a handler shows a container's health: publishes the changes the
/// watcher has not yet, so that a client that sees a status in `inspect`
/// or `ps` finds its event too (Docker publishes as it records).
pub fn sync_health(s: &AppState, c: &berth_engine::engine::Container) {
    let Some(last) = s.events.health_published(&c.record.id) else { return };
    let latest = c.state.health_changes;
    if latest <= last {
        return;
    }
    let paths = s.container_paths(&c.record.id);
    let req = berth_engine::monitor::Request::Health { after: last };
    let changes = match berth_engine::client::call(&paths, &req, Some(Duration::from_secs(1))) {
        Ok(Some(v)) => parse_changes(&v),
        _ => Vec::new(),
    };
    let changes = if changes.is_empty() {
        // The monitor is gone or no longer has them: the current status
        // stands for the changes missed.
        c.state.health.as_ref().map(|h| vec![(latest, h.status.clone())]).unwrap_or_default()
    } else {
        changes
    };
    s.events.health_changes(c, &changes);
}

/// The `Changes` of a monitor's answer to `Request::Health`.
fn parse_changes(v: &Value) -> Vec<(u64, String)> {
    serde_json::from_value(v["Changes"].clone()).unwrap_or_default()
}

/// Watches a container: publishes `die` at each exit while it runs (its
/// restart policy may bring it back). `finished_before` is the container's
/// last exit time before the start being watched, so an exit that happened
/// before the watcher got going is still reported.
pub fn watch(s: AppState, id: String, finished_before: String) {
    if let Ok(c) = s.resolve(&id) {
        if berth_engine::health::check(c.record.config.healthcheck.as_ref()).is_some() {
            // Changes before this start (or before this daemon) are not news.
            let mut h = s.events.health.lock().unwrap_or_else(|e| e.into_inner());
            let last = h.entry(id.clone()).or_default();
            *last = (*last).max(c.state.health_changes);
            drop(h);
            watch_health(s.clone(), id.clone());
        }
    }
    tokio::task::spawn_blocking(move || {
        if let Ok(c) = s.resolve(&id) {
            // The exit before this start is not news.
            s.events.dies.lock().unwrap_or_else(|e| e.into_inner()).last.entry(id.clone()).or_insert(finished_before);
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

/// Publishes `health_status: X` as a running container's health changes:
/// asks its monitor for the changes past the last one published
/// (`Request::Health`), which it answers as soon as there are any, until
/// the monitor ends.
fn watch_health(s: AppState, id: String) {
    tokio::spawn(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let socket = s.container_paths(&id).socket;
        loop {
            let Some(after) = s.events.health_published(&id) else { return };
            let Ok(mut conn) = tokio::net::UnixStream::connect(&socket).await else { return };
            let req = berth_engine::monitor::Request::Health { after };
            let Ok(mut line) = serde_json::to_vec(&req) else { return };
            line.push(b'\n');
            if conn.write_all(&line).await.is_err() {
                return;
            }
            let mut answer = String::new();
            if tokio::io::BufReader::new(conn).read_line(&mut answer).await.unwrap_or(0) == 0 {
                return; // The monitor ended.
            }
            let Ok(v) = serde_json::from_str::<Value>(&answer) else { return };
            if v.get("error").is_some() {
                // A monitor from an older berth, started before this
                // daemon: it does not number the changes.
                poll_health(s, id);
                return;
            }
            let changes = parse_changes(&v);
            let (s, id) = (s.clone(), id.clone());
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(c) = s.resolve(&id) {
                    s.events.health_changes(&c, &changes);
                }
            })
            .await;
        }
    });
}

/// [`watch_health`] for a monitor that cannot tell of changes: compares
/// the recorded status every second.
fn poll_health(s: AppState, id: String) {
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
                if let Some(h) = now.as_deref().filter(|h| *h != "starting") {
                    s.events.container(&c, &format!("health_status: {h}"), &[]);
                }
                last = now;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

fn matches(ev: &Value, filters: &HashMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(k, vals)| {
        vals.iter().any(|v| match k.as_str() {
            "type" => ev["Type"] == *v,
            // `exec_start: sh` and `health_status: healthy` also match
            // by the part before the colon, as Docker's filter does.
            "event" => ev["Action"].as_str().is_some_and(|a| a == v || a.split_once(':').is_some_and(|(p, _)| p == v)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_engine::engine::Container;
    use berth_engine::record::{RunState, Status};

    fn exited(id: &str, finished_at: &str) -> Container {
        let record = serde_json::from_value(json!({
            "id": id, "name": "c", "created": "", "image_name": "busybox", "image_id": "",
            "config": {}, "host_config": {}, "log_path": "", "layers": [],
        }))
        .expect("record");
        let state =
            RunState { status: Status::Exited, finished_at: finished_at.into(), exit_code: 3, ..RunState::created() };
        Container { record, state }
    }

    fn actions(ev: &Events) -> Vec<String> {
        let r = ev.recent.lock().expect("lock");
        r.iter().map(|e| e["Action"].as_str().unwrap_or_default().to_string()).collect()
    }

    #[test]
    fn each_exit_is_one_die_and_none_after_removal() {
        let ev = Events::default();
        let c = exited("a1", "2026-12-08T00:00:01Z");
        ev.die(&c, &[]);
        ev.die(&c, &[]);
        assert_eq!(actions(&ev), vec!["die"]);
        ev.die(&exited("a1", "2026-12-08T00:00:02Z"), &[]);
        assert_eq!(actions(&ev).len(), 2, "a later exit is news");
        // rm published the die and forgot the container; a watcher that
        // read the record before the removal must not publish it again.
        ev.forget("a1");
        ev.die(&exited("a1", "2026-12-08T00:00:02Z"), &[]);
        assert_eq!(actions(&ev).len(), 2);
    }

    #[test]
    fn health_changes_are_published_once_in_order() {
        let ev = Events::default();
        let c = exited("b2", "2026-12-08T00:00:01Z");
        // Not watched: nothing to publish.
        ev.health_changes(&c, &[(1, "healthy".into())]);
        assert!(actions(&ev).is_empty());
        ev.health.lock().expect("lock").insert("b2".into(), 4);
        ev.health_changes(&c, &[(4, "healthy".into()), (5, "unhealthy".into()), (6, "healthy".into())]);
        ev.health_changes(&c, &[(5, "unhealthy".into()), (6, "healthy".into())]);
        assert_eq!(actions(&ev), vec!["health_status: unhealthy", "health_status: healthy"]);
    }

    #[test]
    fn event_filter_matches_the_action_before_its_colon() {
        let ev =
            json!({"Type": "container", "Action": "exec_start: sh -c true", "Actor": {"ID": "x", "Attributes": {}}});
        let f = |v: &str| HashMap::from([("event".to_string(), vec![v.to_string()])]);
        assert!(matches(&ev, &f("exec_start")));
        assert!(matches(&ev, &f("exec_start: sh -c true")));
        assert!(!matches(&ev, &f("exec")));
        assert!(!matches(&ev, &f("start")));
    }
}
