//! `/volumes/…`: create, list, inspect, remove, prune.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::containers::parse_filters;
use crate::error::{blocking, ApiError, ApiResult};
use crate::AppState;

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"))
}

/// `POST /volumes/create`.
pub async fn create(State(s): State<AppState>, body: axum::body::Bytes) -> ApiResult<impl IntoResponse> {
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    if let Some(d) = v.get("Driver").and_then(|d| d.as_str()).filter(|d| !d.is_empty() && *d != "local") {
        return Err(ApiError::bad_request(format!("volume driver {d:?} is not supported (only \"local\")")));
    }
    let name = v.get("Name").and_then(|n| n.as_str()).map(str::to_string);
    let labels: HashMap<String, String> =
        v.get("Labels").cloned().and_then(|l| serde_json::from_value(l).ok()).unwrap_or_default();
    let s2 = s.clone();
    let vol = blocking(move || Ok(s2.volume_create(name.as_deref(), labels)?)).await?;
    s.events.volume("create", &vol.name);
    Ok((StatusCode::CREATED, Json(vol)))
}

/// `GET /volumes?filters=`.
pub async fn list(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<impl IntoResponse> {
    let filters = parse_filters(&q)?;
    blocking(move || {
        let mut out = Vec::new();
        for v in s.volume_list()? {
            let dangling = s.volume_users(&v.name)?.is_empty();
            let keep = filters.iter().all(|(k, vals)| {
                vals.iter().any(|f| match k.as_str() {
                    "name" => v.name.contains(f.as_str()),
                    "dangling" => (f == "true" || f == "1") == dangling,
                    "driver" => f == "local",
                    "label" => match f.split_once('=') {
                        Some((lk, lv)) => v.labels.get(lk).is_some_and(|x| x == lv),
                        None => v.labels.contains_key(f),
                    },
                    _ => true,
                })
            });
            if keep {
                out.push(v);
            }
        }
        Ok(Json(json!({"Volumes": out, "Warnings": []})))
    })
    .await
}

/// `GET /volumes/{name}`.
pub async fn inspect(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    blocking(move || Ok(Json(s.volume_get(&name)?))).await
}

/// `DELETE /volumes/{name}?force=`.
pub async fn remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let force = truthy(q.get("force"));
    let (s2, n2) = (s.clone(), name.clone());
    let existed = blocking(move || Ok(s2.volume_get(&n2).is_ok())).await?;
    let s2 = s.clone();
    let n2 = name.clone();
    blocking(move || Ok(s2.volume_remove(&n2, force)?)).await?;
    if existed {
        s.events.volume("destroy", &name);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /volumes/prune?filters=` (`all=true` prunes named ones too).
pub async fn prune(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let filters = parse_filters(&q)?;
    let all = filters.get("all").is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
    blocking(move || {
        let removed = s.volume_prune(all)?;
        for v in &removed {
            s.events.volume("destroy", v);
        }
        s.events.emit("volume", "prune", "", HashMap::new());
        Ok(Json(json!({"VolumesDeleted": removed, "SpaceReclaimed": 0})))
    })
    .await
}
