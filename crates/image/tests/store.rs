//! The image store against a real registry on loopback: pull by tag and by
//! digest, a multi-arch index, whiteouts seen through an overlay mount,
//! tags, removal and garbage collection.

mod common;

use std::path::Path;
use std::sync::Arc;

use berth_image::manifest::Platform;
use berth_image::registry::{ImageRef, Registry, RegistryOptions};
use berth_image::store::{ImageStore, NoProgress};
use common::TestRegistry;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn pull(store: &ImageStore, r: &str, platform: &Platform) -> berth_image::Result<berth_image::store::PullOutcome> {
    let registry = Arc::new(Registry::new(RegistryOptions::default()));
    let reference = ImageRef::parse(r).expect("reference");
    rt().block_on(store.pull(registry, &reference, platform, Arc::new(NoProgress)))
}

/// Unmounts on drop, also when an assertion fails.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn pull_by_tag_and_digest_then_tag_and_remove() {
    let Some(reg) = TestRegistry::start() else { return };
    reg.push_image("busybox", "test/busybox:latest");
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let host = Platform::host();

    let out = pull(&store, &reg.image("test/busybox:latest"), &host).expect("pull");
    assert!(out.downloaded);
    assert_eq!(out.tagged.as_deref(), Some(format!("{}/test/busybox:latest", reg.host).as_str()));
    let rec = &out.image;
    assert_eq!(rec.layers.len(), 1);
    let snap = store.snapshots().path(&rec.layers[0].chain_id);
    assert!(snap.join("bin/busybox").is_file(), "layer not unpacked into {}", snap.display());
    assert!(store.unpacked_size(rec) > 500_000);

    // Again: nothing new; by digest: same image.
    let again = pull(&store, &reg.image("test/busybox:latest"), &host).expect("pull again");
    assert!(!again.downloaded);
    let by_digest = pull(&store, &format!("{}/test/busybox@{}", reg.host, out.digest), &host).expect("by digest");
    assert_eq!(by_digest.image.id, rec.id);
    assert_eq!(by_digest.tagged, None);

    // Resolve by name, short id; tag; gc keeps referenced data.
    assert_eq!(store.resolve(&reg.image("test/busybox")).expect("by name").id, rec.id);
    assert_eq!(store.resolve(&rec.id.hex()[..12]).expect("by short id").id, rec.id);
    store.db().tag("docker.io/library/mybox:v1", &rec.id).expect("tag");
    assert_eq!(store.resolve("mybox:v1").expect("by tag").id, rec.id);
    let gc = store.gc().expect("gc");
    assert_eq!((gc.blobs, gc.snapshots), (0, 0));
    // Delete: gc then frees blobs and the snapshot.
    store.db().delete(&rec.id).expect("delete");
    let gc = store.gc().expect("gc");
    assert!(gc.blobs >= 3 && gc.snapshots == 1, "{gc:?}");
    assert!(!snap.exists());
    assert!(store.resolve("mybox:v1").is_err());
}

#[test]
fn multiarch_index_picks_the_platform() {
    let Some(reg) = TestRegistry::start() else { return };
    reg.push_image("multiarch", "test/multi:latest");
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let out = pull(&store, &reg.image("test/multi:latest"), &Platform::host()).expect("pull host");
    assert!(out.image.index.is_some(), "pulled through the index");
    assert_eq!(Some(&out.digest), out.image.index.as_ref());
    let cfg: serde_json::Value =
        serde_json::from_slice(&store.content().read(&out.image.id).expect("config")).expect("json");
    assert_eq!(cfg["architecture"], Platform::host().arch);
    let arm =
        pull(&store, &reg.image("test/multi:latest"), &Platform::parse("linux/arm64").expect("p")).expect("arm64");
    assert_ne!(arm.image.id, out.image.id);
    let err = pull(&store, &reg.image("test/multi:latest"), &Platform::parse("linux/s390x").expect("p"))
        .expect_err("no s390x");
    assert!(err.to_string().contains("s390x"), "{err}");
}

#[test]
fn multilayer_whiteouts_through_overlay() {
    let Some(reg) = TestRegistry::start() else { return };
    reg.push_image("multilayer", "test/multilayer:latest");
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(&tmp.path().join("root")).expect("open");
    let out = pull(&store, &reg.image("test/multilayer:latest"), &Platform::host()).expect("pull");
    assert_eq!(out.image.layers.len(), 3);
    let chains: Vec<_> = out.image.layers.iter().map(|l| l.chain_id.clone()).collect();
    let target = tmp.path().join("merged");
    std::fs::create_dir_all(&target).expect("mkdir");
    store
        .snapshots()
        .mount_overlay(&chains, Some(&tmp.path().join("upper")), Some(&tmp.path().join("work")), &target)
        .expect("mount");
    let _guard = Mounted(&target);
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::test_images().join("multilayer.expected.json")).expect("expected"),
    )
    .expect("json");
    for p in expected["present"].as_array().expect("present") {
        let p = p.as_str().expect("str").trim_start_matches('/');
        assert!(target.join(p).symlink_metadata().is_ok(), "{p} missing from the merged view");
    }
    for p in expected["absent"].as_array().expect("absent") {
        let p = p.as_str().expect("str").trim_start_matches('/');
        assert!(target.join(p).symlink_metadata().is_err(), "{p} should be whited out");
    }
    for (p, c) in expected["contents"].as_object().expect("contents") {
        let got = std::fs::read_to_string(target.join(p.trim_start_matches('/'))).expect("read");
        assert_eq!(&got, c.as_str().expect("str"), "{p}");
    }
}

#[test]
fn missing_image_and_registry_errors_are_clear() {
    let Some(reg) = TestRegistry::start() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let err = pull(&store, &reg.image("nope/nothing:latest"), &Platform::host()).expect_err("missing");
    assert!(err.to_string().contains("not found"), "{err}");
    assert!(store.db().list().expect("list").is_empty());
    assert!(store.content().list().expect("list").is_empty(), "a failed pull stored blobs");
}
