//! berth's docker-compatible client verbs (`run`, `ps`, `logs`, `exec`, …):
//! each one is a Docker Engine API call to a daemon, exactly as the docker
//! CLI makes them, so `berth` and `docker` are interchangeable against
//! `berth serve`.
//!
//! Which daemon: `-H unix://PATH`, else `DOCKER_HOST`, else the default
//! socket `<run-root>/berth.sock`. Only for the default socket, a CLI that
//! finds no daemon starts one in the background (`berth serve` with the
//! same `--root`/`--run-root`, logging to `<run-root>/serve.log`), so a
//! newcomer's first `berth run` just works; `BERTH_NO_AUTOSTART=1` turns
//! that off.
//!
//! The HTTP client is hand-written over hyper ([`hijack`]) rather than
//! `bollard`: the streams whose framing depends on the container (attach,
//! exec, logs) must be read knowing whether it has a tty, which bollard
//! guesses from the first byte, and the JSON bodies are built and printed
//! as JSON anyway (inspect, `--format`), so typed models would only add a
//! conversion each way.

pub mod container_cmd;
pub mod exec_cmd;
pub mod extra_cmd;
pub mod hijack;
pub mod image_api;
pub mod run_cmd;
pub mod template;
pub mod volume_cmd;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

/// Where the daemon is, and what an auto-started one serves.
#[derive(Debug, Args, Clone)]
pub struct DaemonArgs {
    /// Daemon to connect to (`unix:///path`, or `tcp://HOST:PORT` with --tlsverify).
    #[arg(short = 'H', long = "host", env = "DOCKER_HOST", value_name = "unix://PATH")]
    pub host: Option<String>,
    /// Runtime state of the daemon (sockets); its socket is `<run-root>/berth.sock`.
    #[arg(long, env = "BERTH_RUN_ROOT", default_value = "/run/berth")]
    pub run_root: PathBuf,
    /// Use TLS and verify the daemon (required for tcp://).
    #[arg(long, env = "DOCKER_TLS_VERIFY", value_parser = clap::builder::FalseyValueParser::new())]
    pub tlsverify: bool,
    /// Trust certs signed only by this CA (default `$DOCKER_CERT_PATH/ca.pem`).
    #[arg(long, value_name = "PATH")]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate (default `$DOCKER_CERT_PATH/cert.pem`).
    #[arg(long, value_name = "PATH")]
    pub tlscert: Option<PathBuf>,
    /// Client key (default `$DOCKER_CERT_PATH/key.pem`).
    #[arg(long, value_name = "PATH")]
    pub tlskey: Option<PathBuf>,
}

/// A client-side failure, printed once at the edge.
#[derive(Debug)]
pub enum CliError {
    /// The daemon answered with an error (`Error response from daemon: …`).
    Daemon(String),
    /// Anything else (connection, local I/O, bad flags).
    Other(String),
    /// Exit with this code, nothing more to print.
    Exit(i32),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Daemon(m) => write!(f, "Error response from daemon: {m}"),
            CliError::Other(m) => f.write_str(m),
            CliError::Exit(c) => write!(f, "exit status {c}"),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Other(e.to_string())
    }
}

/// Shorthand.
pub type CliResult<T> = Result<T, CliError>;

/// A daemon to talk to: each request opens a fresh connection, except
/// that the first one may reuse the connection that showed the daemon
/// answers.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Where it is.
    pub target: Target,
    /// The probe's unix connection and when it was made: connecting costs
    /// the daemon an accept and us a round trip, on every CLI call.
    first: std::sync::Arc<std::sync::Mutex<Option<(std::os::unix::net::UnixStream, Instant)>>>,
}

/// A kept probe connection older than this is dropped rather than used:
/// the daemon closes connections that send no request for a while.
const FIRST_CONN_MAX_AGE: Duration = Duration::from_secs(5);

/// How to reach a daemon.
#[derive(Debug, Clone)]
pub enum Target {
    /// A unix socket.
    Unix(PathBuf),
    /// TCP with mutual TLS.
    Tls {
        /// `host:port`.
        addr: String,
        /// The name the daemon's certificate must carry.
        server_name: String,
        /// Roots and client certificate.
        config: std::sync::Arc<rustls::ClientConfig>,
    },
}

impl Target {
    /// The address as docker writes it.
    pub fn display(&self) -> String {
        match self {
            Target::Unix(p) => format!("unix://{}", p.display()),
            Target::Tls { addr, .. } => format!("tcp://{addr}"),
        }
    }

    /// True when something accepts connections there.
    fn answers(&self) -> bool {
        self.probe().0
    }

    /// Whether something accepts connections there, and for a unix socket
    /// the connection made to find out.
    fn probe(&self) -> (bool, Option<std::os::unix::net::UnixStream>) {
        match self {
            Target::Unix(p) => match std::os::unix::net::UnixStream::connect(p) {
                Ok(s) => (true, Some(s)),
                Err(_) => (false, None),
            },
            Target::Tls { addr, .. } => (std::net::TcpStream::connect(addr).is_ok(), None),
        }
    }
}

/// The client's TLS config: the CA to trust and the certificate to show,
/// from the flags or `$DOCKER_CERT_PATH` (default `~/.docker`).
fn tls_client(d: &DaemonArgs) -> CliResult<std::sync::Arc<rustls::ClientConfig>> {
    let dir = std::env::var_os("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .unwrap_or_else(|| PathBuf::from(".docker"));
    let pick = |flag: &Option<PathBuf>, file: &str| flag.clone().unwrap_or_else(|| dir.join(file));
    let err = |e: std::io::Error| CliError::Other(e.to_string());
    let roots = berth_api::tls::load_roots(&pick(&d.tlscacert, "ca.pem")).map_err(err)?;
    let certs = berth_api::tls::load_certs(&pick(&d.tlscert, "cert.pem")).map_err(err)?;
    let key = berth_api::tls::load_key(&pick(&d.tlskey, "key.pem")).map_err(err)?;
    let cfg = rustls::ClientConfig::builder_with_provider(berth_api::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Other(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| CliError::Other(format!("using the client certificate: {e}")))?;
    Ok(std::sync::Arc::new(cfg))
}

/// The daemon `-H`/`DOCKER_HOST` names, or the default one (`true`).
fn target_of(d: &DaemonArgs) -> CliResult<(Target, bool)> {
    let Some(host) = d.host.as_deref().filter(|h| !h.is_empty()) else {
        return Ok((Target::Unix(d.run_root.join("berth.sock")), true));
    };
    if let Some(p) = host.strip_prefix("unix://") {
        if p.starts_with('/') {
            return Ok((Target::Unix(PathBuf::from(p)), false));
        }
    }
    if let Some(addr) = host.strip_prefix("tcp://") {
        if !d.tlsverify {
            return Err(CliError::Other(format!(
                "cannot connect to {host} without TLS: berth serves TCP only with mutual TLS; pass --tlsverify (and --tlscacert/--tlscert/--tlskey or DOCKER_CERT_PATH)"
            )));
        }
        let addr = addr.trim_end_matches('/');
        let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:2376") };
        let server_name =
            addr.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_string()).unwrap_or_default();
        return Ok((Target::Tls { addr, server_name, config: tls_client(d)? }, false));
    }
    Err(CliError::Other(format!("invalid daemon address {host:?}: use unix:///path or tcp://HOST:PORT")))
}

impl Conn {
    /// A client of the daemon at `target`; `first` is a fresh connection
    /// to it for the first request.
    pub fn new(target: Target, first: Option<std::os::unix::net::UnixStream>) -> Conn {
        Conn { target, first: std::sync::Arc::new(std::sync::Mutex::new(first.map(|s| (s, Instant::now())))) }
    }

    /// The kept probe connection, once, if still fresh.
    pub fn take_first(&self) -> Option<std::os::unix::net::UnixStream> {
        let (s, at) = self.first.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        (at.elapsed() < FIRST_CONN_MAX_AGE).then_some(s)
    }

    /// `GET path` → its JSON.
    pub async fn get(&self, path: &str) -> CliResult<serde_json::Value> {
        hijack::read_json(hijack::request(self, "GET", path, None, false).await?).await
    }

    /// `POST path` (with a JSON body) → its JSON (`null` when empty).
    pub async fn post(&self, path: &str, body: Option<serde_json::Value>) -> CliResult<serde_json::Value> {
        hijack::read_json(hijack::request(self, "POST", path, body, false).await?).await
    }

    /// `DELETE path` → its JSON (`null` when empty).
    pub async fn delete(&self, path: &str) -> CliResult<serde_json::Value> {
        hijack::read_json(hijack::request(self, "DELETE", path, None, false).await?).await
    }
}

/// Percent-encodes query pairs.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// Connects to the daemon `d` names, starting the default one if needed
/// (see the module doc). `root` and `insecure` configure a started daemon.
pub fn connect(d: &DaemonArgs, root: &Path, insecure: &[String]) -> CliResult<Conn> {
    let (target, default) = target_of(d)?;
    let (answers, first) = target.probe();
    if !answers {
        let Target::Unix(socket) = &target else {
            return Err(CliError::Other(format!(
                "Cannot connect to the berth daemon at {}. Is the daemon running?",
                target.display()
            )));
        };
        if !default {
            return Err(CliError::Other(format!(
                "Cannot connect to the berth daemon at {}. Is the daemon running?",
                target.display()
            )));
        }
        autostart(d, socket, root, insecure)?;
    }
    Ok(Conn::new(target, first))
}

/// Connects only if a daemon already answers (image verbs fall back to the
/// local store when none does).
pub fn connect_existing(d: &DaemonArgs) -> CliResult<Option<Conn>> {
    let (target, _) = target_of(d)?;
    let (answers, first) = target.probe();
    Ok(answers.then(|| Conn::new(target, first)))
}

/// A name as one path segment (percent-encoded).
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `--filter KEY=VALUE` flags (plus `extra`) as the API's `filters` JSON.
pub fn filters_json(filters: &[String], extra: Option<(&str, &str)>) -> CliResult<String> {
    let mut m: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| CliError::Other(format!("bad format of filter (expected name=value): {f}")))?;
        m.entry(k).or_default().push(v);
    }
    if let Some((k, v)) = extra {
        m.entry(k).or_default().push(v);
    }
    Ok(serde_json::to_string(&m).unwrap_or_default())
}

/// True when the user named a daemon (`-H` or `DOCKER_HOST`).
pub fn explicit_host(d: &DaemonArgs) -> bool {
    d.host.as_deref().is_some_and(|h| !h.is_empty())
}

/// Starts `berth serve` in the background for the default socket, once
/// (a lock file serializes CLIs racing to do it), and waits until it
/// answers.
fn autostart(d: &DaemonArgs, socket: &Path, root: &Path, insecure: &[String]) -> CliResult<()> {
    if std::env::var_os("BERTH_NO_AUTOSTART").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(CliError::Other(format!(
            "Cannot connect to the berth daemon at unix://{}. Is the daemon running? (starting one automatically is off: BERTH_NO_AUTOSTART is set)",
            socket.display()
        )));
    }
    let other = |what: &str, e: std::io::Error| CliError::Other(format!("starting the berth daemon: {what}: {e}"));
    std::fs::create_dir_all(&d.run_root).map_err(|e| other(&d.run_root.display().to_string(), e))?;
    let lock_path = d.run_root.join("autostart.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| other(&lock_path.display().to_string(), e))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| other("locking autostart.lock", e.into()))?;
    if Target::Unix(socket.to_path_buf()).answers() {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| other("locating the berth binary", e))?;
    let log_path = d.run_root.join("serve.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| other(&log_path.display().to_string(), e))?;
    let log2 = log.try_clone().map_err(|e| other("log file", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve")
        .arg("--root")
        .arg(root)
        .arg("--run-root")
        .arg(&d.run_root)
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .arg("--setsid");
    for r in insecure {
        cmd.arg("--insecure-registry").arg(r);
    }
    cmd.env_remove("DOCKER_HOST").stdin(std::process::Stdio::null()).stdout(log).stderr(log2).current_dir("/");
    let mut child = cmd.spawn().map_err(|e| other("spawning berth serve", e))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if Target::Unix(socket.to_path_buf()).answers() {
            eprintln!(
                "berth: started the daemon (pid {}) on unix://{}; its log is {}",
                child.id(),
                socket.display(),
                log_path.display()
            );
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::Other(format!(
                "starting the berth daemon failed ({status}): {}",
                log_tail(&log_path)
            )));
        }
        if Instant::now() > deadline {
            return Err(CliError::Other(format!(
                "the berth daemon (pid {}) did not answer on unix://{} within 30 s; see {}",
                child.id(),
                socket.display(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last line of the daemon's log, for an error message.
fn log_tail(path: &Path) -> String {
    let mut s = String::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s));
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").to_string()
}

/// A single-threaded async runtime: the client does one thing at a time,
/// and a thread pool would cost start-up time on every command.
pub fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("starting the async runtime: {e}")))
}

/// Runs a client verb: connects, runs `f`, prints the error docker's way,
/// returns the exit code (`fail` when the verb itself failed: docker's run
/// and create use 125).
pub fn run_verb<F, Fut>(d: &DaemonArgs, store: &crate::image_cmd::StoreArgs, fail: i32, f: F) -> i32
where
    F: FnOnce(Conn) -> Fut,
    Fut: std::future::Future<Output = CliResult<i32>>,
{
    let result = connect(d, &store.root, &store.insecure_registry)
        .and_then(|conn| runtime().and_then(|rt| rt.block_on(f(conn))));
    match result {
        Ok(code) => code,
        Err(CliError::Exit(code)) => code,
        Err(e) => {
            eprintln!("{e}");
            fail
        }
    }
}

/// Docker's "time ago" for a unix timestamp.
pub fn ago(unix: i64) -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(unix);
    format!("{} ago", berth_image::docker_view::human_duration(now.saturating_sub(unix).max(0) as u64))
}

pub use crate::table::print_docker as print_table;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_selection() {
        let d = |h: Option<&str>| DaemonArgs {
            host: h.map(String::from),
            run_root: "/r".into(),
            tlsverify: false,
            tlscacert: None,
            tlscert: None,
            tlskey: None,
        };
        let unix = |a: &DaemonArgs| match target_of(a).unwrap() {
            (Target::Unix(p), default) => (p, default),
            other => panic!("{other:?}"),
        };
        assert_eq!(unix(&d(None)), (PathBuf::from("/r/berth.sock"), true));
        assert_eq!(unix(&d(Some(""))), (PathBuf::from("/r/berth.sock"), true));
        assert_eq!(unix(&d(Some("unix:///x/y.sock"))), (PathBuf::from("/x/y.sock"), false));
        assert!(target_of(&d(Some("tcp://1.2.3.4:2375"))).is_err(), "plain TCP is refused");
        assert!(target_of(&d(Some("unix://rel"))).is_err());
    }
}
