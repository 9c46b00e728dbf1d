//! Image verbs through a daemon. A running `berth serve` holds its root's
//! image store (the metadata database takes an exclusive lock), so when
//! the store is held — or when `-H`/`DOCKER_HOST` names a daemon — `pull`,
//! `images`, `image inspect`, `tag` and `rmi` go through the API instead
//! of opening the store, with the same output as the local verbs.

use std::os::fd::AsFd;
use std::path::Path;

use serde_json::Value;

use super::container_cmd::pretty;
use super::{ago, print_table, query, CliError, CliResult, Conn, DaemonArgs};
use crate::image_cmd::{human, ListArgs, PullArgs, RmiArgs, TagArgs};

/// True when another process holds `<root>/images.redb` (redb locks the
/// whole file with `flock` while a database is open).
fn store_held(root: &Path) -> bool {
    let Ok(f) = std::fs::File::open(root.join("images.redb")) else { return false };
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            drop(lock);
            false
        }
        Err((f, _)) => {
            let _ = f.as_fd();
            true
        }
    }
}

/// The daemon an image verb must go through, if any: the one `-H` or
/// `DOCKER_HOST` names; else, when the store under `root` is held, the
/// default daemon — if it is the one serving `root`.
pub fn image_daemon(d: &DaemonArgs, root: &Path) -> CliResult<Option<Conn>> {
    if super::explicit_host(d) {
        return super::connect_existing(d).and_then(|c| {
            c.map(Some).ok_or_else(|| CliError::Other(format!("Cannot connect to the berth daemon at {}. Is the daemon running?", d.host.clone().unwrap_or_default())))
        });
    }
    if !store_held(root) {
        return Ok(None);
    }
    let held = || CliError::Other(format!("the image store under {} is in use by another process (is a berth daemon with another socket using it?)", root.display()));
    let Some(conn) = super::connect_existing(d)? else { return Err(held()) };
    let rt = super::runtime()?;
    let info = rt.block_on(conn.get("/info"))?;
    let theirs = info.get("DockerRootDir").and_then(Value::as_str).map(std::path::PathBuf::from);
    let same = theirs.is_some_and(|t| std::fs::canonicalize(&t).ok() == std::fs::canonicalize(root).ok());
    if same {
        Ok(Some(conn))
    } else {
        Err(held())
    }
}

/// Runs an image verb against `conn`, printing errors docker's way.
pub fn run<Fut>(fut: Fut) -> i32
where
    Fut: std::future::Future<Output = CliResult<i32>>,
{
    match super::runtime().and_then(|rt| rt.block_on(fut)) {
        Ok(c) | Err(CliError::Exit(c)) => c,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `berth pull` through the daemon.
pub async fn pull(conn: Conn, a: PullArgs) -> CliResult<i32> {
    super::run_cmd::pull_image(&conn, &a.name, a.platform.as_deref(), a.quiet).await?;
    if a.quiet {
        println!("{}", a.name);
    }
    Ok(0)
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `berth images` through the daemon.
pub async fn images(conn: Conn, a: ListArgs) -> CliResult<i32> {
    if !a.filter.is_empty() {
        return Err(CliError::Other("--filter is not supported through the daemon yet (berth images filters the local store only)".into()));
    }
    let list = conn.get("/images/json").await?;
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut items: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|i| std::cmp::Reverse(i.get("Created").and_then(Value::as_i64).unwrap_or(0)));
    let want = a.repository.as_deref();
    for i in &items {
        let full = i.get("Id").and_then(Value::as_str).unwrap_or_default();
        let id = if a.no_trunc { full.to_string() } else { full.trim_start_matches("sha256:").chars().take(12).collect() };
        let created = ago(i.get("Created").and_then(Value::as_i64).unwrap_or(0));
        let size = human(i.get("Size").and_then(Value::as_u64).unwrap_or(0));
        let tags: Vec<&str> = i.get("RepoTags").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let digests: Vec<&str> = i.get("RepoDigests").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter().map(|t| t.rsplit_once(':').map_or((t.to_string(), String::new()), |(r, t)| (r.into(), t.into()))).collect()
        };
        for (repo, tag) in names {
            if let Some(w) = want {
                let (wr, wt) = w.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((w, ""));
                if repo != wr || (!wt.is_empty() && tag != wt) {
                    continue;
                }
            }
            let digest = digests
                .iter()
                .find(|d| d.starts_with(&format!("{repo}@")))
                .and_then(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
                .unwrap_or_else(|| "<none>".into());
            rows.push([repo, tag, digest, id.clone(), created.clone(), size.clone()]);
        }
    }
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r[3].clone()) {
                println!("{}", r[3]);
            }
        }
        return Ok(0);
    }
    if matches!(a.format.as_deref(), Some("json" | "{{json .}}")) {
        for r in &rows {
            let v = serde_json::json!({"Repository": r[0], "Tag": r[1], "Digest": r[2], "ID": r[3], "CreatedSince": r[4], "Size": r[5]});
            println!("{v}");
        }
        return Ok(0);
    }
    let mut header = vec!["REPOSITORY".to_string(), "TAG".to_string()];
    if a.digests {
        header.push("DIGEST".into());
    }
    header.extend(["IMAGE ID".to_string(), "CREATED".to_string(), "SIZE".to_string()]);
    let mut table = vec![header];
    for r in &rows {
        let mut c = vec![r[0].clone(), r[1].clone()];
        if a.digests {
            c.push(r[2].clone());
        }
        c.extend([r[3].clone(), r[4].clone(), r[5].clone()]);
        table.push(c);
    }
    print_table(&table);
    Ok(0)
}

/// `berth image inspect` through the daemon.
pub async fn inspect(conn: Conn, names: Vec<String>) -> CliResult<i32> {
    let mut out = Vec::new();
    let mut code = 0;
    for n in &names {
        match conn.get(&format!("/images/{}/json", enc(n))).await {
            Ok(v) => out.push(v),
            Err(CliError::Daemon(m)) => {
                eprintln!("Error: No such image: {n} ({m})");
                code = 1;
            }
            Err(e) => return Err(e),
        }
    }
    println!("{}", pretty(&Value::Array(out)));
    Ok(code)
}

/// `berth tag` through the daemon.
pub async fn tag(conn: Conn, a: TagArgs) -> CliResult<i32> {
    let (repo, tag) = match a.target.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((r, t)) => (r.to_string(), t.to_string()),
        None => (a.target.clone(), "latest".to_string()),
    };
    conn.post(&format!("/images/{}/tag?{}", enc(&a.source), query([("repo", repo.as_str()), ("tag", tag.as_str())])), None).await?;
    Ok(0)
}

/// `berth rmi` through the daemon.
pub async fn rmi(conn: Conn, a: RmiArgs) -> CliResult<i32> {
    let mut code = 0;
    for n in &a.images {
        match conn.delete(&format!("/images/{}?force={}", enc(n), if a.force { 1 } else { 0 })).await {
            Ok(v) => {
                for r in v.as_array().into_iter().flatten() {
                    if let Some(u) = r.get("Untagged").and_then(Value::as_str) {
                        println!("Untagged: {u}");
                    }
                    if let Some(d) = r.get("Deleted").and_then(Value::as_str) {
                        println!("Deleted: {d}");
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// The engine over `root`, in this process (for verbs whose answer is an
/// engine-wide computation when no daemon holds the store).
pub fn local_engine(root: &Path, d: &DaemonArgs) -> CliResult<berth_engine::Engine> {
    let exe = std::env::current_exe().map_err(|e| CliError::Other(format!("locating the berth binary: {e}")))?;
    let cfg = berth_engine::engine::EngineConfig {
        paths: berth_engine::paths::Paths { root: root.to_path_buf(), run_root: d.run_root.clone() },
        exe,
    };
    berth_engine::Engine::open(cfg).map_err(|e| CliError::Other(e.to_string()))
}

/// `berth image prune [-a] [-f]`: through the daemon when it holds the
/// store, else in-process; docker's prompt and output either way.
pub fn prune(root: &Path, d: &DaemonArgs, conn: Option<Conn>, a: crate::image_cmd::PruneArgs) -> i32 {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !a.force && !super::container_cmd::confirm(warning) {
        return 0;
    }
    let result: CliResult<Value> = match conn {
        Some(conn) => {
            let q = if a.all { query([("filters", r#"{"dangling":["false"]}"#)]) } else { String::new() };
            super::runtime().and_then(|rt| rt.block_on(conn.post(&format!("/images/prune?{q}"), None)))
        }
        None => local_engine(root, d).and_then(|e| {
            let (removed, bytes) = e.prune_images(a.all).map_err(|e| CliError::Other(e.to_string()))?;
            let items: Vec<Value> = removed
                .into_iter()
                .map(|r| match r {
                    berth_image::docker_view::Removed::Untagged(n) => serde_json::json!({"Untagged": n}),
                    berth_image::docker_view::Removed::Deleted(id) => serde_json::json!({"Deleted": id}),
                })
                .collect();
            Ok(serde_json::json!({"ImagesDeleted": items, "SpaceReclaimed": bytes}))
        }),
    };
    let v = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let items: Vec<&Value> = v.get("ImagesDeleted").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    if !items.is_empty() {
        println!("Deleted Images:");
        for i in items {
            if let Some(u) = i.get("Untagged").and_then(Value::as_str) {
                println!("untagged: {u}");
            }
            if let Some(d) = i.get("Deleted").and_then(Value::as_str) {
                println!("deleted: {d}");
            }
        }
        println!();
    }
    println!("Total reclaimed space: {}", human(v.get("SpaceReclaimed").and_then(Value::as_u64).unwrap_or(0)));
    0
}
