//! Push against a real registry on loopback: upload to a new registry,
//! cross-repository mount within one, skip of blobs the registry has, and
//! the pushed image pulled back bit for bit.

mod common;

use std::sync::{Arc, Mutex};

use berth_image::manifest::Platform;
use berth_image::push::{PushEvent, PushProgress};
use berth_image::registry::{ImageRef, Registry, RegistryOptions};
use berth_image::store::{ImageStore, NoProgress};
use common::TestRegistry;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[derive(Default)]
struct Events(Mutex<Vec<PushEvent>>);

impl PushProgress for Events {
    fn event(&self, e: PushEvent) {
        self.0.lock().expect("lock").push(e);
    }
}

impl Events {
    fn kinds(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self
            .0
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|e| match e {
                PushEvent::Pushed { .. } => Some("pushed"),
                PushEvent::LayerExists { .. } => Some("exists"),
                PushEvent::Mounted { .. } => Some("mounted"),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }
}

#[test]
fn push_uploads_mounts_and_skips_then_pulls_back() {
    let Some(src) = TestRegistry::start() else { return };
    let Some(dst) = TestRegistry::start() else { return };
    src.push_image("multilayer", "test/multi:1");
    let rt = rt();
    let registry = Arc::new(Registry::new(RegistryOptions::default()));
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let pulled = rt
        .block_on(store.pull(
            registry.clone(),
            &ImageRef::parse(&src.image("test/multi:1")).expect("ref"),
            &Platform::host(),
            Arc::new(NoProgress),
        ))
        .expect("pull");
    let image = pulled.image;
    let layers = image.layers.len();
    assert!(layers >= 2, "multilayer image has {layers} layers");

    // To another registry: every layer uploaded.
    let target = ImageRef::parse(&dst.image("copy/multi:v2")).expect("ref");
    let ev = Arc::new(Events::default());
    let out = rt.block_on(store.push(registry.clone(), &image, &target, ev.clone())).expect("push");
    assert_eq!(ev.kinds(), vec!["pushed"; layers]);
    // The stored manifest went up unchanged: same digest as pulled.
    assert_eq!(out.digest, image.manifest);
    assert_eq!(out.tag.as_deref(), Some("v2"));

    // Again: the registry has every blob.
    let ev = Arc::new(Events::default());
    rt.block_on(store.push(registry.clone(), &image, &target, ev.clone())).expect("push again");
    assert_eq!(ev.kinds(), vec!["exists"; layers]);

    // Same registry as pulled from, other repository: mounted, not uploaded.
    let same = ImageRef::parse(&src.image("other/multi:latest")).expect("ref");
    let ev = Arc::new(Events::default());
    rt.block_on(store.push(registry.clone(), &image, &same, ev.clone())).expect("push mount");
    assert_eq!(ev.kinds(), vec!["mounted"; layers]);

    // The push is recorded on the image.
    let rec = store.db().get(&image.id).expect("db").expect("record");
    let want = format!("{}/copy/multi@{}", dst.host, out.digest);
    assert!(rec.repo_digests.contains(&want), "{:?} lacks {want}", rec.repo_digests);

    // Pulled back into an empty store by digest: same image.
    let tmp2 = tempfile::tempdir().expect("tmp2");
    let store2 = ImageStore::open(tmp2.path()).expect("open2");
    let back = rt
        .block_on(store2.pull(
            registry,
            &ImageRef::parse(&format!("{}/copy/multi@{}", dst.host, out.digest)).expect("ref"),
            &Platform::host(),
            Arc::new(NoProgress),
        ))
        .expect("pull back");
    assert_eq!(back.image.id, image.id);
    assert_eq!(back.image.layers, image.layers);
}

#[test]
fn push_to_an_auth_registry_needs_credentials() {
    let Some(src) = TestRegistry::start() else { return };
    let Some(dst) = TestRegistry::start_with_auth("pusher", "pw-1") else { return };
    src.push_image("busybox", "test/busybox:latest");
    let rt = rt();
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    let anon = Arc::new(Registry::new(RegistryOptions::default()));
    let image = rt
        .block_on(store.pull(
            anon.clone(),
            &ImageRef::parse(&src.image("test/busybox:latest")).expect("ref"),
            &Platform::host(),
            Arc::new(NoProgress),
        ))
        .expect("pull")
        .image;
    let target = ImageRef::parse(&dst.image("secret/busybox:latest")).expect("ref");
    let err = rt
        .block_on(store.push(anon, &image, &target, Arc::new(berth_image::push::NoPushProgress)))
        .expect_err("anonymous push must fail");
    assert!(err.to_string().contains("unauthorized"), "{err}");

    let cfg_dir = tempfile::tempdir().expect("cfg");
    let cfg = common::write_docker_config(cfg_dir.path(), &dst.host, "pusher", "pw-1");
    let authed = Arc::new(Registry::new(RegistryOptions { docker_config: Some(cfg), ..Default::default() }));
    let out = rt
        .block_on(store.push(authed, &image, &target, Arc::new(berth_image::push::NoPushProgress)))
        .expect("push with credentials");
    assert_eq!(out.digest, image.manifest);
}

#[test]
fn login_checks_credentials() {
    let Some(reg) = TestRegistry::start_with_auth("alice", "right") else { return };
    let rt = rt();
    let registry = Registry::new(RegistryOptions::default());
    let good = berth_image::registry::Credentials::Basic { username: "alice".into(), password: "right".into() };
    let bad = berth_image::registry::Credentials::Basic { username: "alice".into(), password: "wrong".into() };
    rt.block_on(registry.login(&reg.host, &good)).expect("good credentials accepted");
    let err = rt.block_on(registry.login(&reg.host, &bad)).expect_err("bad credentials refused");
    assert!(err.to_string().contains("incorrect username or password"), "{err}");
}

#[test]
fn large_layer_is_streamed_in_chunks_and_comes_back_intact() {
    let Some(reg) = TestRegistry::start() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::open(tmp.path()).expect("open");
    // ~12 MB of incompressible data: more than one 4 MiB upload chunk.
    let mut noise = vec![0u8; 12 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(noise.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "noise.bin", &noise[..]).expect("tar");
    let tarball = tar.into_inner().expect("tar done");
    let opts = berth_image::import::ImportOptions {
        changes: vec![],
        message: None,
        source: "test".into(),
        platform: Platform::host(),
    };
    let image = store.import_rootfs(&tarball[..], &opts, &[]).expect("import");
    assert!(image.layers[0].size > 8 << 20, "layer of {} bytes is not large", image.layers[0].size);

    let rt = rt();
    let registry = Arc::new(Registry::new(RegistryOptions::default()));
    let target = ImageRef::parse(&reg.image("big/noise:1")).expect("ref");
    let ev = Arc::new(Events::default());
    rt.block_on(store.push(registry.clone(), &image, &target, ev.clone())).expect("push");
    let progress: Vec<u64> =
        ev.0.lock()
            .expect("lock")
            .iter()
            .filter_map(|e| match e {
                PushEvent::Pushing { current, .. } => Some(*current),
                _ => None,
            })
            .collect();
    assert!(progress.len() >= 3, "expected progress per chunk, got {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress went backwards: {progress:?}");

    let tmp2 = tempfile::tempdir().expect("tmp2");
    let store2 = ImageStore::open(tmp2.path()).expect("open2");
    let back = rt.block_on(store2.pull(registry, &target, &Platform::host(), Arc::new(NoProgress))).expect("pull back");
    assert_eq!(back.image.id, image.id);
    let file = store2.snapshots().path(&back.image.layers[0].chain_id).join("noise.bin");
    assert!(std::fs::read(&file).expect("read back") == noise, "content differs after the round trip");
}
