//! `/images/…`: list, inspect, pull (`/images/create`), tag, remove, history.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_image::docker_view;
use berth_image::manifest::Platform;
use berth_image::registry::ImageRef;
use berth_image::store::{short, Progress, PullEvent};
use serde_json::{json, Value};

use crate::containers::tokio_stream;
use crate::error::{blocking, ApiError, ApiResult};
use crate::AppState;

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"))
}

/// Docker's ImageSummary of one image (`containers`: -1 when not counted).
pub fn image_summary(
    engine: &berth_engine::Engine,
    rec: &berth_image::images::ImageRecord,
    tags: &[String],
    size: u64,
    shared: i64,
    containers: i64,
) -> Value {
    let store = engine.images();
    let created = store
        .content()
        .read(&rec.id)
        .ok()
        .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
        .and_then(|v| v.get("created").and_then(|c| c.as_str()).map(str::to_string))
        .and_then(|c| berth_engine::logs::parse_time(&c))
        .unwrap_or(0.0) as i64;
    let labels = engine.image_config(&rec.id).ok().and_then(|c| c.labels).unwrap_or_default();
    json!({
        "Id": rec.id.to_string(),
        "ParentId": "",
        "RepoTags": tags.iter().map(|t| docker_view::familiar(t)).collect::<Vec<_>>(),
        "RepoDigests": rec.repo_digests.iter().map(|d| docker_view::familiar(d)).collect::<Vec<_>>(),
        "Created": created,
        "Size": size,
        "VirtualSize": size,
        "SharedSize": shared,
        "Labels": labels,
        "Containers": containers,
    })
}

/// `GET /images/json?filters=`: Docker's ImageSummary list. With filters
/// (`dangling`, `label`, `reference`, `before`, `since`) an image is listed
/// when one of its names matches, with the names that match.
pub async fn list(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<impl IntoResponse> {
    let filters: Vec<(String, String)> = crate::containers::parse_filters(&q)?
        .into_iter()
        .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
        .collect();
    blocking(move || {
        let store = s.images();
        let mut out = Vec::new();
        for (rec, tags) in store.db().list()? {
            let names: Vec<String> = if filters.is_empty() {
                tags.clone()
            } else if tags.is_empty() {
                if !docker_view::filter_matches(store, &filters, &rec, None).map_err(ApiError::bad_request)? {
                    continue;
                }
                Vec::new()
            } else {
                let mut keep = Vec::new();
                for t in &tags {
                    let fam = docker_view::familiar(t);
                    let (repo, tag) =
                        fam.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((fam.as_str(), ""));
                    if docker_view::filter_matches(store, &filters, &rec, Some((repo, tag)))
                        .map_err(ApiError::bad_request)?
                    {
                        keep.push(t.clone());
                    }
                }
                if keep.is_empty() {
                    continue;
                }
                keep
            };
            out.push(image_summary(&s, &rec, &names, store.unpacked_size(&rec), -1, -1));
        }
        Ok(Json(Value::Array(out)))
    })
    .await
}

/// `GET /images/{name}/json` and `GET /images/{name}/history`.
pub async fn get_dispatch(State(s): State<AppState>, Path(rest): Path<String>) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/json") {
        let name = name.to_string();
        return blocking(move || match docker_view::inspect(s.images(), &name) {
            Ok(v) => Ok(Json(v).into_response()),
            Err(berth_image::Error::ImageNotFound(_)) => Err(not_found(&name)),
            Err(e) => Err(e.into()),
        })
        .await;
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return save(s, vec![name.to_string()]).await;
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let name = name.to_string();
        return blocking(move || {
            let rec = s.images().resolve(&name).map_err(|_| not_found(&name))?;
            let tags: Vec<String> =
                docker_view::tags_of(s.images(), &rec.id)?.iter().map(|t| docker_view::familiar(t)).collect();
            let rows: Vec<Value> = s
                .images()
                .history(&rec)?
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    json!({
                        "Id": h.id.map(|d| d.to_string()).unwrap_or_else(|| "<missing>".into()),
                        "Created": h.created.as_deref().and_then(berth_engine::logs::parse_time).unwrap_or(0.0) as i64,
                        "CreatedBy": h.created_by,
                        "Tags": if i == 0 { json!(tags) } else { Value::Null },
                        "Size": h.size,
                        "Comment": h.comment,
                    })
                })
                .collect();
            Ok(Json(Value::Array(rows)).into_response())
        })
        .await;
    }
    Err(ApiError { status: StatusCode::NOT_FOUND, message: "page not found".into() })
}

fn not_found(name: &str) -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, message: format!("No such image: {name}") }
}

/// `POST /images/{name}/tag?repo=&tag=` and `POST /images/{name}/push`.
pub async fn post_dispatch(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/push") {
        return push(s, name.to_string(), q, headers).await;
    }
    let Some(name) = rest.strip_suffix("/tag").map(str::to_string) else {
        return Err(ApiError { status: StatusCode::NOT_FOUND, message: "page not found".into() });
    };
    let repo = q.get("repo").cloned().unwrap_or_default();
    let tag = q.get("tag").cloned().filter(|t| !t.is_empty()).unwrap_or_else(|| "latest".into());
    blocking(move || {
        let rec = s.images().resolve(&name).map_err(|_| not_found(&name))?;
        let target = ImageRef::parse(&format!("{repo}:{tag}"))?;
        s.images().db().tag(&target.to_string(), &rec.id)?;
        s.events.image("tag", &rec.id.to_string(), &target.familiar());
        Ok(StatusCode::CREATED.into_response())
    })
    .await
}

/// `DELETE /images/{name}?force=`: refuses an image a container uses
/// (unless forced), as Docker does.
pub async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let force = truthy(q.get("force"));
    blocking(move || {
        let rec = s.images().resolve(&name).map_err(|_| not_found(&name))?;
        let users = s.image_in_use(&rec.id.to_string())?;
        let tags = docker_view::tags_of(s.images(), &rec.id)?;
        let untag_only = tags.len() > 1 && !rec.id.hex().starts_with(name.trim_start_matches("sha256:"));
        if let (Some(c), false, false) = (users.first(), force, untag_only) {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!(
                    "conflict: unable to delete {} (must be forced) - image is being used by container {}",
                    short(&rec.id),
                    &c[..12]
                ),
            });
        }
        let removed = docker_view::remove(s.images(), &name, force)?;
        s.images().gc()?;
        let out = s.events.removed(removed, Some(&rec.id.to_string()));
        Ok(Json(Value::Array(out)))
    })
    .await
}

/// Pull progress as Docker's JSON message stream.
struct JsonProgress(tokio::sync::mpsc::UnboundedSender<Value>);

impl Progress for JsonProgress {
    fn event(&self, e: PullEvent) {
        let v = match e {
            PullEvent::Resolved { .. } => return,
            PullEvent::Waiting { id } => json!({"status": "Pulling fs layer", "progressDetail": {}, "id": id}),
            PullEvent::AlreadyExists { id } => json!({"status": "Already exists", "progressDetail": {}, "id": id}),
            PullEvent::Downloading { id, current, total } => json!({
                "status": "Downloading", "progressDetail": {"current": current, "total": total}, "id": id,
            }),
            PullEvent::DownloadComplete { id } => {
                json!({"status": "Download complete", "progressDetail": {}, "id": id})
            }
            PullEvent::Extracting { id } => json!({"status": "Extracting", "progressDetail": {}, "id": id}),
            PullEvent::PullComplete { id } => json!({"status": "Pull complete", "progressDetail": {}, "id": id}),
        };
        let _ = self.0.send(v);
    }
}

/// `POST /images/create?fromImage=&tag=&platform=`: pulls, streaming
/// Docker's progress messages; a failure ends the stream with `errorDetail`.
pub async fn pull(
    State(s): State<AppState>,
    Query(all): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if all.iter().any(|(k, v)| k == "fromSrc" && !v.is_empty()) {
        return import(s, all, body).await;
    }
    let q: HashMap<String, String> = all.into_iter().collect();
    let from = q
        .get("fromImage")
        .cloned()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::bad_request("fromImage or fromSrc is required"))?;
    let tag = q.get("tag").cloned().filter(|t| !t.is_empty());
    let name = match &tag {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.clone(),
    };
    let reference = ImageRef::parse(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Platform::parse(p).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Platform::host(),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let what = reference.digest().or(reference.tag()).unwrap_or("latest").to_string();
    let _ = tx.send(json!({"status": format!("Pulling from {}", reference.repository()), "id": what}));
    let progress = Arc::new(JsonProgress(tx.clone()));
    let registry = registry_with(&s, reference.registry(), registry_auth(&headers)?);
    tokio::spawn(async move {
        let res = s.images().pull(registry, &reference, &platform, progress).await;
        match res {
            Ok(out) => {
                let _ = tx.send(json!({"status": format!("Digest: {}", out.digest)}));
                let fam = reference.familiar();
                s.events.image("pull", &fam, &fam);
                let status = if out.downloaded {
                    format!("Status: Downloaded newer image for {fam}")
                } else {
                    format!("Status: Image is up to date for {fam}")
                };
                let _ = tx.send(json!({"status": status}));
            }
            Err(e) => {
                let _ = tx.send(json!({"errorDetail": {"message": e.to_string()}, "error": e.to_string()}));
            }
        }
    });
    let (btx, brx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut rx = rx;
        while let Some(v) = rx.recv().await {
            if btx.send(Ok(bytes::Bytes::from(format!("{v}\r\n")))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream(brx));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=&pause=`.
pub async fn commit(State(s): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> ApiResult<impl IntoResponse> {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let container = get("container");
    let (repo, tag) = (get("repo"), get("tag"));
    let reference = (!repo.is_empty()).then(|| if tag.is_empty() { repo.clone() } else { format!("{repo}:{tag}") });
    let changes: Vec<String> =
        q.iter().filter(|(n, _)| n == "changes").map(|(_, v)| v.clone()).filter(|v| !v.is_empty()).collect();
    let pause = !matches!(get("pause").as_str(), "0" | "false");
    let (comment, author) = (get("comment"), get("author"));
    let id =
        blocking(move || Ok(s.commit(&container, reference.as_deref(), &changes, &comment, &author, pause)?)).await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id}))))
}

/// A docker-archive of `names` (`docker save`), streamed.
async fn save(s: AppState, names: Vec<String>) -> ApiResult<Response> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given"));
    }
    let (s2, n2) = (s.clone(), names.clone());
    blocking(move || {
        for n in &n2 {
            s2.images().resolve(n).map_err(|_| not_found(n))?;
        }
        Ok(())
    })
    .await?;
    for n in &names {
        s.events.image("save", n, n);
    }
    let body = crate::containers::tar_body(move |w| {
        let _ = s.images().save(&names, berth_image::archive::ArchiveFormat::DockerArchive, w);
    });
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

/// `GET /images/get?names=…` (repeatable).
pub async fn get_many(State(s): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> ApiResult<Response> {
    let names = q.into_iter().filter(|(k, _)| k == "names").map(|(_, v)| v).collect();
    save(s, names).await
}

/// `POST /images/load`: a docker-archive or oci-archive in the body,
/// streamed into the store (never held in memory whole).
pub async fn load(State(s): State<AppState>, body: Body) -> ApiResult<impl IntoResponse> {
    let (reader, body_done) = crate::body_reader::blocking_reader(body);
    let s2 = s.clone();
    let loaded = blocking(move || Ok(s2.images().load(reader)?)).await;
    body_done.wait().await;
    let loaded = loaded?;
    let mut out = String::new();
    for l in loaded {
        let name = l.tags.first().map(|t| docker_view::familiar(t)).unwrap_or_else(|| l.image.id.to_string());
        s.events.image("load", &l.image.id.to_string(), &name);
        if l.tags.is_empty() {
            out.push_str(&format!("{}\n", json!({"stream": format!("Loaded image ID: {}\n", l.image.id)})));
        }
        for t in &l.tags {
            out.push_str(&format!("{}\n", json!({"stream": format!("Loaded image: {}\n", docker_view::familiar(t))})));
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], out))
}

/// Credentials from docker's `X-Registry-Auth` header: base64url (or
/// standard base64) JSON with `username`/`password` (an `identitytoken`
/// is used as the password, as registries take refresh tokens that way).
pub fn registry_auth(headers: &axum::http::HeaderMap) -> ApiResult<Option<berth_image::registry::Credentials>> {
    use base64::Engine as _;
    let Some(raw) = headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .map_err(|_| ApiError::bad_request("X-Registry-Auth: not base64"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| ApiError::bad_request("X-Registry-Auth: not JSON"))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    Ok(match (field("username"), field("password").or_else(|| field("identitytoken"))) {
        (Some(username), Some(password)) => Some(berth_image::registry::Credentials::Basic { username, password }),
        _ => None,
    })
}

/// A registry client with the daemon's options and, for `host`, the
/// request's credentials (the daemon's own config.json otherwise).
fn registry_with(
    s: &AppState,
    host: &str,
    creds: Option<berth_image::registry::Credentials>,
) -> Arc<berth_image::registry::Registry> {
    match creds {
        None => s.registry.clone(),
        Some(c) => {
            let mut opts = s.registry.options().clone();
            opts.credentials.insert(host.to_string(), c);
            Arc::new(berth_image::registry::Registry::new(opts))
        }
    }
}

/// Push progress as Docker's JSON message stream.
struct JsonPushProgress(tokio::sync::mpsc::UnboundedSender<Value>);

impl berth_image::push::PushProgress for JsonPushProgress {
    fn event(&self, e: berth_image::push::PushEvent) {
        use berth_image::push::PushEvent;
        let v = match e {
            PushEvent::Preparing { id } => json!({"status": "Preparing", "progressDetail": {}, "id": id}),
            PushEvent::Pushing { id, current, total } => {
                json!({"status": "Pushing", "progressDetail": {"current": current, "total": total}, "id": id})
            }
            PushEvent::Pushed { id } => json!({"status": "Pushed", "progressDetail": {}, "id": id}),
            PushEvent::LayerExists { id } => json!({"status": "Layer already exists", "progressDetail": {}, "id": id}),
            PushEvent::SkippedForeign { id } => {
                json!({"status": "Skipped foreign layer", "progressDetail": {}, "id": id})
            }
            PushEvent::Mounted { id, from } => {
                json!({"status": format!("Mounted from {from}"), "progressDetail": {}, "id": id})
            }
        };
        let _ = self.0.send(v);
    }
}

/// A stream of JSON messages as a chunked response body.
fn json_lines(mut rx: tokio::sync::mpsc::UnboundedReceiver<Value>) -> Response {
    let (btx, brx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        while let Some(v) = rx.recv().await {
            if btx.send(Ok(bytes::Bytes::from(format!("{v}\r\n")))).await.is_err() {
                return;
            }
        }
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(tokio_stream(brx))).into_response()
}

/// `POST /images/{name}/push?tag=`: pushes NAME[:TAG] with the credentials
/// of `X-Registry-Auth`, streaming docker's progress messages.
async fn push(
    s: AppState,
    name: String,
    q: HashMap<String, String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let tag = q.get("tag").cloned().filter(|t| !t.is_empty());
    let full = match &tag {
        Some(t) => format!("{name}:{t}"),
        None => name.clone(),
    };
    let target = ImageRef::parse(&full).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if target.digest().is_some() {
        return Err(ApiError::bad_request("cannot push a digest reference"));
    }
    let (s2, t2) = (s.clone(), target.to_string());
    let image = blocking(move || {
        s2.images().resolve(&t2).map_err(|_| ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("An image does not exist locally with the tag: {}", docker_view::familiar(&t2)),
        })
    })
    .await?;
    let registry = registry_with(&s, target.registry(), registry_auth(&headers)?);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let _ = tx.send(
        json!({"status": format!("The push refers to repository [{}/{}]", target.registry(), target.repository())}),
    );
    let progress = Arc::new(JsonPushProgress(tx.clone()));
    tokio::spawn(async move {
        match s.images().push(registry, &image, &target, progress).await {
            Ok(out) => {
                s.events.image("push", &target.familiar(), &target.familiar());
                let t = out.tag.clone().unwrap_or_else(|| "latest".into());
                let _ = tx.send(json!({"status": format!("{t}: digest: {} size: {}", out.digest, out.size)}));
                let _ = tx.send(json!({"progressDetail": {}, "aux": {"Tag": t, "Digest": out.digest.to_string(), "Size": out.size}}));
            }
            Err(e) => {
                let _ = tx.send(json!({"errorDetail": {"message": e.to_string()}, "error": e.to_string()}));
            }
        }
    });
    Ok(json_lines(rx))
}

/// `POST /auth`: checks credentials against a registry (`docker login`).
pub async fn auth(State(s): State<AppState>, Json(v): Json<Value>) -> ApiResult<impl IntoResponse> {
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let (username, password, server) = (field("username"), field("password"), field("serveraddress"));
    let server = server.trim();
    let server = server.strip_prefix("https://").or_else(|| server.strip_prefix("http://")).unwrap_or(server);
    let host = match server.split('/').next().unwrap_or_default() {
        "" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    };
    let creds = berth_image::registry::Credentials::Basic { username, password };
    match s.registry.login(&host, &creds).await {
        Ok(()) => Ok(Json(json!({"Status": "Login Succeeded", "IdentityToken": ""}))),
        Err(e) => Err(ApiError { status: StatusCode::UNAUTHORIZED, message: e.to_string() }),
    }
}

/// `POST /images/create?fromSrc=-&repo=&tag=&changes=&message=` with a
/// rootfs tarball in the body (`docker import`).
async fn import(s: AppState, q: Vec<(String, String)>, body: Body) -> ApiResult<Response> {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    if get("fromSrc") != "-" {
        return Err(ApiError::bad_request(
            "import from a URL is not supported: send the tarball in the body (fromSrc=-)",
        ));
    }
    let (repo, tag) = (get("repo"), get("tag"));
    let mut tags = Vec::new();
    if !repo.is_empty() {
        let r = if tag.is_empty() { repo.clone() } else { format!("{repo}:{tag}") };
        tags.push(ImageRef::parse(&r).map_err(|e| ApiError::bad_request(e.to_string()))?.to_string());
    }
    let opts = berth_image::import::ImportOptions {
        changes: q.iter().filter(|(n, _)| n == "changes").map(|(_, v)| v.clone()).filter(|v| !v.is_empty()).collect(),
        message: Some(get("message")).filter(|m| !m.is_empty()),
        source: "-".into(),
        platform: berth_image::manifest::Platform::host(),
    };
    let (reader, body_done) = crate::body_reader::blocking_reader(body);
    let s2 = s.clone();
    let name = tags.first().map(|t| docker_view::familiar(t));
    let rec = blocking(move || Ok(s2.images().import_rootfs(reader, &opts, &tags)?)).await;
    body_done.wait().await;
    let rec = rec?;
    s.events.image("import", &rec.id.to_string(), &name.unwrap_or_else(|| rec.id.to_string()));
    Ok(([(header::CONTENT_TYPE, "application/json")], format!("{}\r\n", json!({"status": rec.id.to_string()})))
        .into_response())
}

/// `POST /images/prune?filters=`: `{"dangling":["false"]}` prunes every
/// unused image (docker's `-a`), otherwise dangling ones only.
pub async fn prune(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let filters = crate::containers::parse_filters(&q)?;
    if let Some(k) = filters.keys().find(|k| k.as_str() != "dangling") {
        return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
    }
    let all = filters.get("dangling").is_some_and(|v| v.iter().any(|x| matches!(x.as_str(), "false" | "0")));
    blocking(move || {
        let (removed, bytes) = s.prune_images(all)?;
        let items = s.events.removed(removed, None);
        s.events.emit("image", "prune", "", HashMap::from([("reclaimed".to_string(), bytes.to_string())]));
        Ok(Json(json!({"ImagesDeleted": items, "SpaceReclaimed": bytes})))
    })
    .await
}
