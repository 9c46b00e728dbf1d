//! Docker-style image verbs over the local image store: `pull`, `images`
//! (`image ls`), `image inspect`, `tag`, `rmi` (`image rm`), `image prune`.
//!
//! Until the daemon exists these work on the store directly (`--root`,
//! default `/var/lib/berth`); the verbs, flags, output and exit codes are
//! Docker's so they can later move behind the API unchanged.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use berth_image::images::ImageRecord;
use berth_image::manifest::Platform;
use berth_image::registry::{ImageRef, Registry, RegistryOptions};
use berth_image::store::{short, ImageStore, Progress, PullEvent};
use clap::{Args, Subcommand};

/// Options every image verb shares.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Root of berth's persistent state (images, containers).
    #[arg(long, env = "BERTH_ROOT", default_value = "/var/lib/berth")]
    pub root: std::path::PathBuf,
    /// Registry reachable over plain HTTP (host:port); repeatable.
    /// Loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
}

/// `berth pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    pub name: String,
    /// Platform to pull from a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `berth images` / `berth image ls`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only images of this repository (optionally :tag).
    pub repository: Option<String>,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show all images (accepted; berth keeps no intermediate images).
    #[arg(short, long)]
    pub all: bool,
    /// Output format: `json` for one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
    /// Filter: `dangling=true|false`, `label=KEY[=VALUE]`,
    /// `reference=PATTERN` (`*` globs), `before=IMAGE`, `since=IMAGE`; repeatable.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
}

/// `berth rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove (name or id).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove even if several names point at it.
    #[arg(short, long)]
    pub force: bool,
}

/// `berth tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG]
    pub source: String,
    /// TARGET_IMAGE[:TAG]
    pub target: String,
}

/// `berth image inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images to inspect.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `berth image prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all images no container uses, not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// `berth image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Download an image from a registry.
    Pull(PullArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Display detailed information on one or more images.
    Inspect(InspectArgs),
    /// Remove one or more images.
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Remove unused images and their data.
    Prune(PruneArgs),
    /// Upload an image to a registry.
    Push(crate::registry_cmd::PushArgs),
    /// Show the history of an image.
    History(crate::history_cmd::HistoryArgs),
    /// Import the contents from a tarball to create a filesystem image.
    Import(crate::import_cmd::ImportArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default).
    Save(crate::archive_cmd::SaveArgs),
    /// Load an image from a tar archive or STDIN.
    Load(crate::archive_cmd::LoadArgs),
}

/// Opens the image store under `--root`.
pub(crate) fn open(args: &StoreArgs) -> Result<ImageStore, String> {
    ImageStore::open(&args.root).map_err(|e| e.to_string())
}

/// Opens the store and lists its images, or prints the error and returns
/// the exit code.
/// Every image with the names pointing at it.
type Listing = Vec<(ImageRecord, Vec<String>)>;

fn open_list(args: &StoreArgs) -> Result<(ImageStore, Listing), i32> {
    let store = open(args).map_err(fail)?;
    let list = store.db().list().map_err(fail)?;
    Ok((store, list))
}

/// Prints a Docker-style error and returns exit code 1.
pub(crate) fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("Error response from daemon: {msg}");
    1
}

/// Runs an `image` subcommand.
pub fn image(args: &StoreArgs, cmd: ImageCommand) -> i32 {
    match cmd {
        ImageCommand::Pull(a) => pull(args, a),
        ImageCommand::Ls(a) => images(args, a),
        ImageCommand::Inspect(a) => inspect(args, a),
        ImageCommand::Rm(a) => rmi(args, a),
        ImageCommand::Tag(a) => tag(args, a),
        // Routed by main (it needs the engine, in-process or the daemon's).
        ImageCommand::Prune(_) => 1,
        ImageCommand::Push(a) => crate::registry_cmd::push(args, a),
        ImageCommand::History(a) => crate::history_cmd::history(args, a),
        ImageCommand::Import(a) => crate::import_cmd::import(args, a),
        ImageCommand::Save(a) => crate::archive_cmd::save(args, a),
        ImageCommand::Load(a) => crate::archive_cmd::load(args, a),
    }
}

/// Docker-like pull output: per-layer status lines, redrawn in place on a
/// terminal, printed as they happen otherwise.
pub(crate) struct PullPrinter {
    pub(crate) tty: bool,
    pub(crate) state: Mutex<Vec<(String, String)>>,
}

impl PullPrinter {
    /// Sets the status line of `id`: redrawn in place on a terminal;
    /// printed as a new line otherwise unless `redraw_only`.
    pub(crate) fn set(&self, id: &str, status: String, redraw_only: bool) {
        let Ok(mut st) = self.state.lock() else { return };
        let lines_before = st.len();
        match st.iter_mut().find(|(i, _)| i == id) {
            Some(e) => e.1 = status.clone(),
            None => st.push((id.to_string(), status.clone())),
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            if lines_before > 0 {
                let _ = write!(out, "\x1b[{lines_before}A");
            }
            for (i, s) in st.iter() {
                let _ = writeln!(out, "\x1b[2K{i}: {s}");
            }
        } else if !redraw_only {
            let _ = writeln!(out, "{id}: {status}");
        }
        let _ = out.flush();
    }
}

impl Progress for PullPrinter {
    fn event(&self, e: PullEvent) {
        match e {
            // Printed by `pull` itself, which knows the repository.
            PullEvent::Resolved { .. } => {}
            PullEvent::Waiting { id } => self.set(&id, "Pulling fs layer".into(), false),
            PullEvent::AlreadyExists { id } => self.set(&id, "Already exists".into(), false),
            PullEvent::Downloading { id, current, total } => {
                if self.tty {
                    self.set(&id, format!("Downloading {}", bar(current, total)), true);
                }
            }
            PullEvent::DownloadComplete { id } => self.set(&id, "Download complete".into(), false),
            PullEvent::Extracting { id } => self.set(&id, "Extracting".into(), false),
            PullEvent::PullComplete { id } => self.set(&id, "Pull complete".into(), false),
        }
    }
}

/// Docker's progress bar: `[=====>    ]  1.2MB/3.4MB`.
pub(crate) fn bar(current: u64, total: u64) -> String {
    let width = 50u64;
    let filled = (current.min(total) * width).checked_div(total).unwrap_or(0) as usize;
    let mut b = "=".repeat(filled);
    if filled < width as usize {
        b.push('>');
        b.push_str(&" ".repeat(width as usize - filled - 1));
    }
    format!("[{b}]  {}/{}", human(current), human(total))
}

/// Docker's human sizes: decimal units, 3 significant digits.
pub fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else if v >= 100.0 {
        format!("{v:.0}{}", units[u])
    } else if v >= 10.0 {
        format!("{v:.1}{}", units[u])
    } else {
        format!("{v:.2}{}", units[u])
    }
}

/// The async runtime registry verbs run on (two workers: transfers are
/// I/O bound, unpacking runs on blocking threads). Err is the exit code,
/// after printing why.
pub(crate) fn async_runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(format!("starting the async runtime: {e}")))
}

/// The registry client for the store's options.
pub(crate) fn registry_client(args: &StoreArgs) -> Arc<Registry> {
    Arc::new(Registry::new(RegistryOptions { insecure: args.insecure_registry.clone(), ..Default::default() }))
}

/// `berth pull`.
pub fn pull(args: &StoreArgs, a: PullArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let reference = match ImageRef::parse(&a.name) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let platform = match a.platform.as_deref().map(Platform::parse).transpose() {
        Ok(p) => p.unwrap_or_else(Platform::host),
        Err(e) => return fail(e),
    };
    let registry = registry_client(args);
    let printer: Arc<dyn Progress> = if a.quiet {
        Arc::new(berth_image::store::NoProgress)
    } else {
        Arc::new(PullPrinter { tty: std::io::stdout().is_terminal(), state: Mutex::new(Vec::new()) })
    };
    if !a.quiet {
        if reference.tag().is_some() && !a.name.contains(':') && reference.digest().is_none() {
            println!("Using default tag: latest");
        }
        let what = reference.digest().or(reference.tag()).unwrap_or("latest");
        println!("{what}: Pulling from {}", reference.repository());
    }
    let rt = match async_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(store.pull(registry, &reference, &platform, printer)) {
        Ok(out) => {
            let name = reference.familiar();
            if a.quiet {
                println!("{}", reference);
            } else {
                println!("Digest: {}", out.digest);
                if out.downloaded {
                    println!("Status: Downloaded newer image for {name}");
                } else {
                    println!("Status: Image is up to date for {name}");
                }
                println!("{reference}");
            }
            0
        }
        Err(e) => fail(e),
    }
}

/// Splits a full stored reference into Docker's REPOSITORY and TAG columns.
pub(crate) fn split_tag(full: &str) -> (String, String) {
    let r = ImageRef::parse(full).ok();
    match r {
        Some(r) => {
            let fam = r.familiar();
            match (fam.rsplit_once(':'), r.tag()) {
                (Some((repo, tag)), Some(t)) if tag == t => (repo.to_string(), tag.to_string()),
                _ => (fam, "<none>".into()),
            }
        }
        None => (full.to_string(), "<none>".into()),
    }
}

/// The image config's `created` time.
pub(crate) fn created_of(store: &ImageStore, rec: &ImageRecord) -> Option<String> {
    let cfg = store.content().read(&rec.id).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&cfg).ok()?;
    v.get("created").and_then(|c| c.as_str()).map(str::to_string)
}

/// "3 days ago", as Docker prints CREATED (go-units' HumanDuration).
pub(crate) fn ago(rfc3339: Option<&str>) -> String {
    let Some(t) = rfc3339.and_then(parse_rfc3339) else { return "N/A".into() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{} ago", berth_image::docker_view::human_duration(now.saturating_sub(t)))
}

/// Seconds since the epoch of an RFC 3339 UTC-ish timestamp (fractions and
/// offsets ignored beyond the date and time).
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    berth_engine::logs::parse_time(s).map(|t| t as u64)
}

/// `berth images`.
pub fn images(args: &StoreArgs, a: ListArgs) -> i32 {
    let (store, list) = match open_list(args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let filter = a.repository.as_deref().and_then(|r| ImageRef::parse(r).ok().map(|p| (p, r.contains(':'))));
    let mut filters = Vec::new();
    for f in &a.filter {
        match f.split_once('=') {
            Some((k, v)) => filters.push((k.to_string(), v.to_string())),
            None => return fail(format!("bad format of filter (expected name=value): {f}")),
        }
    }
    let mut rows: Vec<[String; 6]> = Vec::new();
    for (rec, tags) in &list {
        let id = if a.no_trunc { rec.id.to_string() } else { short(&rec.id) };
        let created = created_of(&store, rec);
        let size = human(store.unpacked_size(rec));
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter().map(|t| split_tag(t)).collect()
        };
        for (repo, tag) in names {
            match berth_image::docker_view::filter_matches(
                &store,
                &filters,
                rec,
                (!tags.is_empty()).then_some((repo.as_str(), tag.as_str())),
            ) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return fail(e),
            }
            if let Some((f, with_tag)) = &filter {
                let frepo = f.familiar();
                let (frepo_name, ftag) = frepo.rsplit_once(':').map_or((frepo.as_str(), ""), |(r, t)| (r, t));
                if repo != frepo_name || (*with_tag && tag != ftag) {
                    continue;
                }
            }
            let digest = rec
                .repo_digests
                .iter()
                .find(|d| split_tag(d).0 == repo || d.starts_with(&repo))
                .and_then(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
                .unwrap_or_else(|| "<none>".into());
            rows.push([repo, tag, digest, id.clone(), ago(created.as_deref()), size.clone()]);
        }
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r[3].clone()) {
                let _ = writeln!(out, "{}", r[3]);
            }
        }
        return 0;
    }
    if a.format.as_deref() == Some("json") || a.format.as_deref() == Some("{{json .}}") {
        for r in &rows {
            let v = serde_json::json!({
                "Repository": r[0], "Tag": r[1], "Digest": r[2], "ID": r[3], "CreatedSince": r[4], "Size": r[5]
            });
            let _ = writeln!(out, "{v}");
        }
        return 0;
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let cols: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![r[0].clone(), r[1].clone()];
            if a.digests {
                c.push(r[2].clone());
            }
            c.extend([r[3].clone(), r[4].clone(), r[5].clone()]);
            c
        })
        .collect();
    print_table(&mut out, &header, &cols);
    0
}

/// Prints a docker table (header, then rows).
pub fn print_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) {
    let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    all.extend(rows.iter().cloned());
    let _ = out.write_all(crate::table::render(&all, 10).as_bytes());
}

/// `berth image inspect`: Docker-shaped JSON array.
pub fn inspect(args: &StoreArgs, a: InspectArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut out = Vec::new();
    let mut code = 0;
    for name in &a.images {
        match berth_image::docker_view::inspect(&store, name) {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("Error: No such image: {name} ({e})");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_else(|_| "[]".into()));
    code
}

/// `berth tag`.
pub fn tag(args: &StoreArgs, a: TagArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let rec = match store.resolve(&a.source) {
        Ok(r) => r,
        Err(_) => return fail(format!("No such image: {}", a.source)),
    };
    let target = match ImageRef::parse(&a.target) {
        Ok(r) if r.digest().is_none() => r,
        Ok(_) => return fail("refusing to create a tag with a digest reference"),
        Err(e) => return fail(e),
    };
    match store.db().tag(&target.to_string(), &rec.id) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// `berth rmi`: untags a name; deletes the image (and GCs its data) once
/// no name points at it, or with `-f`.
pub fn rmi(args: &StoreArgs, a: RmiArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Containers of an engine on this root (none when it has no engine yet).
    let containers = match berth_engine::db::ContainerDb::open(&args.root) {
        Ok(db) => match db.list() {
            Ok(l) => l,
            Err(e) => return fail(e),
        },
        Err(e) => return fail(e),
    };
    let mut code = 0;
    for name in &a.images {
        if !a.force {
            if let Ok(rec) = store.resolve(name) {
                let tags = berth_image::docker_view::tags_of(&store, &rec.id).unwrap_or_default();
                let by_id = rec.id.hex().starts_with(name.trim_start_matches("sha256:"));
                let last_name = by_id || tags.len() <= 1;
                if let Some(c) = containers.iter().find(|c| c.image_id == rec.id.to_string()).filter(|_| last_name) {
                    code = fail(format!(
                        "conflict: unable to delete {} (must be forced) - image is being used by container {}",
                        short(&rec.id),
                        &c.id[..12]
                    ));
                    continue;
                }
            }
        }
        match rmi_one(&store, name, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                code = fail(e);
            }
        }
    }
    if let Err(e) = store.gc() {
        code = fail(e);
    }
    code
}

fn rmi_one(store: &ImageStore, name: &str, force: bool) -> Result<Vec<String>, String> {
    use berth_image::docker_view::Removed;
    let removed = berth_image::docker_view::remove(store, name, force).map_err(|e| match e {
        berth_image::Error::ImageNotFound(_) => format!("No such image: {name}"),
        other => other.to_string(),
    })?;
    Ok(removed
        .into_iter()
        .map(|r| match r {
            Removed::Untagged(n) => format!("Untagged: {n}"),
            Removed::Deleted(d) => format!("Deleted: {d}"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_like_docker() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(1_234), "1.23kB");
        assert_eq!(human(4_261_000), "4.26MB");
        assert_eq!(human(123_456_789), "123MB");
    }

    #[test]
    fn parses_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-25T06:04:51.123456789Z"), Some(1_795_586_691));
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
