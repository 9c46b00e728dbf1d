//! `berth history` (`image history`): an image's layers and the
//! instructions that made them, newest first, as Docker prints them.

use std::io::Write;

use berth_image::store::short;
use clap::Args;

use crate::image_cmd::{ago, fail, human, open, parse_rfc3339, print_table, StoreArgs};

/// `berth history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Image (name or id).
    pub image: String,
    /// Print sizes and dates in human readable format.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub human: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: `json` for one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
}

/// Docker cuts CREATED BY at 45 characters with an ellipsis.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// `berth history`.
pub fn history(args: &StoreArgs, a: HistoryArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let image = match store.resolve(&a.image) {
        Ok(i) => i,
        Err(_) => return fail(format!("No such image: {}", a.image)),
    };
    let entries = match store.history(&image) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    let id_of = |d: &Option<berth_image::Digest>| match d {
        Some(d) if a.no_trunc => d.to_string(),
        Some(d) => short(d),
        None => "<missing>".to_string(),
    };
    if a.quiet {
        for e in &entries {
            let _ = writeln!(out, "{}", id_of(&e.id));
        }
        return 0;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let created = if a.human { ago(e.created.as_deref()) } else { e.created.clone().unwrap_or_default() };
            let by = e.created_by.replace(['\n', '\t'], " ");
            let by = if a.no_trunc { by } else { ellipsis(&by, 45) };
            let size = if a.human { human(e.size) } else { e.size.to_string() };
            vec![id_of(&e.id), created, by, size, e.comment.clone()]
        })
        .collect();
    if matches!(a.format.as_deref(), Some("json") | Some("{{json .}}")) {
        for (r, e) in rows.iter().zip(&entries) {
            let v = serde_json::json!({
                "ID": r[0], "CreatedSince": r[1], "CreatedAt": e.created.clone().unwrap_or_default(),
                "CreatedBy": r[2], "Size": r[3], "Comment": r[4],
                "Created": e.created.as_deref().and_then(parse_rfc3339).unwrap_or(0),
            });
            let _ = writeln!(out, "{v}");
        }
        return 0;
    }
    print_table(&mut out, &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], &rows);
    0
}
