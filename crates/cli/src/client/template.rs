//! The subset of Go templates that `--format` is used with in practice:
//! `{{.Field.Sub}}`, `{{.}}`, `{{json .X}}`, `{{index .X "key"}}`,
//! `{{upper .X}}`/`{{lower .X}}`, `\t`/`\n` escapes and the `table` prefix.
//! Values print as Go prints them (`<no value>` for a missing key, `[a b]`
//! for lists, `map[k:v]` for objects). A full Go template engine is far
//! more than these flags need, and no Rust crate implements Go's; anything
//! else is refused with a clear error rather than printed wrong.

use serde_json::Value;

use super::{CliError, CliResult};

/// One parsed piece of a template.
#[derive(Debug)]
enum Piece {
    Text(String),
    Action(String),
}

/// A parsed `--format` template.
#[derive(Debug)]
pub struct Template {
    pieces: Vec<Piece>,
    /// The `table` prefix: print a header row first.
    pub table: bool,
}

impl Template {
    /// Parses `format` (after docker's `table` and escape handling).
    pub fn parse(format: &str) -> CliResult<Template> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest.trim_start()),
            _ => (false, format),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut pieces = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| bad(format, "unclosed action"))?;
            pieces.push(Piece::Action(after[..end].trim().trim_matches('-').trim().to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        let t = Template { pieces, table };
        // Check every action once against an empty value, so a typo fails
        // before any output.
        t.render(&Value::Null).map_err(|e| match e {
            CliError::Other(m) => CliError::Other(m),
            other => other,
        })?;
        Ok(t)
    }

    /// Renders the template for `v`.
    pub fn render(&self, v: &Value) -> CliResult<String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action(a) => out.push_str(&action(a, v)?),
            }
        }
        Ok(out)
    }

    /// The header row of a `table` template: each `{{.Field}}` becomes
    /// `headers(Field)`.
    pub fn header(&self, headers: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action(a) => {
                    let field = a.rsplit(' ').next().unwrap_or(a).trim_start_matches('.');
                    out.push_str(&headers(field));
                }
            }
        }
        out
    }
}

fn bad(format: &str, why: &str) -> CliError {
    CliError::Other(format!("template parsing error: {why} in {format:?}"))
}

/// Evaluates one action.
fn action(a: &str, v: &Value) -> CliResult<String> {
    let words = split_words(a);
    match words.as_slice() {
        [path] if path.starts_with('.') => Ok(lookup(v, path).map_or_else(|| "<no value>".into(), go_string)),
        ["json", path] => Ok(lookup(v, path).map_or_else(|| "null".into(), |x| x.to_string())),
        ["upper", path] => Ok(lookup(v, path).map(go_string).unwrap_or_default().to_uppercase()),
        ["lower", path] => Ok(lookup(v, path).map(go_string).unwrap_or_default().to_lowercase()),
        ["index", path, keys @ ..] if !keys.is_empty() => {
            let mut cur = lookup(v, path);
            for k in keys {
                let k = k.trim_matches('"');
                cur = cur.and_then(|c| match c {
                    Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
                    other => other.get(k),
                });
            }
            Ok(cur.map_or_else(|| "<no value>".into(), go_string))
        }
        _ => Err(CliError::Other(format!(
            "template: unsupported action {{{{{a}}}}}: berth's --format knows .Field, json, index, upper and lower"
        ))),
    }
}

/// Splits an action into words, keeping quoted strings whole.
fn split_words(a: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = a.trim();
    while !rest.is_empty() {
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').map_or(rest.len(), |i| i + 2);
            out.push(&rest[..end]);
            rest = rest[end..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    out
}

/// `.A.B` inside `v`; `.` is `v` itself. Null along the way is a missing value.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.strip_prefix('.')?;
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        cur = cur.get(part)?;
    }
    Some(cur)
}

/// Go's `fmt.Print` of a decoded JSON value.
fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_string).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let items: Vec<String> = keys.iter().map(|k| format!("{k}:{}", go_string(&o[k.as_str()]))).collect();
            format!("map[{}]", items.join(" "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_json_index() {
        let v = json!({"Id": "abc", "State": {"Status": "running", "Pid": 7}, "Config": {"Labels": {"a.b": "x"}, "Cmd": ["sh", "-c"]}, "N": null});
        let r = |f: &str| Template::parse(f).unwrap().render(&v).unwrap();
        assert_eq!(r("{{.Id}} {{.State.Status}} {{.State.Pid}}"), "abc running 7");
        assert_eq!(r("{{json .Config.Cmd}}"), r#"["sh","-c"]"#);
        assert_eq!(r(r#"{{index .Config.Labels "a.b"}}"#), "x");
        assert_eq!(r("{{.Config.Cmd}}|{{.Missing}}|{{.N}}"), "[sh -c]|<no value>|<nil>");
        assert_eq!(r("{{upper .State.Status}}\\t{{ .Id }}"), "RUNNING\tabc");
        assert_eq!(r("{{.Config.Labels}}"), "map[a.b:x]");
    }

    #[test]
    fn table_prefix_and_errors() {
        let t = Template::parse("table {{.ID}}\\t{{.Names}}").unwrap();
        assert!(t.table);
        assert_eq!(t.header(|f| f.to_uppercase()), "ID\tNAMES");
        assert!(Template::parse("{{range .X}}{{end}}").is_err());
        assert!(Template::parse("{{.X").is_err());
    }
}
