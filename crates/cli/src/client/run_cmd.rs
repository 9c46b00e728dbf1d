//! `berth create` and `berth run`: docker's flags turned into the
//! `POST /containers/create` body exactly as the docker CLI sends it, then
//! attach → start → wait, with docker's exit codes (the container's own,
//! or 125 when the engine fails, 126 when the command cannot be run, 127
//! when it is not found).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Map, Value};

use super::hijack::{self, Ended};
use super::{CliError, CliResult, Conn};

/// The flags `create` and `run` share.
#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to pass this shell's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Set metadata on the container (KEY=VALUE).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Keep STDIN open even if not attached.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Container NIS domain name.
    #[arg(long)]
    pub domainname: Option<String>,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Restart policy: no, always, on-failure[:max-retries], unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Signal to stop the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long)]
    pub stop_timeout: Option<i64>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    pub init: bool,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    pub read_only: bool,
    /// Mount a tmpfs directory (PATH[:OPTIONS]).
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Bind mount a volume (SRC:DST[:OPTS], or DST for an anonymous volume).
    #[arg(short = 'v', long)]
    pub volume: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume|tmpfs,source=…,target=…,readonly).
    #[arg(long)]
    pub mount: Vec<String>,
    /// Memory limit (e.g. 512m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 for unlimited.
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Memory soft limit.
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes in which to allow execution.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Ulimit options (NAME=SOFT[:HARD]).
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Add Linux capabilities.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    pub privileged: bool,
    /// Security options (seccomp=PROFILE.json|unconfined, no-new-privileges).
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Add a host device to the container (HOST[:CONTAINER[:rwm]]).
    #[arg(long)]
    pub device: Vec<String>,
    /// Connect the container to a network (none, host, bridge).
    #[arg(long, visible_alias = "net")]
    pub network: Option<String>,
    /// Publish a container's port(s) to the host.
    #[arg(short = 'p', long)]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Expose a port or a range of ports.
    #[arg(long)]
    pub expose: Vec<String>,
    /// Command to run to check health.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h).
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h).
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Start period for the container to initialize (ms|s|m|h).
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long)]
    pub health_retries: Option<i64>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Add additional groups to join.
    #[arg(long)]
    pub group_add: Vec<String>,
    /// Sysctl options (KEY=VALUE).
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Size of /dev/shm.
    #[arg(long)]
    pub shm_size: Option<String>,
    /// Tune host's OOM preferences (-1000 to 1000).
    #[arg(long)]
    pub oom_score_adj: Option<i64>,
    /// Logging driver for the container (json-file).
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver options (max-size=, max-file=).
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip).
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Set custom DNS servers.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set platform if the image is multi-platform.
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull image before running (always, missing, never).
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Suppress the pull output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// The image.
    pub image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `berth run`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Run container in background and print container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Attach to STDIN, STDOUT or STDERR.
    #[arg(short = 'a', long)]
    pub attach: Vec<String>,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Proxy received signals to the process (without a tty; with one, ^C goes through it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `berth create`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct CreateOnlyArgs {
    #[command(flatten)]
    pub create: CreateArgs,
}

/// Docker's `RAMInBytes`: a number with an optional binary unit
/// (`512m`, `1g`, `1.5GiB`).
pub fn parse_bytes(s: &str) -> CliResult<i64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let num_end = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(num_end);
    let unit = unit.trim().trim_end_matches('b').trim_end_matches('i');
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(CliError::Other(format!("invalid size: '{s}'"))),
    };
    let n: f64 = num.parse().map_err(|_| CliError::Other(format!("invalid size: '{s}'")))?;
    Ok((n * mult) as i64)
}

/// Go's `time.ParseDuration` for the units health checks use, in ns.
pub fn parse_duration_ns(s: &str) -> CliResult<i64> {
    let bad = || CliError::Other(format!("invalid duration {s:?}: use e.g. 30s, 1m30s, 500ms"));
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(0);
    }
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..end].parse().map_err(|_| bad())?;
        rest = &rest[end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Ok(total as i64)
}

/// `-e KEY=VALUE`, or `-e KEY` taking this process's value (skipped when unset).
fn env_entry(e: &str) -> Option<String> {
    if e.contains('=') {
        Some(e.to_string())
    } else {
        std::env::var(e).ok().map(|v| format!("{e}={v}"))
    }
}

/// Lines of an `--env-file`: comments and blank lines skipped.
fn read_env_file(p: &PathBuf) -> CliResult<Vec<String>> {
    let f = std::fs::File::open(p).map_err(|e| CliError::Other(format!("open {}: {e}", p.display())))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| CliError::Other(format!("reading {}: {e}", p.display())))?;
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        out.extend(env_entry(l));
    }
    Ok(out)
}

fn key_values(items: &[String], what: &str) -> CliResult<Map<String, Value>> {
    let mut m = Map::new();
    for i in items {
        let (k, v) = i.split_once('=').unwrap_or((i.as_str(), ""));
        if k.is_empty() {
            return Err(CliError::Other(format!("invalid {what}: {i:?}")));
        }
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

/// `--restart` → `RestartPolicy`.
fn restart_policy(s: &str) -> CliResult<Value> {
    let (name, count) = s.split_once(':').unwrap_or((s, ""));
    if !matches!(name, "no" | "always" | "on-failure" | "unless-stopped") {
        return Err(CliError::Other(format!("invalid restart policy format: {s}")));
    }
    let n: i64 = if count.is_empty() {
        0
    } else if name == "on-failure" {
        count.parse().map_err(|_| CliError::Other(format!("invalid restart policy format: {s}")))?
    } else {
        return Err(CliError::Other(format!(
            "invalid restart policy format: maximum retry count cannot be used with restart policy '{name}'"
        )));
    };
    Ok(json!({"Name": name, "MaximumRetryCount": n}))
}

/// `--mount type=…,source=…,target=…[,readonly]` → a `Mount`.
fn mount_spec(s: &str) -> CliResult<Value> {
    let mut m = Map::new();
    let mut typ = "volume".to_string();
    let mut bind = Map::new();
    let mut vol = Map::new();
    let mut tmpfs = Map::new();
    for field in s.split(',') {
        let (k, v) = field.split_once('=').map_or((field, None), |(k, v)| (k, Some(v)));
        let val = || {
            v.map(str::to_string)
                .ok_or_else(|| CliError::Other(format!("invalid field '{field}' must be a key=value pair")))
        };
        match k.to_ascii_lowercase().as_str() {
            "type" => typ = val()?,
            "source" | "src" => {
                m.insert("Source".into(), json!(val()?));
            }
            "target" | "destination" | "dst" => {
                m.insert("Target".into(), json!(val()?));
            }
            "readonly" | "ro" => {
                let ro = !matches!(v, Some("false" | "0"));
                m.insert("ReadOnly".into(), json!(ro));
            }
            "bind-propagation" => {
                bind.insert("Propagation".into(), json!(val()?));
            }
            "volume-nocopy" => {
                vol.insert("NoCopy".into(), json!(!matches!(v, Some("false" | "0"))));
            }
            "tmpfs-size" => {
                tmpfs.insert("SizeBytes".into(), json!(parse_bytes(&val()?)?));
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(&val()?, 8)
                    .map_err(|_| CliError::Other(format!("invalid tmpfs-mode in {s:?}")))?;
                tmpfs.insert("Mode".into(), json!(mode));
            }
            "consistency" => {}
            _ => return Err(CliError::Other(format!("unexpected key '{k}' in '{s}'"))),
        }
    }
    m.insert("Type".into(), json!(typ));
    if !bind.is_empty() {
        m.insert("BindOptions".into(), Value::Object(bind));
    }
    if !vol.is_empty() {
        m.insert("VolumeOptions".into(), Value::Object(vol));
    }
    if !tmpfs.is_empty() {
        m.insert("TmpfsOptions".into(), Value::Object(tmpfs));
    }
    Ok(Value::Object(m))
}

/// `--device HOST[:CONTAINER[:PERMS]]`.
fn device_spec(s: &str) -> CliResult<Value> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, cont, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if c.chars().all(|ch| "rwm".contains(ch)) && !c.starts_with('/') => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(CliError::Other(format!("invalid device specification: {s}"))),
    };
    Ok(json!({"PathOnHost": host, "PathInContainer": cont, "CgroupPermissions": perms}))
}

/// `--ulimit NAME=SOFT[:HARD]`.
fn ulimit_spec(s: &str) -> CliResult<Value> {
    let bad = || CliError::Other(format!("invalid ulimit argument: {s}"));
    let (name, vals) = s.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
    let soft: i64 = soft.parse().map_err(|_| bad())?;
    let hard: i64 = hard.parse().map_err(|_| bad())?;
    Ok(json!({"Name": name, "Soft": soft, "Hard": hard}))
}

/// `-p [IP:][HOST:]CONTAINER[/PROTO]` → (port key, binding).
fn publish_spec(s: &str) -> CliResult<(String, Value)> {
    let (rest, proto) = s.rsplit_once('/').unwrap_or((s, "tcp"));
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (cport, hport, ip) = match parts.as_slice() {
        [c] => (*c, "", ""),
        [c, h] => (*c, *h, ""),
        [c, h, i] => (*c, *h, *i),
        _ => return Err(CliError::Other(format!("invalid publish spec: {s}"))),
    };
    if cport.is_empty() || !cport.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return Err(CliError::Other(format!("invalid containerPort: {cport}")));
    }
    Ok((format!("{cport}/{proto}"), json!({"HostIp": ip, "HostPort": hport})))
}

/// The `POST /containers/create` body for these flags.
pub fn create_body(a: &CreateArgs, attach: (bool, bool, bool)) -> CliResult<Value> {
    let mut env: Vec<String> = Vec::new();
    for f in &a.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| env_entry(e)));
    let mut cfg = Map::new();
    let mut host = Map::new();
    cfg.insert("Image".into(), json!(a.image));
    cfg.insert("AttachStdin".into(), json!(attach.0));
    cfg.insert("AttachStdout".into(), json!(attach.1));
    cfg.insert("AttachStderr".into(), json!(attach.2));
    cfg.insert("Tty".into(), json!(a.tty));
    cfg.insert("OpenStdin".into(), json!(a.interactive));
    cfg.insert("StdinOnce".into(), json!(a.interactive && attach.0));
    cfg.insert("Env".into(), json!(env));
    if !a.command.is_empty() {
        cfg.insert("Cmd".into(), json!(a.command));
    }
    if let Some(ep) = &a.entrypoint {
        // docker: `--entrypoint ""` clears the image's entrypoint.
        cfg.insert("Entrypoint".into(), if ep.is_empty() { json!([""]) } else { json!([ep]) });
    }
    for (k, v) in [
        ("Hostname", &a.hostname),
        ("Domainname", &a.domainname),
        ("User", &a.user),
        ("WorkingDir", &a.workdir),
        ("StopSignal", &a.stop_signal),
    ] {
        if let Some(v) = v {
            cfg.insert(k.into(), json!(v));
        }
    }
    if let Some(t) = a.stop_timeout {
        cfg.insert("StopTimeout".into(), json!(t));
    }
    cfg.insert("Labels".into(), Value::Object(key_values(&a.label, "label")?));
    let mut volumes = Map::new();
    let mut binds = Vec::new();
    for v in &a.volume {
        if v.contains(':') {
            binds.push(v.clone());
        } else {
            volumes.insert(v.clone(), json!({}));
        }
    }
    if !volumes.is_empty() {
        cfg.insert("Volumes".into(), Value::Object(volumes));
    }
    // Health check flags, as docker merges them.
    if a.no_healthcheck {
        if a.health_cmd.is_some() || a.health_interval.is_some() || a.health_retries.is_some() {
            return Err(CliError::Other("--no-healthcheck conflicts with --health-* options".into()));
        }
        cfg.insert("Healthcheck".into(), json!({"Test": ["NONE"]}));
    } else if a.health_cmd.is_some()
        || a.health_interval.is_some()
        || a.health_timeout.is_some()
        || a.health_start_period.is_some()
        || a.health_retries.is_some()
    {
        let mut h = Map::new();
        if let Some(c) = &a.health_cmd {
            h.insert("Test".into(), json!(["CMD-SHELL", c]));
        }
        for (k, v) in
            [("Interval", &a.health_interval), ("Timeout", &a.health_timeout), ("StartPeriod", &a.health_start_period)]
        {
            if let Some(v) = v {
                h.insert(k.into(), json!(parse_duration_ns(v)?));
            }
        }
        if let Some(r) = a.health_retries {
            h.insert("Retries".into(), json!(r));
        }
        cfg.insert("Healthcheck".into(), Value::Object(h));
    }
    // Ports.
    let mut exposed = Map::new();
    let mut bindings: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in &a.publish {
        let (key, b) = publish_spec(p)?;
        exposed.insert(key.clone(), json!({}));
        bindings.entry(key).or_default().push(b);
    }
    for e in &a.expose {
        let key = if e.contains('/') { e.clone() } else { format!("{e}/tcp") };
        exposed.insert(key, json!({}));
    }
    if !exposed.is_empty() {
        cfg.insert("ExposedPorts".into(), Value::Object(exposed));
    }
    if !bindings.is_empty() {
        host.insert("PortBindings".into(), json!(bindings));
    }
    host.insert("PublishAllPorts".into(), json!(a.publish_all));
    host.insert("Binds".into(), json!(binds));
    host.insert("AutoRemove".into(), json!(a.rm));
    host.insert("Privileged".into(), json!(a.privileged));
    host.insert("ReadonlyRootfs".into(), json!(a.read_only));
    if a.init {
        host.insert("Init".into(), json!(true));
    }
    host.insert("NetworkMode".into(), json!(a.network.clone().unwrap_or_else(|| "default".into())));
    if let Some(r) = &a.restart {
        host.insert("RestartPolicy".into(), restart_policy(r)?);
    }
    let mounts: Vec<Value> = a.mount.iter().map(|m| mount_spec(m)).collect::<CliResult<_>>()?;
    if !mounts.is_empty() {
        host.insert("Mounts".into(), json!(mounts));
    }
    if !a.tmpfs.is_empty() {
        let mut t = Map::new();
        for s in &a.tmpfs {
            let (p, o) = s.split_once(':').unwrap_or((s.as_str(), ""));
            t.insert(p.to_string(), json!(o));
        }
        host.insert("Tmpfs".into(), Value::Object(t));
    }
    for (k, v) in [("Memory", &a.memory), ("MemoryReservation", &a.memory_reservation), ("ShmSize", &a.shm_size)] {
        if let Some(v) = v {
            host.insert(k.into(), json!(parse_bytes(v)?));
        }
    }
    if let Some(s) = &a.memory_swap {
        host.insert("MemorySwap".into(), json!(if s == "-1" { -1 } else { parse_bytes(s)? }));
    }
    if let Some(c) = a.cpus {
        if c.is_nan() || c < 0.0 {
            return Err(CliError::Other(format!("invalid argument {c} for \"--cpus\" flag")));
        }
        host.insert("NanoCpus".into(), json!((c * 1e9).round() as i64));
    }
    if let Some(c) = a.cpu_shares {
        host.insert("CpuShares".into(), json!(c));
    }
    if let Some(c) = &a.cpuset_cpus {
        host.insert("CpusetCpus".into(), json!(c));
    }
    if let Some(c) = &a.cpuset_mems {
        host.insert("CpusetMems".into(), json!(c));
    }
    if let Some(p) = a.pids_limit {
        host.insert("PidsLimit".into(), json!(p));
    }
    if let Some(o) = a.oom_score_adj {
        host.insert("OomScoreAdj".into(), json!(o));
    }
    let ulimits: Vec<Value> = a.ulimit.iter().map(|u| ulimit_spec(u)).collect::<CliResult<_>>()?;
    if !ulimits.is_empty() {
        host.insert("Ulimits".into(), json!(ulimits));
    }
    let devices: Vec<Value> = a.device.iter().map(|d| device_spec(d)).collect::<CliResult<_>>()?;
    if !devices.is_empty() {
        host.insert("Devices".into(), json!(devices));
    }
    host.insert("CapAdd".into(), json!(a.cap_add));
    host.insert("CapDrop".into(), json!(a.cap_drop));
    // The docker CLI reads a seccomp profile file and sends its content.
    let mut sec = Vec::new();
    for o in &a.security_opt {
        match o.split_once(['=', ':']) {
            Some(("seccomp", p)) if p != "unconfined" && !p.trim_start().starts_with('{') => {
                let content = std::fs::read_to_string(p)
                    .map_err(|e| CliError::Other(format!("opening seccomp profile ({p}) failed: {e}")))?;
                let compact: Value = serde_json::from_str(&content)
                    .map_err(|e| CliError::Other(format!("decoding seccomp profile ({p}) failed: {e}")))?;
                sec.push(format!("seccomp={compact}"));
            }
            _ => sec.push(o.clone()),
        }
    }
    host.insert("SecurityOpt".into(), json!(sec));
    if !a.group_add.is_empty() {
        host.insert("GroupAdd".into(), json!(a.group_add));
    }
    if !a.sysctl.is_empty() {
        host.insert("Sysctls".into(), Value::Object(key_values(&a.sysctl, "sysctl")?));
    }
    if !a.add_host.is_empty() {
        host.insert("ExtraHosts".into(), json!(a.add_host));
    }
    if !a.dns.is_empty() {
        host.insert("Dns".into(), json!(a.dns));
    }
    if a.log_driver.is_some() || !a.log_opt.is_empty() {
        host.insert(
            "LogConfig".into(),
            json!({"Type": a.log_driver.clone().unwrap_or_else(|| "json-file".into()), "Config": key_values(&a.log_opt, "log option")?}),
        );
    }
    cfg.insert("HostConfig".into(), Value::Object(host));
    Ok(Value::Object(cfg))
}

/// Pulls `image` through the daemon, printing its progress docker's way
/// on stderr (as `docker run` does for an image it lacks).
pub async fn pull_image(conn: &Conn, image: &str, platform: Option<&str>, quiet: bool) -> CliResult<()> {
    super::image_api::pull_to(conn, image, platform, quiet, false).await
}

/// Creates the container, pulling its image first when `--pull` says so.
async fn create(conn: &Conn, a: &CreateArgs, body: &Value) -> CliResult<String> {
    if !matches!(a.pull.as_str(), "missing" | "always" | "never") {
        return Err(CliError::Other(format!(
            "invalid pull option: '{}': must be one of \"always\", \"missing\" or \"never\"",
            a.pull
        )));
    }
    if a.pull == "always" {
        pull_image(conn, &a.image, a.platform.as_deref(), a.quiet).await?;
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(n) = &a.name {
        q.append_pair("name", n);
    }
    if let Some(p) = &a.platform {
        q.append_pair("platform", p);
    }
    let path = format!("/containers/create?{}", q.finish());
    let resp = match hijack::request(conn, "POST", &path, Some(body.clone()), false).await {
        Err(CliError::Daemon(m)) if a.pull == "missing" && m.starts_with("No such image") => {
            eprintln!("Unable to find image '{}' locally", a.image);
            pull_image(conn, &a.image, a.platform.as_deref(), a.quiet).await?;
            hijack::request(conn, "POST", &path, Some(body.clone()), false).await?
        }
        other => other?,
    };
    let v = hijack::read_json(resp).await?;
    for w in v.get("Warnings").and_then(Value::as_array).into_iter().flatten() {
        if let Some(w) = w.as_str() {
            eprintln!("WARNING: {w}");
        }
    }
    v.get("Id")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| CliError::Other("the daemon returned no container id".into()))
}

/// Docker's exit code for a failed start: 127 when the command is not
/// found, 126 when it cannot be run, 125 otherwise.
pub fn start_failure_code(msg: &str) -> i32 {
    let m = msg.to_ascii_lowercase();
    if m.contains("executable file not found")
        || m.contains("no such file or directory")
        || m.contains("not found in $path")
    {
        127
    } else if m.contains("permission denied") {
        126
    } else {
        125
    }
}

/// `berth create`: prints the new container's id.
pub async fn create_cmd(conn: Conn, a: CreateOnlyArgs) -> CliResult<i32> {
    let body = create_body(&a.create, (a.create.interactive, true, true)).map_err(exit125)?;
    let id = create(&conn, &a.create, &body).await.map_err(exit125)?;
    println!("{id}");
    Ok(0)
}

/// Prints an engine-side failure and turns it into exit code 125.
fn exit125(e: CliError) -> CliError {
    match e {
        CliError::Exit(c) => CliError::Exit(c),
        other => {
            eprintln!("berth: {other}");
            CliError::Exit(125)
        }
    }
}

/// `berth run`.
pub async fn run_cmd(conn: Conn, a: RunArgs) -> CliResult<i32> {
    let c = &a.create;
    if a.detach && c.rm && c.restart.as_deref().is_some_and(|r| r != "no") {
        return Err(exit125(CliError::Other("conflicting options: cannot specify both --restart and --rm".into())));
    }
    let attach_to = |s: &str| a.attach.is_empty() || a.attach.iter().any(|x| x.eq_ignore_ascii_case(s));
    let (att_in, att_out, att_err) = if a.detach {
        (false, false, false)
    } else if a.attach.is_empty() {
        (c.interactive, true, true)
    } else {
        (attach_to("stdin"), attach_to("stdout"), attach_to("stderr"))
    };
    if c.tty && c.interactive && att_in && !std::io::stdin().is_terminal() {
        return Err(exit125(CliError::Other("the input device is not a TTY".into())));
    }
    let detach_keys =
        hijack::parse_detach_keys(a.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q")).map_err(exit125)?;
    let body = create_body(c, (att_in, att_out, att_err)).map_err(exit125)?;
    let id = create(&conn, c, &body).await.map_err(exit125)?;
    if a.detach {
        start(&conn, &id).await?;
        println!("{id}");
        return Ok(0);
    }
    // Attach before start so no output is lost, and wait before start so
    // the exit cannot be missed (with --rm, wait for the removal).
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("stream", "1");
    q.append_pair("stdin", if att_in { "1" } else { "0" });
    q.append_pair("stdout", if att_out { "1" } else { "0" });
    q.append_pair("stderr", if att_err { "1" } else { "0" });
    let condition = if c.rm { "removed" } else { "next-exit" };
    let wait_path = format!("/containers/{id}/wait?condition={condition}");
    // Both must be in place before the start, not one before the other.
    let attach_path = format!("/containers/{id}/attach?{}", q.finish());
    let (io, wait_resp) = tokio::join!(
        hijack::hijack(&conn, &attach_path, None),
        hijack::request(&conn, "POST", &wait_path, None, false)
    );
    let (io, wait_resp) = (io.map_err(exit125)?, wait_resp.map_err(exit125)?);
    let wait = tokio::spawn(hijack::read_json(wait_resp));
    let _raw = if c.tty && att_in { Some(hijack::RawTerminal::enable()) } else { None };
    // With a tty, ^C reaches the container through it; without, the
    // signals this CLI gets are forwarded (docker's --sig-proxy). The
    // handlers go in before start: the container may be signalled as
    // soon as it prints.
    let signals = (a.sig_proxy && !c.tty).then(hijack::SignalProxy::install);
    if let Err(e) = start(&conn, &id).await {
        drop(_raw);
        if let CliError::Daemon(m) = &e {
            eprintln!("berth: Error response from daemon: {m}");
            return Err(CliError::Exit(start_failure_code(m)));
        }
        return Err(exit125(e));
    }
    let resize = c.tty.then(|| tokio::spawn(hijack::follow_resize(conn.clone(), format!("/containers/{id}/resize"))));
    let proxy = signals.map(|s| tokio::spawn(s.forward(conn.clone(), id.clone())));
    let ended = hijack::session(io, c.tty, att_in, &detach_keys).await;
    for task in [resize, proxy].into_iter().flatten() {
        task.abort();
    }
    drop(_raw);
    if ended? == Ended::Detached {
        eprintln!();
        return Ok(0);
    }
    let v = wait.await.map_err(|e| CliError::Other(e.to_string()))??;
    if let Some(m) = v.pointer("/Error/Message").and_then(Value::as_str).filter(|m| !m.is_empty()) {
        eprintln!("berth: {m}");
    }
    Ok(v.get("StatusCode").and_then(Value::as_i64).unwrap_or(125) as i32)
}

/// `POST /containers/{id}/start`.
pub async fn start(conn: &Conn, id: &str) -> CliResult<()> {
    hijack::request(conn, "POST", &format!("/containers/{id}/start"), None, false).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn body(args: &[&str]) -> Value {
        let t = T::try_parse_from(std::iter::once("run").chain(args.iter().copied())).unwrap();
        create_body(&t.run.create, (false, true, true)).unwrap()
    }

    #[test]
    fn flags_become_docker_fields() {
        let b = body(&[
            "--name",
            "x",
            "-e",
            "A=1",
            "-l",
            "k=v",
            "-m",
            "512m",
            "--cpus",
            "1.5",
            "--restart",
            "on-failure:3",
            "-v",
            "/h:/c:ro",
            "-v",
            "/anon",
            "--tmpfs",
            "/run:size=1m",
            "--ulimit",
            "nofile=10:20",
            "--device",
            "/dev/fuse",
            "--health-cmd",
            "true",
            "--health-interval",
            "1m30s",
            "--init",
            "-h",
            "hn",
            "busybox",
            "sh",
            "-c",
            "echo hi",
        ]);
        assert_eq!(b["Image"], "busybox");
        assert_eq!(b["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(b["Env"], json!(["A=1"]));
        assert_eq!(b["Labels"], json!({"k": "v"}));
        assert_eq!(b["Hostname"], "hn");
        assert_eq!(b["Volumes"], json!({"/anon": {}}));
        assert_eq!(b["Healthcheck"], json!({"Test": ["CMD-SHELL", "true"], "Interval": 90_000_000_000i64}));
        let h = &b["HostConfig"];
        assert_eq!(h["Memory"], 512 * 1024 * 1024);
        assert_eq!(h["NanoCpus"], 1_500_000_000i64);
        assert_eq!(h["RestartPolicy"], json!({"Name": "on-failure", "MaximumRetryCount": 3}));
        assert_eq!(h["Binds"], json!(["/h:/c:ro"]));
        assert_eq!(h["Tmpfs"], json!({"/run": "size=1m"}));
        assert_eq!(h["Ulimits"], json!([{"Name": "nofile", "Soft": 10, "Hard": 20}]));
        assert_eq!(h["Devices"][0]["PathInContainer"], "/dev/fuse");
        assert_eq!(h["Init"], true);
    }

    #[test]
    fn command_flags_after_the_image_belong_to_the_command() {
        let b = body(&["busybox", "ls", "-la", "--name", "y"]);
        assert_eq!(b["Cmd"], json!(["ls", "-la", "--name", "y"]));
    }

    #[test]
    fn sizes_durations_ports_mounts() {
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("12x").is_err());
        assert_eq!(parse_duration_ns("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_duration_ns("1h2m").unwrap(), 3_720_000_000_000);
        assert!(parse_duration_ns("5").is_err());
        assert_eq!(
            publish_spec("127.0.0.1:8080:80/udp").unwrap(),
            ("80/udp".into(), json!({"HostIp": "127.0.0.1", "HostPort": "8080"}))
        );
        assert!(publish_spec("a:b").is_err());
        assert_eq!(
            mount_spec("type=bind,src=/a,dst=/b,readonly").unwrap(),
            json!({"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true})
        );
        assert!(mount_spec("type=bind,bogus=1").is_err());
        assert!(restart_policy("always:3").is_err());
        assert_eq!(start_failure_code("exec: \"nope\": executable file not found in $PATH"), 127);
    }
}
