//! `save` and `load`: round trips between stores (docker-archive,
//! oci-archive, oci-dir, compressed input), archives made by skopeo
//! (legacy docker-archive, oci-archive with a nested index), hostile
//! archives (nothing recorded, no blob left), and interop: what berth
//! saves loads in podman, passes `skopeo inspect`/`skopeo copy` (which
//! verify every blob) and unpacks with umoci.
//!
//! Stores live in unique temp dirs; podman runs with its own --root,
//! --runroot and config files in a temp dir (as crates/cli/tests/podman_e2e.rs)
//! and is reset and unmounted on drop.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use berth_image::archive::ArchiveFormat;
use berth_image::images::ImageRecord;
use berth_image::manifest::Platform;
use berth_image::registry::{ImageRef, Registry, RegistryOptions};
use berth_image::store::{ImageStore, NoProgress};
use berth_image::{Digest, Error};
use common::{image_parts, test_digests, test_images, TestRegistry};

// ------------------------------------------------------------------ helpers

fn store(dir: &Path) -> ImageStore {
    ImageStore::open(dir).expect("open store")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether `bin` runs; installs `package` with apt-get first when missing
/// (as root). Err says why not.
fn tool(bin: &str, package: &str) -> Result<(), String> {
    let have =
        || Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().is_ok_and(|o| o.status.success());
    if !have() && is_root() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
    }
    if have() {
        Ok(())
    } else {
        Err(format!("{bin} is not installed and `apt-get install {package}` did not provide it"))
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads test image `name` (an OCI layout) into `s` and tags it `tag`.
fn seed(s: &ImageStore, name: &str, tag: &str) -> ImageRecord {
    let loaded = s.load_dir(&test_images().join(name)).expect("load test image layout");
    assert_eq!(loaded.len(), 1);
    let full = ImageRef::parse(tag).expect("tag").to_string();
    s.db().tag(&full, &loaded[0].image.id).expect("tag");
    loaded[0].image.clone()
}

fn tags_of(s: &ImageStore, id: &Digest) -> Vec<String> {
    s.db().list().expect("list").into_iter().find(|(r, _)| &r.id == id).map(|(_, t)| t).unwrap_or_default()
}

/// A description of a directory tree: path → type, mode, owner, size,
/// content hash or link target (device numbers for whiteouts).
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("prefix").to_string_lossy().into_owned();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).expect("readlink").display())
            } else if ft.is_file() {
                format!("file {}", Digest::sha256_of(&std::fs::read(&p).expect("read")))
            } else if ft.is_char_device() {
                format!("chardev {}", m.rdev())
            } else {
                "other".to_string()
            };
            out.insert(rel, format!("{what} mode={:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()));
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The image's layers, unpacked in `s`, are identical to those in `t`.
fn assert_same_rootfs(s: &ImageStore, t: &ImageStore, image: &ImageRecord) {
    for l in &image.layers {
        let (a, b) = (s.snapshots().path(&l.chain_id), t.snapshots().path(&l.chain_id));
        assert!(b.is_dir(), "layer {} not unpacked in the loading store", l.diff_id);
        assert_eq!(tree(&a), tree(&b), "layer {} differs", l.diff_id);
    }
}

/// Every blob verifies; nothing is left in ingest/.
fn assert_store_clean(root: &Path) {
    for e in std::fs::read_dir(root.join("blobs/sha256")).expect("blobs").flatten() {
        let data = std::fs::read(e.path()).expect("read blob");
        assert_eq!(Digest::sha256_of(&data).hex(), e.file_name().to_string_lossy(), "bad blob");
    }
    let left: Vec<_> = std::fs::read_dir(root.join("ingest")).expect("ingest").flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "ingest leftovers: {left:?}");
}

/// The files of a tar archive by name.
fn tar_files(data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(data);
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.header().entry_type().is_file() {
            let name = e.path().expect("path").to_string_lossy().into_owned();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).expect("read entry");
            out.insert(name, buf);
        }
    }
    out
}

fn json(data: &[u8]) -> serde_json::Value {
    serde_json::from_slice(data).expect("json")
}

// -------------------------------------------------------------- round trips

#[test]
fn docker_archive_round_trip_keeps_id_tags_and_rootfs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = store(&tmp.path().join("a"));
    let multi = seed(&a, "multilayer", "team/multi:v1");
    a.db().tag("docker.io/team/multi:v2", &multi.id).expect("tag v2");
    let bb = seed(&a, "busybox", "busybox:latest");

    let file = tmp.path().join("out/images.tar");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // `team/multi` without a tag: both of its tags (as `docker save`).
    a.save_to_path(&["team/multi".into(), "busybox".into()], ArchiveFormat::DockerArchive, &file).expect("save");
    let data = std::fs::read(&file).expect("read archive");
    let leftovers: Vec<_> =
        std::fs::read_dir(file.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "temp files left next to the archive: {leftovers:?}");

    // Same images, same bytes (fixed metadata).
    let mut again = Vec::new();
    a.save(&["team/multi".into(), "busybox".into()], ArchiveFormat::DockerArchive, &mut again).expect("save again");
    assert!(again == data, "saving twice gave different archives");

    // The layout: Docker 25's, with uncompressed layers named by diff ID.
    let files = tar_files(&data);
    for f in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        assert!(files.contains_key(f), "{f} missing");
    }
    let mj = json(&files["manifest.json"]);
    let items = mj.as_array().expect("manifest.json is a list");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["Config"], format!("blobs/sha256/{}", multi.id.hex()));
    assert_eq!(items[0]["RepoTags"], serde_json::json!(["team/multi:v1", "team/multi:v2"]));
    assert_eq!(items[1]["RepoTags"], serde_json::json!(["busybox:latest"]));
    for (item, image) in items.iter().zip([&multi, &bb]) {
        let layers = item["Layers"].as_array().expect("Layers");
        assert_eq!(layers.len(), image.layers.len());
        for (path, l) in layers.iter().zip(&image.layers) {
            let blob = &files[path.as_str().expect("layer path")];
            assert_eq!(Digest::sha256_of(blob), l.diff_id, "layer is not the uncompressed diff");
            assert_ne!(blob[..2], [0x1f, 0x8b], "layer is still gzip");
        }
    }
    let index = json(&files["index.json"]);
    let entries = index["manifests"].as_array().expect("manifests");
    let names: Vec<&str> =
        entries.iter().map(|e| e["annotations"]["io.containerd.image.name"].as_str().expect("name")).collect();
    assert_eq!(names, ["docker.io/team/multi:v1", "docker.io/team/multi:v2", "docker.io/library/busybox:latest"]);
    assert_eq!(entries[0]["annotations"]["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(entries[0]["platform"]["os"], "linux");
    let m = json(&files[&format!("blobs/sha256/{}", &entries[0]["digest"].as_str().unwrap()[7..])]);
    assert_eq!(m["config"]["digest"], multi.id.to_string());
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    assert_eq!(m["layers"][0]["digest"], multi.layers[0].diff_id.to_string());
    assert_eq!(json(&files["repositories"])["team/multi"]["v1"], multi.layers[2].diff_id.hex());

    // Load into a fresh store: same ids, tags, layers unpacked identically.
    let b = store(&tmp.path().join("b"));
    let loaded = b.load_path(&file).expect("load");
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].image.id, multi.id);
    assert_eq!(loaded[0].tags, ["docker.io/team/multi:v1", "docker.io/team/multi:v2"]);
    assert_eq!(loaded[1].image.id, bb.id);
    assert_eq!(loaded[1].tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(b.resolve("team/multi:v2").expect("resolve").id, multi.id);
    assert_eq!(b.resolve("busybox").expect("resolve").id, bb.id);
    assert_eq!(loaded[0].image.manifest_media_type, berth_image::manifest::DOCKER_MANIFEST);
    assert_same_rootfs(&a, &b, &multi);
    assert_same_rootfs(&a, &b, &bb);
    assert_store_clean(&tmp.path().join("b"));
    // The archive's own OCI manifests are not kept: only what images use.
    let used: std::collections::BTreeSet<&Digest> = loaded
        .iter()
        .flat_map(|l| [&l.image.id, &l.image.manifest].into_iter().chain(l.image.layers.iter().map(|l| &l.digest)))
        .collect();
    assert_eq!(b.content().list().expect("list").iter().collect::<std::collections::BTreeSet<_>>(), used);

    // Loading again changes nothing; a gzip-compressed archive loads too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &data).unwrap();
    let c = store(&tmp.path().join("c"));
    let loaded = c.load(&gz.finish().unwrap()[..]).expect("load gzip");
    assert_eq!(loaded.len(), 2);
    assert_eq!(b.load(&data[..]).expect("load again").len(), 2);
    assert_eq!(b.db().list().expect("list").len(), 2);
}

#[test]
fn saving_by_id_leaves_the_image_unnamed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = store(&tmp.path().join("a"));
    let bb = seed(&a, "busybox", "busybox:latest");
    let mut data = Vec::new();
    a.save(&[bb.id.hex()[..12].to_string()], ArchiveFormat::DockerArchive, &mut data).expect("save by id");
    let files = tar_files(&data);
    assert!(json(&files["manifest.json"])[0]["RepoTags"].is_null());
    assert!(!files.contains_key("repositories"));
    assert!(json(&files["index.json"])["manifests"][0].get("annotations").is_none());
    let b = store(&tmp.path().join("b"));
    let loaded = b.load(&data[..]).expect("load");
    assert_eq!((loaded[0].image.id.clone(), loaded[0].tags.len()), (bb.id.clone(), 0));
    assert!(tags_of(&b, &bb.id).is_empty());

    let err = a.save(&["nothere:latest".into()], ArchiveFormat::DockerArchive, Vec::new()).expect_err("missing");
    assert!(matches!(err, Error::ImageNotFound(_)), "{err}");
    let out = tmp.path().join("never.tar");
    assert!(a.save_to_path(&["nothere".into()], ArchiveFormat::DockerArchive, &out).is_err());
    assert!(!out.exists());
}

#[test]
fn oci_archive_and_dir_keep_manifest_digests() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = store(&tmp.path().join("a"));
    let multi = seed(&a, "multilayer", "team/multi:v1");
    assert_eq!(multi.manifest.to_string(), test_digests()["multilayer"].as_str().unwrap());

    let file = tmp.path().join("multi.oci.tar");
    a.save_to_path(&["team/multi:v1".into()], ArchiveFormat::OciArchive, &file).expect("save oci-archive");
    let files = tar_files(&std::fs::read(&file).unwrap());
    assert!(!files.contains_key("manifest.json"), "oci-archive is a plain OCI layout");
    let (_, _, layers) = image_parts("multilayer");
    for l in &layers {
        assert!(files.contains_key(&format!("blobs/sha256/{}", &l[7..])), "stored (gzip) layer {l} missing");
    }
    let b = store(&tmp.path().join("b"));
    let loaded = b.load_path(&file).expect("load oci-archive");
    assert_eq!(loaded[0].image.id, multi.id);
    assert_eq!(loaded[0].image.manifest, multi.manifest, "manifest digest changed");
    assert_eq!(loaded[0].tags, ["docker.io/team/multi:v1"]);
    assert_same_rootfs(&a, &b, &multi);

    let dir = tmp.path().join("layout");
    a.save_to_path(&["team/multi:v1".into()], ArchiveFormat::OciDir, &dir).expect("save oci-dir");
    assert!(dir.join("oci-layout").is_file() && dir.join("index.json").is_file());
    let err = a.save_to_path(&["team/multi:v1".into()], ArchiveFormat::OciDir, &dir).expect_err("not empty");
    assert!(err.to_string().contains("not empty"), "{err}");
    let c = store(&tmp.path().join("c"));
    let loaded = c.load_path(&dir).expect("load oci-dir");
    assert_eq!((loaded[0].image.id.clone(), loaded[0].image.manifest.clone()), (multi.id.clone(), multi.manifest));
    assert_store_clean(&tmp.path().join("c"));
    assert!(a.save(&["team/multi:v1".into()], ArchiveFormat::OciDir, Vec::new()).is_err(), "oci-dir to a stream");
}

#[test]
fn pulled_image_saves_and_loads() {
    let Some(reg) = TestRegistry::start() else { return };
    reg.push_image("multiarch", "test/multi:latest");
    let tmp = tempfile::tempdir().expect("tmp");
    let a = store(&tmp.path().join("a"));
    let reference = ImageRef::parse(&reg.image("test/multi:latest")).expect("ref");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let registry = Arc::new(Registry::new(RegistryOptions::default()));
    let pulled = rt.block_on(a.pull(registry, &reference, &Platform::host(), Arc::new(NoProgress))).expect("pull");
    let mut data = Vec::new();
    a.save(&[reference.to_string()], ArchiveFormat::DockerArchive, &mut data).expect("save");
    let b = store(&tmp.path().join("b"));
    let loaded = b.load(&data[..]).expect("load");
    assert_eq!(loaded[0].image.id, pulled.image.id);
    assert_eq!(loaded[0].tags, [reference.to_string()]);
    assert_same_rootfs(&a, &b, &pulled.image);
    let native = test_digests()["multiarch_manifests"][Platform::host().arch.as_str()].as_str().unwrap().to_string();
    assert_eq!(pulled.image.manifest.to_string(), native);
}

// ------------------------------------------------------ archives from skopeo

#[test]
fn loads_legacy_docker_archive_from_skopeo() {
    if let Err(why) = tool("skopeo", "skopeo") {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("legacy.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--insecure-policy"])
        .arg(format!("oci:{}:latest", test_images().join("multilayer").display()))
        .arg(format!("docker-archive:{}:busybox:latest", file.display())));
    let files = tar_files(&std::fs::read(&file).unwrap());
    assert!(files.keys().any(|k| k.ends_with(".json") && k.len() == 69), "not the legacy layout: {files:?}");

    let s = store(&tmp.path().join("s"));
    let loaded = s.load_path(&file).expect("load legacy docker-archive");
    let (_, config, _) = image_parts("multilayer");
    assert_eq!(loaded[0].image.id.to_string(), config, "image id is the config digest");
    assert_eq!(loaded[0].tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(loaded[0].image.layers.len(), 3);
    let top = s.snapshots().path(&loaded[0].image.layers[0].chain_id);
    assert!(top.join("bin/busybox").is_file());
    assert_store_clean(&tmp.path().join("s"));
    assert_eq!(s.content().list().unwrap().len(), 5, "legacy v1 json files are not kept");
}

#[test]
fn loads_oci_archive_with_nested_index_from_skopeo() {
    if let Err(why) = tool("skopeo", "skopeo") {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("multi.tar");
    run(Command::new("skopeo")
        .args(["copy", "--all", "--quiet", "--insecure-policy"])
        .arg(format!("oci:{}:latest", test_images().join("multiarch").display()))
        .arg(format!("oci-archive:{}:example.com/multi:v1", file.display())));
    let s = store(&tmp.path().join("s"));
    let loaded = s.load_path(&file).expect("load oci-archive");
    assert_eq!(loaded.len(), 1);
    let native = test_digests()["multiarch_manifests"][Platform::host().arch.as_str()].as_str().unwrap().to_string();
    assert_eq!(loaded[0].image.manifest.to_string(), native, "not this platform's manifest");
    assert_eq!(loaded[0].tags, ["example.com/multi:v1"]);
    assert!(s.snapshots().path(&loaded[0].image.layers[0].chain_id).join("bin/busybox").is_file());
    assert_store_clean(&tmp.path().join("s"));
}

// --------------------------------------------------------- hostile archives

/// A tar written header by header, so names the `tar` crate refuses to
/// write (`..`, absolute) can be tested.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn entry(mut self, kind: u8, name: &str, link: &str, data: &[u8]) -> Raw {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Raw {
        self.entry(b'0', name, "", data)
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend([0u8; 1024]);
        self.0
    }
}

/// An uncompressed layer tar with `files`.
fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut r = Raw::default();
    for (n, d) in files {
        r = r.file(n, d);
    }
    r.finish()
}

fn config_for(layers: &[&[u8]]) -> Vec<u8> {
    let ids: Vec<String> = layers.iter().map(|l| Digest::sha256_of(l).to_string()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": Platform::host().arch, "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap()
}

/// One image of [`docker_archive`]: tag, config, layers.
type ArchiveImage<'a> = (&'a str, Vec<u8>, Vec<Vec<u8>>);

/// A legacy-style docker-archive: `<n>.json` config, `<n>/layer.tar`s.
fn docker_archive(images: &[ArchiveImage<'_>]) -> Vec<u8> {
    let mut r = Raw::default();
    let mut items = Vec::new();
    for (i, (tag, config, layers)) in images.iter().enumerate() {
        r = r.file(&format!("c{i}.json"), config);
        let mut paths = Vec::new();
        for (j, l) in layers.iter().enumerate() {
            let p = format!("l{i}-{j}/layer.tar");
            r = r.file(&p, l);
            paths.push(p);
        }
        items.push(serde_json::json!({"Config": format!("c{i}.json"), "RepoTags": [tag], "Layers": paths}));
    }
    r.file("manifest.json", &serde_json::to_vec(&items).unwrap()).finish()
}

/// Loading `archive` fails with an error containing `why`, and leaves the
/// store as it was: no image, no tag, no blob, no ingest file.
fn assert_refused(s: &ImageStore, root: &Path, archive: &[u8], why: &str) {
    let images_before = s.db().list().unwrap();
    let blobs_before = s.content().list().unwrap();
    let err = s.load(archive).expect_err(why);
    assert!(err.to_string().contains(why), "expected an error about {why:?}, got: {err}");
    assert_eq!(s.db().list().unwrap(), images_before, "{why}: the db changed");
    assert_eq!(s.content().list().unwrap(), blobs_before, "{why}: blobs left behind");
    assert_store_clean(root);
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("s");
    let s = store(&root);
    let good = layer(&[("hello", b"hi\n")]);
    let config = config_for(&[&good]);
    let ok = docker_archive(&[("good:1", config.clone(), vec![good.clone()])]);

    // Entry names and links.
    let with = |extra: Raw| {
        let mut v = extra.finish();
        v.truncate(v.len() - 1024);
        v.extend_from_slice(&ok);
        v
    };
    assert_refused(&s, &root, &with(Raw::default().file("../escape", b"x")), "contains \"..\"");
    assert_refused(&s, &root, &with(Raw::default().file("a/../../escape", b"x")), "contains \"..\"");
    assert_refused(&s, &root, &with(Raw::default().file("/etc/evil", b"x")), "absolute path");
    assert_refused(&s, &root, &with(Raw::default().entry(b'2', "l", "../../etc/passwd", b"")), "outside the archive");
    assert_refused(&s, &root, &with(Raw::default().entry(b'2', "l", "/etc/passwd", b"")), "absolute path");
    assert_refused(&s, &root, &with(Raw::default().entry(b'1', "h", "../x", b"")), "outside the archive");
    assert_refused(&s, &root, &with(Raw::default().entry(b'3', "dev", "", b"")), "unsupported type");

    // A layer that is a symlink out of the archive.
    let items = serde_json::json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]);
    let a = Raw::default()
        .file("c.json", &config)
        .entry(b'2', "l/layer.tar", "../../../../etc/passwd", b"")
        .file("manifest.json", &serde_json::to_vec(&items).unwrap())
        .finish();
    assert_refused(&s, &root, &a, "outside the archive");

    // manifest.json pointing at a file the archive lacks.
    let items = serde_json::json!([{"Config": "c0.json", "RepoTags": ["x:1"], "Layers": ["missing/layer.tar"]}]);
    let a =
        Raw::default().file("c0.json", &config).file("manifest.json", &serde_json::to_vec(&items).unwrap()).finish();
    assert_refused(&s, &root, &a, "not in the archive");
    let items = serde_json::json!([{"Config": "../c0.json", "Layers": []}]);
    assert_refused(
        &s,
        &root,
        &Raw::default().file("manifest.json", &serde_json::to_vec(&items).unwrap()).finish(),
        "..",
    );

    // A blob whose content does not match the digest it is named by.
    let wrong = Digest::sha256_of(b"something else");
    let a = Raw::default().file(&format!("blobs/sha256/{}", wrong.hex()), &good).finish();
    assert_refused(&s, &root, &a, "digest mismatch");

    // Oversized manifest.json: refused from its header.
    let huge = vec![b' '; (berth_image::archive::MAX_METADATA + 1) as usize];
    assert_refused(&s, &root, &Raw::default().file("manifest.json", &huge).finish(), "over the 8 MiB limit");

    // Config and layers that disagree; a layer whose diff ID is wrong.
    let two = config_for(&[&good, &good]);
    assert_refused(&s, &root, &docker_archive(&[("x:1", two, vec![good.clone()])]), "2 diff IDs");
    let other = layer(&[("other", b"o\n")]);
    assert_refused(&s, &root, &docker_archive(&[("x:1", config.clone(), vec![other])]), "digest mismatch");

    // A layer with a hostile entry, in the second image of an archive:
    // the first image is rolled back too, and an existing tag stays put.
    let pre = s.load(&docker_archive(&[("keep:me", config.clone(), vec![good.clone()])])[..]).expect("load");
    let evil = layer(&[("../../evil", b"x")]);
    let evil_config = config_for(&[&evil]);
    let other_good = layer(&[("new", b"n\n")]);
    let a = docker_archive(&[
        ("keep:me", config_for(&[&other_good]), vec![other_good.clone()]),
        ("evil:1", evil_config, vec![evil]),
    ]);
    assert_refused(&s, &root, &a, "evil");
    assert_eq!(s.resolve("keep:me").expect("tag kept").id, pre[0].image.id);
    assert!(s.resolve("evil:1").is_err());

    // OCI: index.json naming a manifest the archive lacks.
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": Digest::sha256_of(b"nope").to_string(), "size": 4}]});
    let a = Raw::default().file("index.json", &serde_json::to_vec(&index).unwrap()).finish();
    assert_refused(&s, &root, &a, "not in the archive");
    assert_refused(&s, &root, &Raw::default().file("hello", b"x").finish(), "neither manifest.json nor index.json");
    assert_refused(&s, &root, b"not a tar at all, just some bytes that are long enough to be a header?", "");

    // And the honest archive still loads.
    let loaded = s.load(&ok[..]).expect("good archive");
    assert_eq!(loaded[0].tags, ["docker.io/library/good:1"]);
    assert!(s.snapshots().path(&loaded[0].image.layers[0].chain_id).join("hello").is_file());
}

// ------------------------------------------------------------------ interop

/// An isolated podman (own storage, run root, tmp and config files in a
/// temp dir); reset and unmounted on drop.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Option<Podman> {
        if !is_root() {
            eprintln!("SKIPPED: podman interop needs root (rootful storage, overlay mounts)");
            return None;
        }
        if let Err(why) = tool("podman", "podman") {
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("berth-archive-podman-").tempdir().expect("tmp");
        let d = dir.path();
        for sub in ["storage", "run", "tmp", "net"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[network]\nnetwork_config_dir = \"{}\"\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nimage_copy_tmp_dir = \"{}\"\n",
                d.join("net").display(),
                d.join("tmp").display()
            ),
        )
        .expect("containers.conf");
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("storage").display(),
                d.join("run").display()
            ),
        )
        .expect("storage.conf");
        Some(Podman { dir })
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("TMPDIR", d.join("tmp"))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("net"))
            .args(["--storage-driver", "overlay", "--cgroup-manager=cgroupfs", "--events-backend=file"]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        run(self.cmd().args(args))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["system", "reset", "--force"]).stdin(Stdio::null()).output();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(self.dir.path()))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn saved_archives_load_in_podman() {
    let Some(podman) = Podman::new() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let a = store(&tmp.path().join("a"));
    let multi = seed(&a, "multilayer", "127.0.0.1:5000/team/multi:v1");
    let bb = seed(&a, "busybox", "busybox:latest");

    // Two images in one docker-archive.
    let both = tmp.path().join("both.tar");
    a.save_to_path(
        &["127.0.0.1:5000/team/multi:v1".into(), "busybox:latest".into()],
        ArchiveFormat::DockerArchive,
        &both,
    )
    .expect("save");
    let out = podman.run(&["load", "-q", "-i", both.to_str().unwrap()]);
    assert!(out.contains("Loaded image"), "{out}");
    // Through manifest.json podman (like for `docker save` output) takes
    // the short name busybox:latest as localhost/busybox:latest.
    for (name, image) in [("127.0.0.1:5000/team/multi:v1", &multi), ("localhost/busybox:latest", &bb)] {
        podman.run(&["image", "exists", name]);
        let inspect = json(podman.run(&["image", "inspect", name]).as_bytes());
        assert_eq!(inspect[0]["Id"], image.id.hex(), "{name}: podman sees another image id");
        let layers: Vec<String> = image.layers.iter().map(|l| l.diff_id.to_string()).collect();
        assert_eq!(inspect[0]["RootFS"]["Layers"], serde_json::json!(layers), "{name}");
    }

    // One image: podman reads it as an OCI archive (index.json first).
    podman.run(&["rmi", "--all", "--force"]);
    let one = tmp.path().join("one.tar");
    a.save_to_path(&["busybox:latest".into()], ArchiveFormat::DockerArchive, &one).expect("save one");
    podman.run(&["load", "-i", one.to_str().unwrap()]);
    podman.run(&["image", "exists", "docker.io/library/busybox:latest"]);
    let listed = podman.run(&["images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"]);
    assert!(listed.contains(&format!("{} docker.io/library/busybox:latest", &bb.id.hex()[..12])), "{listed}");

    // And the oci-archive format.
    podman.run(&["rmi", "--all", "--force"]);
    let oci = tmp.path().join("multi.oci.tar");
    a.save_to_path(&["127.0.0.1:5000/team/multi:v1".into()], ArchiveFormat::OciArchive, &oci).expect("save oci");
    podman.run(&["load", "-i", oci.to_str().unwrap()]);
    let inspect = json(podman.run(&["image", "inspect", "127.0.0.1:5000/team/multi:v1"]).as_bytes());
    assert_eq!(inspect[0]["Id"], multi.id.hex());
}

#[test]
fn saved_archives_pass_skopeo_and_umoci() {
    if let Err(why) = tool("skopeo", "skopeo") {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let a = store(&tmp.path().join("a"));
    let multi = seed(&a, "multilayer", "team/multi:v1");
    let file = tmp.path().join("multi.tar");
    a.save_to_path(&["team/multi:v1".into()], ArchiveFormat::DockerArchive, &file).expect("save");
    let diff_ids: Vec<String> = multi.layers.iter().map(|l| l.diff_id.to_string()).collect();

    let skopeo = || {
        let mut c = Command::new("skopeo");
        c.arg("--insecure-policy");
        c
    };
    let d = json(run(skopeo().args(["inspect"]).arg(format!("docker-archive:{}", file.display()))).as_bytes());
    assert_eq!(d["Layers"], serde_json::json!(diff_ids), "docker-archive view");
    let o = json(run(skopeo().args(["inspect"]).arg(format!("oci-archive:{}", file.display()))).as_bytes());
    assert_eq!(o["Layers"], serde_json::json!(diff_ids), "oci-archive view");
    let cfg =
        json(run(skopeo().args(["inspect", "--config"]).arg(format!("oci-archive:{}:v1", file.display()))).as_bytes());
    assert_eq!(cfg["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
    // copy reads and verifies every blob against its digest.
    for (src, dst) in [("docker-archive", "copy-from-docker"), ("oci-archive", "copy-from-oci")] {
        run(skopeo()
            .args(["copy", "--quiet"])
            .arg(format!("{src}:{}", file.display()))
            .arg(format!("oci:{}:x", tmp.path().join(dst).display())));
    }

    if let Err(why) = tool("umoci", "umoci") {
        eprintln!("SKIPPED (umoci part): {why}");
        return;
    }
    let expected = json(&std::fs::read(test_images().join("multilayer.expected.json")).unwrap());
    let check = |bundle: &Path| {
        let rootfs = bundle.join("rootfs");
        for p in expected["present"].as_array().unwrap() {
            let p = p.as_str().unwrap().trim_start_matches('/');
            assert!(rootfs.join(p).symlink_metadata().is_ok(), "{p} missing in {}", bundle.display());
        }
        for p in expected["absent"].as_array().unwrap() {
            let p = p.as_str().unwrap().trim_start_matches('/');
            assert!(rootfs.join(p).symlink_metadata().is_err(), "{p} should be gone in {}", bundle.display());
        }
    };
    // The oci-dir output, and the docker-archive extracted: it is an OCI layout too.
    let dir = tmp.path().join("layout");
    a.save_to_path(&["team/multi:v1".into()], ArchiveFormat::OciDir, &dir).expect("save oci-dir");
    let extracted = tmp.path().join("extracted");
    std::fs::create_dir(&extracted).unwrap();
    run(Command::new("tar").arg("-xf").arg(&file).arg("-C").arg(&extracted));
    for (layout, name) in [(&dir, "oci-dir"), (&extracted, "docker-archive")] {
        let bundle = tmp.path().join(format!("bundle-{name}"));
        run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:v1", layout.display())).arg(&bundle));
        check(&bundle);
    }
}
