//! `berth volume create|ls|inspect|rm|prune`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::container_cmd::{confirm, print_formatted};
use super::template::Template;
use super::{enc, filters_json, print_table, query, CliResult, Conn};

/// `berth volume …`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(InspectArgs),
    /// Remove one or more volumes.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes.
    Prune(PruneArgs),
}

/// `volume create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Volume driver name.
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume (KEY=VALUE).
    #[arg(long)]
    pub label: Vec<String>,
    /// Set driver specific options (KEY=VALUE).
    #[arg(short, long = "opt")]
    pub opt: Vec<String>,
    /// Volume name (generated when omitted).
    pub name: Option<String>,
}

/// `volume ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    pub quiet: bool,
    /// Provide filter values (e.g. dangling=true, label=KEY, name=NAME).
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Format output: table, json, or a Go template.
    #[arg(long)]
    pub format: Option<String>,
}

/// `volume inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a Go template.
    #[arg(short, long)]
    pub format: Option<String>,
    /// Volume names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `volume rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of one or more volumes.
    #[arg(short, long)]
    pub force: bool,
    /// Volume names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `volume prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. label=KEY).
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

fn kv(items: &[String]) -> serde_json::Map<String, Value> {
    items
        .iter()
        .map(|i| {
            let (k, v) = i.split_once('=').unwrap_or((i.as_str(), ""));
            (k.to_string(), json!(v))
        })
        .collect()
}

/// Runs a volume verb.
pub async fn run(conn: Conn, c: VolumeCommand) -> CliResult<i32> {
    match c {
        VolumeCommand::Create(a) => {
            let mut body = json!({"Driver": a.driver, "Labels": kv(&a.label), "DriverOpts": kv(&a.opt)});
            if let Some(n) = &a.name {
                body["Name"] = json!(n);
            }
            let v = conn.post("/volumes/create", Some(body)).await?;
            println!("{}", v.get("Name").and_then(Value::as_str).unwrap_or_default());
            Ok(0)
        }
        VolumeCommand::Ls(a) => {
            let q = if a.filter.is_empty() {
                String::new()
            } else {
                query([("filters", filters_json(&a.filter, None)?.as_str())])
            };
            let v = conn.get(&format!("/volumes?{q}")).await?;
            let mut vols: Vec<Value> = v.get("Volumes").and_then(Value::as_array).cloned().unwrap_or_default();
            vols.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
            if a.quiet {
                for v in &vols {
                    println!("{}", v["Name"].as_str().unwrap_or_default());
                }
                return Ok(0);
            }
            match a.format.as_deref() {
                Some(f) if f != "table" => print_formatted(&vols, f, |h| h.to_uppercase())?,
                _ => {
                    let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                    for v in &vols {
                        rows.push(vec![
                            v["Driver"].as_str().unwrap_or("local").to_string(),
                            v["Name"].as_str().unwrap_or_default().to_string(),
                        ]);
                    }
                    print_table(&rows);
                }
            }
            Ok(0)
        }
        VolumeCommand::Inspect(a) => {
            let t = a.format.as_deref().filter(|f| *f != "json").map(Template::parse).transpose()?;
            let mut found = Vec::new();
            let mut code = 0;
            for n in &a.names {
                let name = enc(n);
                match conn.get(&format!("/volumes/{name}")).await {
                    Ok(v) => found.push(v),
                    Err(e) => {
                        eprintln!("{e}");
                        code = 1;
                    }
                }
            }
            super::container_cmd::print_inspected(found, t.as_ref())?;
            Ok(code)
        }
        VolumeCommand::Rm(a) => {
            let mut code = 0;
            for n in &a.names {
                let name = enc(n);
                let f = if a.force { "1" } else { "0" };
                match conn.delete(&format!("/volumes/{name}?force={f}")).await {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("{e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Prune(a) => {
            let warning = if a.all {
                "WARNING! This will remove all local volumes not used by at least one container."
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            };
            if !a.force && !confirm(warning) {
                return Ok(0);
            }
            let f = filters_json(&a.filter, a.all.then_some(("all", "true")))?;
            let v = conn.post(&format!("/volumes/prune?{}", query([("filters", f.as_str())])), None).await?;
            let deleted: Vec<&str> = v
                .get("VolumesDeleted")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !deleted.is_empty() {
                println!("Deleted Volumes:");
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
    }
}
