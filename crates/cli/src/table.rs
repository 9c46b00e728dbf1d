//! Column tables as Go's `text/tabwriter` prints them for docker and runc:
//! every column but the last padded to its widest cell plus three spaces,
//! and to at least `min_width` (docker uses 10, runc 12).

/// Renders `rows` (header first, if any) as aligned text, one line each.
pub fn render(rows: &[Vec<String>], min_width: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            let w = rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0);
            (w + 3).max(min_width)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count())));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Docker's tables on stdout.
pub fn print_docker(rows: &[Vec<String>]) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(render(rows, 10).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_like_tabwriter() {
        let rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()], vec!["local".into(), "data".into()]];
        assert_eq!(render(&rows, 10), "DRIVER    VOLUME NAME\nlocal     data\n");
        let rows = vec![vec!["CONTAINER ID".to_string(), "X".into()], vec!["abc".into(), "".into()]];
        assert_eq!(render(&rows, 10), "CONTAINER ID   X\nabc\n");
    }
}
