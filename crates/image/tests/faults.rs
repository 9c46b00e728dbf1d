//! Pulls from a registry that lies: a corrupted blob or manifest must fail
//! verification and leave nothing in the store (no blob, no snapshot, no
//! record, no partial download).

mod common;

use std::sync::Arc;

use berth_image::manifest::Platform;
use berth_image::registry::{ImageRef, Registry, RegistryOptions};
use berth_image::store::{ImageStore, NoProgress};
use berth_image::Error;
use common::fake_registry::{FakeRegistry, Fault};

fn pull(store: &ImageStore, r: &str) -> berth_image::Result<berth_image::store::PullOutcome> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let registry = Arc::new(Registry::new(RegistryOptions::default()));
    rt.block_on(store.pull(registry, &ImageRef::parse(r).expect("ref"), &Platform::host(), Arc::new(NoProgress)))
}

/// Nothing but empty directories in the store.
fn assert_empty(store: &ImageStore) {
    assert!(store.db().list().expect("list").is_empty(), "an image was recorded");
    assert!(store.snapshots().list().expect("snapshots").is_empty(), "a snapshot was left");
    let ingest: Vec<_> = std::fs::read_dir(store.root().join("ingest")).expect("ingest").collect();
    assert!(ingest.is_empty(), "partial downloads left: {ingest:?}");
}

#[test]
fn corrupted_layer_is_refused_and_nothing_stored() {
    let (_, _, layers) = common::image_parts("busybox");
    let reg = FakeRegistry::start(&common::test_images().join("busybox"), Fault::Corrupt(layers[0].clone()));
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let err = pull(&store, &format!("{}/x/busybox:latest", reg.host)).expect_err("corrupt layer must fail");
    assert!(matches!(&err, Error::DigestMismatch { expected, .. } if *expected == layers[0]), "{err}");
    assert!(!store.content().contains(&layers[0].parse().expect("digest")));
    assert_empty(&store);
}

#[test]
fn corrupted_config_is_refused_and_nothing_stored() {
    let (_, config, _) = common::image_parts("busybox");
    let reg = FakeRegistry::start(&common::test_images().join("busybox"), Fault::Corrupt(config.clone()));
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let err = pull(&store, &format!("{}/x/busybox:latest", reg.host)).expect_err("corrupt config must fail");
    assert!(matches!(&err, Error::DigestMismatch { expected, .. } if *expected == config), "{err}");
    assert!(!store.content().contains(&config.parse().expect("digest")));
    assert_empty(&store);
}

#[test]
fn corrupted_manifest_pulled_by_digest_is_refused() {
    let (manifest, _, _) = common::image_parts("busybox");
    let reg = FakeRegistry::start(&common::test_images().join("busybox"), Fault::Corrupt(manifest.clone()));
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let err = pull(&store, &format!("{}/x/busybox@{manifest}", reg.host)).expect_err("corrupt manifest must fail");
    assert!(matches!(&err, Error::DigestMismatch { .. }), "{err}");
    assert!(store.content().list().expect("blobs").is_empty(), "a blob was stored");
    assert_empty(&store);
}

#[test]
fn faithful_fake_registry_pulls() {
    // The control: the same fake without a fault serves a good pull.
    let reg = FakeRegistry::start(&common::test_images().join("busybox"), Fault::None);
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let out = pull(&store, &format!("{}/x/busybox:latest", reg.host)).expect("pull");
    assert_eq!(out.image.layers.len(), 1);
}
