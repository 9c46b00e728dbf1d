//! `stats`, `cp`, `commit`, `info` and `version`: the remaining docker
//! verbs, over the same API calls the docker CLI makes.

use std::io::{IsTerminal, Write};
use std::path::{Component, Path, PathBuf};

use clap::Args;
use serde_json::Value;

use super::container_cmd::body_reader;
use super::hijack::{self, ReqBody};
use super::{enc, print_table, query, CliError, CliResult, Conn};

/// `berth stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: `json` for one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
    /// Containers (default: all running).
    pub containers: Vec<String>,
}

/// `berth cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH or a local path (`-` for a tar on stdin).
    pub src: String,
    /// CONTAINER:DEST_PATH or a local path (`-` for a tar on stdout).
    pub dest: String,
    /// Archive mode (accepted: ownership is kept as the archive says).
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol links in SRC_PATH (a link is otherwise copied as itself).
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `berth commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author (e.g. "Jane Doe <jane@example.com>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction to the created image.
    #[arg(short, long = "change")]
    pub change: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Pause the container during commit.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pause: bool,
    /// Container name or ID.
    pub container: String,
    /// REPOSITORY[:TAG].
    pub reference: Option<String>,
}

/// `berth info` / `berth version` take no arguments.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format output: `json`, or a Go template.
    #[arg(short, long)]
    pub format: Option<String>,
}

/// One stats row from a `/stats` document, docker's arithmetic.
fn stats_row(v: &Value, no_trunc: bool) -> Vec<String> {
    let f = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    let cpu_delta = f("/cpu_stats/cpu_usage/total_usage") - f("/precpu_stats/cpu_usage/total_usage");
    let sys_delta = f("/cpu_stats/system_cpu_usage") - f("/precpu_stats/system_cpu_usage");
    let cpus = f("/cpu_stats/online_cpus").max(1.0);
    let cpu = if cpu_delta > 0.0 && sys_delta > 0.0 { cpu_delta / sys_delta * cpus * 100.0 } else { 0.0 };
    let usage = f("/memory_stats/usage") - f("/memory_stats/stats/inactive_file");
    let limit = f("/memory_stats/limit");
    let mem_pct = if limit > 0.0 { usage / limit * 100.0 } else { 0.0 };
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
    let id = if no_trunc { id.to_string() } else { id.chars().take(12).collect() };
    vec![
        id,
        v.get("name").and_then(Value::as_str).unwrap_or_default().trim_start_matches('/').to_string(),
        format!("{cpu:.2}%"),
        format!("{} / {}", binary_size(usage.max(0.0) as u64), binary_size(limit as u64)),
        format!("{mem_pct:.2}%"),
        "0B / 0B".into(),
        "0B / 0B".into(),
        v.pointer("/pids_stats/current").and_then(Value::as_u64).unwrap_or(0).to_string(),
    ]
}

/// docker's binary sizes for memory (`1.5MiB`).
fn binary_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        return format!("{n}B");
    }
    // Four significant digits, as Go's %.4g: 1.5MiB, 23.54GiB, 123.5KiB.
    let int_digits = (v.trunc() as u64).to_string().len();
    let s = format!("{v:.prec$}", prec = 4usize.saturating_sub(int_digits));
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{}", UNITS[i])
}

/// `berth stats`: one table (`--no-stream`), or redrawn every second.
pub async fn stats(conn: Conn, a: StatsArgs) -> CliResult<i32> {
    let names: Vec<String> = if a.containers.is_empty() {
        let list = conn.get(&format!("/containers/json?all={}", if a.all { 1 } else { 0 })).await?;
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("Id").and_then(Value::as_str).map(String::from))
            .collect()
    } else {
        a.containers.clone()
    };
    let header: Vec<String> =
        ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let tty = std::io::stdout().is_terminal();
    loop {
        let mut docs = Vec::new();
        let mut code = 0;
        for n in &names {
            match conn.get(&format!("/containers/{}/stats?stream=0", enc(n))).await {
                Ok(v) => docs.push(v),
                Err(e) if a.containers.is_empty() => drop(e),
                Err(e) => {
                    eprintln!("{e}");
                    code = 1;
                }
            }
        }
        if a.format.as_deref() == Some("json") {
            for d in &docs {
                let r = stats_row(d, a.no_trunc);
                let v = serde_json::json!({"ID": r[0], "Name": r[1], "CPUPerc": r[2], "MemUsage": r[3], "MemPerc": r[4], "NetIO": r[5], "BlockIO": r[6], "PIDs": r[7], "Container": r[0]});
                println!("{v}");
            }
        } else {
            if tty && !a.no_stream {
                print!("\x1b[2J\x1b[H");
            }
            let mut rows = vec![header.clone()];
            rows.extend(docs.iter().map(|d| stats_row(d, a.no_trunc)));
            print_table(&rows);
        }
        let _ = std::io::stdout().flush();
        if a.no_stream || code != 0 {
            return Ok(code);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `CONTAINER:PATH` → (container, path); `None` for a local path.
fn split_remote(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    s.split_once(':').filter(|(c, _)| !c.is_empty() && !c.contains('/'))
}

/// `berth cp`: docker's semantics for both directions; a tar on stdin or
/// stdout with `-`. Extraction here refuses entries that would land
/// outside the destination (`..`, absolute paths, links out).
pub async fn cp(conn: Conn, a: CpArgs) -> CliResult<i32> {
    match (split_remote(&a.src), split_remote(&a.dest)) {
        (Some(_), Some(_)) => Err(CliError::Other("copying between containers is not supported".into())),
        (None, None) => Err(CliError::Other("must specify at least one container source".into())),
        (Some((c, path)), None) => copy_out(&conn, c, path, &a.dest, a.follow_link).await,
        (None, Some((c, path))) => copy_in(&conn, &a.src, c, path).await,
    }
}

/// Go's os.ModeDir and os.ModeSymlink, as the path-stat header carries them.
const GO_MODE_DIR: u64 = 1 << 31;
const GO_MODE_SYMLINK: u64 = 1 << 27;

/// `HEAD /containers/{c}/archive?path=`: the decoded path-stat header.
async fn path_stat(conn: &Conn, container: &str, path: &str) -> Option<Value> {
    let r = hijack::request(
        conn,
        "HEAD",
        &format!("/containers/{}/archive?{}", enc(container), query([("path", path)])),
        None,
        false,
    )
    .await
    .ok()?;
    let h = r.headers().get("X-Docker-Container-Path-Stat")?.to_str().ok()?;
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.decode(h).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Where a symlink's path-stat says it leads (None for anything else).
fn link_target(stat: &Value) -> Option<String> {
    let mode = stat.get("mode").and_then(Value::as_u64)?;
    let target = stat.get("linkTarget").and_then(Value::as_str).filter(|t| !t.is_empty())?;
    (mode & GO_MODE_SYMLINK != 0).then(|| target.to_string())
}

async fn copy_out(conn: &Conn, container: &str, path: &str, dest: &str, follow_link: bool) -> CliResult<i32> {
    // A symlink is copied as itself; with -L, what it leads to, under the
    // link's name.
    let mut rename_to: Option<std::ffi::OsString> = None;
    let mut target = None;
    if follow_link {
        if let Some(t) = path_stat(conn, container, path).await.as_ref().and_then(link_target) {
            rename_to = Path::new(path).file_name().map(|n| n.to_os_string());
            target = Some(t);
        }
    }
    let path = target.as_deref().unwrap_or(path);
    let resp = hijack::request(
        conn,
        "GET",
        &format!("/containers/{}/archive?{}", enc(container), query([("path", path)])),
        None,
        false,
    )
    .await?;
    if dest == "-" {
        super::container_cmd::save_body(resp.into_body(), None).await?;
        return Ok(0);
    }
    let reader = body_reader(resp.into_body());
    let dest = PathBuf::from(dest);
    // Into an existing directory, or as a new name next to it.
    let (dir, rename) = if dest.is_dir() {
        (dest.clone(), rename_to)
    } else {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        if !parent.is_dir() {
            return Err(CliError::Other(format!("invalid output path: directory {:?} does not exist", parent)));
        }
        (parent, dest.file_name().map(|n| n.to_os_string()))
    };
    tokio::task::spawn_blocking(move || extract(tokio_util_sync(reader), &dir, rename.as_deref()))
        .await
        .map_err(|e| CliError::Other(e.to_string()))??;
    Ok(0)
}

/// A tokio reader read from a blocking thread.
fn tokio_util_sync(r: tokio::io::DuplexStream) -> impl std::io::Read {
    struct Sync(tokio::io::DuplexStream, tokio::runtime::Handle);
    impl std::io::Read for Sync {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            use tokio::io::AsyncReadExt;
            self.1.block_on(self.0.read(buf))
        }
    }
    Sync(r, tokio::runtime::Handle::current())
}

/// Unpacks a tar into `dir`, the first path component renamed to
/// `rename` when given; every entry must stay inside `dir`.
fn extract(r: impl std::io::Read, dir: &Path, rename: Option<&std::ffi::OsStr>) -> CliResult<()> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    let entries = ar.entries().map_err(|e| CliError::Other(format!("reading the archive: {e}")))?;
    for e in entries {
        let mut e = e.map_err(|e| CliError::Other(format!("reading the archive: {e}")))?;
        let path = e.path().map_err(|e| CliError::Other(e.to_string()))?.into_owned();
        if path.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_))) {
            return Err(CliError::Other(format!(
                "refusing archive entry {}: it leaves the destination",
                path.display()
            )));
        }
        let mut parts = path.components();
        let first = parts.next();
        let target = match (rename, first) {
            (Some(new), Some(_)) if parts.as_path().as_os_str().is_empty() => PathBuf::from(new),
            (Some(new), Some(_)) => Path::new(new).join(parts.as_path()),
            _ => path.clone(),
        };
        if let Some(link) = e.link_name().ok().flatten() {
            if e.header().entry_type().is_hard_link()
                && link.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir))
            {
                return Err(CliError::Other(format!("refusing hard link {} → {}", path.display(), link.display())));
            }
        }
        // unpack_in refuses paths whose parent, once symlinks created by
        // earlier entries are resolved, is outside `dir`.
        let full = dir.join(&target);
        // Never write through a link already there (one the archive made
        // a moment ago, say): replace it.
        if !e.header().entry_type().is_dir()
            && std::fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&full)
                .map_err(|err| CliError::Other(format!("replacing {}: {err}", full.display())))?;
        }
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::Other(format!("creating {}: {e}", parent.display())))?;
        }
        let ok = if rename.is_some() {
            // unpack_in takes the entry's own path: write through a
            // checked parent instead.
            let parent = full.parent().unwrap_or(dir);
            let canon = std::fs::canonicalize(parent).map_err(|e| CliError::Other(e.to_string()))?;
            let root = std::fs::canonicalize(dir).map_err(|e| CliError::Other(e.to_string()))?;
            if !canon.starts_with(&root) {
                return Err(CliError::Other(format!(
                    "refusing archive entry {}: it leaves the destination",
                    path.display()
                )));
            }
            e.unpack(&full).map(|_| true)
        } else {
            e.unpack_in(dir)
        };
        match ok {
            Ok(true) => {}
            Ok(false) => {
                return Err(CliError::Other(format!(
                    "refusing archive entry {}: it leaves the destination",
                    path.display()
                )))
            }
            Err(err) => return Err(CliError::Other(format!("extracting {}: {err}", path.display()))),
        }
    }
    Ok(())
}

async fn copy_in(conn: &Conn, src: &str, container: &str, path: &str) -> CliResult<i32> {
    if src == "-" {
        let resp = hijack::request_with(
            conn,
            "PUT",
            &format!("/containers/{}/archive?{}", enc(container), query([("path", path)])),
            &[],
            ReqBody::Stream(Box::new(std::io::stdin())),
            false,
        )
        .await?;
        drop(resp);
        return Ok(0);
    }
    let src_path = PathBuf::from(src);
    let meta = std::fs::symlink_metadata(&src_path).map_err(|e| CliError::Other(format!("lstat {src}: {e}")))?;
    // Where it goes: into DEST if that is a directory, else DEST is the
    // new name. A DEST that is a symlink is followed, as docker's CLI does.
    let mut path = path.to_string();
    let mut stat = path_stat(conn, container, &path).await;
    if let Some(target) = stat.as_ref().and_then(link_target) {
        path = target;
        stat = path_stat(conn, container, &path).await;
    }
    let path = path.as_str();
    let dest_is_dir = stat.and_then(|v| v.get("mode").and_then(Value::as_u64)).is_some_and(|m| m & GO_MODE_DIR != 0);
    let (dir, name) = if dest_is_dir {
        (path.to_string(), src_path.file_name().map(|n| n.to_os_string()).unwrap_or_default())
    } else {
        let p = Path::new(path);
        let parent =
            p.parent().map(|x| x.display().to_string()).filter(|x| !x.is_empty()).unwrap_or_else(|| "/".into());
        (parent, p.file_name().map(|n| n.to_os_string()).unwrap_or_default())
    };
    // Build the tar on a thread, streamed through a pipe.
    let (r, w) = nix::unistd::pipe().map_err(|e| CliError::Other(format!("pipe: {e}")))?;
    let (r, w) = (std::fs::File::from(r), std::fs::File::from(w));
    let src2 = src_path.clone();
    std::thread::spawn(move || {
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        let res = if meta.is_dir() { b.append_dir_all(&name, &src2) } else { b.append_path_with_name(&src2, &name) };
        if res.is_ok() {
            let _ = b.finish();
        }
    });
    hijack::request_with(
        conn,
        "PUT",
        &format!("/containers/{}/archive?{}", enc(container), query([("path", dir.as_str())])),
        &[],
        ReqBody::Stream(Box::new(r)),
        false,
    )
    .await?;
    Ok(0)
}

/// `berth commit`: prints the new image's id.
pub async fn commit(conn: Conn, a: CommitArgs) -> CliResult<i32> {
    let mut pairs: Vec<(&str, String)> = vec![("container", a.container.clone()), ("pause", a.pause.to_string())];
    if let Some(r) = &a.reference {
        let (repo, tag) = r.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((r.as_str(), ""));
        pairs.push(("repo", repo.into()));
        if !tag.is_empty() {
            pairs.push(("tag", tag.into()));
        }
    }
    if let Some(m) = &a.message {
        pairs.push(("comment", m.clone()));
    }
    if let Some(au) = &a.author {
        pairs.push(("author", au.clone()));
    }
    for c in &a.change {
        pairs.push(("changes", c.clone()));
    }
    let v = conn.post(&format!("/commit?{}", query(pairs.iter().map(|(k, v)| (*k, v.as_str())))), None).await?;
    println!("{}", v.get("Id").and_then(Value::as_str).unwrap_or_default());
    Ok(0)
}

/// `berth info`.
pub async fn info(conn: Conn, a: InfoArgs) -> CliResult<i32> {
    let v = conn.get("/info").await?;
    if let Some(f) = a.format.as_deref() {
        println!("{}", if f == "json" { v.to_string() } else { super::template::Template::parse(f)?.render(&v)? });
        return Ok(0);
    }
    let s =
        |k: &str| v.get(k).map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string())).unwrap_or_default();
    println!("Client:\n Version:    {}\n Context:    default\n", env!("CARGO_PKG_VERSION"));
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    println!(" Logging Driver: {}", s("LoggingDriver"));
    println!(" Cgroup Driver: {}", s("CgroupDriver"));
    println!(" Cgroup Version: {}", s("CgroupVersion"));
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" OSType: {}", s("OSType"));
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(" Total Memory: {}", binary_size(v.get("MemTotal").and_then(Value::as_u64).unwrap_or(0)));
    println!(" Name: {}", s("Name"));
    println!(" Docker Root Dir: {}", s("DockerRootDir"));
    Ok(0)
}

/// `berth version`.
pub async fn version(conn: Conn, a: InfoArgs) -> CliResult<i32> {
    let v = conn.get("/version").await?;
    if let Some(f) = a.format.as_deref() {
        let doc = serde_json::json!({"Client": {"Version": env!("CARGO_PKG_VERSION"), "ApiVersion": "1.47", "Os": "linux", "Arch": std::env::consts::ARCH}, "Server": v});
        println!("{}", if f == "json" { doc.to_string() } else { super::template::Template::parse(f)?.render(&doc)? });
        return Ok(0);
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    println!(
        "Client:\n Version:           {}\n API version:       1.47\n OS/Arch:           linux/{}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    println!("Server: berth\n Engine:\n  Version:          {}\n  API version:      {} (minimum version {})\n  OS/Arch:          {}/{}\n  Kernel version:   {}", s("Version"), s("ApiVersion"), s("MinAPIVersion"), s("Os"), s("Arch"), s("KernelVersion"));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_and_sizes() {
        assert_eq!(split_remote("web:/etc/hosts"), Some(("web", "/etc/hosts")));
        assert_eq!(split_remote("/tmp/a:b"), None);
        assert_eq!(split_remote("./x"), None);
        assert_eq!(split_remote("file"), None);
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(1536 * 1024), "1.5MiB");
    }

    #[test]
    fn extraction_refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "out", "/").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "out/etc-owned", &b"hi"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        assert!(extract(&data[..], &dest, None).is_err(), "a file written through a symlink out must be refused");
        assert!(!Path::new("/etc-owned").exists());
    }
}
