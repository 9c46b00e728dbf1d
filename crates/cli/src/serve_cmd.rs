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
    /// Require mutual TLS on TCP sockets (the only way berth serves TCP).
    #[arg(long)]
    pub tlsverify: bool,
    /// CA whose certificates clients must present (PEM).
    #[arg(long, value_name = "PATH")]
    pub tlscacert: Option<PathBuf>,
    /// The daemon's certificate (PEM).
    #[arg(long, value_name = "PATH")]
    pub tlscert: Option<PathBuf>,
    /// The daemon's private key (PEM).
    #[arg(long, value_name = "PATH")]
    pub tlskey: Option<PathBuf>,
    /// Leave the caller's session (set by a CLI that starts the daemon in
    /// the background, so it outlives that terminal).
    #[arg(long, hide = true)]
    pub setsid: bool,
}

/// Where to listen.
#[derive(Debug, Clone)]
enum Listen {
    Unix(PathBuf),
    Tcp(String),
}

fn listen_addr(host: &str) -> Result<Listen, String> {
    if let Some(p) = host.strip_prefix("unix://") {
        if p.is_empty() || !p.starts_with('/') {
            return Err(format!("invalid socket address {host:?}: the path must be absolute"));
        }
        return Ok(Listen::Unix(PathBuf::from(p)));
    }
    if let Some(addr) = host.strip_prefix("tcp://") {
        if addr.is_empty() {
            return Err(format!("invalid address {host:?}: use tcp://HOST:PORT"));
        }
        let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:2376") };
        return Ok(Listen::Tcp(addr));
    }
    Err(format!("invalid address {host:?}: use unix:///path or tcp://HOST:PORT"))
}

/// The TLS config for TCP sockets: all of --tlsverify, --tlscacert,
/// --tlscert and --tlskey, or a refusal saying why.
fn tls_config(a: &ServeArgs) -> Result<Arc<berth_api::tls::ServerConfig>, String> {
    let (true, Some(ca), Some(cert), Some(key)) = (a.tlsverify, &a.tlscacert, &a.tlscert, &a.tlskey) else {
        return Err(
            "refusing to listen on TCP without mutual TLS: the API gives root on this machine; pass --tlsverify --tlscacert CA.pem --tlscert CERT.pem --tlskey KEY.pem".into(),
        );
    };
    berth_api::tls::server_config(ca, cert, key).map_err(|e| e.to_string())
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
    let hosts = if a.hosts.is_empty() {
        vec![format!("unix://{}", a.run_root.join("berth.sock").display())]
    } else {
        a.hosts.clone()
    };
    let listens: Vec<Listen> = match hosts.iter().map(|h| listen_addr(h)).collect() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let tls = if listens.iter().any(|l| matches!(l, Listen::Tcp(_))) {
        match tls_config(&a) {
            Ok(t) => Some(t),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let sockets: Vec<PathBuf> =
        listens.iter().filter_map(|l| if let Listen::Unix(p) = l { Some(p.clone()) } else { None }).collect();
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
    let code = rt.block_on(async move {
        server.watch_running();
        let mut tasks = tokio::task::JoinSet::new();
        for l in &listens {
            match l {
                Listen::Unix(path) => {
                    let l = match bind(path) {
                        Ok(l) => l,
                        Err(e) => return fail(e),
                    };
                    tasks.spawn(berth_api::serve(server.clone(), l));
                }
                Listen::Tcp(addr) => {
                    let l = match tokio::net::TcpListener::bind(addr.as_str()).await {
                        Ok(l) => l,
                        Err(e) => return fail(format!("listening on tcp://{addr}: {e}")),
                    };
                    let Some(tls) = tls.clone() else { return fail("internal: TLS config missing".into()) };
                    tasks.spawn(berth_api::tls::serve_tls(server.clone(), l, tls));
                }
            }
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
