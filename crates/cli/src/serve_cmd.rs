//! `berth serve`: the daemon. Serves the Docker Engine API on unix
//! sockets; containers run under their own monitors and outlive it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_engine::engine::EngineConfig;
use berth_engine::paths::Paths;
use berth_engine::Engine;
use berth_image::registry::{Registry, RegistryOptions};
use clap::Args;


/// `berth serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Persistent state (images, containers).
    #[arg(long, env = "BERTH_ROOT", default_value = "/var/lib/berth")]
    pub root: PathBuf,
    /// Runtime state (sockets, runtime state dirs); tmpfs in production.
    #[arg(long, env = "BERTH_RUN_ROOT", default_value = "/run/berth")]
    pub run_root: PathBuf,
    /// Socket to serve on (`unix:///path`, default `<run-root>/berth.sock`); repeatable.
    #[arg(short = 'H', long = "host", value_name = "unix://PATH")]
    pub hosts: Vec<String>,
    /// Registry reachable over plain HTTP (host:port); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// Leave the caller's session (set by a CLI that starts the daemon in
    /// the background, so it outlives that terminal).
    #[arg(long, hide = true)]
    pub setsid: bool,
}

fn socket_path(host: &str) -> Result<PathBuf, String> {
    if let Some(p) = host.strip_prefix("unix://") {
        if p.is_empty() || !p.starts_with('/') {
            return Err(format!("invalid socket address {host:?}: the path must be absolute"));
        }
        return Ok(PathBuf::from(p));
    }
    if host.starts_with("tcp://") {
        return Err(format!(
            "refusing to listen on {host}: the API gives root on this machine, and berth serves TCP only with mutual TLS, which is not implemented yet"
        ));
    }
    Err(format!("invalid socket address {host:?}: use unix:///path"))
}

/// Binds `path` (0600: the API is root's), replacing a stale socket but
/// never one a live daemon answers on.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("{} is in use by another daemon", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("removing stale {}: {e}", path.display()))?;
    }
    let l =
        std::os::unix::net::UnixListener::bind(path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::UnixListener::from_std(l).map_err(|e| e.to_string())
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn main(a: ServeArgs) -> i32 {
    let fail = |msg: String| {
        eprintln!("berth serve: {msg}");
        1
    };
    if a.setsid {
        let _ = nix::unistd::setsid();
    }
    let hosts =
        if a.hosts.is_empty() { vec![format!("unix://{}", a.run_root.join("berth.sock").display())] } else { a.hosts.clone() };
    let sockets: Vec<PathBuf> = match hosts.iter().map(|h| socket_path(h)).collect() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Err(e) = std::fs::create_dir_all(&a.run_root)
        .and_then(|()| std::fs::set_permissions(&a.run_root, std::os::unix::fs::PermissionsExt::from_mode(0o700)))
    {
        return fail(format!("creating {}: {e}", a.run_root.display()));
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("locating the berth binary: {e}")),
    };
    let engine =
        match Engine::open(EngineConfig { paths: Paths { root: a.root.clone(), run_root: a.run_root.clone() }, exe }) {
            Ok(e) => e,
            Err(e) => return fail(e.to_string()),
        };
    if let Err(e) = engine.recover() {
        return fail(format!("recovering containers: {e}"));
    }
    let registry =
        Arc::new(Registry::new(RegistryOptions { insecure: a.insecure_registry.clone(), ..Default::default() }));
    let server = Arc::new(berth_api::Server::new(engine, registry));
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the async runtime: {e}")),
    };
    let to_bind = sockets.clone();
    let code = rt.block_on(async move {
        server.watch_running();
        let mut tasks = tokio::task::JoinSet::new();
        for path in &to_bind {
            let l = match bind(path) {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            tasks.spawn(berth_api::serve(server.clone(), l));
        }
        eprintln!("berth serve: API listening on {}", hosts.join(", "));
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => return fail(format!("installing signal handlers: {e}")),
        };
        tokio::select! {
            _ = term.recv() => 0,
            _ = tokio::signal::ctrl_c() => 0,
            r = tasks.join_next() => match r {
                Some(Ok(Err(e))) => fail(format!("serving: {e}")),
                _ => 0,
            },
        }
    });
    // Blocking tasks (exit watchers, log followers) wait on containers that
    // outlive the daemon: do not wait for them.
    rt.shutdown_background();
    for s in &sockets {
        let _ = std::fs::remove_file(s);
    }
    code
}
