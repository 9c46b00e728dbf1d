//! Image archives: `save` writes stored images to a tarball or an OCI
//! layout directory, `load` reads them back (`docker save` / `docker load`).
//!
//! Save formats:
//! - **docker-archive** (default): the layout `docker save` writes since
//!   Docker 25, which is at once a Docker archive and an OCI layout:
//!   `blobs/sha256/…`, `index.json`, `manifest.json`, `oci-layout`,
//!   `repositories`. Layers are written *uncompressed*, each as the blob
//!   named by its diff ID (a gzip or zstd layer is decompressed on the way
//!   out and checked against the diff ID), and a fresh OCI manifest refers
//!   to them; `manifest.json` lists config and layer paths for Docker-style
//!   loaders, `index.json` names each image with the
//!   `io.containerd.image.name` and `org.opencontainers.image.ref.name`
//!   annotations. `docker load`, `podman load` and skopeo read it either way.
//! - **oci-archive** / **oci-dir**: an OCI image layout (tarred, or a
//!   directory) holding the stored manifest, config and layer blobs as they
//!   are, so manifest digests survive the trip.
//!
//! Files are written crash-safe: a temp file (or directory) next to the
//! target, fsynced, then renamed over it.
//!
//! Load reads a docker-archive (legacy `<id>/layer.tar` layouts and the
//! Docker 25 one, through `manifest.json`), an oci-archive (through
//! `index.json`, following nested indexes to this platform's manifest), an
//! OCI layout directory, and any of these gzip- or zstd-compressed. The tar
//! is read once, in order, and never extracted: `manifest.json`,
//! `index.json`, `oci-layout` and `repositories` are kept in memory (at
//! most [`MAX_METADATA`] bytes each); every other file is streamed into the
//! content store: `blobs/<alg>/<hex>` entries verified against the digest
//! their name claims, others (legacy `layer.tar`, `<id>.json`) stored under
//! the digest computed while writing them. So no blob becomes visible
//! unverified, and the image ID is the config's digest, as Docker's.
//!
//! Hostile archives are refused before anything is recorded: absolute
//! entry names or ones with `..`, symlinks or hard links leading out of
//! the archive (links inside it, which legacy `docker save` writes for
//! repeated layers, are followed by name, never on disk), device nodes,
//! oversized metadata, references to files the archive lacks, blobs that
//! do not match their names, configs that do not match their layers.
//! Images are committed one by one through [`ImageStore::commit_local`]
//! (which checks each layer's diff ID while unpacking); should one fail,
//! the images and tags this load recorded are rolled back, and blobs it
//! brought in that no image uses are removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::images::{ImageRecord, LayerRecord};
use crate::manifest::{self, Compression, Parsed, Platform};
use crate::manifest::{DOCKER_CONFIG, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use crate::registry::ImageRef;
use crate::store::ImageStore;

/// Largest `manifest.json`, `index.json`, manifest or image config accepted
/// (each is read into memory).
pub const MAX_METADATA: u64 = 8 << 20;

/// Annotation containerd, Docker and podman read an image's full name from.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest in a layout (Docker puts the tag here).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Uncompressed OCI layer.
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip OCI layer.
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd OCI layer.
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Uncompressed Docker layer.
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// gzip Docker layer.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Content of `oci-layout`.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Archive files read into memory rather than stored as blobs.
const METADATA_FILES: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];
/// Most links followed to resolve one archive path.
const MAX_LINKS: usize = 32;
/// Most index levels followed from `index.json` to a manifest.
const MAX_INDEX_DEPTH: usize = 4;

/// What `save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveFormat {
    /// Docker 25+'s `docker save` layout: a docker-archive that is also an
    /// OCI layout, layers uncompressed.
    #[default]
    DockerArchive,
    /// A tarred OCI image layout with the stored blobs as they are.
    OciArchive,
    /// An OCI image layout directory with the stored blobs as they are.
    OciDir,
}

impl FromStr for ArchiveFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<ArchiveFormat> {
        match s {
            "docker-archive" | "docker" => Ok(ArchiveFormat::DockerArchive),
            "oci-archive" | "oci" => Ok(ArchiveFormat::OciArchive),
            "oci-dir" => Ok(ArchiveFormat::OciDir),
            _ => Err(Error::BadArchive {
                reason: format!("unknown format {s:?} (docker-archive, oci-archive and oci-dir are)"),
            }),
        }
    }
}

impl std::fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::OciArchive => "oci-archive",
            ArchiveFormat::OciDir => "oci-dir",
        })
    }
}

/// One image a load recorded.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The image.
    pub image: ImageRecord,
    /// Full references it was tagged as (`docker.io/library/busybox:latest`);
    /// empty when the archive named it not at all.
    pub tags: Vec<String>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadArchive { reason: reason.into() }
}

/// `blobs/<alg>/<hex>`, the path of a blob in an OCI layout.
fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// The digest a `blobs/<alg>/<hex>` path names, if it is one.
fn digest_of_blob_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// An archive path as a list of plain components: `./a//b/` → `a/b`.
/// Absolute paths and `..` are refused.
fn normalize(path: &str, what: &str) -> Result<String> {
    if path.starts_with('/') {
        return Err(bad(format!("{what} {path:?} is an absolute path")));
    }
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad(format!("{what} {path:?} contains \"..\""))),
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

/// Resolves a link target lexically: relative to `base` (a directory
/// path inside the archive), `..` allowed while it stays inside.
fn resolve_link(base: &str, target: &str, link: &str) -> Result<String> {
    if target.starts_with('/') {
        return Err(bad(format!("link {link:?} points at the absolute path {target:?}")));
    }
    let mut out: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(bad(format!("link {link:?} points outside the archive ({target:?})")));
                }
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err(bad(format!("link {link:?} points at the archive's root")));
    }
    Ok(out.join("/"))
}

/// A reader that yields exactly `left` bytes of `inner` and fails if
/// `inner` ends sooner (a tar header already promised the size).
struct Exact<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("data ended {} bytes early", self.left)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Copies with a large buffer (layers are big; `io::copy` uses 8 KiB).
fn copy_big(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

// ---------------------------------------------------------------- JSON shapes

/// A descriptor as written into manifests and `index.json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescOut {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformOut>,
}

/// A descriptor's platform.
#[derive(Debug, Clone, Serialize)]
struct PlatformOut {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

/// An image manifest (OCI or Docker schema2: same shape).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut {
    schema_version: u32,
    media_type: &'static str,
    config: DescOut,
    layers: Vec<DescOut>,
}

/// `index.json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexOut {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<DescOut>,
}

/// One image in a docker-archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct DockerItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn to_json<T: Serialize>(v: &T, what: &'static str) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::InvalidManifest { what, reason: format!("cannot encode: {e}") })
}

fn desc(media_type: &str, digest: &Digest, size: u64) -> DescOut {
    DescOut { media_type: media_type.into(), digest: digest.to_string(), size, annotations: None, platform: None }
}

/// The platform an image config declares.
fn config_platform(config: &[u8]) -> Option<PlatformOut> {
    let v: Value = serde_json::from_slice(config).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    Some(PlatformOut { architecture: s("architecture")?, os: s("os")?, variant: s("variant") })
}

/// The `rootfs.diff_ids` of an image config.
fn config_diff_ids(config: &[u8], what: &str) -> Result<Vec<Digest>> {
    let v: Value = serde_json::from_slice(config).map_err(|e| bad(format!("{what}: config is not JSON: {e}")))?;
    v.pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("{what}: config has no rootfs.diff_ids")))?
        .iter()
        .map(|d| d.as_str().unwrap_or_default().parse())
        .collect()
}

// ------------------------------------------------------------------- save

/// One image to save and the names to save it under.
struct SaveItem {
    image: ImageRecord,
    tags: Vec<ImageRef>,
}

/// Where saved files go: a tar stream or a directory.
trait Sink {
    /// A directory (`blobs/`, `blobs/sha256/`).
    fn dir(&mut self, path: &str) -> Result<()>;
    /// A file of exactly `size` bytes read from `data`.
    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()>;
}

struct TarSink<W: Write> {
    tar: tar::Builder<W>,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    // Fixed metadata: the same images always make the same bytes.
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl<W: Write> Sink for TarSink<W> {
    fn dir(&mut self, path: &str) -> Result<()> {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        self.tar.append_data(&mut h, path, io::empty()).ctx(|| format!("writing {path} to the archive"))
    }

    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        self.tar
            .append_data(&mut h, path, Exact { inner: data, left: size })
            .ctx(|| format!("writing {path} to the archive"))
    }
}

struct DirSink {
    root: PathBuf,
}

impl Sink for DirSink {
    fn dir(&mut self, path: &str) -> Result<()> {
        let p = self.root.join(path);
        fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))
    }

    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        let p = self.root.join(path);
        let mut f = File::create(&p).ctx(|| format!("creating {}", p.display()))?;
        copy_big(&mut Exact { inner: data, left: size }, &mut f).ctx(|| format!("writing {}", p.display()))?;
        f.sync_all().ctx(|| format!("syncing {}", p.display()))
    }
}

/// Writes each blob once, creating its `blobs/<alg>/` directory first.
struct Writer<'a> {
    sink: &'a mut dyn Sink,
    written: HashSet<Digest>,
    dirs: HashSet<&'static str>,
}

impl Writer<'_> {
    /// True if `d` still needs writing (and creates its directory).
    fn wants(&mut self, d: &Digest) -> Result<bool> {
        if self.written.contains(d) {
            return Ok(false);
        }
        if self.dirs.is_empty() {
            self.sink.dir("blobs/")?;
        }
        let alg = d.algorithm().name();
        if self.dirs.insert(alg) {
            self.sink.dir(&format!("blobs/{alg}/"))?;
        }
        self.written.insert(d.clone());
        Ok(true)
    }

    fn bytes(&mut self, d: &Digest, data: &[u8]) -> Result<()> {
        if self.wants(d)? {
            self.sink.file(&blob_path(d), data.len() as u64, &mut &data[..])?;
        }
        Ok(())
    }
}

impl ImageStore {
    /// Reads a manifest or config blob, refusing one over [`MAX_METADATA`].
    fn read_small(&self, d: &Digest, what: &'static str) -> Result<Vec<u8>> {
        let size = self.content().size(d).ok_or_else(|| Error::BlobNotFound(d.to_string()))?;
        if size > MAX_METADATA {
            return Err(Error::InvalidManifest {
                what,
                reason: format!("{d} is {size} bytes, over the {} MiB limit", MAX_METADATA >> 20),
            });
        }
        self.content().read(d)
    }

    /// Writes the images `names` (references or ids) to `out` as a tar
    /// archive: [`ArchiveFormat::DockerArchive`] or
    /// [`ArchiveFormat::OciArchive`]. Nothing is written if a name does not
    /// resolve; a stored blob that fails verification fails the save.
    pub fn save(&self, names: &[String], format: ArchiveFormat, out: impl Write) -> Result<()> {
        if format == ArchiveFormat::OciDir {
            return Err(bad("oci-dir is a directory: save it with save_to_path"));
        }
        let items = self.plan_save(names)?;
        let mut out = out;
        self.save_items(&items, format, &mut out)
    }

    /// Writes the images `names` to `path`: a tar file for the archive
    /// formats, a directory for [`ArchiveFormat::OciDir`] (which must not
    /// exist or be empty). Either is built under a temporary name next to
    /// `path`, fsynced and renamed into place, so `path` is never seen
    /// half-written.
    pub fn save_to_path(&self, names: &[String], format: ArchiveFormat, path: &Path) -> Result<()> {
        let items = self.plan_save(names)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| bad(format!("invalid output path {}", path.display())))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(bad(format!("invalid output path: directory {} does not exist", parent.display())));
        }
        let prefix = format!(".{name}.berth-save-");
        if format == ArchiveFormat::OciDir {
            if let Ok(mut rd) = fs::read_dir(path) {
                if rd.next().is_some() {
                    return Err(bad(format!("{} exists and is not empty", path.display())));
                }
            } else if path.symlink_metadata().is_ok() {
                return Err(bad(format!("{} exists and is not a directory", path.display())));
            }
            let tmp = tempfile::Builder::new()
                .prefix(&prefix)
                .tempdir_in(&parent)
                .ctx(|| format!("creating a temporary directory in {}", parent.display()))?;
            let mut sink = DirSink { root: tmp.path().to_path_buf() };
            self.write_layout(&items, format, &mut sink)?;
            for d in ["blobs/sha256", "blobs/sha512", "blobs", ""] {
                let p = tmp.path().join(d);
                if p.is_dir() {
                    File::open(&p).and_then(|f| f.sync_all()).ctx(|| format!("syncing {}", p.display()))?;
                }
            }
            set_mode(tmp.path(), 0o755)?;
            fs::rename(tmp.path(), path).ctx(|| format!("renaming into {}", path.display()))?;
            let _ = tmp.keep();
        } else {
            let tmp = tempfile::Builder::new()
                .prefix(&prefix)
                .tempfile_in(&parent)
                .ctx(|| format!("creating a temporary file in {}", parent.display()))?;
            let mut w = io::BufWriter::with_capacity(1 << 20, tmp);
            self.save_items(&items, format, &mut w)?;
            let tmp = w
                .into_inner()
                .map_err(|e| Error::Io { context: format!("writing {}", path.display()), source: e.into_error() })?;
            tmp.as_file().sync_all().ctx(|| format!("syncing {}", path.display()))?;
            set_mode(tmp.path(), 0o644)?;
            tmp.persist(path)
                .map_err(|e| Error::Io { context: format!("renaming into {}", path.display()), source: e.error })?;
        }
        File::open(&parent).and_then(|d| d.sync_all()).ctx(|| format!("syncing {}", parent.display()))
    }

    fn save_items(&self, items: &[SaveItem], format: ArchiveFormat, out: &mut dyn Write) -> Result<()> {
        let mut sink = TarSink { tar: tar::Builder::new(out) };
        self.write_layout(items, format, &mut sink)?;
        sink.tar.into_inner().ctx(|| "finishing the archive".into())?.flush().ctx(|| "writing the archive".into())
    }

    fn write_layout(&self, items: &[SaveItem], format: ArchiveFormat, sink: &mut dyn Sink) -> Result<()> {
        match format {
            ArchiveFormat::DockerArchive => self.write_docker_layout(items, sink),
            ArchiveFormat::OciArchive | ArchiveFormat::OciDir => self.write_oci_layout(items, sink),
        }
    }

    /// Which images `names` mean, with the tags each was named by, in
    /// order and without repeats. A name without tag or digest means every
    /// tag of that repository (as `docker save busybox`); an id means the
    /// image without a name.
    fn plan_save(&self, names: &[String]) -> Result<Vec<SaveItem>> {
        if names.is_empty() {
            return Err(Error::InvalidReference { reference: String::new(), reason: "no image to save".into() });
        }
        let list = self.db().list()?;
        let mut items: Vec<SaveItem> = Vec::new();
        let mut add = |image: ImageRecord, tag: Option<ImageRef>| {
            let i = match items.iter().position(|i| i.image.id == image.id) {
                Some(i) => i,
                None => {
                    items.push(SaveItem { image, tags: Vec::new() });
                    items.len() - 1
                }
            };
            if let Some(t) = tag {
                if !items[i].tags.contains(&t) {
                    items[i].tags.push(t);
                }
            }
        };
        for name in names {
            let parsed = ImageRef::parse(name).ok();
            let last = name.rsplit('/').next().unwrap_or(name);
            let name_only = !last.contains(':') && !name.contains('@');
            if let (Some(r), true) = (&parsed, name_only) {
                let repo = (r.registry(), r.repository());
                let mut found = false;
                for (image, tags) in &list {
                    for t in tags.iter().filter_map(|t| ImageRef::parse(t).ok()) {
                        if (t.registry(), t.repository()) == repo && t.tag().is_some() {
                            add(image.clone(), Some(t));
                            found = true;
                        }
                    }
                }
                if found {
                    continue;
                }
            }
            let image = self.resolve(name)?;
            let tag = parsed
                .filter(|r| r.digest().is_none())
                .filter(|r| list.iter().any(|(i, tags)| i.id == image.id && tags.contains(&r.to_string())));
            add(image, tag);
        }
        Ok(items)
    }

    /// Docker 25+'s layout: uncompressed layers named by diff ID, a fresh
    /// OCI manifest per image, `index.json`, `manifest.json`, `oci-layout`
    /// and `repositories`.
    fn write_docker_layout(&self, items: &[SaveItem], sink: &mut dyn Sink) -> Result<()> {
        let mut w = Writer { sink, written: HashSet::new(), dirs: HashSet::new() };
        let mut layer_sizes: HashMap<Digest, u64> = HashMap::new();
        let mut index = Vec::new();
        let mut manifest_json = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for item in items {
            let image = &item.image;
            let mut layers = Vec::new();
            for l in &image.layers {
                let size = match layer_sizes.get(&l.diff_id) {
                    Some(s) => *s,
                    None => {
                        let s = self.write_uncompressed_layer(&mut w, l)?;
                        layer_sizes.insert(l.diff_id.clone(), s);
                        s
                    }
                };
                layers.push(desc(OCI_LAYER_TAR, &l.diff_id, size));
            }
            let config = self.read_small(&image.id, "image config")?;
            w.bytes(&image.id, &config)?;
            let platform = config_platform(&config);
            let manifest = ManifestOut {
                schema_version: 2,
                media_type: OCI_MANIFEST,
                config: desc(OCI_CONFIG, &image.id, config.len() as u64),
                layers,
            };
            let manifest = to_json(&manifest, "manifest")?;
            let manifest_digest = Digest::sha256_of(&manifest);
            w.bytes(&manifest_digest, &manifest)?;
            index.extend(index_entries(item, OCI_MANIFEST, &manifest_digest, manifest.len() as u64, &platform));
            let familiar: Vec<String> = item.tags.iter().map(ImageRef::familiar).collect();
            manifest_json.push(DockerItem {
                config: blob_path(&image.id),
                repo_tags: (!familiar.is_empty()).then_some(familiar),
                layers: image.layers.iter().map(|l| blob_path(&l.diff_id)).collect(),
            });
            if let Some(top) = image.layers.last() {
                for t in &item.tags {
                    if let Some(tag) = t.tag() {
                        repositories.entry(t.familiar_name()).or_default().insert(tag.into(), top.diff_id.hex().into());
                    }
                }
            }
        }
        let sink = w.sink;
        let index = to_json(&IndexOut { schema_version: 2, media_type: OCI_INDEX, manifests: index }, "index")?;
        sink.file("index.json", index.len() as u64, &mut &index[..])?;
        let mut mj = to_json(&manifest_json, "manifest")?;
        mj.push(b'\n');
        sink.file("manifest.json", mj.len() as u64, &mut &mj[..])?;
        sink.file("oci-layout", OCI_LAYOUT.len() as u64, &mut &OCI_LAYOUT[..])?;
        if !repositories.is_empty() {
            let mut r = to_json(&repositories, "manifest")?;
            r.push(b'\n');
            sink.file("repositories", r.len() as u64, &mut &r[..])?;
        }
        Ok(())
    }

    /// Writes layer `l` uncompressed as the blob named by its diff ID;
    /// returns its size. A compressed layer is read twice: once to learn
    /// the size (the tar header comes first) and check the diff ID, once
    /// to write it; both passes are checked.
    fn write_uncompressed_layer(&self, w: &mut Writer<'_>, l: &LayerRecord) -> Result<u64> {
        let compression = manifest::layer_compression(&l.media_type)?;
        let open = || -> Result<HashingReader<Box<dyn Read>>> {
            let blob = io::BufReader::with_capacity(1 << 20, self.content().open_blob(&l.digest)?);
            Ok(HashingReader::new(crate::unpack::decompress(compression, blob)?, l.diff_id.algorithm()))
        };
        let check = |h: HashingReader<Box<dyn Read>>, size: Option<u64>| -> Result<u64> {
            let (actual, n) = h.finish();
            if actual != l.diff_id {
                return Err(Error::DigestMismatch { expected: l.diff_id.to_string(), actual: actual.to_string() });
            }
            match size {
                Some(s) if s != n => Err(Error::SizeMismatch { digest: l.diff_id.to_string(), expected: s, actual: n }),
                _ => Ok(n),
            }
        };
        let size = match compression {
            Compression::None => {
                self.content().size(&l.digest).ok_or_else(|| Error::BlobNotFound(l.digest.to_string()))?
            }
            _ => {
                let mut h = open()?;
                copy_big(&mut h, &mut io::sink()).ctx(|| format!("reading layer {}", l.digest))?;
                check(h, None)?
            }
        };
        if w.wants(&l.diff_id)? {
            let mut h = open()?;
            w.sink.file(&blob_path(&l.diff_id), size, &mut h)?;
            // Anything past the promised size means the blob changed.
            copy_big(&mut h, &mut io::sink()).ctx(|| format!("reading layer {}", l.digest))?;
            check(h, Some(size))?;
        }
        Ok(size)
    }

    /// An OCI layout of the stored blobs as they are: layers, config,
    /// manifest; then `oci-layout` and `index.json`.
    fn write_oci_layout(&self, items: &[SaveItem], sink: &mut dyn Sink) -> Result<()> {
        sink.file("oci-layout", OCI_LAYOUT.len() as u64, &mut &OCI_LAYOUT[..])?;
        let mut w = Writer { sink, written: HashSet::new(), dirs: HashSet::new() };
        let mut index = Vec::new();
        for item in items {
            let image = &item.image;
            for l in &image.layers {
                if w.wants(&l.digest)? {
                    let size =
                        self.content().size(&l.digest).ok_or_else(|| Error::BlobNotFound(l.digest.to_string()))?;
                    let blob = io::BufReader::with_capacity(1 << 20, self.content().open_blob(&l.digest)?);
                    let mut h = HashingReader::new(blob, l.digest.algorithm());
                    w.sink.file(&blob_path(&l.digest), size, &mut h)?;
                    copy_big(&mut h, &mut io::sink()).ctx(|| format!("reading layer {}", l.digest))?;
                    let (actual, _) = h.finish();
                    if actual != l.digest {
                        return Err(Error::DigestMismatch {
                            expected: l.digest.to_string(),
                            actual: actual.to_string(),
                        });
                    }
                }
            }
            let config = self.read_small(&image.id, "image config")?;
            w.bytes(&image.id, &config)?;
            let stored = self.read_small(&image.manifest, "manifest")?;
            let (manifest, mt) = oci_manifest(stored, &image.manifest_media_type)?;
            let manifest_digest = Digest::sha256_of(&manifest);
            w.bytes(&manifest_digest, &manifest)?;
            let platform = config_platform(&config);
            index.extend(index_entries(item, &mt, &manifest_digest, manifest.len() as u64, &platform));
        }
        let index = to_json(&IndexOut { schema_version: 2, media_type: OCI_INDEX, manifests: index }, "index")?;
        w.sink.file("index.json", index.len() as u64, &mut &index[..])
    }
}

/// The manifest as an OCI layout should hold it: an OCI manifest as it is
/// (its digest unchanged); a Docker schema2 one with its media types
/// rewritten to OCI's (the blobs are the same; skopeo and podman do this
/// too, and umoci reads nothing else).
fn oci_manifest(stored: Vec<u8>, media_type: &str) -> Result<(Vec<u8>, String)> {
    let mut v: Value = serde_json::from_slice(&stored)
        .map_err(|e| Error::InvalidManifest { what: "manifest", reason: format!("not JSON: {e}") })?;
    let declared = v.get("mediaType").and_then(Value::as_str).unwrap_or(media_type).to_string();
    if declared != DOCKER_MANIFEST && media_type != DOCKER_MANIFEST {
        let mt = if media_type.is_empty() { declared } else { media_type.to_string() };
        return Ok((stored, if mt.is_empty() { OCI_MANIFEST.to_string() } else { mt }));
    }
    v["mediaType"] = Value::from(OCI_MANIFEST);
    if let Some(c) = v.get_mut("config") {
        c["mediaType"] = Value::from(OCI_CONFIG);
    }
    for l in v.get_mut("layers").and_then(Value::as_array_mut).into_iter().flatten() {
        let mt = l.get("mediaType").and_then(Value::as_str).unwrap_or_default();
        let oci = match mt {
            DOCKER_LAYER_TAR => OCI_LAYER_TAR,
            DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            }
            other => {
                manifest::layer_compression(other)?;
                continue;
            }
        };
        l["mediaType"] = Value::from(oci);
    }
    Ok((to_json(&v, "manifest")?, OCI_MANIFEST.to_string()))
}

/// `index.json` entries for one image: one per tag, annotated with the
/// full name and the tag (as Docker), or one without a name.
fn index_entries(
    item: &SaveItem,
    media_type: &str,
    digest: &Digest,
    size: u64,
    platform: &Option<PlatformOut>,
) -> Vec<DescOut> {
    let entry = |annotations| DescOut {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size,
        annotations,
        platform: platform.clone(),
    };
    if item.tags.is_empty() {
        return vec![entry(None)];
    }
    item.tags
        .iter()
        .map(|t| {
            let mut a = BTreeMap::new();
            a.insert(ANNOTATION_IMAGE_NAME.to_string(), t.to_string());
            if let Some(tag) = t.tag() {
                a.insert(ANNOTATION_REF_NAME.to_string(), tag.to_string());
            }
            entry(Some(a))
        })
        .collect()
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).ctx(|| format!("chmod {}", path.display()))
}

// ------------------------------------------------------------------- load

/// Where a load reads files from: a tar already streamed into the store,
/// or an OCI layout directory read on demand.
trait Source {
    /// A metadata file (`manifest.json`, `index.json`), if present.
    fn metadata(&mut self, path: &str) -> Result<Option<Vec<u8>>>;
    /// Makes the file at `path` a verified blob and returns its digest.
    /// With `expected`, the file must hash to it (a blob already stored
    /// under it is used when the source lacks the file).
    fn blob(&mut self, path: &str, expected: Option<&Digest>) -> Result<Digest>;
    /// Blobs this load may have added to the store.
    fn added(&self) -> &[Digest];
}

/// A file in a tar archive, after the pass that read it.
enum Stored {
    /// Kept in memory (metadata files).
    Meta(Vec<u8>),
    /// In the content store.
    Blob(Digest),
}

/// A tar archive whose files are already in the store (or memory).
struct TarSource {
    files: HashMap<String, Stored>,
    /// Symlinks and hard links: archive path → target path.
    links: HashMap<String, String>,
    added: Vec<Digest>,
}

impl TarSource {
    /// Reads the archive once: metadata into memory, everything else into
    /// the content store.
    fn scan(&mut self, store: &ImageStore, input: impl Read) -> Result<()> {
        let src = self;
        let mut archive = tar::Archive::new(input);
        let entries = archive.entries().map_err(|e| bad(format!("reading the archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("reading the archive: {e}")))?;
            let raw = entry.path_bytes();
            let raw = std::str::from_utf8(&raw)
                .map_err(|_| bad(format!("entry {:?} has a name that is not UTF-8", String::from_utf8_lossy(&raw))))?
                .to_string();
            let path = normalize(&raw, "entry")?;
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Directory | tar::EntryType::XGlobalHeader => continue,
                _ if path.is_empty() => return Err(bad(format!("entry {raw:?} has no name"))),
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .ok_or_else(|| bad(format!("link {raw:?} has no target")))?;
                    let base = if kind == tar::EntryType::Symlink {
                        path.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("")
                    } else {
                        "" // hard link targets are archive paths
                    };
                    let resolved = resolve_link(base, &target, &raw)?;
                    src.files.remove(&path);
                    src.links.insert(path, resolved);
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    let stored = if METADATA_FILES.contains(&path.as_str()) {
                        if size > MAX_METADATA {
                            return Err(bad(format!(
                                "{path} is {size} bytes, over the {} MiB limit",
                                MAX_METADATA >> 20
                            )));
                        }
                        let mut data = Vec::with_capacity(size as usize);
                        (&mut entry).take(MAX_METADATA).read_to_end(&mut data).ctx(|| format!("reading {path}"))?;
                        Stored::Meta(data)
                    } else if let Some(d) = digest_of_blob_path(&path) {
                        if !store.content().contains(&d) {
                            ingest(store, &d, size, &mut entry, &path)?;
                            src.added.push(d.clone());
                        }
                        Stored::Blob(d)
                    } else {
                        let (d, _) = store.content().write_stream(&mut entry)?;
                        src.added.push(d.clone());
                        Stored::Blob(d)
                    };
                    src.links.remove(&path);
                    src.files.insert(path, stored);
                }
                other => return Err(bad(format!("entry {raw:?} is of unsupported type {other:?}"))),
            }
        }
        Ok(())
    }

    /// Follows links from `path` to a file entry.
    fn resolve<'a>(&'a self, path: &'a str) -> Result<&'a str> {
        let mut p = path;
        for _ in 0..MAX_LINKS {
            match self.links.get(p) {
                Some(t) => p = t,
                None => return Ok(p),
            }
        }
        Err(bad(format!("too many links resolving {path:?}")))
    }
}

/// Streams `size` bytes of `r` into the store as blob `d`, verified.
fn ingest(store: &ImageStore, d: &Digest, size: u64, r: &mut dyn Read, path: &str) -> Result<()> {
    let mut w = store.content().ingest(d, Some(size))?;
    if w.offset() > 0 {
        w = w.restart()?;
    }
    if let Err(e) = copy_big(r, &mut w) {
        w.discard();
        return Err(Error::Io { context: format!("reading {path} from the archive"), source: e });
    }
    w.commit().map_err(|e| match e {
        Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => bad(format!("{path}: {e}")),
        e => e,
    })
}

impl Source for TarSource {
    fn metadata(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        let p = self.resolve(path)?.to_string();
        Ok(match self.files.get(&p) {
            Some(Stored::Meta(m)) => Some(m.clone()),
            _ => None,
        })
    }

    fn blob(&mut self, path: &str, expected: Option<&Digest>) -> Result<Digest> {
        let p = self.resolve(path)?.to_string();
        match (self.files.get(&p), expected) {
            (Some(Stored::Blob(d)), Some(e)) if d != e => {
                Err(bad(format!("{path} hashes to {d}, but {e} was expected")))
            }
            (Some(Stored::Blob(d)), _) => Ok(d.clone()),
            (Some(Stored::Meta(_)), _) => Err(bad(format!("{path} is not a blob"))),
            (None, _) => Err(bad(format!("{path} is referenced but not in the archive"))),
        }
    }

    fn added(&self) -> &[Digest] {
        &self.added
    }
}

/// An OCI layout (or extracted docker-archive) directory, read on demand.
struct DirSource<'a> {
    store: &'a ImageStore,
    root: File,
    display: PathBuf,
    added: Vec<Digest>,
}

impl<'a> DirSource<'a> {
    fn new(store: &'a ImageStore, dir: &Path) -> Result<DirSource<'a>> {
        let root = File::open(dir).ctx(|| format!("opening {}", dir.display()))?;
        Ok(DirSource { store, root, display: dir.to_path_buf(), added: Vec::new() })
    }

    /// Opens the regular file `path` (normalized) beneath the directory,
    /// never following a link out of it. None when it does not exist.
    fn open(&self, path: &str) -> Result<Option<File>> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let shown = || self.display.join(path).display().to_string();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
        let mut res = Err(rustix::io::Errno::AGAIN);
        for _ in 0..16 {
            res = rustix::fs::openat2(&self.root, path, flags, Mode::empty(), ResolveFlags::BENEATH);
            if !matches!(res, Err(rustix::io::Errno::AGAIN)) {
                break;
            }
        }
        let fd = match res {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            // Kernels before 5.6: the path is normalized (no "..", not absolute).
            Err(rustix::io::Errno::NOSYS) => {
                match rustix::fs::openat(&self.root, path, flags | OFlags::NOFOLLOW, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => return Ok(None),
                    Err(e) => return Err(Error::Io { context: format!("opening {}", shown()), source: e.into() }),
                }
            }
            Err(rustix::io::Errno::XDEV) => return Err(bad(format!("{} leads outside the directory", shown()))),
            Err(e) => return Err(Error::Io { context: format!("opening {}", shown()), source: e.into() }),
        };
        let f = File::from(fd);
        if !f.metadata().ctx(|| format!("stat {}", shown()))?.is_file() {
            return Err(bad(format!("{} is not a regular file", shown())));
        }
        Ok(Some(f))
    }
}

impl Source for DirSource<'_> {
    fn metadata(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(f) = self.open(path)? else { return Ok(None) };
        let size = f.metadata().ctx(|| format!("stat {path}"))?.len();
        if size > MAX_METADATA {
            return Err(bad(format!("{path} is {size} bytes, over the {} MiB limit", MAX_METADATA >> 20)));
        }
        let mut data = Vec::new();
        f.take(MAX_METADATA).read_to_end(&mut data).ctx(|| format!("reading {path}"))?;
        Ok(Some(data))
    }

    fn blob(&mut self, path: &str, expected: Option<&Digest>) -> Result<Digest> {
        let path = normalize(path, "path")?;
        let Some(mut f) = self.open(&path)? else {
            return Err(bad(format!("{path} is referenced but not in {}", self.display.display())));
        };
        if let Some(d) = expected {
            if self.store.content().contains(d) {
                return Ok(d.clone());
            }
        }
        let d = match expected {
            Some(d) => {
                let size = f.metadata().ctx(|| format!("stat {path}"))?.len();
                ingest(self.store, d, size, &mut f, &path)?;
                d.clone()
            }
            None => self.store.content().write_stream(io::BufReader::with_capacity(1 << 20, f))?.0,
        };
        self.added.push(d.clone());
        Ok(d)
    }

    fn added(&self) -> &[Digest] {
        &self.added
    }
}

/// One image to record: its manifest (stored by `commit_local`) and names.
struct Plan {
    manifest: Vec<u8>,
    media_type: String,
    config: Digest,
    tags: Vec<String>,
}

impl ImageStore {
    /// Loads the images in a docker-archive or oci-archive read from
    /// `input` (plain, gzip or zstd). Returns what was recorded, in
    /// archive order; on error nothing is.
    pub fn load(&self, input: impl Read) -> Result<Vec<LoadedImage>> {
        let mut input = io::BufReader::with_capacity(1 << 20, input);
        // Sniff compression from the first bytes (a pipe may deliver few at a time).
        let mut head = Vec::with_capacity(6);
        (&mut input).take(6).read_to_end(&mut head).ctx(|| "reading the archive".into())?;
        let compression = match head.as_slice() {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [0xfd, b'7', b'z', b'X', b'Z', 0] => return Err(bad("xz-compressed archives are not supported")),
            [b'B', b'Z', b'h', ..] => return Err(bad("bzip2-compressed archives are not supported")),
            _ => Compression::None,
        };
        let tar = crate::unpack::decompress(compression, io::Cursor::new(head).chain(input))?;
        let mut src = TarSource { files: HashMap::new(), links: HashMap::new(), added: Vec::new() };
        if let Err(e) = src.scan(self, io::BufReader::with_capacity(1 << 20, tar)) {
            // What the partial read stored is verified, but unused.
            self.remove_unused(&src.added);
            return Err(e);
        }
        self.load_from(&mut src)
    }

    /// Loads the images of an OCI layout directory (or an extracted
    /// docker-archive): like [`ImageStore::load`].
    pub fn load_dir(&self, dir: &Path) -> Result<Vec<LoadedImage>> {
        let mut src = DirSource::new(self, dir)?;
        self.load_from(&mut src)
    }

    /// Loads from `path`: a directory through [`ImageStore::load_dir`],
    /// a file through [`ImageStore::load`].
    pub fn load_path(&self, path: &Path) -> Result<Vec<LoadedImage>> {
        if path.is_dir() {
            self.load_dir(path)
        } else {
            self.load(File::open(path).ctx(|| format!("opening {}", path.display()))?)
        }
    }

    fn load_from(&self, src: &mut dyn Source) -> Result<Vec<LoadedImage>> {
        let mut candidates: Vec<Digest> = Vec::new();
        let result = self.plan_load(src).and_then(|plans| {
            candidates.extend(plans.iter().map(|p| Digest::sha256_of(&p.manifest)));
            self.commit_plans(&plans)
        });
        // Whatever the outcome, blobs this load brought in that no image
        // uses (legacy v1 JSON, an unused manifest, a refused image's) go.
        candidates.extend_from_slice(src.added());
        candidates.sort();
        candidates.dedup();
        self.remove_unused(&candidates);
        result
    }

    /// Reads and checks what the archive holds, through `manifest.json`
    /// when it has one (as Docker), else `index.json`.
    fn plan_load(&self, src: &mut dyn Source) -> Result<Vec<Plan>> {
        match src.metadata("manifest.json")? {
            Some(mj) => self.plan_docker(src, &mj),
            None => match src.metadata("index.json")? {
                Some(ij) => self.plan_oci(src, &ij),
                None => Err(bad("neither manifest.json nor index.json found: not a docker-archive or OCI layout")),
            },
        }
    }

    /// Records the planned images; on a failure, undoes what this load
    /// recorded and moved.
    fn commit_plans(&self, plans: &[Plan]) -> Result<Vec<LoadedImage>> {
        let mut created: Vec<Digest> = Vec::new();
        let mut tags_before: Vec<(String, Option<Digest>)> = Vec::new();
        let mut out = Vec::new();
        for p in plans {
            let res = (|| {
                for t in &p.tags {
                    if !tags_before.iter().any(|(x, _)| x == t) {
                        tags_before.push((t.clone(), self.db().tag_target(t)?));
                    }
                }
                let existed = self.db().get(&p.config)?.is_some();
                let image = self.commit_local(&p.manifest, &p.media_type, &[], &p.tags)?;
                if !existed {
                    created.push(image.id.clone());
                }
                Ok::<_, Error>(image)
            })();
            match res {
                Ok(image) => out.push(LoadedImage { image, tags: p.tags.clone() }),
                Err(e) => {
                    for id in &created {
                        let _ = self.db().delete(id);
                    }
                    for (tag, before) in &tags_before {
                        let _ = match before {
                            Some(id) => self.db().tag(tag, id),
                            None => self.db().untag(tag).map(|_| ()),
                        };
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Deletes those of `candidates` no recorded image uses.
    fn remove_unused(&self, candidates: &[Digest]) {
        if candidates.is_empty() {
            return;
        }
        let Ok(images) = self.db().list() else { return };
        let mut used: HashSet<&Digest> = HashSet::new();
        for (r, _) in &images {
            used.insert(&r.id);
            used.insert(&r.manifest);
            if let Some(i) = &r.index {
                used.insert(i);
            }
            used.extend(r.layers.iter().map(|l| &l.digest));
        }
        for d in candidates {
            if !used.contains(d) {
                let _ = self.content().delete(d);
            }
        }
    }

    /// Plans a docker-archive load from its `manifest.json`: each image
    /// gets a Docker schema2 manifest over the archive's config and layers
    /// (an OCI one if a layer is zstd, which schema2 cannot name).
    fn plan_docker(&self, src: &mut dyn Source, mj: &[u8]) -> Result<Vec<Plan>> {
        let items: Vec<DockerItem> = serde_json::from_slice(mj).map_err(|e| bad(format!("manifest.json: {e}")))?;
        if items.is_empty() {
            return Err(bad("manifest.json lists no images"));
        }
        let mut plans: Vec<Plan> = Vec::new();
        for item in items {
            let config_path = normalize(&item.config, "manifest.json: Config")?;
            let expected = digest_of_blob_path(&config_path);
            let config_digest = src.blob(&config_path, expected.as_ref())?;
            let config = self.read_small(&config_digest, "image config")?;
            let diff_ids = config_diff_ids(&config, &item.config)?;
            if diff_ids.len() != item.layers.len() {
                return Err(bad(format!(
                    "manifest.json: {} lists {} layers, its config {} diff IDs",
                    item.config,
                    item.layers.len(),
                    diff_ids.len()
                )));
            }
            let mut layers = Vec::new();
            for l in &item.layers {
                let path = normalize(l, "manifest.json: layer")?;
                let expected = digest_of_blob_path(&path);
                let d = src.blob(&path, expected.as_ref())?;
                let size = self.content().size(&d).ok_or_else(|| Error::BlobNotFound(d.to_string()))?;
                layers.push((d.clone(), size, self.sniff_blob(&d, l)?));
            }
            let zstd = layers.iter().any(|(_, _, c)| *c == Compression::Zstd);
            let (media_type, config_mt) =
                if zstd { (OCI_MANIFEST, OCI_CONFIG) } else { (DOCKER_MANIFEST, DOCKER_CONFIG) };
            let manifest = ManifestOut {
                schema_version: 2,
                media_type,
                config: desc(config_mt, &config_digest, config.len() as u64),
                layers: layers
                    .iter()
                    .map(|(d, size, c)| {
                        let mt = match (c, zstd) {
                            (Compression::None, false) => DOCKER_LAYER_TAR,
                            (Compression::Gzip, false) => DOCKER_LAYER_GZIP,
                            (Compression::None, true) => OCI_LAYER_TAR,
                            (Compression::Gzip, true) => OCI_LAYER_GZIP,
                            (Compression::Zstd, _) => OCI_LAYER_ZSTD,
                        };
                        desc(mt, d, *size)
                    })
                    .collect(),
            };
            let mut tags = Vec::new();
            for t in item.repo_tags.unwrap_or_default() {
                let r = ImageRef::parse(&t).map_err(|e| bad(format!("manifest.json: RepoTags: {e}")))?;
                if r.digest().is_some() {
                    return Err(bad(format!("manifest.json: RepoTags entry {t:?} is not a tag")));
                }
                tags.push(r.to_string());
            }
            let manifest = to_json(&manifest, "manifest")?;
            merge_plan(&mut plans, Plan { manifest, media_type: media_type.into(), config: config_digest, tags });
        }
        Ok(plans)
    }

    /// The compression of a stored layer blob, from its first bytes.
    fn sniff_blob(&self, d: &Digest, path: &str) -> Result<Compression> {
        let mut head = Vec::with_capacity(6);
        self.content().open_blob(d)?.take(6).read_to_end(&mut head).ctx(|| format!("reading {path}"))?;
        match head.as_slice() {
            [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
            [0xfd, b'7', b'z', b'X', b'Z', 0] => Err(bad(format!("layer {path} is xz-compressed (not supported)"))),
            [b'B', b'Z', b'h', ..] => Err(bad(format!("layer {path} is bzip2-compressed (not supported)"))),
            _ => Ok(Compression::None),
        }
    }

    /// Plans an OCI layout load from its `index.json`: each entry (through
    /// nested indexes, this platform's manifest) with the names its
    /// annotations give.
    fn plan_oci(&self, src: &mut dyn Source, ij: &[u8]) -> Result<Vec<Plan>> {
        let Parsed::Index(index) = manifest::parse(ij, Some(OCI_INDEX)).map_err(|e| bad(format!("index.json: {e}")))?
        else {
            return Err(bad("index.json is not an image index"));
        };
        if index.manifests().is_empty() {
            return Err(bad("index.json lists no images"));
        }
        let mut plans = Vec::new();
        for d in index.manifests() {
            let tags = names_from_annotations(d)?;
            self.plan_oci_descriptor(src, d, tags, 0, &mut plans)?;
        }
        Ok(plans)
    }

    fn plan_oci_descriptor(
        &self,
        src: &mut dyn Source,
        desc: &Descriptor,
        tags: Vec<String>,
        depth: usize,
        plans: &mut Vec<Plan>,
    ) -> Result<()> {
        let digest: Digest = desc.digest().to_string().parse()?;
        if desc.size() > MAX_METADATA {
            return Err(bad(format!(
                "manifest {digest} is {} bytes, over the {} MiB limit",
                desc.size(),
                MAX_METADATA >> 20
            )));
        }
        let bytes = self.source_blob(src, desc, "manifest")?;
        let declared = desc.media_type().to_string();
        let media_type = Some(declared.as_str()).filter(|m| !m.is_empty());
        match manifest::parse(&bytes, media_type)? {
            Parsed::Index(inner) => {
                if depth >= MAX_INDEX_DEPTH {
                    return Err(bad(format!("index {digest}: indexes nested more than {MAX_INDEX_DEPTH} deep")));
                }
                let pick = manifest::select(&inner, &Platform::host(), &digest.to_string())?.clone();
                self.plan_oci_descriptor(src, &pick, tags, depth + 1, plans)
            }
            Parsed::Manifest(m) => {
                self.source_blob_stored(src, m.config(), "config")?;
                let config_digest: Digest = m.config().digest().to_string().parse()?;
                let config = self.read_small(&config_digest, "image config")?;
                let diff_ids = config_diff_ids(&config, &format!("manifest {digest}"))?;
                if diff_ids.len() != m.layers().len() {
                    return Err(bad(format!(
                        "manifest {digest} lists {} layers, its config {} diff IDs",
                        m.layers().len(),
                        diff_ids.len()
                    )));
                }
                for l in m.layers() {
                    manifest::layer_compression(l.media_type().as_ref())?;
                    self.source_blob_stored(src, l, "layer")?;
                }
                let media_type = media_type
                    .map(str::to_string)
                    .or_else(|| m.media_type().as_ref().map(|t| t.to_string()))
                    .unwrap_or_else(|| OCI_MANIFEST.to_string());
                merge_plan(plans, Plan { manifest: bytes, media_type, config: config_digest, tags });
                Ok(())
            }
        }
    }

    /// Brings the blob `desc` names in from `src` (verified) and checks its
    /// size; returns its bytes (small blobs only).
    fn source_blob(&self, src: &mut dyn Source, desc: &Descriptor, what: &'static str) -> Result<Vec<u8>> {
        let d = self.source_blob_stored(src, desc, what)?;
        self.read_small(&d, what)
    }

    fn source_blob_stored(&self, src: &mut dyn Source, desc: &Descriptor, what: &'static str) -> Result<Digest> {
        let d: Digest = desc.digest().to_string().parse()?;
        src.blob(&blob_path(&d), Some(&d))?;
        let size = self.content().size(&d).ok_or_else(|| Error::BlobNotFound(d.to_string()))?;
        if size != desc.size() {
            return Err(bad(format!("{what} {d} is {size} bytes, its descriptor says {}", desc.size())));
        }
        Ok(d)
    }
}

/// Adds `p` to `plans`, merging its tags into an earlier plan of the same
/// manifest.
fn merge_plan(plans: &mut Vec<Plan>, p: Plan) {
    match plans.iter_mut().find(|x| x.manifest == p.manifest) {
        Some(x) => {
            for t in p.tags {
                if !x.tags.contains(&t) {
                    x.tags.push(t);
                }
            }
        }
        None => plans.push(p),
    }
}

/// The full names an `index.json` entry gives its image: containerd's
/// `io.containerd.image.name`, else an `org.opencontainers.image.ref.name`
/// that is a whole reference (`busybox:latest`); a bare tag names nothing.
fn names_from_annotations(d: &Descriptor) -> Result<Vec<String>> {
    let Some(a) = d.annotations() else { return Ok(Vec::new()) };
    if let Some(n) = a.get(ANNOTATION_IMAGE_NAME) {
        let r = ImageRef::parse(n).map_err(|e| bad(format!("index.json: {ANNOTATION_IMAGE_NAME}: {e}")))?;
        return Ok(if r.digest().is_some() { Vec::new() } else { vec![r.to_string()] });
    }
    if let Some(n) = a.get(ANNOTATION_REF_NAME) {
        if n.contains(':') || n.contains('/') {
            if let Ok(r) = ImageRef::parse(n) {
                if r.digest().is_none() {
                    return Ok(vec![r.to_string()]);
                }
            }
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("./a//b/", "x").expect("ok"), "a/b");
        assert_eq!(normalize("manifest.json", "x").expect("ok"), "manifest.json");
        assert!(normalize("/etc/passwd", "x").is_err());
        assert!(normalize("a/../../b", "x").is_err());
        assert!(normalize("..", "x").is_err());
    }

    #[test]
    fn resolves_links_inside_only() {
        assert_eq!(resolve_link("b", "../a/layer.tar", "b/layer.tar").expect("ok"), "a/layer.tar");
        assert_eq!(resolve_link("", "x.tar", "y").expect("ok"), "x.tar");
        assert!(resolve_link("b", "../../etc/passwd", "b/layer.tar").is_err());
        assert!(resolve_link("b", "/etc/passwd", "b/layer.tar").is_err());
        assert!(resolve_link("b", "..", "b/x").is_err());
    }

    #[test]
    fn blob_paths() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(digest_of_blob_path(&blob_path(&d)), Some(d));
        assert_eq!(digest_of_blob_path("blobs/sha256/nothex"), None);
        assert_eq!(digest_of_blob_path("abc/layer.tar"), None);
    }

    #[test]
    fn formats_parse() {
        assert_eq!("docker-archive".parse::<ArchiveFormat>().expect("docker"), ArchiveFormat::DockerArchive);
        assert_eq!("oci-archive".parse::<ArchiveFormat>().expect("oci"), ArchiveFormat::OciArchive);
        assert_eq!("oci-dir".parse::<ArchiveFormat>().expect("dir"), ArchiveFormat::OciDir);
        assert!("zip".parse::<ArchiveFormat>().is_err());
        assert_eq!(ArchiveFormat::OciDir.to_string(), "oci-dir");
    }
}
