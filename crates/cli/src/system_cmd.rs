//! `berth system df`: disk usage by images, containers, volumes and build
//! cache, as Docker's table. The numbers are Docker's `/system/df` answer:
//! from the daemon when one holds the store, else computed in-process by
//! the same engine code (`berth_api::system::disk_usage_json`).

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{ago, CliError, CliResult, DaemonArgs};
use crate::image_cmd::{human, print_table, StoreArgs};

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

/// Runs a `system` subcommand; `conn` is the daemon holding the store, if any.
pub fn system(args: &StoreArgs, daemon: &DaemonArgs, conn: Option<crate::client::Conn>, cmd: SystemCommand) -> i32 {
    let r = match cmd {
        SystemCommand::Df(a) => usage(args, daemon, conn).and_then(|v| print_df(&v, &a)),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// The `/system/df` document, from the daemon or computed here.
fn usage(args: &StoreArgs, daemon: &DaemonArgs, conn: Option<crate::client::Conn>) -> CliResult<Value> {
    if let Some(conn) = conn {
        return crate::client::runtime()?.block_on(conn.get("/system/df"));
    }
    let engine = crate::client::image_api::local_engine(&args.root, daemon)?;
    berth_api::system::disk_usage_json(&engine).map_err(|e| CliError::Other(e.to_string()))
}

fn percent(part: u64, whole: u64) -> String {
    (part * 100).checked_div(whole).map(|p| format!(" ({p}%)")).unwrap_or_default()
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn items<'a>(v: &'a Value, k: &str) -> Vec<&'a Value> {
    v.get(k).and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default()
}

/// Prints the summary (or `-v` details) docker's way, with docker's
/// arithmetic for what is reclaimable.
fn print_df(v: &Value, a: &DfArgs) -> CliResult<()> {
    let images = items(v, "Images");
    let containers = items(v, "Containers");
    let volumes = items(v, "Volumes");
    let layers = u(v, "LayersSize");
    let active_images: Vec<&&Value> =
        images.iter().filter(|i| i.get("Containers").and_then(Value::as_i64).unwrap_or(0) > 0).collect();
    let used: u64 = active_images.iter().map(|i| u(i, "Size").saturating_sub(u(i, "SharedSize"))).sum();
    let image_reclaim = layers.saturating_sub(used);
    let running = |c: &Value| c.get("State").and_then(Value::as_str) == Some("running");
    let ct_size: u64 = containers.iter().map(|c| u(c, "SizeRw")).sum();
    let ct_reclaim: u64 = containers.iter().filter(|c| !running(c)).map(|c| u(c, "SizeRw")).sum();
    let vsize = |x: &Value| x.pointer("/UsageData/Size").and_then(Value::as_u64).unwrap_or(0);
    let vrefs = |x: &Value| x.pointer("/UsageData/RefCount").and_then(Value::as_u64).unwrap_or(0);
    let vol_size: u64 = volumes.iter().map(|x| vsize(x)).sum();
    let vol_reclaim: u64 = volumes.iter().filter(|x| vrefs(x) == 0).map(|x| vsize(x)).sum();
    let rows = vec![
        vec![
            "Images".to_string(),
            images.len().to_string(),
            active_images.len().to_string(),
            human(layers),
            format!("{}{}", human(image_reclaim), percent(image_reclaim, layers)),
        ],
        vec![
            "Containers".into(),
            containers.len().to_string(),
            containers.iter().filter(|c| running(c)).count().to_string(),
            human(ct_size),
            format!("{}{}", human(ct_reclaim), percent(ct_reclaim, ct_size)),
        ],
        vec![
            "Local Volumes".into(),
            volumes.len().to_string(),
            volumes.iter().filter(|x| vrefs(x) > 0).count().to_string(),
            human(vol_size),
            format!("{}{}", human(vol_reclaim), percent(vol_reclaim, vol_size)),
        ],
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
        return Ok(());
    }
    if !a.verbose {
        print_table(&mut out, &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows);
        return Ok(());
    }
    let short = |id: &str| id.trim_start_matches("sha256:").chars().take(12).collect::<String>();
    let mut image_rows = Vec::new();
    for i in &images {
        let tags: Vec<String> = items(i, "RepoTags").iter().filter_map(|t| t.as_str().map(String::from)).collect();
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| t.rsplit_once(':').map_or((t.clone(), String::new()), |(r, t)| (r.into(), t.into())))
                .collect()
        };
        for (repo, tag) in names {
            image_rows.push(vec![
                repo,
                tag,
                short(i.get("Id").and_then(Value::as_str).unwrap_or_default()),
                ago(i.get("Created").and_then(Value::as_i64).unwrap_or(0)),
                human(u(i, "Size")),
                human(u(i, "SharedSize")),
                human(u(i, "Size").saturating_sub(u(i, "SharedSize"))),
                i.get("Containers").and_then(Value::as_i64).unwrap_or(0).to_string(),
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
    let ct_rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let cmd = c.get("Command").and_then(Value::as_str).unwrap_or_default();
            let cmd = if cmd.chars().count() > 20 {
                format!("{}…", cmd.chars().take(19).collect::<String>())
            } else {
                cmd.to_string()
            };
            vec![
                short(c.get("Id").and_then(Value::as_str).unwrap_or_default()),
                c.get("Image").and_then(Value::as_str).unwrap_or_default().to_string(),
                format!("\"{cmd}\""),
                items(c, "Mounts").len().to_string(),
                human(u(c, "SizeRw")),
                ago(c.get("Created").and_then(Value::as_i64).unwrap_or(0)),
                c.get("Status").and_then(Value::as_str).unwrap_or_default().to_string(),
                items(c, "Names")
                    .first()
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
            ]
        })
        .collect();
    print_table(
        &mut out,
        &["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"],
        &ct_rows,
    );
    let _ = writeln!(out, "\nLocal Volumes space usage:\n");
    let vol_rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|x| {
            vec![
                x.get("Name").and_then(Value::as_str).unwrap_or_default().to_string(),
                vrefs(x).to_string(),
                human(vsize(x)),
            ]
        })
        .collect();
    print_table(&mut out, &["VOLUME NAME", "LINKS", "SIZE"], &vol_rows);
    let _ = writeln!(out, "\nBuild cache usage: 0B\n");
    Ok(())
}
