//! `berth system …`: `df` (disk usage by images, containers, volumes and
//! build cache, as Docker's table).
//!
//! Images from the image store; containers from the engine's database on
//! the same root (their writable layers); volumes and the build cache are
//! not counted yet.

use std::collections::HashMap;
use std::io::Write;

use berth_image::store::{short, ImageStore};
use clap::{Args, Subcommand};

use crate::image_cmd::{ago, created_of, fail, human, open, print_table, split_tag, StoreArgs};

/// `berth system …`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage.
    Df(DfArgs),
}

/// `berth system df`.
#[derive(Debug, Args)]
pub struct DfArgs {
    /// Show detailed information on space usage.
    #[arg(short, long)]
    pub verbose: bool,
    /// Output format: `json` for one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
}

/// Runs a `system` subcommand.
pub fn system(args: &StoreArgs, cmd: SystemCommand) -> i32 {
    match cmd {
        SystemCommand::Df(a) => df(args, a),
    }
}

/// Space used by images: each layer snapshot counted once however many
/// images share it.
struct ImageUsage {
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

fn image_usage(store: &ImageStore, list: &[(berth_image::images::ImageRecord, Vec<String>)]) -> ImageUsage {
    let mut layers: HashMap<&berth_image::Digest, u64> = HashMap::new();
    for (rec, _) in list {
        for l in &rec.layers {
            layers.entry(&l.chain_id).or_insert_with(|| store.layer_size(&l.chain_id));
        }
    }
    let size = layers.values().sum();
    // No container uses an image until the engine runs containers.
    ImageUsage { total: list.len(), active: 0, size, reclaimable: size }
}

/// Bytes under `dir` (regular files, not following links).
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

fn percent(part: u64, whole: u64) -> String {
    (part * 100).checked_div(whole).map(|p| format!(" ({p}%)")).unwrap_or_default()
}

/// `berth system df`.
pub fn df(args: &StoreArgs, a: DfArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let list = match store.db().list() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut u = image_usage(&store, &list);
    // Containers of an engine on this root: their images are in use, their
    // writable layers take space.
    let engine_paths = berth_engine::paths::Paths { root: args.root.clone(), run_root: std::path::PathBuf::new() };
    let containers = berth_engine::db::ContainerDb::open(&args.root).and_then(|db| db.list()).unwrap_or_default();
    let is_running = |id: &str| {
        berth_engine::monitor::load_state(&engine_paths.container(id)).status == berth_engine::record::Status::Running
    };
    let running = containers.iter().filter(|c| is_running(&c.id)).count();
    let upper_size: u64 = containers.iter().map(|c| dir_size(&engine_paths.container(&c.id).upper())).sum();
    let stopped_size: u64 = containers
        .iter()
        .filter(|c| !is_running(&c.id))
        .map(|c| dir_size(&engine_paths.container(&c.id).upper()))
        .sum();
    let used: std::collections::HashSet<&str> = containers.iter().map(|c| c.image_id.as_str()).collect();
    u.active = list.iter().filter(|(r, _)| used.contains(r.id.to_string().as_str())).count();
    let mut used_layers: HashMap<&berth_image::Digest, u64> = HashMap::new();
    for (rec, _) in list.iter().filter(|(r, _)| used.contains(r.id.to_string().as_str())) {
        for l in &rec.layers {
            used_layers.entry(&l.chain_id).or_insert_with(|| store.layer_size(&l.chain_id));
        }
    }
    u.reclaimable = u.size.saturating_sub(used_layers.values().sum());
    let rows = vec![
        vec![
            "Images".to_string(),
            u.total.to_string(),
            u.active.to_string(),
            human(u.size),
            format!("{}{}", human(u.reclaimable), percent(u.reclaimable, u.size)),
        ],
        vec![
            "Containers".into(),
            containers.len().to_string(),
            running.to_string(),
            human(upper_size),
            format!("{}{}", human(stopped_size), percent(stopped_size, upper_size)),
        ],
        vec!["Local Volumes".into(), "0".into(), "0".into(), "0B".into(), "0B".into()],
        vec!["Build Cache".into(), "0".into(), "0".into(), "0B".into(), "0B".into()],
    ];
    let mut out = std::io::stdout().lock();
    if matches!(a.format.as_deref(), Some("json") | Some("{{json .}}")) {
        for r in &rows {
            let v = serde_json::json!({
                "Type": r[0], "TotalCount": r[1], "Active": r[2], "Size": r[3], "Reclaimable": r[4]
            });
            let _ = writeln!(out, "{v}");
        }
        return 0;
    }
    if !a.verbose {
        print_table(&mut out, &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows);
        return 0;
    }
    // -v: per image, with the space shared with other images.
    let mut users: HashMap<&berth_image::Digest, usize> = HashMap::new();
    for (rec, _) in &list {
        for l in &rec.layers {
            *users.entry(&l.chain_id).or_default() += 1;
        }
    }
    let mut image_rows = Vec::new();
    for (rec, tags) in &list {
        let (mut shared, mut unique) = (0u64, 0u64);
        for l in &rec.layers {
            let s = store.layer_size(&l.chain_id);
            if users.get(&l.chain_id).copied().unwrap_or(0) > 1 {
                shared += s;
            } else {
                unique += s;
            }
        }
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter().map(|t| split_tag(t)).collect()
        };
        for (repo, tag) in names {
            image_rows.push(vec![
                repo,
                tag,
                short(&rec.id),
                ago(created_of(&store, rec).as_deref()),
                human(shared + unique),
                human(shared),
                human(unique),
                "0".into(),
            ]);
        }
    }
    let _ = writeln!(out, "Images space usage:\n");
    print_table(
        &mut out,
        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
        &image_rows,
    );
    let _ = writeln!(out, "\nContainers space usage:\n");
    print_table(
        &mut out,
        &["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"],
        &[],
    );
    let _ = writeln!(out, "\nLocal Volumes space usage:\n");
    print_table(&mut out, &["VOLUME NAME", "LINKS", "SIZE"], &[]);
    let _ = writeln!(out, "\nBuild cache usage: 0B\n");
    0
}
