//! berth-api: the Docker Engine API over a unix socket, on berth-engine.
#![recursion_limit = "256"]
//!
//! The `docker` CLI and SDKs talk to `berth serve` through this; berth's
//! own client verbs will too. Paths may carry a version prefix
//! (`/v1.47/containers/json`), which is stripped before routing: berth
//! answers every version from [`MIN_API_VERSION`] to [`API_VERSION`] the
//! same way. Errors are Docker's `{"message": …}` with Docker's status
//! codes. Engine calls are blocking and run on blocking threads; streams
//! (logs, attach, pull progress) are chunked or hijacked connections.
//!
//! - [`system`]: `_ping`, `version`, `info`.
//! - [`containers`]: create, start, stop, kill, wait, attach, logs, rm, ps, inspect.
//! - [`images`]: list, inspect, pull, tag, remove, history.
//! - [`events`]: the event stream (`/events`) and the per-container exit watchers.
//! - [`volumes`]: named volumes.
//! - [`tls`]: the API over TCP with mutual TLS.
//! - [`exec`]: exec instances (create, start hijacked or detached, inspect).

pub mod body_reader;
pub mod changes;
pub mod containers;
pub mod error;
pub mod events;
pub mod exec;
pub mod images;
pub mod system;
pub mod tls;
pub mod volumes;

use std::sync::Arc;

use axum::extract::Request;
use axum::routing::{get, post};
use axum::Router;
use berth_engine::Engine;
use tower::ServiceExt as _;

/// The API version berth speaks.
pub const API_VERSION: &str = "1.47";
/// The oldest API version berth accepts.
pub const MIN_API_VERSION: &str = "1.24";

/// What handlers share: the engine, and the registry client for pulls.
#[derive(Debug)]
pub struct Server {
    /// The engine.
    pub engine: Engine,
    /// Registry client (daemon-wide options: insecure registries, mirrors).
    pub registry: Arc<berth_image::registry::Registry>,
    /// Exec instances.
    pub execs: exec::Execs,
    /// The event bus.
    pub events: events::Events,
    /// Wake-ups for state waiters (starts, removals).
    pub changes: changes::Changes,
}

impl Server {
    /// A server over `engine`; call [`Server::watch_running`] once the
    /// async runtime runs.
    pub fn new(engine: Engine, registry: Arc<berth_image::registry::Registry>) -> Server {
        Server { engine, registry, execs: Default::default(), events: Default::default(), changes: Default::default() }
    }

    /// Starts exit watchers for containers already running (live restore).
    pub fn watch_running(self: &Arc<Self>) {
        for c in self.engine.list().unwrap_or_default() {
            if c.state.status == berth_engine::record::Status::Running {
                events::watch(self.clone(), c.record.id, c.state.finished_at);
            }
        }
    }
}

impl std::ops::Deref for Server {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

/// Shared handler state.
pub type AppState = Arc<Server>;

/// The router (without the version-prefix rewriting of [`serve`]).
pub fn router(engine: AppState) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/system/df", get(system::df))
        .route("/events", get(events::stream))
        .route("/containers/create", post(containers::create))
        .route("/containers/json", get(containers::list))
        .route("/containers/prune", post(containers::prune))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/attach", post(containers::attach))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/containers/{id}/resize", post(containers::resize))
        .route("/containers/{id}/pause", post(containers::pause))
        .route("/containers/{id}/unpause", post(containers::unpause))
        .route("/containers/{id}/rename", post(containers::rename))
        .route("/containers/{id}/top", get(containers::top))
        .route("/containers/{id}/stats", get(containers::stats))
        .route(
            "/containers/{id}/archive",
            get(containers::archive_get)
                .head(containers::archive_head)
                // Archives stream through (body_reader): no size cap.
                .put(containers::archive_put)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/containers/{id}/export", get(containers::export))
        .route("/containers/{id}/changes", get(containers::changes))
        .route("/containers/{id}", axum::routing::delete(containers::remove))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route("/volumes/{name}", get(volumes::inspect).delete(volumes::remove))
        .route("/commit", post(images::commit))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::pull).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/images/prune", post(images::prune))
        .route("/auth", post(images::auth))
        .route("/images/get", get(images::get_many))
        .route("/images/load", post(images::load).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/images/{*rest}", get(images::get_dispatch).delete(images::delete).post(images::post_dispatch))
        .with_state(engine)
}

/// Strips a `/v1.NN` prefix from the path.
pub(crate) fn strip_version(mut req: Request) -> Request {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some((ver, tail)) = rest.split_once('/') {
            if !ver.is_empty() && ver.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                let pq = match req.uri().query() {
                    Some(q) => format!("/{tail}?{q}"),
                    None => format!("/{tail}"),
                };
                if let Ok(uri) = pq.parse() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(engine: AppState, listener: tokio::net::UnixListener) -> std::io::Result<()> {
    let app = router(engine).map_request(strip_version);
    axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(app)).await
}
