//! Import: a root filesystem tarball becomes a one-layer image
//! (`docker import`), with `--change` Dockerfile instructions applied to
//! its config.
//!
//! The tarball (plain, gzip or zstd) is streamed once: hashed uncompressed
//! for the diff ID and gzip-compressed into the content store as the layer
//! blob, so the image pushes like any pulled one. The layer is then
//! unpacked through the same safe path as pulled layers: a hostile tarball
//! is refused and no image is recorded.

use std::io::{BufRead, BufReader, Read};

use serde_json::{json, Map, Value};

use crate::digest::{Algorithm, HashingReader};
use crate::error::{Error, Result};
use crate::images::{now_rfc3339, ImageRecord};
use crate::manifest::{Platform, OCI_CONFIG, OCI_MANIFEST};
use crate::store::ImageStore;

/// Media type of the imported layer.
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Dockerfile instructions for the config (`CMD ["sh"]`, `ENV A=b`, …).
    pub changes: Vec<String>,
    /// Commit message (history comment); default "Imported from <source>".
    pub message: Option<String>,
    /// Where the tarball came from, for the default message (`-` for stdin).
    pub source: String,
    /// The image's platform (the tarball does not say).
    pub platform: Platform,
}

fn bad_change(change: &str, reason: impl Into<String>) -> Error {
    Error::InvalidChange { change: change.to_string(), reason: reason.into() }
}

impl ImageStore {
    /// Imports a rootfs tarball as a new image tagged `tags` (full references).
    pub fn import_rootfs(&self, input: impl Read, opts: &ImportOptions, tags: &[String]) -> Result<ImageRecord> {
        // Check the changes before reading a byte of a possibly huge tarball.
        let mut container_config = Value::Object(Map::new());
        apply_changes(&mut container_config, &opts.changes)?;

        let mut input = BufReader::with_capacity(1 << 20, input);
        let magic = input.fill_buf().map_err(|e| Error::Io { context: "reading the tarball".into(), source: e })?;
        let compression = sniff(magic)?;
        let tar = crate::unpack::decompress(compression, input)?;
        let mut hashing = HashingReader::new(tar, Algorithm::Sha256);
        let (layer_digest, layer_size) = {
            let gz = flate2::read::GzEncoder::new(&mut hashing, flate2::Compression::default());
            self.content().write_stream(gz)?
        };
        let (diff_id, _) = hashing.finish();
        if layer_size == 0 {
            return Err(Error::BadLayer { layer: opts.source.clone(), reason: "empty tarball".into() });
        }

        let now = now_rfc3339();
        let comment = opts.message.clone().unwrap_or_else(|| format!("Imported from {}", opts.source));
        let mut config = json!({
            "created": now,
            "architecture": opts.platform.arch,
            "os": opts.platform.os,
            "config": container_config,
            "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
            "history": [{ "created": now, "created_by": "berth import", "comment": comment }],
        });
        if let Some(v) = &opts.platform.variant {
            config["variant"] = json!(v);
        }
        let config_bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::InvalidManifest { what: "image config", reason: format!("cannot encode: {e}") })?;
        let config_digest = crate::Digest::sha256_of(&config_bytes);
        self.content().write_blob(&config_digest, &config_bytes)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len() },
            "layers": [{ "mediaType": LAYER_GZIP, "digest": layer_digest.to_string(), "size": layer_size }],
        });
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::InvalidManifest { what: "manifest", reason: format!("cannot encode: {e}") })?;
        self.commit_local(&manifest_bytes, OCI_MANIFEST, &[], tags).inspect_err(|_| {
            // Refused (a hostile tarball): leave no blob behind that no image uses.
            let used = self
                .db()
                .list()
                .is_ok_and(|l| l.iter().any(|(r, _)| r.layers.iter().any(|l| l.digest == layer_digest)));
            if !used {
                let _ = self.content().delete(&layer_digest);
                let _ = self.content().delete(&config_digest);
                let _ = self.content().delete(&crate::Digest::sha256_of(&manifest_bytes));
            }
        })
    }
}

/// The compression of a tarball from its first bytes. xz and bzip2 are
/// named and refused rather than misread as a tar.
fn sniff(magic: &[u8]) -> Result<crate::manifest::Compression> {
    use crate::manifest::Compression;
    let refuse = |what: &str| Error::BadLayer {
        layer: "import".into(),
        reason: format!("{what}-compressed tarballs are not supported: use an uncompressed, gzip or zstd tarball"),
    };
    Ok(match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => return Err(refuse("xz")),
        [b'B', b'Z', b'h', ..] => return Err(refuse("bzip2")),
        _ => Compression::None,
    })
}

/// Applies Dockerfile instructions to an image's container config (the
/// `config` object of an OCI image config), as `docker import --change`
/// and `docker commit --change` do. Allowed: CMD, ENTRYPOINT, ENV, EXPOSE,
/// LABEL, ONBUILD, USER, VOLUME, WORKDIR.
pub fn apply_changes(config: &mut Value, changes: &[String]) -> Result<()> {
    if !config.is_object() {
        *config = Value::Object(Map::new());
    }
    for change in changes {
        let trimmed = change.trim();
        let (instr, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
        let rest = rest.trim();
        let obj = config.as_object_mut().ok_or_else(|| bad_change(change, "config is not an object"))?;
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                obj.insert("Cmd".into(), json!(exec_or_shell(change, rest)?));
            }
            "ENTRYPOINT" => {
                obj.insert("Entrypoint".into(), json!(exec_or_shell(change, rest)?));
            }
            "ENV" => {
                let pairs = key_values(change, rest)?;
                let env = obj.entry("Env").or_insert_with(|| json!([]));
                let list = env.as_array_mut().ok_or_else(|| bad_change(change, "Env is not a list"))?;
                for (k, v) in pairs {
                    let entry = format!("{k}={v}");
                    let prefix = format!("{k}=");
                    match list.iter_mut().find(|e| e.as_str().is_some_and(|s| s.starts_with(&prefix))) {
                        Some(e) => *e = json!(entry),
                        None => list.push(json!(entry)),
                    }
                }
            }
            "LABEL" => {
                let pairs = key_values(change, rest)?;
                let labels = obj.entry("Labels").or_insert_with(|| json!({}));
                let map = labels.as_object_mut().ok_or_else(|| bad_change(change, "Labels is not a map"))?;
                for (k, v) in pairs {
                    map.insert(k, json!(v));
                }
            }
            "EXPOSE" => {
                let ports = obj.entry("ExposedPorts").or_insert_with(|| json!({}));
                let map = ports.as_object_mut().ok_or_else(|| bad_change(change, "ExposedPorts is not a map"))?;
                for p in words(change, rest)? {
                    map.insert(port_spec(change, &p)?, json!({}));
                }
            }
            "VOLUME" => {
                let paths = if rest.starts_with('[') { json_array(change, rest)? } else { words(change, rest)? };
                let vols = obj.entry("Volumes").or_insert_with(|| json!({}));
                let map = vols.as_object_mut().ok_or_else(|| bad_change(change, "Volumes is not a map"))?;
                for p in paths {
                    if p.is_empty() {
                        return Err(bad_change(change, "VOLUME specified can not be an empty string"));
                    }
                    map.insert(p, json!({}));
                }
            }
            "USER" => {
                let [user] = words(change, rest)?.try_into().map_err(|_| bad_change(change, "USER takes one argument"))?;
                obj.insert("User".into(), json!(user));
            }
            "WORKDIR" => {
                let [dir] =
                    words(change, rest)?.try_into().map_err(|_| bad_change(change, "WORKDIR takes one argument"))?;
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    let base = obj.get("WorkingDir").and_then(Value::as_str).unwrap_or("/");
                    format!("{}/{dir}", base.trim_end_matches('/'))
                };
                obj.insert("WorkingDir".into(), json!(dir));
            }
            "ONBUILD" => {
                if rest.is_empty() {
                    return Err(bad_change(change, "ONBUILD requires an instruction"));
                }
                let list = obj.entry("OnBuild").or_insert_with(|| json!([]));
                list.as_array_mut().ok_or_else(|| bad_change(change, "OnBuild is not a list"))?.push(json!(rest));
            }
            "" => return Err(bad_change(change, "empty change")),
            other => {
                return Err(bad_change(
                    change,
                    format!("{other} is not a valid change command (allowed: CMD ENTRYPOINT ENV EXPOSE LABEL ONBUILD USER VOLUME WORKDIR)"),
                ))
            }
        }
    }
    Ok(())
}

/// `["a","b"]` → exec form; anything else → `/bin/sh -c <rest>`.
fn exec_or_shell(change: &str, rest: &str) -> Result<Vec<String>> {
    if rest.starts_with('[') {
        if let Ok(v) = json_array(change, rest) {
            return Ok(v);
        }
    }
    if rest.is_empty() {
        return Err(bad_change(change, "missing command"));
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
}

fn json_array(change: &str, rest: &str) -> Result<Vec<String>> {
    serde_json::from_str::<Vec<String>>(rest)
        .map_err(|e| bad_change(change, format!("not a JSON array of strings: {e}")))
}

/// `K=V K2="v 2"` pairs, or the legacy `K some value` form.
fn key_values(change: &str, rest: &str) -> Result<Vec<(String, String)>> {
    let first = rest.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        // Legacy: the first word is the key, the rest of the line the value.
        let (k, v) = rest.split_once(char::is_whitespace).ok_or_else(|| bad_change(change, "missing value"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    words(change, rest)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad_change(change, format!("{w:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// Splits on whitespace, honouring "double" and 'single' quotes and
/// backslash escapes (as the Dockerfile parser does for these forms).
fn words(change: &str, s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                cur.push(chars.next().ok_or_else(|| bad_change(change, "trailing backslash"))?);
                in_word = true;
            }
            '"' | '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(bad_change(change, "unterminated quote")),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => {
                            cur.push(chars.next().ok_or_else(|| bad_change(change, "trailing backslash"))?)
                        }
                        Some(x) => cur.push(x),
                    }
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `80`, `80/tcp`, `53/udp` → Docker's `port/proto` key.
fn port_spec(change: &str, p: &str) -> Result<String> {
    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad_change(change, format!("invalid proto {proto:?}")));
    }
    let valid = |s: &str| s.parse::<u16>().is_ok_and(|n| n > 0);
    let ok = match port.split_once('-') {
        Some((a, b)) => valid(a) && valid(b),
        None => valid(port),
    };
    if !ok {
        return Err(bad_change(change, format!("invalid port {port:?}")));
    }
    Ok(format!("{port}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[&str]) -> Result<Value> {
        let mut c = json!({});
        apply_changes(&mut c, &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        Ok(c)
    }

    #[test]
    fn changes_like_docker() {
        let c = applied(&[
            r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /init --flag",
            "ENV A=1 B=\"two words\"",
            "ENV LEGACY some value",
            "ENV A=3",
            "EXPOSE 80 53/udp 8000-8010",
            "LABEL org.x=y \"quoted key\"=v",
            "USER app:app",
            "WORKDIR /srv",
            "WORKDIR data",
            "VOLUME [\"/var/lib/x\"]",
            "VOLUME /a /b",
            "ONBUILD RUN true",
        ])
        .expect("apply");
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/init --flag"]));
        assert_eq!(c["Env"], json!(["A=3", "B=two words", "LEGACY=some value"]));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}, "8000-8010/tcp": {}}));
        assert_eq!(c["Labels"], json!({"org.x": "y", "quoted key": "v"}));
        assert_eq!(c["User"], "app:app");
        assert_eq!(c["WorkingDir"], "/srv/data");
        assert_eq!(c["Volumes"], json!({"/var/lib/x": {}, "/a": {}, "/b": {}}));
        assert_eq!(c["OnBuild"], json!(["RUN true"]));
    }

    #[test]
    fn bad_changes_are_named() {
        for (bad, why) in [
            ("RUN rm -rf /", "not a valid change command"),
            ("FROM scratch", "not a valid change command"),
            ("EXPOSE 99999", "invalid port"),
            ("EXPOSE 80/icmp", "invalid proto"),
            ("ENV A=\"open", "unterminated quote"),
            ("USER a b", "one argument"),
            ("CMD", "missing command"),
        ] {
            let err = applied(&[bad]).expect_err(bad).to_string();
            assert!(err.contains(why) && err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn sniffs_compression() {
        use crate::manifest::Compression;
        assert!(matches!(sniff(&[0x1f, 0x8b, 8]), Ok(Compression::Gzip)));
        assert!(matches!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Ok(Compression::Zstd)));
        assert!(matches!(sniff(b"etc/\0\0\0"), Ok(Compression::None)));
        assert!(sniff(b"BZh91AY").is_err());
    }
}
