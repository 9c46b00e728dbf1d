//! `berth exec`: a process in a running container, attached (`-i`, `-t`)
//! or detached (`-d`), exiting with the process's code as docker does.

use std::io::IsTerminal;

use clap::Args;
use serde_json::{json, Value};

use super::hijack::{self, Ended};
use super::{CliError, CliResult, Conn};

/// `berth exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Override the key sequence for detaching.
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Set environment variables.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give extended privileges to the command.
    #[arg(long)]
    pub privileged: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Container name or ID.
    pub container: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// Runs `berth exec`.
pub async fn exec(conn: Conn, a: ExecArgs) -> CliResult<i32> {
    if a.tty && a.interactive && !a.detach && !std::io::stdin().is_terminal() {
        return Err(CliError::Other("the input device is not a TTY".into()));
    }
    let keys = hijack::parse_detach_keys(a.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))?;
    let mut env: Vec<String> = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).map_err(|e| CliError::Other(format!("open {}: {e}", f.display())))?;
        env.extend(
            text.lines().map(str::trim_start).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from),
        );
    }
    env.extend(a.env.iter().cloned());
    let env: Vec<String> = env
        .into_iter()
        .filter_map(|e| if e.contains('=') { Some(e) } else { std::env::var(&e).ok().map(|v| format!("{e}={v}")) })
        .collect();
    let attach_in = a.interactive && !a.detach;
    let mut body = json!({
        "AttachStdin": attach_in,
        "AttachStdout": !a.detach,
        "AttachStderr": !a.detach,
        "Tty": a.tty,
        "Env": env,
        "Cmd": a.command,
        "Privileged": a.privileged,
    });
    if let Some(u) = &a.user {
        body["User"] = json!(u);
    }
    if let Some(w) = &a.workdir {
        body["WorkingDir"] = json!(w);
    }
    let name = super::enc(&a.container);
    let created = conn.post(&format!("/containers/{name}/exec"), Some(body)).await?;
    let id = created
        .get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::Other("the daemon returned no exec id".into()))?
        .to_string();
    let start = json!({"Detach": a.detach, "Tty": a.tty});
    if a.detach {
        conn.post(&format!("/exec/{id}/start"), Some(start)).await?;
        return Ok(0);
    }
    let io = hijack::hijack(&conn, &format!("/exec/{id}/start"), Some(start)).await?;
    let raw = (a.tty && attach_in).then(hijack::RawTerminal::enable);
    let resize = a.tty.then(|| tokio::spawn(hijack::follow_resize(conn.clone(), format!("/exec/{id}/resize"))));
    let ended = hijack::session(io, a.tty, attach_in, &keys).await;
    if let Some(r) = resize {
        r.abort();
    }
    drop(raw);
    if ended? == Ended::Detached {
        return Ok(0);
    }
    // The exit code is recorded once the process is reaped: poll briefly.
    for _ in 0..200 {
        let v = conn.get(&format!("/exec/{id}/json")).await?;
        if v.get("Running").and_then(Value::as_bool) != Some(true) {
            return Ok(v.get("ExitCode").and_then(Value::as_i64).unwrap_or(126) as i32);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(CliError::Other(format!("exec {id}: no exit code after the stream ended")))
}
