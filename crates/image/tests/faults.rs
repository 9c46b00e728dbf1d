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

/// Writes an OCI layout holding one image whose single (uncompressed)
/// layer is `layer`, tagged `latest`.
fn layout_with_layer(dir: &std::path::Path, layer: &[u8]) {
    use berth_image::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let put = |data: &[u8]| {
        let d = Digest::sha256_of(data);
        std::fs::write(blobs.join(d.hex()), data).expect("write blob");
        d
    };
    let layer_d = put(layer);
    let config = serde_json::json!({
        "architecture": Platform::host().arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_d.to_string()]},
    });
    let config = serde_json::to_vec(&config).expect("config");
    let config_d = put(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d.to_string(), "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest");
    let manifest_d = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_d.to_string(),
                       "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("index")).expect("write index");
}

/// A tar whose second entry is `../escaped` (after a large, valid file,
/// so the refusal comes mid-download).
fn hostile_tar() -> Vec<u8> {
    let header = |name: &[u8], size: usize| {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    };
    let big = 24 << 20;
    let mut t = header(b"big.bin", big).to_vec();
    t.extend(std::iter::repeat_n(7u8, big));
    t.extend_from_slice(&header(b"../escaped", 4));
    let mut body = [0u8; 512];
    body[..4].copy_from_slice(b"pwn\n");
    t.extend_from_slice(&body);
    t.extend_from_slice(&[0u8; 1024]);
    t
}

#[test]
fn hostile_layer_from_a_registry_is_refused_and_nothing_stored() {
    let layout = tempfile::tempdir().expect("layout");
    layout_with_layer(layout.path(), &hostile_tar());
    let reg = FakeRegistry::start(layout.path(), Fault::None);
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(&tmp.path().join("store")).expect("open");
    let err = pull(&store, &format!("{}/x/evil:latest", reg.host)).expect_err("hostile layer must be refused");
    assert!(matches!(&err, Error::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains("../escaped"), "error must name the entry: {err}");
    assert!(!tmp.path().join("escaped").exists());
    assert_empty(&store);
    // Its blob may stay (it verified), but no snapshot or image does.
    for d in store.content().list().expect("blobs") {
        let data = store.content().read(&d).expect("stored blobs verify");
        assert!(!data.is_empty());
    }
}
