//! `berth runtime`: the runc-compatible OCI runtime command line.
//!
//! Flags follow runc's so that podman (`--runtime`), containerd and CRI-O
//! can drive berth unchanged; global flags may appear before or after the
//! subcommand.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use berth_runtime::container::{CreateOptions, ExecOptions, Runtime};
use berth_runtime::error::Error;
use berth_runtime::{features, spec_default};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;

mod fast_args;

/// Options every runtime subcommand accepts.
#[derive(Debug, Args)]
pub struct Global {
    /// Directory for container state (tmpfs recommended).
    #[arg(long, global = true, default_value = "/run/berth-runtime")]
    root: PathBuf,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of --log: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: LogFormat,
    /// Verbose logging (accepted for compatibility).
    #[arg(long, global = true)]
    debug: bool,
    /// cgroupsPath is in systemd form `slice:prefix:name`.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Rootless mode (accepted for compatibility: true, false or auto).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    /// Path to criu (accepted for compatibility; checkpoint is not supported).
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ListFormat {
    Table,
    Json,
}

/// The OCI runtime CLI.
#[derive(Debug, Parser)]
#[command(name = "berth-runtime", version, about = "berth OCI runtime (runc-compatible)")]
pub struct RuntimeCli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: RtCommand,
}

impl RuntimeCli {
    /// Parses a runtime command line (`args` without the program name;
    /// `bin` names the program in clap's messages): the start-path commands
    /// through the light [`fast_args`] parser, the rest (and any error or
    /// `--help`) through clap, which exits after printing them.
    pub fn parse_args(bin: OsString, args: Vec<OsString>) -> RuntimeCli {
        match fast_args::parse(args.iter().cloned()) {
            Some(cli) => cli,
            None => RuntimeCli::parse_from(std::iter::once(bin).chain(args)),
        }
    }
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master when terminal is true.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Write the container's init pid to this file.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for roots on a ramdisk).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Do not create a new session keyring (accepted; berth never does).
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass this many extra fds (from 3) into the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Container id.
    id: String,
}

#[derive(Debug, Subcommand)]
enum RtCommand {
    /// Create a container from a bundle; it waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Create and start a container; waits for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container runs.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits (accepted).
        #[arg(long)]
        keep: bool,
    },
    /// Print the container's OCI state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal (default SIGTERM) to the container.
    Kill {
        /// Signal every process, not only init.
        #[arg(short, long)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a stopped container (or any with --force).
    Delete {
        /// Kill the container first if it is still running.
        #[arg(short, long)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Run a new process inside a running container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps {
        /// Output format.
        #[arg(short, long, default_value = "table")]
        format: ListFormat,
        /// Container id.
        id: String,
        /// Arguments for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Print what this runtime supports (OCI features document).
    Features,
    /// Write a default config.json into the bundle.
    Spec {
        /// Bundle directory (`--rootless` generates a rootless config).
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        /// Output format.
        #[arg(short, long, default_value = "table")]
        format: ListFormat,
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
    },
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// process.json to run instead of a command line.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Return once the process runs.
    #[arg(short, long)]
    detach: bool,
    /// Unix socket that receives the pty master.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Write the process's pid to this file.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short, long)]
    env: Vec<String>,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// Additional gids.
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// Add a capability.
    #[arg(short, long)]
    cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Pass this many extra fds (from 3).
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Allow exec into a paused container.
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    /// SELinux label (accepted; SELinux is not supported).
    #[arg(long = "process-label")]
    process_label: Option<String>,
    /// AppArmor profile for the process.
    #[arg(long)]
    apparmor: Option<String>,
    /// Container id.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Parses a signal given as "KILL", "SIGKILL" or "9".
pub fn parse_signal(s: &str) -> Result<Signal, Error> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::Other(format!("unknown signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<Signal>().map_err(|_| Error::Other(format!("unknown signal {s:?}")))
}

fn log_error(g: &Global, msg: &str) {
    eprintln!("berth-runtime: {msg}");
    let Some(path) = &g.log else { return };
    let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) else { return };
    let now = berth_runtime::state::now_rfc3339();
    let line = match g.log_format {
        LogFormat::Json => serde_json::json!({"level": "error", "msg": msg, "time": now}).to_string(),
        LogFormat::Text => format!("time=\"{now}\" level=error msg={msg:?}"),
    };
    let _ = writeln!(f, "{line}");
}

/// Runs one runtime command; returns the process exit code.
pub fn main(cli: RuntimeCli) -> i32 {
    let needs_seal = matches!(cli.command, RtCommand::Create(_) | RtCommand::Run { .. } | RtCommand::Exec(_));
    if needs_seal {
        if let Err(e) = berth_runtime::sys::sealed_exe::ensure_sealed() {
            log_error(&cli.global, &format!("re-executing from a sealed copy of the binary: {e}"));
            return 1;
        }
    }
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            log_error(&cli.global, &e.to_string());
            1
        }
    }
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Other(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn dispatch(cli: &RuntimeCli) -> Result<i32, Error> {
    let rt = Runtime { root: cli.global.root.clone(), systemd_cgroup: cli.global.systemd_cgroup };
    match &cli.command {
        RtCommand::Create(a) => {
            rt.create(&a.id, &create_options(a))?;
            Ok(0)
        }
        RtCommand::Start { id } => rt.start(id).map(|_| 0),
        RtCommand::Run { create, detach, keep: _ } => rt.run(&create.id, &create_options(create), *detach),
        RtCommand::State { id } => {
            print_json(&rt.state(id)?)?;
            Ok(0)
        }
        RtCommand::Kill { all, id, signal } => rt.kill(id, parse_signal(signal)?, *all).map(|_| 0),
        RtCommand::Delete { force, id } => rt.delete(id, *force).map(|_| 0),
        RtCommand::Exec(a) => rt.exec(&a.id, &exec_options(a)?),
        RtCommand::Ps { format, id, ps_args } => {
            let pids = rt.ps(id)?;
            match format {
                ListFormat::Json => print_json(&pids)?,
                ListFormat::Table => print_ps_table(&pids, ps_args)?,
            }
            Ok(0)
        }
        RtCommand::Pause { id } => rt.pause(id).map(|_| 0),
        RtCommand::Resume { id } => rt.resume(id).map(|_| 0),
        RtCommand::Features => {
            print_json(&features::features())?;
            Ok(0)
        }
        RtCommand::Spec { bundle } => {
            let rootless = cli.global.rootless.as_deref().is_some_and(|r| r == "true");
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(Error::Other(format!("{} already exists; remove it first", path.display())));
            }
            let spec = spec_default::default_spec(rootless);
            let data = serde_json::to_string_pretty(&spec).map_err(|e| Error::Other(e.to_string()))?;
            std::fs::write(&path, data + "\n")
                .map_err(|e| Error::Io { context: format!("writing {}", path.display()), source: e })?;
            Ok(0)
        }
        RtCommand::List { format, quiet } => {
            let list = rt.list()?;
            if *quiet {
                for s in &list {
                    println!("{}", s.id);
                }
            } else if *format == ListFormat::Json {
                print_json(&list)?;
            } else {
                print_list_table(&list);
            }
            Ok(0)
        }
    }
}

fn exec_options(a: &ExecArgs) -> Result<ExecOptions, Error> {
    let process = match &a.process {
        Some(p) => {
            let data =
                std::fs::read(p).map_err(|e| Error::Io { context: format!("reading {}", p.display()), source: e })?;
            Some(
                serde_json::from_slice(&data)
                    .map_err(|e| Error::Other(format!("invalid process file {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let user = match &a.user {
        None => None,
        Some(u) => {
            let (uid, gid) = match u.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (u.as_str(), None),
            };
            let bad = || Error::Other(format!("invalid --user {u:?}: want uid[:gid]"));
            let uid = uid.parse().map_err(|_| bad())?;
            let gid = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
            Some((uid, gid))
        }
    };
    if a.apparmor.is_some() && !berth_runtime::process::apparmor_enabled() {
        return Err(Error::Unsupported("--apparmor requested but AppArmor is not enabled on this host".into()));
    }
    Ok(ExecOptions {
        process,
        args: a.command.clone(),
        env: a.env.clone(),
        cwd: a.cwd.clone(),
        user,
        additional_gids: a.additional_gids.clone(),
        caps: a.cap.clone(),
        tty: a.tty,
        no_new_privs: a.no_new_privs,
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        detach: a.detach,
        preserve_fds: a.preserve_fds,
        ignore_paused: a.ignore_paused,
    })
}

fn print_list_table(list: &[berth_runtime::state::OciState]) {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from).to_vec()];
    for s in list {
        rows.push(vec![
            s.id.clone(),
            s.pid.unwrap_or(0).to_string(),
            s.status.to_string(),
            s.bundle.display().to_string(),
            s.created.clone().unwrap_or_default(),
            s.owner.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows);
}

/// runc's `list` table (tabwriter, minimum width 12).
fn print_table(rows: &[Vec<String>]) {
    let _ = std::io::stdout().lock().write_all(crate::table::render(rows, 12).as_bytes());
}

fn print_ps_table(pids: &[i32], args: &[String]) -> Result<(), Error> {
    let args: Vec<String> = if args.is_empty() { vec!["-ef".into()] } else { args.to_vec() };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::Io { context: "running ps".into(), source: e })?;
    if !out.status.success() {
        return Err(Error::Other(format!("ps {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Error::Other("ps output has no PID column".into()))?;
    println!("{header}");
    for line in lines {
        if let Some(pid) = line.split_whitespace().nth(col).and_then(|p| p.parse::<i32>().ok()) {
            if pids.contains(&pid) {
                println!("{line}");
            }
        }
    }
    Ok(())
}
