//! Commit: a container's writable layer (an overlayfs upper directory)
//! becomes a new image on top of the container's image (`docker commit`).
//!
//! The upper directory is written as an OCI layer: overlay whiteouts
//! (0:0 character devices) become `.wh.NAME` entries and opaque
//! directories (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` entry,
//! the reverse of what [`crate::unpack`] does. The tree is walked without
//! following symlinks. The layer is gzipped into the content store; the
//! new config and manifest extend the parent's, and the image is recorded
//! through [`ImageStore::commit_local`], which unpacks the new layer into
//! its snapshot like any other.

use std::io::{Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::{json, Value};

use crate::digest::{Algorithm, Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::images::{now_rfc3339, ImageRecord};
use crate::manifest::{OCI_CONFIG, OCI_MANIFEST};
use crate::store::ImageStore;

/// What a commit records besides the layer.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The container's config (Docker's `Config`), becoming the image's.
    pub container_config: Value,
    /// Dockerfile instructions applied on top (`--change`).
    pub changes: Vec<String>,
    /// Commit message (history comment).
    pub comment: String,
    /// Author.
    pub author: String,
    /// The container's command line, for the history's `created_by`.
    pub created_by: String,
    /// The container's id.
    pub container: String,
}

fn oci_layer_type(media_type: &str) -> String {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar".into(),
        other => other.into(),
    }
}

/// Writes `dir`'s tree into `tar` under `prefix`, overlay whiteouts as OCI ones.
fn append_upper<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, prefix: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = prefix.join(e.file_name());
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            // A whiteout: the lower file is deleted.
            let mut wh = std::ffi::OsString::from(".wh.");
            wh.push(e.file_name());
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o600);
            h.set_mtime(meta.mtime().max(0) as u64);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, prefix.join(wh), std::io::empty())?;
            continue;
        }
        if ft.is_dir() {
            tar.append_dir(&name, &path)?;
            let opaque = xattr_is_y(&path, "trusted.overlay.opaque");
            if opaque {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o600);
                h.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut h, name.join(".wh..wh..opq"), std::io::empty())?;
            }
            append_upper(tar, &path, &name)?;
        } else {
            tar.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

fn xattr_is_y(path: &Path, name: &str) -> bool {
    let mut buf = [0u8; 4];
    rustix::fs::lgetxattr(path, name, &mut buf).is_ok_and(|n| n == 1 && buf[0] == b'y')
}

impl ImageStore {
    /// Records `upper` (a container's overlay upper dir) as a new layer on
    /// top of `parent`, tagged `tags` (full references).
    pub fn commit_upper(
        &self,
        parent: &ImageRecord,
        upper: &Path,
        opts: &CommitOptions,
        tags: &[String],
    ) -> Result<ImageRecord> {
        // 1. The layer tar, hashed for its diff ID, into a temp file.
        let mut tmp = tempfile::tempfile_in(self.root()).ctx(|| "creating a temp file".into())?;
        let diff_id = {
            let mut hashing = HashingWriter::new(&mut tmp, Algorithm::Sha256);
            {
                let mut tar = tar::Builder::new(&mut hashing);
                tar.follow_symlinks(false);
                append_upper(&mut tar, upper, Path::new("")).ctx(|| format!("archiving {}", upper.display()))?;
                tar.finish().ctx(|| "finishing the layer".into())?;
            }
            hashing.finish().1
        };
        tmp.rewind().ctx(|| "rewinding the layer".into())?;
        // 2. Gzipped into the content store.
        let gz = flate2::read::GzEncoder::new(std::io::BufReader::new(tmp), flate2::Compression::default());
        let (layer_digest, layer_size) = self.content().write_stream(gz)?;

        // 3. Config: the parent's, with the container's config, the new
        //    diff ID and a history entry.
        let mut config: Value = serde_json::from_slice(&self.content().read(&parent.id)?)
            .map_err(|e| Error::InvalidManifest { what: "image config", reason: e.to_string() })?;
        let mut cc = opts.container_config.clone();
        crate::import::apply_changes(&mut cc, &opts.changes)?;
        let now = now_rfc3339();
        config["config"] = cc;
        config["created"] = json!(now);
        if !opts.author.is_empty() {
            config["author"] = json!(opts.author);
        }
        if !opts.container.is_empty() {
            config["container"] = json!(opts.container);
        }
        let diff_ids = config
            .pointer_mut("/rootfs/diff_ids")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| Error::InvalidManifest { what: "image config", reason: "no rootfs.diff_ids".into() })?;
        diff_ids.push(json!(diff_id.to_string()));
        let mut entry = json!({"created": now, "created_by": opts.created_by});
        if !opts.comment.is_empty() {
            entry["comment"] = json!(opts.comment);
        }
        if !opts.author.is_empty() {
            entry["author"] = json!(opts.author);
        }
        match config.get_mut("history").and_then(Value::as_array_mut) {
            Some(h) => h.push(entry),
            None => config["history"] = json!([entry]),
        }
        let config_bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::InvalidManifest { what: "image config", reason: e.to_string() })?;
        let config_digest = Digest::sha256_of(&config_bytes);
        self.content().write_blob(&config_digest, &config_bytes)?;

        // 4. Manifest: the parent's layers, then the new one.
        let mut layers: Vec<Value> = parent
            .layers
            .iter()
            .map(
                |l| json!({"mediaType": oci_layer_type(&l.media_type), "digest": l.digest.to_string(), "size": l.size}),
            )
            .collect();
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest.to_string(), "size": layer_size}));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::InvalidManifest { what: "manifest", reason: e.to_string() })?;
        self.commit_local(&manifest_bytes, OCI_MANIFEST, &[], tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_become_oci_entries() {
        let tmp = tempfile::tempdir().expect("tmp");
        let upper = tmp.path().join("upper");
        std::fs::create_dir_all(upper.join("etc")).expect("mkdir");
        std::fs::write(upper.join("etc/new"), "x").expect("write");
        std::os::unix::fs::symlink("/etc/shadow", upper.join("link")).expect("symlink");
        let root = nix::unistd::geteuid().is_root();
        if root {
            nix::sys::stat::mknod(
                &upper.join("gone"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                0,
            )
            .expect("mknod");
        }
        let mut out = Vec::new();
        {
            let mut tar = tar::Builder::new(&mut out);
            tar.follow_symlinks(false);
            append_upper(&mut tar, &upper, Path::new("")).expect("tar");
            tar.finish().expect("finish");
        }
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(&out[..]);
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            let kind = e.header().entry_type();
            names.push((e.path().expect("path").display().to_string(), kind.is_symlink()));
        }
        assert!(names.contains(&("etc/new".to_string(), false)));
        assert!(names.contains(&("link".to_string(), true)), "symlinks stay links: {names:?}");
        if root {
            assert!(names.contains(&(".wh.gone".to_string(), false)), "{names:?}");
        }
    }
}
