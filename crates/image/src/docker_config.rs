//! Writing credentials into docker's `config.json` (`berth login` /
//! `logout`), so berth, the docker CLI, podman and skopeo share one login.
//!
//! Reading lives with the registry client ([`crate::registry`]); this is the
//! write side. The file is rewritten whole, keeping every key berth does
//! not own, with temp + fsync + rename and mode 0600 (it holds secrets).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::error::{Error, IoContext, Result};
use crate::registry::{canonical_host, docker_config_path};

/// The key Docker uses in `auths` for Docker Hub.
const HUB_KEY: &str = "https://index.docker.io/v1/";

/// The `auths` key for a registry, as docker writes it.
pub fn auth_key(host: &str) -> String {
    let h = canonical_host(host);
    if h == "docker.io" {
        HUB_KEY.to_string()
    } else {
        h
    }
}

fn config_file(explicit: Option<&Path>) -> Result<PathBuf> {
    docker_config_path(explicit).ok_or_else(|| Error::Io {
        context: "locating docker's config.json".into(),
        source: std::io::Error::other("neither DOCKER_CONFIG nor HOME is set"),
    })
}

fn read(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(serde_json::Map::new()),
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::Io {
                context: format!("reading {}", path.display()),
                source: std::io::Error::other("not a JSON object"),
            }),
            Err(e) => Err(Error::Io { context: format!("parsing {}", path.display()), source: e.into() }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::Map::new()),
        Err(e) => Err(Error::Io { context: format!("reading {}", path.display()), source: e }),
    }
}

fn write(path: &Path, doc: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut body = serde_json::to_vec_pretty(doc)
        .map_err(|e| Error::Io { context: format!("encoding {}", path.display()), source: std::io::Error::other(e) })?;
    body.push(b'\n');
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("config.json"),
        std::process::id()
    ));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.ctx(|| format!("writing {}", path.display()))
}

/// Saves `username`/`password` for `host` in docker's config.json (or
/// `explicit`); returns the file written.
pub fn store_login(explicit: Option<&Path>, host: &str, username: &str, password: &str) -> Result<PathBuf> {
    let path = config_file(explicit)?;
    let mut doc = read(&path)?;
    let auths = doc.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    if let Some(a) = auths.as_object_mut() {
        a.insert(auth_key(host), serde_json::json!({ "auth": encoded }));
    }
    write(&path, &doc)?;
    Ok(path)
}

/// Removes the credentials for `host`; Ok(false) if there were none.
pub fn erase_login(explicit: Option<&Path>, host: &str) -> Result<bool> {
    let path = config_file(explicit)?;
    let mut doc = read(&path)?;
    let want = canonical_host(host);
    let removed = match doc.get_mut("auths").and_then(|a| a.as_object_mut()) {
        Some(auths) => {
            let keys: Vec<String> = auths.keys().filter(|k| canonical_host(k) == want).cloned().collect();
            for k in &keys {
                auths.remove(k);
            }
            !keys.is_empty()
        }
        None => false,
    };
    if removed {
        write(&path, &doc)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Credentials, Registry, RegistryOptions};

    #[test]
    fn login_round_trip_keeps_other_keys() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"other:1":{"auth":"eDp5"}},"psFormat":"table"}"#).expect("seed");
        store_login(Some(&path), "127.0.0.1:5000", "alice", "s3cret:x").expect("store");
        store_login(Some(&path), "docker.io", "bob", "pw").expect("store hub");
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(doc["psFormat"], "table");
        assert_eq!(doc["auths"]["other:1"]["auth"], "eDp5");
        assert!(doc["auths"][HUB_KEY]["auth"].is_string());
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        let reg = Registry::new(RegistryOptions { docker_config: Some(path.clone()), ..Default::default() });
        match reg.credentials_for("127.0.0.1:5000") {
            Credentials::Basic { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("alice", "s3cret:x"))
            }
            other => panic!("expected basic credentials, got {other:?}"),
        }
        assert!(erase_login(Some(&path), "127.0.0.1:5000").expect("erase"));
        assert!(!erase_login(Some(&path), "127.0.0.1:5000").expect("erase again"));
        assert!(erase_login(Some(&path), "index.docker.io").expect("erase hub"));
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(doc["auths"].as_object().map(|a| a.len()), Some(1));
    }

    #[test]
    fn refuses_a_malformed_config() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("config.json");
        std::fs::write(&path, "[1,2]").expect("seed");
        assert!(store_login(Some(&path), "h:1", "u", "p").is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "[1,2]");
    }
}
