//! A container's mounts from `-v` (`HostConfig.Binds`), `--mount`
//! (`HostConfig.Mounts`), `--tmpfs` and volume declarations
//! (`Config.Volumes`: the image's `VOLUME`s and `-v /path`), as Docker
//! reads them: host paths are bind mounts, names are named volumes
//! (created on demand), bare paths are anonymous volumes.

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::record::ContainerRecord;
use crate::volumes::Volumes;

/// One mount, as `inspect`'s `Mounts` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub typ: String,
    /// Volume name (volumes only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Host path (bind source or volume directory).
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// `local` for volumes.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Mode options as given (`ro`, `z`…).
    pub mode: String,
    /// Writable.
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Bind propagation.
    pub propagation: String,
    /// Copy the image's content into an empty volume on first use.
    #[serde(skip)]
    pub copy_up: bool,
    /// tmpfs options.
    #[serde(skip)]
    pub tmpfs_options: Vec<String>,
}

/// What a `-v` source names.
enum Source<'a> {
    Host(&'a str),
    Volume(&'a str),
}

fn source(s: &str) -> Source<'_> {
    if s.starts_with('/') {
        Source::Host(s)
    } else {
        Source::Volume(s)
    }
}

/// Named volumes a record refers to (to create them, or to refuse their removal).
pub fn volume_names(rec: &ContainerRecord) -> Vec<String> {
    let mut out = Vec::new();
    for b in rec.host_config.binds.iter().flatten() {
        if let Some((Source::Volume(n), _)) = b.split_once(':').map(|(s, rest)| (source(s), rest)) {
            out.push(n.to_string());
        }
    }
    for m in rec.host_config.mounts.iter().flatten() {
        if m.typ.map(|t| t.to_string()).as_deref() == Some("volume") {
            if let Some(s) = m.source.clone().filter(|s| !s.is_empty()) {
                out.push(s);
            }
        }
    }
    out.extend(rec.anon_volumes.values().cloned());
    out
}

/// Destinations given explicitly (they shadow volume declarations).
fn explicit_destinations(rec: &ContainerRecord) -> Vec<String> {
    let mut out: Vec<String> =
        rec.host_config.binds.iter().flatten().filter_map(|b| b.split(':').nth(1).map(str::to_string)).collect();
    out.extend(rec.host_config.mounts.iter().flatten().filter_map(|m| m.target.clone()));
    out.extend(rec.host_config.tmpfs.iter().flatten().map(|(d, _)| d.clone()));
    out
}

/// Volume declarations not covered by an explicit mount: each needs an
/// anonymous volume.
pub fn anonymous_targets(rec: &ContainerRecord) -> Vec<String> {
    let explicit = explicit_destinations(rec);
    rec.config.volumes.iter().flatten().filter(|d| !explicit.contains(d)).cloned().collect()
}

fn bad(spec: &str, why: &str) -> Error {
    Error::BadRequest(format!("invalid volume specification: '{spec}': {why}"))
}

/// Every mount of the container, resolved against the volume store.
/// Volumes must exist (created by the engine at container creation).
pub fn mount_points(rec: &ContainerRecord, volumes: &Volumes) -> Result<Vec<MountPoint>> {
    let mut out = Vec::new();
    let volume = |name: &str| -> Result<String> {
        volumes.get(name)?.map(|v| v.mountpoint).ok_or_else(|| Error::NoSuchVolume(name.to_string()))
    };
    for spec in rec.host_config.binds.iter().flatten() {
        let parts: Vec<&str> = spec.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [s, d] => (*s, *d, ""),
            [s, d, m] => (*s, *d, *m),
            _ => return Err(bad(spec, "expected SOURCE:TARGET[:OPTIONS]")),
        };
        if !dst.starts_with('/') {
            return Err(bad(spec, "the mount path must be absolute"));
        }
        let opts: Vec<&str> = mode.split(',').filter(|o| !o.is_empty()).collect();
        for o in &opts {
            if !matches!(
                *o,
                "ro" | "rw" | "z" | "Z" | "nocopy" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            ) {
                return Err(bad(spec, &format!("unknown option {o:?}")));
            }
        }
        let propagation = opts
            .iter()
            .find(|o| o.ends_with("private") || o.ends_with("shared") || o.ends_with("slave"))
            .unwrap_or(&"rprivate");
        let (typ, name, host) = match source(src) {
            Source::Host(h) => ("bind", String::new(), h.to_string()),
            Source::Volume(n) => ("volume", n.to_string(), volume(n)?),
        };
        out.push(MountPoint {
            typ: typ.into(),
            driver: if typ == "volume" { "local".into() } else { String::new() },
            name,
            source: host,
            destination: dst.into(),
            mode: mode.into(),
            rw: !opts.contains(&"ro"),
            propagation: if typ == "bind" { propagation.to_string() } else { String::new() },
            copy_up: typ == "volume" && !opts.contains(&"nocopy"),
            tmpfs_options: Vec::new(),
        });
    }
    for m in rec.host_config.mounts.iter().flatten() {
        let typ = m.typ.map(|t| t.to_string()).unwrap_or_default();
        let dst = m.target.clone().unwrap_or_default();
        if !dst.starts_with('/') {
            return Err(Error::BadRequest(format!("invalid mount config: target {dst:?} must be an absolute path")));
        }
        let rw = !m.read_only.unwrap_or(false);
        let src = m.source.clone().unwrap_or_default();
        let mp = match typ.as_str() {
            "bind" => {
                if !src.starts_with('/') {
                    return Err(Error::BadRequest(format!(
                        "invalid mount config for type \"bind\": invalid source {src:?}"
                    )));
                }
                if !std::path::Path::new(&src).exists() {
                    return Err(Error::BadRequest(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                    )));
                }
                let propagation = m
                    .bind_options
                    .as_ref()
                    .and_then(|b| b.propagation)
                    .map(|p| p.to_string())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "rprivate".into());
                MountPoint {
                    typ,
                    name: String::new(),
                    source: src,
                    destination: dst,
                    driver: String::new(),
                    mode: String::new(),
                    rw,
                    propagation,
                    copy_up: false,
                    tmpfs_options: Vec::new(),
                }
            }
            "volume" => {
                let name = if src.is_empty() { rec.anon_volumes.get(&dst).cloned().unwrap_or_default() } else { src };
                let nocopy = m.volume_options.as_ref().and_then(|v| v.no_copy).unwrap_or(false);
                MountPoint {
                    typ,
                    source: volume(&name)?,
                    name,
                    destination: dst,
                    driver: "local".into(),
                    mode: String::new(),
                    rw,
                    propagation: String::new(),
                    copy_up: !nocopy,
                    tmpfs_options: Vec::new(),
                }
            }
            "tmpfs" => {
                let mut o = Vec::new();
                if let Some(t) = &m.tmpfs_options {
                    if let Some(sz) = t.size_bytes.filter(|s| *s > 0) {
                        o.push(format!("size={sz}"));
                    }
                    if let Some(mode) = t.mode.filter(|m| *m > 0) {
                        o.push(format!("mode={mode:o}"));
                    }
                }
                MountPoint {
                    typ,
                    name: String::new(),
                    source: String::new(),
                    destination: dst,
                    driver: String::new(),
                    mode: String::new(),
                    rw,
                    propagation: String::new(),
                    copy_up: false,
                    tmpfs_options: o,
                }
            }
            other => return Err(Error::BadRequest(format!("mount type {other:?} is not supported"))),
        };
        out.push(mp);
    }
    for (dst, opts) in rec.host_config.tmpfs.iter().flatten() {
        out.push(MountPoint {
            typ: "tmpfs".into(),
            name: String::new(),
            source: String::new(),
            destination: dst.clone(),
            driver: String::new(),
            mode: opts.clone(),
            rw: !opts.split(',').any(|o| o == "ro"),
            propagation: String::new(),
            copy_up: false,
            tmpfs_options: opts.split(',').filter(|o| !o.is_empty()).map(str::to_string).collect(),
        });
    }
    for dst in anonymous_targets(rec) {
        let name = rec
            .anon_volumes
            .get(&dst)
            .cloned()
            .ok_or_else(|| Error::NoSuchVolume(format!("(anonymous, for {dst})")))?;
        out.push(MountPoint {
            typ: "volume".into(),
            source: volume(&name)?,
            name,
            destination: dst,
            driver: "local".into(),
            mode: String::new(),
            rw: true,
            propagation: String::new(),
            copy_up: true,
            tmpfs_options: Vec::new(),
        });
    }
    Ok(out)
}

/// The OCI mount for a mount point.
pub fn oci_mount(m: &MountPoint) -> Value {
    if m.typ == "tmpfs" {
        let mut o = vec!["nosuid".to_string(), "nodev".to_string(), "noexec".to_string()];
        o.extend(m.tmpfs_options.iter().cloned());
        return json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": o});
    }
    let mut o = vec!["rbind".to_string(), if m.rw { "rw" } else { "ro" }.to_string()];
    o.push(if m.propagation.is_empty() { "rprivate".to_string() } else { m.propagation.clone() });
    json!({"destination": m.destination, "type": "bind", "source": m.source, "options": o})
}
