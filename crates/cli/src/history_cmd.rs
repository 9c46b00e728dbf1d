//! `berth history` (`image history`): an image's layers and the
//! instructions that made them, newest first, as Docker prints them.

use std::io::Write;

use clap::Args;

use crate::image_cmd::{fail, human, open, parse_rfc3339, print_table, StoreArgs};

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

/// One history row, from the store or from the daemon's `/history`.
#[derive(Debug)]
pub struct Row {
    /// The image id of the row (the top one), full; `None` for `<missing>`.
    pub id: Option<String>,
    /// Unix seconds.
    pub created: Option<i64>,
    /// The instruction.
    pub created_by: String,
    /// Bytes of the layer.
    pub size: u64,
    /// The comment.
    pub comment: String,
}

/// `berth history` on the store.
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
    let rows: Vec<Row> = entries
        .into_iter()
        .map(|e| Row {
            id: e.id.map(|d| d.to_string()),
            created: e.created.as_deref().and_then(parse_rfc3339).map(|t| t as i64),
            created_by: e.created_by,
            size: e.size,
            comment: e.comment,
        })
        .collect();
    print(&rows, &a);
    0
}

/// Prints history rows docker's way (table, `-q`, `--format json`).
pub fn print(entries: &[Row], a: &HistoryArgs) {
    let mut out = std::io::stdout().lock();
    let id_of = |d: &Option<String>| match d {
        Some(d) if a.no_trunc => d.clone(),
        Some(d) => d.trim_start_matches("sha256:").chars().take(12).collect(),
        None => "<missing>".to_string(),
    };
    if a.quiet {
        for e in entries {
            let _ = writeln!(out, "{}", id_of(&e.id));
        }
        return;
    }
    let rfc = |t: Option<i64>| t.map(|t| berth_runtime::state::rfc3339(t, 0)).unwrap_or_default();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let created = match (a.human, e.created) {
                (true, Some(t)) => crate::client::ago(t),
                (true, None) => "N/A".to_string(),
                (false, t) => rfc(t),
            };
            let by = e.created_by.replace(['\n', '\t'], " ");
            let by = if a.no_trunc { by } else { ellipsis(&by, 45) };
            let size = if a.human { human(e.size) } else { e.size.to_string() };
            vec![id_of(&e.id), created, by, size, e.comment.clone()]
        })
        .collect();
    if matches!(a.format.as_deref(), Some("json") | Some("{{json .}}")) {
        for (r, e) in rows.iter().zip(entries) {
            let v = serde_json::json!({
                "ID": r[0], "CreatedSince": r[1], "CreatedAt": rfc(e.created),
                "CreatedBy": r[2], "Size": r[3], "Comment": r[4],
                "Created": e.created.unwrap_or(0),
            });
            let _ = writeln!(out, "{v}");
        }
        return;
    }
    print_table(&mut out, &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], &rows);
}
