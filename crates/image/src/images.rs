//! Image metadata in an embedded database (redb, `<root>/images.redb`):
//! which images exist, their manifests and layers, and which names point
//! at them. Blobs and snapshots live beside it; this records what
//! references them, so garbage collection knows what to keep.
//!
//! redb commits are atomic and durable (it fsyncs), so a killed process
//! leaves either the old or the new record, never half of one.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// image id (config digest) → JSON [`ImageRecord`].
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// full reference (`docker.io/library/busybox:latest`) → image id.
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the (compressed) blob as distributed.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Chain ID: the snapshot holding this layer unpacked.
    pub chain_id: Digest,
}

/// One image in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Image id: the digest of its config blob, as Docker.
    pub id: Digest,
    /// The platform manifest's digest.
    pub manifest: Digest,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The index it was picked from, when pulled through one (what
    /// Docker shows in RepoDigests).
    pub index: Option<Digest>,
    /// `repo@digest` strings this image is known by.
    pub repo_digests: Vec<String>,
    /// Config blob size.
    pub config_size: u64,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
    /// Unpacked size in bytes (sum of snapshot contents).
    pub size: u64,
    /// When it entered the store, RFC 3339.
    pub added: String,
}

/// The metadata database.
#[derive(Debug)]
pub struct ImageDb {
    db: Database,
    path: PathBuf,
}

impl ImageDb {
    /// Opens (creating) `<root>/images.redb`.
    pub fn open(root: &Path) -> Result<ImageDb> {
        let path = root.join("images.redb");
        let db = Database::create(&path).map_err(|e| db_err(&path, e))?;
        let me = ImageDb { db, path };
        // Create the tables so reads never meet a missing one.
        let tx = me.db.begin_write().map_err(|e| me.err(e))?;
        tx.open_table(IMAGES).map_err(|e| me.err(e))?;
        tx.open_table(TAGS).map_err(|e| me.err(e))?;
        tx.commit().map_err(|e| me.err(e))?;
        Ok(me)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        db_err(&self.path, e)
    }

    /// Stores (or replaces) an image and points `tags` at it, in one
    /// transaction. A tag that pointed elsewhere moves.
    pub fn put(&self, image: &ImageRecord, tags: &[String]) -> Result<()> {
        let json = serde_json::to_vec(image).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut images = tx.open_table(IMAGES).map_err(|e| self.err(e))?;
            images.insert(image.id.to_string().as_str(), json.as_slice()).map_err(|e| self.err(e))?;
            let mut t = tx.open_table(TAGS).map_err(|e| self.err(e))?;
            let id = image.id.to_string();
            for tag in tags {
                t.insert(tag.as_str(), id.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The image with this id.
    pub fn get(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(IMAGES).map_err(|e| self.err(e))?;
        let Some(v) = t.get(id.to_string().as_str()).map_err(|e| self.err(e))? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(|e| self.err(format!("record {id}: {e}")))
    }

    /// Every image, with the tags pointing at it.
    pub fn list(&self) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let images = tx.open_table(IMAGES).map_err(|e| self.err(e))?;
        let tags = tx.open_table(TAGS).map_err(|e| self.err(e))?;
        let mut by_id: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
        for row in tags.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            by_id.entry(v.value().to_string()).or_default().push(k.value().to_string());
        }
        let mut out = Vec::new();
        for row in images.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let rec: ImageRecord =
                serde_json::from_slice(v.value()).map_err(|e| self.err(format!("record {}: {e}", k.value())))?;
            let mut t = by_id.remove(k.value()).unwrap_or_default();
            t.sort();
            out.push((rec, t));
        }
        out.sort_by(|a, b| time_key(&b.0.added).cmp(&time_key(&a.0.added)));
        Ok(out)
    }

    /// The image id a full reference points at.
    pub fn tag_target(&self, reference: &str) -> Result<Option<Digest>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(TAGS).map_err(|e| self.err(e))?;
        let Some(v) = t.get(reference).map_err(|e| self.err(e))? else { return Ok(None) };
        v.value().parse().map(Some)
    }

    /// Points `reference` at image `id`.
    pub fn tag(&self, reference: &str, id: &Digest) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let images = tx.open_table(IMAGES).map_err(|e| self.err(e))?;
            if images.get(id.to_string().as_str()).map_err(|e| self.err(e))?.is_none() {
                return Err(Error::ImageNotFound(id.to_string()));
            }
            let mut t = tx.open_table(TAGS).map_err(|e| self.err(e))?;
            t.insert(reference, id.to_string().as_str()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Removes a tag; returns whether it existed.
    pub fn untag(&self, reference: &str) -> Result<bool> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let existed = {
            let mut t = tx.open_table(TAGS).map_err(|e| self.err(e))?;
            let r = t.remove(reference).map_err(|e| self.err(e))?;
            r.is_some()
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(existed)
    }

    /// Removes an image record and every tag pointing at it.
    pub fn delete(&self, id: &Digest) -> Result<()> {
        let ids = id.to_string();
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(TAGS).map_err(|e| self.err(e))?;
            let doomed: Vec<String> = t
                .iter()
                .map_err(|e| self.err(e))?
                .filter_map(|r| r.ok())
                .filter(|(_, v)| v.value() == ids)
                .map(|(k, _)| k.value().to_string())
                .collect();
            for k in doomed {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
            let mut images = tx.open_table(IMAGES).map_err(|e| self.err(e))?;
            images.remove(ids.as_str()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

fn db_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Db { path: path.to_path_buf(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> ImageRecord {
        let d = Digest::sha256_of(&[n]);
        ImageRecord {
            id: d.clone(),
            manifest: d.clone(),
            manifest_media_type: crate::manifest::OCI_MANIFEST.into(),
            index: None,
            repo_digests: vec![],
            config_size: 1,
            layers: vec![],
            size: 0,
            added: format!("2026-01-0{n}T00:00:00Z"),
        }
    }

    #[test]
    fn put_tag_untag_delete() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = ImageDb::open(tmp.path()).expect("open");
        let (a, b) = (rec(1), rec(2));
        db.put(&a, &["docker.io/library/a:latest".into()]).expect("put a");
        db.put(&b, &["docker.io/library/b:latest".into()]).expect("put b");
        db.tag("docker.io/library/b:v2", &b.id).expect("tag");
        assert!(db.tag("x:y", &Digest::sha256_of(b"none")).is_err());
        let list = db.list().expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].1, vec!["docker.io/library/b:latest", "docker.io/library/b:v2"]);
        // A tag moves when put again elsewhere.
        db.put(&a, &["docker.io/library/b:v2".into()]).expect("move");
        assert_eq!(db.tag_target("docker.io/library/b:v2").expect("get"), Some(a.id.clone()));
        assert!(db.untag("docker.io/library/b:v2").expect("untag"));
        assert!(!db.untag("docker.io/library/b:v2").expect("untag again"));
        db.delete(&b.id).expect("delete");
        assert!(db.get(&b.id).expect("get").is_none());
        assert_eq!(db.tag_target("docker.io/library/b:latest").expect("get"), None);
        drop(db);
        let db = ImageDb::open(tmp.path()).expect("reopen");
        assert_eq!(db.get(&a.id).expect("get"), Some(a));
    }
}

/// The current time as RFC 3339 UTC (`2026-11-25T06:30:00Z`), the format
/// Docker's API uses for `Created`/`Metadata.LastTagTime`.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    rfc3339(secs)
}

/// The current time as RFC 3339 UTC with nanoseconds, for
/// [`ImageRecord::added`]: images stored within one second must still
/// order (`images` lists newest first; `--filter before=`/`since=`).
pub fn now_rfc3339_nanos() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = rfc3339(d.as_secs());
    format!("{}.{:09}Z", s.trim_end_matches('Z'), d.subsec_nanos())
}

/// A key that orders RFC 3339 UTC times with or without a fraction
/// (records from before [`now_rfc3339_nanos`] have none).
pub fn time_key(t: &str) -> std::borrow::Cow<'_, str> {
    match t.strip_suffix('Z') {
        Some(base) if !base.contains('.') => format!("{base}.000000000Z").into(),
        _ => t.into(),
    }
}

/// Formats seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn formats_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_586_691), "2026-11-25T06:04:51Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let (a, b) = (super::now_rfc3339_nanos(), super::now_rfc3339_nanos());
        assert!(a.len() == 30 && a.ends_with('Z'), "{a}");
        assert!(super::time_key(&a) <= super::time_key(&b));
        assert!(super::time_key("2026-11-25T06:04:51Z") < super::time_key("2026-11-25T06:04:51.000000001Z"));
        assert!(super::time_key("2026-11-25T06:04:51.5Z") < super::time_key("2026-11-25T06:04:52Z"));
    }
}
