//! Named volumes (Docker's `local` driver): a directory per volume under
//! `<root>/volumes/<name>/_data`, metadata beside it in `volume.json`.
//! Created on demand by `-v name:/path`, filled from the image's content
//! at that path on first use (copy-up) unless `nocopy`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// One volume, as `volume inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// The host directory mounted into containers.
    pub mountpoint: String,
    /// RFC 3339.
    pub created_at: String,
    /// User labels.
    pub labels: HashMap<String, String>,
    /// Driver options (accepted, unused by `local` here).
    pub options: HashMap<String, String>,
    /// Always `local`.
    pub scope: String,
    /// Made for one container (`-v /path` or an image VOLUME), removed with
    /// it by `rm -v`.
    #[serde(default)]
    pub anonymous: bool,
}

/// The volume store.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

/// Docker's volume name rule.
pub fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|x| x.is_ascii_alphanumeric())
        && n.len() >= 2
        && n.len() <= 255
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '.' | '-'))
}

impl Volumes {
    /// Opens `<root>/volumes`.
    pub fn open(root: &Path) -> Result<Volumes> {
        let dir = root.join("volumes");
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Volumes { dir })
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("volume.json")
    }

    /// The volume `name`, if it exists.
    pub fn get(&self, name: &str) -> Result<Option<Volume>> {
        if !valid_name(name) {
            return Ok(None);
        }
        match std::fs::read(self.meta(name)) {
            Ok(d) => serde_json::from_slice(&d).map(Some).map_err(|e| Error::BadRequest(format!("volume {name}: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { context: format!("reading volume {name}"), source: e }),
        }
    }

    /// Creates a volume (an existing one with that name is returned as is,
    /// as Docker does).
    pub fn create(&self, name: &str, labels: HashMap<String, String>, anonymous: bool) -> Result<Volume> {
        if !valid_name(name) {
            return Err(Error::BadRequest(format!(
                "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            )));
        }
        if let Some(v) = self.get(name)? {
            return Ok(v);
        }
        let data = self.dir.join(name).join("_data");
        std::fs::create_dir_all(&data).ctx(|| format!("creating {}", data.display()))?;
        let v = Volume {
            name: name.to_string(),
            driver: "local".into(),
            mountpoint: data.display().to_string(),
            created_at: berth_runtime::state::now_rfc3339(),
            labels,
            options: HashMap::new(),
            scope: "local".into(),
            anonymous,
        };
        let json = serde_json::to_vec(&v).map_err(|e| Error::BadRequest(e.to_string()))?;
        berth_runtime::state::write_atomic(&self.meta(name), &json, 0o600)?;
        Ok(v)
    }

    /// Every volume.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).ctx(|| format!("listing {}", self.dir.display()))?.flatten() {
            if let Some(v) = self.get(&e.file_name().to_string_lossy())? {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes a volume and its data (callers check it is unused).
    pub fn remove(&self, name: &str) -> Result<()> {
        if self.get(name)?.is_none() {
            return Err(Error::NoSuchVolume(name.to_string()));
        }
        let d = self.dir.join(name);
        std::fs::remove_dir_all(&d).ctx(|| format!("removing {}", d.display()))
    }
}

/// Copies the image's content at `target` (inside the mounted `rootfs`)
/// into an empty volume directory, as Docker does on a volume's first use.
/// The target is resolved inside the rootfs (openat2), and `cp -a` copies
/// from the resolved directory without following symlinks below it.
pub fn copy_up(rootfs: &Path, target: &str, data: &Path) -> Result<()> {
    let empty = std::fs::read_dir(data).ctx(|| format!("reading {}", data.display()))?.next().is_none();
    if !empty {
        return Ok(());
    }
    let root = berth_runtime::inroot::RootDir::open(rootfs).ctx(|| format!("opening {}", rootfs.display()))?;
    let Ok(src) = root.resolve(Path::new(target)) else { return Ok(()) };
    if !src.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Ok(());
    }
    let from = format!("/proc/{}/fd/{}/.", std::process::id(), std::os::fd::AsRawFd::as_raw_fd(&src));
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--no-target-directory")
        .arg(&from)
        .arg(data)
        .output()
        .ctx(|| "running cp".into())?;
    if !out.status.success() {
        return Err(Error::BadRequest(format!(
            "copying image content at {target} into the volume: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let tmp = tempfile::tempdir().expect("tmp");
        let v = Volumes::open(tmp.path()).expect("open");
        let a = v.create("data", HashMap::from([("k".into(), "v".into())]), false).expect("create");
        assert!(Path::new(&a.mountpoint).is_dir());
        assert_eq!(v.create("data", HashMap::new(), false).expect("again"), a);
        assert!(v.create("../evil", HashMap::new(), false).is_err());
        assert!(v.create("x", HashMap::new(), false).is_err());
        assert_eq!(v.list().expect("list").len(), 1);
        v.remove("data").expect("rm");
        assert!(v.get("data").expect("get").is_none());
        assert!(matches!(v.remove("data"), Err(Error::NoSuchVolume(_))));
    }

    #[test]
    fn copy_up_stays_inside_the_rootfs() {
        let tmp = tempfile::tempdir().expect("tmp");
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("srv/sub")).expect("mkdir");
        std::fs::write(rootfs.join("srv/sub/file"), "image data").expect("write");
        std::os::unix::fs::symlink("/etc", rootfs.join("srv/etc-link")).expect("symlink");
        // A target that escapes through a symlink resolves inside the root.
        std::os::unix::fs::symlink("/../../../etc", rootfs.join("escape")).expect("symlink");
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        copy_up(&rootfs, "/srv", &data).expect("copy");
        assert_eq!(std::fs::read_to_string(data.join("sub/file")).expect("read"), "image data");
        assert!(data.join("etc-link").symlink_metadata().expect("link").file_type().is_symlink());
        let data2 = tmp.path().join("data2");
        std::fs::create_dir(&data2).expect("mkdir");
        copy_up(&rootfs, "/escape", &data2).expect("copy");
        assert!(!data2.join("passwd").exists(), "host /etc was copied");
    }
}
