//! The container verbs besides `run`/`create`/`exec`: lifecycle (`start`,
//! `stop`, `restart`, `kill`, `rm`, `pause`, `unpause`, `rename`, `wait`),
//! introspection (`ps`, `inspect`, `logs`, `top`, `port`, `diff`,
//! `events`), `attach`, `export` and `container prune`, with docker's
//! flags, output and exit codes.

use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::hijack::{self, Ended};
use super::template::Template;
use super::{ago, enc, filters_json, print_table, query, CliError, CliResult, Conn};

/// The container verbs (top level, and under `berth container`).
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Pause all processes within one or more containers.
    Pause(Names),
    /// Unpause all processes within one or more containers.
    Unpause(Names),
    /// Rename a container.
    Rename(RenameArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(Names),
    /// List containers.
    #[command(visible_alias = "ls")]
    Ps(PsArgs),
    /// Return low-level information on containers, images or volumes.
    Inspect(InspectArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Display the running processes of a container.
    Top(TopArgs),
    /// List port mappings of a container.
    Port(PortArgs),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(OneName),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(AttachArgs),
    /// Export a container's filesystem as a tar archive.
    Export(ExportArgs),
    /// Get real time events from the server.
    Events(EventsArgs),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(super::extra_cmd::StatsArgs),
    /// Copy files/folders between a container and the local filesystem.
    Cp(super::extra_cmd::CpArgs),
    /// Create a new image from a container's changes.
    Commit(super::extra_cmd::CommitArgs),
}

/// `berth container …`: the verbs above plus `prune`.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    #[command(flatten)]
    Verb(Verb),
    /// Remove all stopped containers.
    Prune(PruneArgs),
}

/// Containers named on the command line.
#[derive(Debug, Args)]
pub struct Names {
    /// Container names or IDs.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// One container.
#[derive(Debug, Args)]
pub struct OneName {
    /// Container name or ID.
    pub container: String,
}

/// `start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Container names or IDs.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `stop` and `restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "timeout", visible_alias = "time")]
    pub timeout: Option<i64>,
    /// Signal to send to the container.
    #[arg(short, long)]
    pub signal: Option<String>,
    /// Container names or IDs.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// Container names or IDs.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    pub volumes: bool,
    /// Container names or IDs.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `rename`.
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// Current name or ID.
    pub container: String,
    /// New name.
    pub new_name: String,
}

/// `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long)]
    pub last: Option<usize>,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    pub latest: bool,
    /// Filter output based on conditions provided (KEY=VALUE).
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Format output: table, json, or a Go template.
    #[arg(long)]
    pub format: Option<String>,
    /// Display total file sizes (accepted; sizes are not computed).
    #[arg(short, long)]
    pub size: bool,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a Go template, or `json`.
    #[arg(short, long)]
    pub format: Option<String>,
    /// Only look for this type of object (container, image, volume).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Display total file sizes (accepted).
    #[arg(short, long)]
    pub size: bool,
    /// Names or IDs.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs (or "all").
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since a timestamp (RFC 3339, unix seconds) or relative (e.g. 42m).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative time.
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show extra details (accepted).
    #[arg(long)]
    pub details: bool,
    /// Container name or ID.
    pub container: String,
}

/// `top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Container name or ID.
    pub container: String,
    /// ps options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// `port`.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// Container name or ID.
    pub container: String,
    /// PRIVATE_PORT[/PROTO].
    pub port: Option<String>,
}

/// `attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach STDIN.
    #[arg(long)]
    pub no_stdin: bool,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Proxy all received signals to the process (without a tty).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// Container name or ID.
    pub container: String,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
    /// Container name or ID.
    pub container: String,
}

/// `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show all events created since timestamp.
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp.
    #[arg(long)]
    pub until: Option<String>,
    /// Filter output based on conditions provided (KEY=VALUE).
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Format output: json or a Go template.
    #[arg(long)]
    pub format: Option<String>,
}

/// `container prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. until=<timestamp>, label=KEY).
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

/// Runs one container verb.
pub async fn run(conn: Conn, verb: Verb) -> CliResult<i32> {
    match verb {
        Verb::Start(a) => start(&conn, a).await,
        Verb::Stop(a) => each(&conn, "POST", &a.containers, |c| stop_path(c, "stop", &a)).await,
        Verb::Restart(a) => each(&conn, "POST", &a.containers, |c| stop_path(c, "restart", &a)).await,
        Verb::Kill(a) => {
            each(&conn, "POST", &a.containers, |c| {
                format!("/containers/{c}/kill?{}", query([("signal", a.signal.as_str())]))
            })
            .await
        }
        Verb::Pause(a) => each(&conn, "POST", &a.containers, |c| format!("/containers/{c}/pause")).await,
        Verb::Unpause(a) => each(&conn, "POST", &a.containers, |c| format!("/containers/{c}/unpause")).await,
        Verb::Rm(a) => {
            let q = query([("force", if a.force { "1" } else { "0" }), ("v", if a.volumes { "1" } else { "0" })]);
            each(&conn, "DELETE", &a.containers, |c| format!("/containers/{c}?{q}")).await
        }
        Verb::Rename(a) => {
            conn.post(
                &format!("/containers/{}/rename?{}", enc(&a.container), query([("name", a.new_name.as_str())])),
                None,
            )
            .await?;
            Ok(0)
        }
        Verb::Wait(a) => wait(&conn, a).await,
        Verb::Ps(a) => ps(&conn, a).await,
        Verb::Inspect(a) => inspect(&conn, a).await,
        Verb::Logs(a) => logs(&conn, a).await,
        Verb::Top(a) => top(&conn, a).await,
        Verb::Port(a) => port(&conn, a).await,
        Verb::Diff(a) => diff(&conn, a).await,
        Verb::Attach(a) => attach(&conn, a).await,
        Verb::Export(a) => export(&conn, a).await,
        Verb::Events(a) => events(&conn, a).await,
        Verb::Stats(a) => super::extra_cmd::stats(conn, a).await,
        Verb::Cp(a) => super::extra_cmd::cp(conn, a).await,
        Verb::Commit(a) => super::extra_cmd::commit(conn, a).await,
    }
}

/// Runs `berth container …`.
pub async fn run_container(conn: Conn, c: ContainerCommand) -> CliResult<i32> {
    match c {
        ContainerCommand::Verb(v) => run(conn, v).await,
        ContainerCommand::Prune(a) => prune(&conn, a).await,
    }
}

fn stop_path(c: &str, verb: &str, a: &StopArgs) -> String {
    let t = a.timeout.map(|t| t.to_string());
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(t) = &t {
        pairs.push(("t", t));
    }
    if let Some(s) = &a.signal {
        pairs.push(("signal", s));
    }
    format!("/containers/{c}/{verb}?{}", query(pairs))
}

/// Sends `method path(name)` for each container: prints each name that
/// worked, each error docker's way; exits 1 if any failed.
async fn each(conn: &Conn, method: &str, names: &[String], path: impl Fn(&str) -> String) -> CliResult<i32> {
    let mut code = 0;
    for n in names {
        let r = match method {
            "DELETE" => conn.delete(&path(&enc(n))).await,
            _ => conn.post(&path(&enc(n)), None).await,
        };
        match r {
            Ok(_) => println!("{n}"),
            Err(e) => {
                eprintln!("{e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Whether a container has a tty (decides the stream framing).
async fn has_tty(conn: &Conn, name: &str) -> CliResult<(String, bool, Value)> {
    let v = conn.get(&format!("/containers/{}/json", enc(name))).await?;
    let id = v.get("Id").and_then(Value::as_str).unwrap_or(name).to_string();
    let tty = v.pointer("/Config/Tty").and_then(Value::as_bool).unwrap_or(false);
    Ok((id, tty, v))
}

async fn start(conn: &Conn, a: StartArgs) -> CliResult<i32> {
    if !a.attach && !a.interactive {
        return each(conn, "POST", &a.containers, |c| format!("/containers/{c}/start")).await;
    }
    if a.containers.len() > 1 {
        return Err(CliError::Other("you cannot start and attach multiple containers at once".into()));
    }
    let (id, tty, _) = has_tty(conn, &a.containers[0]).await?;
    let keys = hijack::parse_detach_keys(a.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))?;
    let stdin = if a.interactive { "1" } else { "0" };
    let io = hijack::hijack(
        conn,
        &format!(
            "/containers/{id}/attach?{}",
            query([("stream", "1"), ("stdin", stdin), ("stdout", "1"), ("stderr", "1")])
        ),
        None,
    )
    .await?;
    let wait =
        hijack::request(conn, "POST", &format!("/containers/{id}/wait?condition=next-exit"), None, false).await?;
    let wait = tokio::spawn(hijack::read_json(wait));
    let raw = (tty && a.interactive).then(hijack::RawTerminal::enable);
    conn.post(&format!("/containers/{id}/start"), None).await?;
    let resize = tty.then(|| tokio::spawn(hijack::follow_resize(conn.clone(), format!("/containers/{id}/resize"))));
    let ended = hijack::session(io, tty, a.interactive, &keys).await;
    if let Some(r) = resize {
        r.abort();
    }
    drop(raw);
    if ended? == Ended::Detached {
        return Ok(0);
    }
    let v = wait.await.map_err(|e| CliError::Other(e.to_string()))??;
    Ok(v.get("StatusCode").and_then(Value::as_i64).unwrap_or(0) as i32)
}

async fn wait(conn: &Conn, a: Names) -> CliResult<i32> {
    let mut code = 0;
    for n in &a.containers {
        match conn.post(&format!("/containers/{}/wait", enc(n)), None).await {
            Ok(v) => println!("{}", v.get("StatusCode").and_then(Value::as_i64).unwrap_or(0)),
            Err(e) => {
                eprintln!("{e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// The first 12 characters of an ID, as docker shows it.
fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// A ps row as docker's formatter sees it (the fields `--format` names).
fn ps_row(c: &Value, no_trunc: bool) -> Value {
    let id = c.get("Id").and_then(Value::as_str).unwrap_or_default();
    let names: Vec<String> = c
        .get("Names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    let cmd = c.get("Command").and_then(Value::as_str).unwrap_or_default();
    let cmd = if no_trunc || cmd.chars().count() <= 20 {
        cmd.to_string()
    } else {
        format!("{}…", cmd.chars().take(19).collect::<String>())
    };
    let created = c.get("Created").and_then(Value::as_i64).unwrap_or(0);
    let labels = c.get("Labels").and_then(Value::as_object).map(|l| {
        let mut v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
        v.sort();
        v.join(",")
    });
    json!({
        "ID": if no_trunc { id.to_string() } else { short_id(id) },
        "Image": c.get("Image").cloned().unwrap_or(Value::Null),
        "Command": format!("\"{cmd}\""),
        "CreatedAt": berth_runtime::state::rfc3339(created, 0),
        "RunningFor": ago(created),
        "Ports": "",
        "State": c.get("State").cloned().unwrap_or(Value::Null),
        "Status": c.get("Status").cloned().unwrap_or(Value::Null),
        "Size": "0B",
        "Names": names.join(","),
        "Labels": labels.unwrap_or_default(),
        "Mounts": "",
        "Networks": c.pointer("/HostConfig/NetworkMode").cloned().unwrap_or(Value::Null),
    })
}

/// Docker's column header for a `--format` field.
fn header_of(field: &str) -> String {
    match field {
        "ID" => "CONTAINER ID".into(),
        "RunningFor" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        other => other.to_uppercase(),
    }
}

/// Prints rows through `--format` (`json`, `table …`, or a template).
pub fn print_formatted(rows: &[Value], format: &str, header: impl Fn(&str) -> String) -> CliResult<()> {
    if format == "json" {
        for r in rows {
            println!("{r}");
        }
        return Ok(());
    }
    let t = Template::parse(format)?;
    let mut lines: Vec<Vec<String>> = Vec::new();
    if t.table {
        lines.push(t.header(&header).split('\t').map(String::from).collect());
    }
    for r in rows {
        lines.push(t.render(r)?.split('\t').map(String::from).collect());
    }
    if t.table || lines.iter().any(|l| l.len() > 1) {
        print_table(&lines);
    } else {
        for l in lines {
            println!("{}", l.join("\t"));
        }
    }
    Ok(())
}

async fn ps(conn: &Conn, a: PsArgs) -> CliResult<i32> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let limit = if a.latest { Some(1) } else { a.last };
    if a.all {
        pairs.push(("all", "1".into()));
    }
    if let Some(n) = limit {
        pairs.push(("limit", n.to_string()));
    }
    if !a.filter.is_empty() {
        pairs.push(("filters", filters_json(&a.filter, None)?));
    }
    let q = query(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    let list = conn.get(&format!("/containers/json?{q}")).await?;
    let mut items: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    // Newest first, as docker lists them.
    items.sort_by_key(|c| std::cmp::Reverse(c.get("Created").and_then(Value::as_i64).unwrap_or(0)));
    let rows: Vec<Value> = items.iter().map(|c| ps_row(c, a.no_trunc)).collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    match a.format.as_deref() {
        Some(f) if f != "table" => print_formatted(&rows, f, header_of)?,
        _ => print_formatted(
            &rows,
            "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}",
            header_of,
        )?,
    }
    Ok(0)
}

/// JSON pretty-printed with docker's 4-space indent.
pub fn pretty(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8(out).unwrap_or_default()
}

async fn inspect(conn: &Conn, a: InspectArgs) -> CliResult<i32> {
    let kinds: Vec<&str> = match a.kind.as_deref() {
        None => vec!["container", "image", "volume"],
        Some(k @ ("container" | "image" | "volume")) => vec![k],
        Some(k) => return Err(CliError::Other(format!("\"{k}\" is not a valid value for --type"))),
    };
    let template = match a.format.as_deref() {
        None | Some("json") => None,
        Some(f) => Some(Template::parse(f)?),
    };
    let mut found = Vec::new();
    let mut code = 0;
    for n in &a.names {
        let mut hit = None;
        for k in &kinds {
            let path = match *k {
                "container" => format!("/containers/{}/json", enc(n)),
                "image" => format!("/images/{}/json", enc(n)),
                _ => format!("/volumes/{}", enc(n)),
            };
            match conn.get(&path).await {
                Ok(v) => {
                    hit = Some(v);
                    break;
                }
                Err(CliError::Daemon(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        match hit {
            Some(v) => found.push(v),
            None => {
                eprintln!("Error: No such object: {n}");
                code = 1;
            }
        }
    }
    print_inspected(found, template.as_ref())?;
    Ok(code)
}

/// Prints inspected objects: through `--format`, else as docker's
/// indented JSON array.
pub fn print_inspected(found: Vec<Value>, template: Option<&Template>) -> CliResult<()> {
    match template {
        Some(t) => {
            for v in &found {
                println!("{}", t.render(v)?);
            }
        }
        None => println!("{}", pretty(&Value::Array(found))),
    }
    Ok(())
}

/// `--since`/`--until` as the unix seconds the API takes: unix seconds,
/// RFC 3339, or a duration before now (`10m`).
pub fn time_arg(s: &str) -> CliResult<String> {
    if s.parse::<f64>().is_ok() {
        return Ok(s.to_string());
    }
    if let Ok(ns) = super::run_cmd::parse_duration_ns(s) {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        return Ok(format!("{:.9}", now - ns as f64 / 1e9));
    }
    berth_engine::logs::parse_time(s).map(|t| format!("{t:.9}")).ok_or_else(|| {
        CliError::Other(format!("invalid time {s:?}: use RFC 3339, unix seconds or a duration like 10m"))
    })
}

async fn logs(conn: &Conn, a: LogsArgs) -> CliResult<i32> {
    let (id, tty, _) = has_tty(conn, &a.container).await?;
    let mut pairs: Vec<(&str, String)> = vec![("stdout", "1".into()), ("stderr", "1".into()), ("tail", a.tail.clone())];
    if a.follow {
        pairs.push(("follow", "1".into()));
    }
    if a.timestamps {
        pairs.push(("timestamps", "1".into()));
    }
    if let Some(s) = &a.since {
        pairs.push(("since", time_arg(s)?));
    }
    if let Some(u) = &a.until {
        pairs.push(("until", time_arg(u)?));
    }
    let q = query(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    let resp = hijack::request(conn, "GET", &format!("/containers/{id}/logs?{q}"), None, false).await?;
    hijack::copy_output(body_reader(resp.into_body()), tty).await?;
    Ok(0)
}

/// An HTTP body as an `AsyncRead`.
pub fn body_reader(mut body: hyper::body::Incoming) -> tokio::io::DuplexStream {
    let (mut w, r) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                if w.write_all(d).await.is_err() {
                    return;
                }
            }
        }
    });
    r
}

async fn top(conn: &Conn, a: TopArgs) -> CliResult<i32> {
    let ps_args = a.ps_args.join(" ");
    let q = if ps_args.is_empty() { String::new() } else { query([("ps_args", ps_args.as_str())]) };
    let v = conn.get(&format!("/containers/{}/top?{q}", enc(&a.container))).await?;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let strs = |x: &Value| -> Vec<String> {
        x.as_array().into_iter().flatten().map(|c| c.as_str().unwrap_or_default().to_string()).collect()
    };
    rows.push(strs(v.get("Titles").unwrap_or(&Value::Null)));
    for p in v.get("Processes").and_then(Value::as_array).into_iter().flatten() {
        rows.push(strs(p));
    }
    print_table(&rows);
    Ok(0)
}

async fn port(conn: &Conn, a: PortArgs) -> CliResult<i32> {
    let v = conn.get(&format!("/containers/{}/json", enc(&a.container))).await?;
    let want = a.port.as_ref().map(|p| if p.contains('/') { p.clone() } else { format!("{p}/tcp") });
    let mut any = false;
    if let Some(ports) = v.pointer("/NetworkSettings/Ports").and_then(Value::as_object) {
        let mut keys: Vec<&String> = ports.keys().collect();
        keys.sort();
        for k in keys {
            if want.as_ref().is_some_and(|w| w != k) {
                continue;
            }
            for b in ports[k].as_array().into_iter().flatten() {
                let ip = b.get("HostIp").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("0.0.0.0");
                let hp = b.get("HostPort").and_then(Value::as_str).unwrap_or_default();
                any = true;
                if want.is_some() {
                    println!("{ip}:{hp}");
                } else {
                    println!("{k} -> {ip}:{hp}");
                }
            }
        }
    }
    if let (Some(w), false) = (&want, any) {
        return Err(CliError::Other(format!("Error: No public port '{w}' published for {}", a.container)));
    }
    Ok(0)
}

async fn diff(conn: &Conn, a: OneName) -> CliResult<i32> {
    let v = conn.get(&format!("/containers/{}/changes", enc(&a.container))).await?;
    for c in v.as_array().into_iter().flatten() {
        let kind = match c.get("Kind").and_then(Value::as_i64) {
            Some(1) => 'A',
            Some(2) => 'D',
            _ => 'C',
        };
        println!("{kind} {}", c.get("Path").and_then(Value::as_str).unwrap_or_default());
    }
    Ok(0)
}

async fn attach(conn: &Conn, a: AttachArgs) -> CliResult<i32> {
    let (id, tty, v) = has_tty(conn, &a.container).await?;
    if v.pointer("/State/Running").and_then(Value::as_bool) != Some(true) {
        return Err(CliError::Other("You cannot attach to a stopped container, start it first".into()));
    }
    let stdin = !a.no_stdin && v.pointer("/Config/OpenStdin").and_then(Value::as_bool).unwrap_or(false);
    if tty && stdin && !std::io::stdin().is_terminal() {
        return Err(CliError::Other("the input device is not a TTY".into()));
    }
    let keys = hijack::parse_detach_keys(a.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))?;
    let signals = (a.sig_proxy && !tty).then(hijack::SignalProxy::install);
    let io = hijack::hijack(
        conn,
        &format!(
            "/containers/{id}/attach?{}",
            query([("stream", "1"), ("stdin", if stdin { "1" } else { "0" }), ("stdout", "1"), ("stderr", "1")])
        ),
        None,
    )
    .await?;
    let raw = (tty && stdin).then(hijack::RawTerminal::enable);
    let resize = tty.then(|| tokio::spawn(hijack::follow_resize(conn.clone(), format!("/containers/{id}/resize"))));
    let proxy = signals.map(|s| tokio::spawn(s.forward(conn.clone(), id.clone())));
    let ended = hijack::session(io, tty, stdin, &keys).await;
    for task in [resize, proxy].into_iter().flatten() {
        task.abort();
    }
    drop(raw);
    if ended? == Ended::Detached {
        return Ok(0);
    }
    // Exit with the container's code, as docker attach does.
    let v = conn.get(&format!("/containers/{id}/json")).await?;
    Ok(v.pointer("/State/ExitCode").and_then(Value::as_i64).unwrap_or(0) as i32)
}

async fn export(conn: &Conn, a: ExportArgs) -> CliResult<i32> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        return Err(CliError::Other("cowardly refusing to save to a terminal. Use the -o flag or redirect".into()));
    }
    let resp = hijack::request(conn, "GET", &format!("/containers/{}/export", enc(&a.container)), None, false).await?;
    save_body(resp.into_body(), a.output.as_deref()).await?;
    Ok(0)
}

/// Streams a response body to `path` (crash-safe: temp + fsync + rename)
/// or to stdout.
pub async fn save_body(mut body: hyper::body::Incoming, path: Option<&std::path::Path>) -> CliResult<()> {
    let mut file = match path {
        Some(p) => {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            Some(
                tempfile::NamedTempFile::new_in(dir)
                    .map_err(|e| CliError::Other(format!("creating a file next to {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let mut stdout = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CliError::Other(format!("reading the archive: {e}")))?;
        if let Some(d) = frame.data_ref() {
            let r = match &mut file {
                Some(f) => f.write_all(d),
                None => stdout.write_all(d),
            };
            r.map_err(|e| CliError::Other(format!("writing: {e}")))?;
        }
    }
    stdout.flush()?;
    if let (Some(f), Some(p)) = (file, path) {
        f.as_file().sync_all().map_err(|e| CliError::Other(format!("syncing {}: {e}", p.display())))?;
        f.persist(p).map_err(|e| CliError::Other(format!("writing {}: {}", p.display(), e.error)))?;
    }
    Ok(())
}

async fn events(conn: &Conn, a: EventsArgs) -> CliResult<i32> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(s) = &a.since {
        pairs.push(("since", time_arg(s)?));
    }
    if let Some(u) = &a.until {
        pairs.push(("until", time_arg(u)?));
    }
    if !a.filter.is_empty() {
        pairs.push(("filters", filters_json(&a.filter, None)?));
    }
    let template = match a.format.as_deref() {
        None | Some("json") => None,
        Some(f) => Some(Template::parse(f)?),
    };
    let q = query(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    let resp = hijack::request(conn, "GET", &format!("/events?{q}"), None, false).await?;
    hijack::json_lines(resp.into_body(), |v| {
        let out = match (&template, a.format.as_deref()) {
            (Some(t), _) => t.render(&v)?,
            (None, Some("json")) => v.to_string(),
            _ => event_line(&v),
        };
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{out}");
        let _ = o.flush();
        Ok(())
    })
    .await?;
    Ok(0)
}

/// docker's plain event line: `TIME TYPE ACTION ID (attr=value, …)`.
fn event_line(v: &Value) -> String {
    let nanos = v.get("timeNano").and_then(Value::as_i64).unwrap_or(0);
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let ts = berth_runtime::state::rfc3339(secs, frac as u32);
    let typ = v.get("Type").and_then(Value::as_str).unwrap_or_default();
    let action = v.get("Action").and_then(Value::as_str).unwrap_or_default();
    let id = v.pointer("/Actor/ID").and_then(Value::as_str).unwrap_or_default();
    let mut attrs: Vec<String> = v
        .pointer("/Actor/Attributes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    attrs.sort();
    format!("{ts} {typ} {action} {id} ({})", attrs.join(", "))
}

/// Asks "Are you sure?" docker's way; true on y/Y.
pub fn confirm(warning: &str) -> bool {
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

async fn prune(conn: &Conn, a: PruneArgs) -> CliResult<i32> {
    if !a.force && !confirm("WARNING! This will remove all stopped containers.") {
        return Ok(0);
    }
    let q =
        if a.filter.is_empty() { String::new() } else { query([("filters", filters_json(&a.filter, None)?.as_str())]) };
    let v = conn.post(&format!("/containers/prune?{q}"), None).await?;
    let deleted: Vec<&str> =
        v.get("ContainersDeleted").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for d in deleted {
            println!("{d}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        crate::image_cmd::human(v.get("SpaceReclaimed").and_then(Value::as_u64).unwrap_or(0))
    );
    Ok(0)
}
