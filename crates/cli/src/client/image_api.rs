//! Image verbs through a daemon. A running `berth serve` holds its root's
//! image store (the metadata database takes an exclusive lock), so when
//! the store is held — or when `-H`/`DOCKER_HOST` names a daemon — `pull`,
//! `images`, `image inspect`, `tag` and `rmi` go through the API instead
//! of opening the store, with the same output as the local verbs.

use std::os::fd::AsFd;
use std::path::Path;

use serde_json::Value;

use super::{ago, enc, filters_json, print_table, query, CliError, CliResult, Conn, DaemonArgs};
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
            c.map(Some).ok_or_else(|| {
                CliError::Other(format!(
                    "Cannot connect to the berth daemon at {}. Is the daemon running?",
                    d.host.clone().unwrap_or_default()
                ))
            })
        });
    }
    if !store_held(root) {
        return Ok(None);
    }
    let held = || {
        CliError::Other(format!(
            "the image store under {} is in use by another process (is a berth daemon with another socket using it?)",
            root.display()
        ))
    };
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

/// Prints a daemon's JSON progress stream (pull, push) as docker does
/// when not on a terminal: a line per layer status change, every other
/// status as it comes; an `error` message ends it as a failure. Returns
/// the `aux` documents.
pub async fn print_progress(
    resp: hyper::Response<hyper::body::Incoming>,
    stdout: bool,
    quiet: bool,
) -> CliResult<Vec<Value>> {
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    let mut aux = Vec::new();
    let say = |line: String| {
        if stdout {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    super::hijack::json_lines(resp.into_body(), |v| {
        if let Some(err) = v.get("error").and_then(Value::as_str) {
            return Err(CliError::Daemon(err.to_string()));
        }
        if let Some(a) = v.get("aux") {
            aux.push(a.clone());
            return Ok(());
        }
        if quiet {
            return Ok(());
        }
        let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
        match v.get("id").and_then(Value::as_str) {
            // Byte counts would flood a log: a layer's line is printed
            // when its status changes.
            Some(id) if last.get(id).map(String::as_str) != Some(status) => {
                last.insert(id.to_string(), status.to_string());
                say(format!("{id}: {status}"));
            }
            Some(_) => {}
            None if !status.is_empty() => say(status.to_string()),
            None => {}
        }
        Ok(())
    })
    .await?;
    Ok(aux)
}

/// Pulls through the daemon, progress on stdout (`berth pull`) or stderr
/// (`berth run`).
pub async fn pull_to(conn: &Conn, image: &str, platform: Option<&str>, quiet: bool, stdout: bool) -> CliResult<()> {
    let mut pairs = vec![("fromImage", image)];
    if let Some(p) = platform {
        pairs.push(("platform", p));
    }
    let auth = registry_auth_header(image);
    let headers: Vec<(&str, String)> = auth.into_iter().map(|a| ("X-Registry-Auth", a)).collect();
    let resp = super::hijack::request_with(
        conn,
        "POST",
        &format!("/images/create?{}", query(pairs)),
        &headers,
        super::hijack::ReqBody::Empty,
        false,
    )
    .await?;
    print_progress(resp, stdout, quiet).await.map(|_| ())
}

/// docker's `X-Registry-Auth` for the registry `image` names, from this
/// user's docker config.json (as the docker CLI sends it); none without
/// credentials.
fn registry_auth_header(image: &str) -> Option<String> {
    use base64::Engine as _;
    let r = berth_image::registry::ImageRef::parse(image).ok()?;
    let reg = berth_image::registry::Registry::new(Default::default());
    match reg.credentials_for(r.registry()) {
        berth_image::registry::Credentials::Basic { username, password } => {
            let j = serde_json::json!({"username": username, "password": password, "serveraddress": r.registry()});
            Some(base64::engine::general_purpose::URL_SAFE.encode(j.to_string()))
        }
        berth_image::registry::Credentials::Anonymous => None,
    }
}

/// `berth pull` through the daemon.
pub async fn pull(conn: Conn, a: PullArgs) -> CliResult<i32> {
    pull_to(&conn, &a.name, a.platform.as_deref(), a.quiet, true).await?;
    if a.quiet {
        println!("{}", a.name);
    }
    Ok(0)
}

/// `berth push` through the daemon (credentials from this user's docker
/// config, as the docker CLI sends them).
pub async fn push(conn: Conn, a: crate::registry_cmd::PushArgs) -> CliResult<i32> {
    if a.all_tags {
        return Err(CliError::Other("push --all-tags does not go through the daemon yet: push each tag".into()));
    }
    let r = berth_image::registry::ImageRef::parse(&a.name).map_err(|e| CliError::Other(e.to_string()))?;
    let explicit_tag = a.name.rsplit('/').next().is_some_and(|last| last.contains(':'));
    if !explicit_tag && !a.quiet {
        println!("Using default tag: latest");
    }
    let name = format!("{}/{}", r.registry(), r.repository());
    let tag = r.tag().unwrap_or("latest").to_string();
    let headers: Vec<(&str, String)> =
        registry_auth_header(&a.name).into_iter().map(|x| ("X-Registry-Auth", x)).collect();
    let resp = super::hijack::request_with(
        &conn,
        "POST",
        &format!("/images/{}/push?{}", enc(&name), query([("tag", tag.as_str())])),
        &headers,
        super::hijack::ReqBody::Empty,
        false,
    )
    .await?;
    print_progress(resp, true, a.quiet).await?;
    if a.quiet {
        println!("{}", r.familiar());
    }
    Ok(0)
}

/// `berth import` through the daemon: the tarball streams in the body.
pub async fn import(conn: Conn, a: crate::import_cmd::ImportArgs) -> CliResult<i32> {
    if a.file.starts_with("http://") || a.file.starts_with("https://") {
        return Err(CliError::Other(
            "importing from a URL is not supported: download the tarball and import the file".into(),
        ));
    }
    let input: Box<dyn std::io::Read + Send> = if a.file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&a.file).map_err(|e| CliError::Other(format!("open {}: {e}", a.file)))?)
    };
    let mut pairs: Vec<(&str, String)> = vec![("fromSrc", "-".into())];
    if let Some(r) = &a.reference {
        let (repo, tag) = r.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((r.as_str(), ""));
        pairs.push(("repo", repo.to_string()));
        if !tag.is_empty() {
            pairs.push(("tag", tag.to_string()));
        }
    }
    for c in &a.change {
        pairs.push(("changes", c.clone()));
    }
    if let Some(m) = &a.message {
        pairs.push(("message", m.clone()));
    }
    if let Some(p) = &a.platform {
        pairs.push(("platform", p.clone()));
    }
    let q = query(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    let resp = super::hijack::request_with(
        &conn,
        "POST",
        &format!("/images/create?{q}"),
        &[],
        super::hijack::ReqBody::Stream(input),
        false,
    )
    .await?;
    let v = super::hijack::read_json(resp).await?;
    println!("{}", v.get("status").and_then(Value::as_str).unwrap_or_default());
    Ok(0)
}

/// `berth save` through the daemon (docker-archive only, as docker's API).
pub async fn save(conn: Conn, a: crate::archive_cmd::SaveArgs) -> CliResult<i32> {
    if a.format != "docker-archive" {
        return Err(CliError::Other(format!(
            "save --format {} does not go through the daemon: the API makes docker-archives",
            a.format
        )));
    }
    if a.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(CliError::Other("cowardly refusing to save to a terminal. Use the -o flag or redirect".into()));
    }
    let q = query(a.images.iter().map(|n| ("names", n.as_str())));
    let resp = super::hijack::request(&conn, "GET", &format!("/images/get?{q}"), None, false).await?;
    super::container_cmd::save_body(resp.into_body(), a.output.as_deref()).await?;
    Ok(0)
}

/// `berth load` through the daemon: the archive streams in the body.
pub async fn load(conn: Conn, a: crate::archive_cmd::LoadArgs) -> CliResult<i32> {
    let input: Box<dyn std::io::Read + Send> = match &a.input {
        Some(p) if p.is_dir() => {
            return Err(CliError::Other(
                "loading an OCI layout directory does not go through the daemon: stop it, or load an archive".into(),
            ))
        }
        Some(p) => Box::new(std::fs::File::open(p).map_err(|e| CliError::Other(format!("open {}: {e}", p.display())))?),
        None => Box::new(std::io::stdin()),
    };
    let resp =
        super::hijack::request_with(&conn, "POST", "/images/load", &[], super::hijack::ReqBody::Stream(input), false)
            .await?;
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.map_err(|e| CliError::Other(e.to_string()))?.to_bytes();
    for line in body.split(|&b| b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<Value>(line) {
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                return Err(CliError::Daemon(e.to_string()));
            }
            if let Some(s) = v.get("stream").and_then(Value::as_str) {
                print!("{s}");
            }
        }
    }
    Ok(0)
}

/// `berth history` through the daemon.
pub async fn history(conn: Conn, a: crate::history_cmd::HistoryArgs) -> CliResult<i32> {
    let v = conn.get(&format!("/images/{}/history", enc(&a.image))).await?;
    let rows: Vec<crate::history_cmd::Row> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| crate::history_cmd::Row {
            id: r.get("Id").and_then(Value::as_str).filter(|i| *i != "<missing>").map(String::from),
            created: r.get("Created").and_then(Value::as_i64).filter(|c| *c > 0),
            created_by: r.get("CreatedBy").and_then(Value::as_str).unwrap_or_default().to_string(),
            size: r.get("Size").and_then(Value::as_u64).unwrap_or(0),
            comment: r.get("Comment").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
        .collect();
    crate::history_cmd::print(&rows, &a);
    Ok(0)
}

/// `berth images` through the daemon.
pub async fn images(conn: Conn, a: ListArgs) -> CliResult<i32> {
    let q =
        if a.filter.is_empty() { String::new() } else { query([("filters", filters_json(&a.filter, None)?.as_str())]) };
    let list = conn.get(&format!("/images/json?{q}")).await?;
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut items: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|i| std::cmp::Reverse(i.get("Created").and_then(Value::as_i64).unwrap_or(0)));
    let want = a.repository.as_deref();
    for i in &items {
        let full = i.get("Id").and_then(Value::as_str).unwrap_or_default();
        let id =
            if a.no_trunc { full.to_string() } else { full.trim_start_matches("sha256:").chars().take(12).collect() };
        let created = ago(i.get("Created").and_then(Value::as_i64).unwrap_or(0));
        let size = human(i.get("Size").and_then(Value::as_u64).unwrap_or(0));
        let tags: Vec<&str> =
            i.get("RepoTags").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let digests: Vec<&str> =
            i.get("RepoDigests").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| t.rsplit_once(':').map_or((t.to_string(), String::new()), |(r, t)| (r.into(), t.into())))
                .collect()
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
    super::container_cmd::print_inspected(out, None)?;
    Ok(code)
}

/// `berth tag` through the daemon.
pub async fn tag(conn: Conn, a: TagArgs) -> CliResult<i32> {
    let (repo, tag) = match a.target.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((r, t)) => (r.to_string(), t.to_string()),
        None => (a.target.clone(), "latest".to_string()),
    };
    conn.post(
        &format!("/images/{}/tag?{}", enc(&a.source), query([("repo", repo.as_str()), ("tag", tag.as_str())])),
        None,
    )
    .await?;
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
    let items: Vec<&Value> =
        v.get("ImagesDeleted").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
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
