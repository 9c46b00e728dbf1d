//! Images as Docker shows them: the `image inspect` document, `rmi`'s
//! untag-or-delete rule and report, and the short names users write.
//! Shared by berth's CLI and its Engine API server, so both answer alike.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::images::ImageRecord;
use crate::registry::ImageRef;
use crate::store::{short, ImageStore};

/// The short form users write of a full reference (`busybox:latest`,
/// `127.0.0.1:5000/x/y@sha256:…`).
pub fn familiar(full: &str) -> String {
    match full.split_once('@') {
        Some((repo, d)) => match ImageRef::parse(&format!("{repo}:x")) {
            Ok(r) => format!("{}@{d}", r.familiar().trim_end_matches(":x")),
            Err(_) => full.to_string(),
        },
        None => ImageRef::parse(full).map(|r| r.familiar()).unwrap_or_else(|_| full.to_string()),
    }
}

/// go-units' HumanDuration, which Docker uses for ages ("About a minute",
/// "3 days").
pub fn human_duration(s: u64) -> String {
    let (m, h) = (s / 60, (s as f64 / 3600.0).round() as u64);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{} days", h / 24),
        _ if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", h / 24 / 365),
    }
}

/// The tags pointing at an image, full form.
pub fn tags_of(store: &ImageStore, id: &crate::Digest) -> Result<Vec<String>> {
    Ok(store.db().list()?.into_iter().find(|(r, _)| r.id == *id).map(|(_, t)| t).unwrap_or_default())
}

/// Docker's `image inspect` document for the image `name` resolves to.
pub fn inspect(store: &ImageStore, name: &str) -> Result<Value> {
    let rec = store.resolve(name)?;
    let cfg: Value = serde_json::from_slice(&store.content().read(&rec.id)?)
        .map_err(|e| Error::InvalidManifest { what: "image config", reason: e.to_string() })?;
    let tags: Vec<String> = tags_of(store, &rec.id)?.iter().map(|t| familiar(t)).collect();
    let digests: Vec<String> = rec.repo_digests.iter().map(|t| familiar(t)).collect();
    let lower: Vec<String> =
        rec.layers.iter().rev().map(|l| store.snapshots().path(&l.chain_id).display().to_string()).collect();
    Ok(json!({
        "Id": rec.id.to_string(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": cfg.pointer("/history/0/comment").cloned().unwrap_or(json!("")),
        "Created": cfg.get("created").cloned().unwrap_or(json!("")),
        "DockerVersion": cfg.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": cfg.get("author").cloned().unwrap_or(json!("")),
        "Config": cfg.get("config").cloned().unwrap_or(json!({})),
        "Architecture": cfg.get("architecture").cloned().unwrap_or(json!("")),
        "Variant": cfg.get("variant").cloned(),
        "Os": cfg.get("os").cloned().unwrap_or(json!("")),
        "Size": store.unpacked_size(&rec),
        "GraphDriver": { "Name": "overlayfs", "Data": { "LowerDir": lower.join(":") } },
        "RootFS": {
            "Type": "layers",
            "Layers": rec.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": rec.added },
        "Descriptor": { "mediaType": rec.manifest_media_type, "digest": rec.manifest.to_string() },
    }))
}

/// One line of `rmi`'s report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// A name was removed (familiar form).
    Untagged(String),
    /// The image was deleted (its id).
    Deleted(String),
}

/// `rmi NAME`: removing a name of an image with several names only
/// untags it; removing the last name (or by id, or with `force`) deletes
/// the image record. Data is freed by a later [`ImageStore::gc`].
/// Callers check first that no container uses the image.
pub fn remove(store: &ImageStore, name: &str, force: bool) -> Result<Vec<Removed>> {
    let rec = store.resolve(name)?;
    let tags = tags_of(store, &rec.id)?;
    let by_id = rec.id.hex().starts_with(name.trim_start_matches("sha256:"));
    if !by_id {
        let full = ImageRef::parse(name)?.to_string();
        if tags.contains(&full) && tags.len() > 1 && !force {
            store.db().untag(&full)?;
            return Ok(vec![Removed::Untagged(familiar(&full))]);
        }
    } else if tags.len() > 1 && !force {
        return Err(Error::Conflict(format!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            short(&rec.id)
        )));
    }
    let mut out: Vec<Removed> = tags.iter().map(|t| Removed::Untagged(familiar(t))).collect();
    out.extend(rec.repo_digests.iter().map(|d| Removed::Untagged(familiar(d))));
    store.db().delete(&rec.id)?;
    out.push(Removed::Deleted(rec.id.to_string()));
    Ok(out)
}

/// A `*` glob over a whole string.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|&i| tail.is_char_boundary(i)).any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// Docker's image filters (`dangling`, `label`, `reference` with `*`
/// globs, `before`, `since`) for one image under one of its names as
/// (repository, tag) — `None` for an untagged image. Shared by `berth
/// images` on the store and the API's `/images/json`.
pub fn filter_matches(
    store: &ImageStore,
    filters: &[(String, String)],
    rec: &ImageRecord,
    name: Option<(&str, &str)>,
) -> std::result::Result<bool, String> {
    let tagged = name.is_some();
    let (repo, tag) = name.unwrap_or(("<none>", "<none>"));
    for (k, v) in filters {
        let ok = match k.as_str() {
            "dangling" => match v.as_str() {
                "true" | "1" => !tagged,
                "false" | "0" => tagged,
                _ => return Err(format!("invalid filter 'dangling={v}'")),
            },
            "label" => {
                let labels = created_labels(store, rec);
                match v.split_once('=') {
                    Some((lk, lv)) => labels.get(lk).and_then(|x| x.as_str()) == Some(lv),
                    None => labels.get(v.as_str()).is_some(),
                }
            }
            "reference" => tagged && (glob(v, repo) || glob(v, &format!("{repo}:{tag}"))),
            "before" | "since" => {
                let other = store.resolve(v).map_err(|_| format!("No such image: {v}"))?;
                let (mine, theirs) = (crate::images::time_key(&rec.added), crate::images::time_key(&other.added));
                if k == "before" {
                    mine < theirs
                } else {
                    mine > theirs
                }
            }
            other => return Err(format!("invalid filter '{other}'")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn created_labels(store: &ImageStore, rec: &ImageRecord) -> serde_json::Map<String, Value> {
    store
        .content()
        .read(&rec.id)
        .ok()
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
        .and_then(|v| v.pointer("/config/Labels").and_then(|l| l.as_object()).cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("busy*", "busybox") && glob("*box", "busybox") && glob("b*y*x", "busybox"));
        assert!(!glob("busy", "busybox") && !glob("x*", "busybox"));
    }

    #[test]
    fn ages_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(20 * 86_400), "2 weeks");
        assert_eq!(human_duration(100 * 86_400), "3 months");
        assert_eq!(human_duration(800 * 86_400), "2 years");
    }
}
