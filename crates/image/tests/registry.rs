//! Registry client tests against a local docker-registry (started per test
//! on its own port) and a tiny fake registry for misbehaviour.

mod common;

use std::collections::HashMap;

use berth_image::registry::{plain_http_allowed, Credentials, ImageRef, Registry, RegistryOptions};
use berth_image::{Digest, Error};
use bytes::Bytes;
use common::{test_blob, test_digests, TestRegistry};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn reg() -> Registry {
    // An empty docker config so the host's ~/.docker/config.json is never read.
    Registry::new(RegistryOptions {
        docker_config: Some("/nonexistent/berth-test/config.json".into()),
        ..Default::default()
    })
}

fn iref(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap_or_else(|e| panic!("parse {s}: {e}"))
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap_or_else(|e| panic!("digest {s}: {e}"))
}

async fn collect(reg: &Registry, r: &ImageRef, d: &Digest, offset: u64) -> Vec<u8> {
    let mut stream = reg.fetch_blob(r, d, offset).await.expect("fetch_blob");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("blob chunk"));
    }
    out
}

fn layer_digests(manifest: &[u8]) -> (Digest, Vec<Digest>) {
    let m: serde_json::Value = serde_json::from_slice(manifest).expect("manifest json");
    let config = digest(m["config"]["digest"].as_str().expect("config digest"));
    let layers = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| digest(l["digest"].as_str().expect("layer digest")))
        .collect();
    (config, layers)
}

#[tokio::test]
async fn fetch_manifest_by_tag_and_digest() {
    let Some(tr) = TestRegistry::start() else { return };
    tr.push_image("busybox", "test/busybox:latest");
    let want = digest(test_digests()["busybox"].as_str().expect("busybox digest"));
    let reg = reg();

    let by_tag = iref(&tr.image("test/busybox:latest"));
    let (bytes, media_type, d) = reg.fetch_manifest(&by_tag).await.expect("fetch by tag");
    assert_eq!(media_type, OCI_MANIFEST);
    assert_eq!(d, want);
    want.verify(&bytes).expect("bytes hash to the digest");

    let by_digest = by_tag.with_digest(&want);
    let (bytes2, media_type2, d2) = reg.fetch_manifest(&by_digest).await.expect("fetch by digest");
    assert_eq!((bytes2, media_type2, d2), (bytes, media_type, d));

    // Unknown tag: a clear not-found error naming the registry.
    let err = reg.fetch_manifest(&by_tag.with_tag("nope")).await.expect_err("unknown tag");
    let msg = err.to_string();
    eprintln!("unknown tag: {msg}");
    assert!(matches!(err, Error::Registry { .. }), "{err:?}");
    assert!(msg.contains(&tr.host) && msg.contains("manifest for test/busybox:nope not found"), "{msg}");

    // Unknown repository.
    let err = reg.fetch_manifest(&iref(&tr.image("no/such:thing"))).await.expect_err("unknown repo");
    assert!(err.to_string().contains("not found"), "{err}");
}

#[tokio::test]
async fn fetch_blob_full_and_from_offset() {
    let Some(tr) = TestRegistry::start() else { return };
    tr.push_image("busybox", "test/busybox:latest");
    let reg = reg();
    let r = iref(&tr.image("test/busybox:latest"));
    let (manifest, _, _) = reg.fetch_manifest(&r).await.expect("manifest");
    let (config, layers) = layer_digests(&manifest);

    let cfg = collect(&reg, &r, &config, 0).await;
    config.verify(&cfg).expect("config digest");
    let cfg_json: serde_json::Value = serde_json::from_slice(&cfg).expect("config json");
    assert_eq!(cfg_json["config"]["Cmd"], serde_json::json!(["sh"]));

    let layer = &layers[0];
    let full = collect(&reg, &r, layer, 0).await;
    layer.verify(&full).expect("layer digest");
    assert_eq!(full, test_blob("busybox", &layer.to_string()));

    // Resume: the first part from a "previous attempt" plus the rest by Range.
    let cut = full.len() as u64 / 3;
    let rest = collect(&reg, &r, layer, cut).await;
    assert_eq!(rest.len() as u64, full.len() as u64 - cut);
    let mut joined = full[..cut as usize].to_vec();
    joined.extend_from_slice(&rest);
    layer.verify(&joined).expect("resumed blob digest");

    // Missing blob.
    let missing = Digest::sha256_of(b"not there");
    let err = match reg.fetch_blob(&r, &missing, 0).await {
        Ok(_) => panic!("missing blob fetched"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("not found"), "{err}");
}

#[tokio::test]
async fn push_blobs_and_manifest_then_pull_back() {
    let Some(tr) = TestRegistry::start() else { return };
    let reg = reg();
    let r = iref(&tr.image("pushed/img:v1"));

    // One small (monolithic) and one large (chunked, > 4 MiB) layer, and an empty blob.
    let small = Bytes::from_static(b"small layer bytes");
    let large: Bytes = (0..9 * 1024 * 1024 + 17).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let empty = Bytes::new();
    let config =
        Bytes::from_static(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let mut descs = Vec::new();
    for blob in [&small, &large, &empty] {
        let d = Digest::sha256_of(blob);
        assert!(!reg.blob_exists(&r, &d).await.expect("blob_exists before"));
        reg.push_blob(&r, &d, blob.clone()).await.expect("push_blob");
        assert!(reg.blob_exists(&r, &d).await.expect("blob_exists after"));
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": blob.len()
        }));
    }
    let config_digest = Digest::sha256_of(&config);
    reg.push_blob(&r, &config_digest, config.clone()).await.expect("push config");

    // A wrong digest is refused before anything is sent.
    let err = reg.push_blob(&r, &Digest::sha256_of(b"other"), small.clone()).await.expect_err("wrong digest");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");

    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": descs,
    }))
    .expect("manifest json");
    let pushed = reg.push_manifest(&r, manifest.clone(), OCI_MANIFEST).await.expect("push_manifest");
    assert_eq!(pushed, Digest::sha256_of(&manifest));

    let (bytes, media_type, d) = reg.fetch_manifest(&r).await.expect("fetch pushed manifest");
    assert_eq!((bytes.as_slice(), media_type.as_str(), &d), (manifest.as_slice(), OCI_MANIFEST, &pushed));
    let large_back = collect(&reg, &r, &Digest::sha256_of(&large), 0).await;
    assert!(large_back == large, "large blob differs");

    // Pushing by digest (no tag) works too and is fetchable by that digest.
    let r2 = iref(&tr.image("pushed/img")).with_digest(&pushed);
    assert_eq!(reg.push_manifest(&r2, manifest.clone(), OCI_MANIFEST).await.expect("push by digest"), pushed);
    // A digest-pinned push with other bytes is refused.
    let err = reg.push_manifest(&r2, b"{}".to_vec(), OCI_MANIFEST).await.expect_err("mismatched push");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn blob_exists_and_mount_across_repositories() {
    let Some(tr) = TestRegistry::start() else { return };
    tr.push_image("busybox", "src/busybox:latest");
    let reg = reg();
    let src = iref(&tr.image("src/busybox:latest"));
    let dst = iref(&tr.image("dst/busybox:latest"));
    let (manifest, _, _) = reg.fetch_manifest(&src).await.expect("manifest");
    let (_, layers) = layer_digests(&manifest);
    let layer = &layers[0];

    assert!(reg.blob_exists(&src, layer).await.expect("exists in src"));
    assert!(!reg.blob_exists(&dst, layer).await.expect("absent in dst"));
    assert!(!reg.blob_exists(&src, &Digest::sha256_of(b"nothing")).await.expect("random digest"));

    assert!(reg.mount_blob(&dst, "src/busybox", layer).await.expect("mount"));
    assert!(reg.blob_exists(&dst, layer).await.expect("exists in dst after mount"));

    // A blob the source does not have cannot be mounted: Ok(false).
    let other = iref(&tr.image("dst2/x:latest"));
    assert!(!reg.mount_blob(&other, "src/busybox", &Digest::sha256_of(b"nothing")).await.expect("mount missing"));
}

#[tokio::test]
async fn multiarch_index_comes_back_as_index() {
    let Some(tr) = TestRegistry::start() else { return };
    tr.push_image("multiarch", "test/multi:latest");
    let digests = test_digests();
    let reg = reg();
    let r = iref(&tr.image("test/multi:latest"));
    let (bytes, media_type, d) = reg.fetch_manifest(&r).await.expect("fetch index");
    assert_eq!(media_type, OCI_INDEX);
    assert_eq!(d.to_string(), digests["multiarch"].as_str().expect("index digest"));
    let index: serde_json::Value = serde_json::from_slice(&bytes).expect("index json");
    let mut archs: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    archs.sort_unstable();
    assert_eq!(archs.len(), 2);
    assert!(archs.contains(&"arm64"), "{archs:?}");

    // Each child manifest is fetchable by digest.
    for (arch, md) in digests["multiarch_manifests"].as_object().expect("children") {
        let child = r.with_digest(&digest(md.as_str().expect("digest")));
        let (_, mt, cd) = reg.fetch_manifest(&child).await.unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(mt, OCI_MANIFEST);
        assert_eq!(cd.to_string(), md.as_str().expect("digest"));
    }

    // The multilayer image has three layers, all fetchable.
    tr.push_image("multilayer", "test/layers:latest");
    let r = iref(&tr.image("test/layers:latest"));
    let (m, _, _) = reg.fetch_manifest(&r).await.expect("multilayer manifest");
    let (_, layers) = layer_digests(&m);
    assert_eq!(layers.len(), 3);
    for l in &layers {
        l.verify(&collect(&reg, &r, l, 0).await).expect("layer digest");
    }
}

#[tokio::test]
async fn htpasswd_registry_needs_credentials() {
    let Some(tr) = TestRegistry::start_with_auth("berth", "s3cret") else { return };
    tr.push_image("busybox", "private/busybox:latest");
    let r = iref(&tr.image("private/busybox:latest"));

    // Anonymous: refused, with a clear message.
    let err = reg().fetch_manifest(&r).await.expect_err("anonymous access");
    let msg = err.to_string();
    eprintln!("anonymous: {msg}");
    assert!(msg.contains(&tr.host) && msg.contains("unauthorized: authentication required"), "{msg}");
    assert!(msg.contains("no credentials"), "{msg}");

    // Explicit Basic credentials.
    let with_creds = |user: &str, pass: &str| {
        Registry::new(RegistryOptions {
            credentials: HashMap::from([(
                tr.host.clone(),
                Credentials::Basic { username: user.into(), password: pass.into() },
            )]),
            docker_config: Some("/nonexistent/berth-test/config.json".into()),
            ..Default::default()
        })
    };
    let reg_ok = with_creds("berth", "s3cret");
    let (bytes, _, d) = reg_ok.fetch_manifest(&r).await.expect("fetch with credentials");
    let (_, layers) = layer_digests(&bytes);
    assert!(reg_ok.blob_exists(&r, &layers[0]).await.expect("blob_exists with credentials"));
    // Push works with credentials too.
    let blob = Bytes::from_static(b"authenticated blob");
    let bd = Digest::sha256_of(&blob);
    reg_ok.push_blob(&r, &bd, blob).await.expect("push with credentials");
    assert!(reg_ok.blob_exists(&r, &bd).await.expect("pushed blob exists"));

    // Wrong password.
    let err = with_creds("berth", "wrong").fetch_manifest(&r).await.expect_err("wrong password");
    let msg = err.to_string();
    eprintln!("wrong password: {msg}");
    assert!(msg.contains("unauthorized") && msg.contains("refused"), "{msg}");

    // Credentials from a docker config.json `auths` entry (base64 "auth").
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_docker_config(dir.path(), &tr.host, "berth", "s3cret");
    let reg_cfg = Registry::new(RegistryOptions { docker_config: Some(config), ..Default::default() });
    let (_, _, d2) = reg_cfg.fetch_manifest(&r).await.expect("fetch with docker config");
    assert_eq!(d, d2);

    // ... also when the key is written as a URL, and with username/password fields.
    let path = dir.path().join("config2.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"http://{}/v2/":{{"username":"berth","password":"s3cret"}}}}}}"#, tr.host),
    )
    .expect("write config2");
    let reg_cfg2 = Registry::new(RegistryOptions { docker_config: Some(path), ..Default::default() });
    reg_cfg2.fetch_manifest(&r).await.expect("fetch with username/password config");

    // Credential helpers are named in the error, not silently ignored.
    let path = dir.path().join("config3.json");
    std::fs::write(&path, format!(r#"{{"credHelpers":{{"{}":"pass"}}}}"#, tr.host)).expect("write config3");
    let err = Registry::new(RegistryOptions { docker_config: Some(path), ..Default::default() })
        .fetch_manifest(&r)
        .await
        .expect_err("helper only");
    eprintln!("credential helper: {err}");
    assert!(err.to_string().contains("docker-credential-pass"), "{err}");
}

#[tokio::test]
async fn mirrors_are_tried_first() {
    let Some(tr) = TestRegistry::start() else { return };
    tr.push_image("busybox", "library/busybox:latest");
    // Port 9 (discard) on loopback: nothing listens, so only the mirror can answer.
    let reg = Registry::new(RegistryOptions {
        mirrors: HashMap::from([("127.0.0.1:9".to_string(), vec![tr.host.clone()])]),
        docker_config: Some("/nonexistent/berth-test/config.json".into()),
        ..Default::default()
    });
    let r = iref("127.0.0.1:9/library/busybox:latest");
    let (m, _, d) = reg.fetch_manifest(&r).await.expect("fetch via mirror");
    assert_eq!(d.to_string(), test_digests()["busybox"].as_str().expect("digest"));
    let (_, layers) = layer_digests(&m);
    layers[0].verify(&collect(&reg, &r, &layers[0], 0).await).expect("blob via mirror");
    // Pushes never go to mirrors.
    let err = reg.blob_exists(&r, &layers[0]).await.expect_err("origin is down");
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
}

#[test]
fn plain_http_only_for_loopback_or_insecure() {
    let none: Vec<String> = Vec::new();
    for host in ["127.0.0.1:5000", "127.0.0.2:80", "localhost:5000", "[::1]:5000", "localhost"] {
        assert!(plain_http_allowed(host, &none), "{host}");
    }
    for host in ["10.1.2.3:5000", "192.168.0.10:5000", "registry.example.com:5000", "docker.io", "[fe80::1]:5000"] {
        assert!(!plain_http_allowed(host, &none), "{host}");
    }
    let insecure = vec!["10.1.2.3:5000".to_string()];
    assert!(plain_http_allowed("10.1.2.3:5000", &insecure));
    assert!(!plain_http_allowed("10.1.2.3:5001", &insecure));
    assert!(!plain_http_allowed("10.1.2.4:5000", &insecure));

    let reg = Registry::new(RegistryOptions { insecure: vec!["reg.lan:5000".into()], ..Default::default() });
    assert!(reg.uses_plain_http("reg.lan:5000"));
    assert!(!reg.uses_plain_http("other.lan:5000"));
    assert!(reg.uses_plain_http("127.0.0.1:5000"));
    let reg = Registry::new(RegistryOptions {
        mirrors: HashMap::from([("docker.io".into(), vec!["http://mirror.lan:5000".into()])]),
        ..Default::default()
    });
    assert!(reg.uses_plain_http("mirror.lan:5000"));
    assert!(!reg.uses_plain_http("index.docker.io"));
}

#[test]
fn references_normalize_like_docker() {
    let r = iref("busybox");
    assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
    assert_eq!(
        (r.registry(), r.repository(), r.tag(), r.digest()),
        ("docker.io", "library/busybox", Some("latest"), None)
    );
    assert_eq!(r.familiar(), "busybox:latest");
    let r = iref("127.0.0.1:5000/x/y:tag");
    assert_eq!(r.familiar(), "127.0.0.1:5000/x/y:tag");
    assert_eq!(r.to_string(), "127.0.0.1:5000/x/y:tag");
    for (bad, why) in [
        ("BusyBox", "lowercase"),
        ("busybox:bad tag", "invalid"),
        ("busybox:.bad", "invalid tag"),
        ("busybox@sha256:1234", "digest"),
        ("busybox@md5:d41d8cd98f00b204e9800998ecf8427e", "digest"),
    ] {
        match ImageRef::parse(bad) {
            Err(e @ Error::InvalidReference { .. }) => assert!(e.to_string().contains(why), "{bad}: {e}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// A fake registry on a loopback port: every manifest request gets
/// `manifest` (with no Docker-Content-Digest header), every blob request gets
/// all of `blob` with 200 (Range is ignored), and requests under repository
/// `flaky/` fail with 503 for the first two tries.
async fn fake_registry(manifest: &'static [u8], blob: &'static [u8]) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let flaky = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let flaky = flaky.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req).lines().next().unwrap_or_default().to_string();
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                let unavailable =
                    path.starts_with("/v2/flaky/") && flaky.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2;
                let (status, ctype, payload): (&str, &str, &[u8]) = if path == "/v2/" {
                    ("200 OK", "application/json", b"{}")
                } else if unavailable {
                    ("503 Service Unavailable", "text/plain", b"try again")
                } else if path.contains("/manifests/") {
                    ("200 OK", OCI_MANIFEST, manifest)
                } else if path.contains("/blobs/") {
                    ("200 OK", "application/octet-stream", blob)
                } else {
                    ("404 Not Found", "application/json", br#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#)
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(payload).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (host, task)
}

#[tokio::test]
async fn range_ignored_and_transient_errors_retried() {
    const BLOB: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let (host, task) = fake_registry(b"{}", BLOB).await;
    let reg = reg();
    let d = Digest::sha256_of(BLOB);
    // The server answers a Range request with the whole blob: the client skips the first bytes.
    let r = iref(&format!("{host}/x/y:t"));
    assert_eq!(collect(&reg, &r, &d, 10).await, &BLOB[10..]);
    assert_eq!(collect(&reg, &r, &d, 0).await, BLOB);
    // Two 503s, then success.
    let r = iref(&format!("{host}/flaky/y:t"));
    assert_eq!(collect(&reg, &r, &d, 0).await, BLOB);
    task.abort();
}

#[tokio::test]
async fn digest_pinned_manifest_must_match() {
    const BODY: &[u8] =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
    let (host, task) = fake_registry(BODY, b"").await;
    let reg = reg();
    let wanted = Digest::sha256_of(b"the manifest we asked for");
    let r = iref(&format!("{host}/x/y")).with_digest(&wanted);
    let err = reg.fetch_manifest(&r).await.expect_err("mismatching manifest accepted");
    match &err {
        Error::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &wanted.to_string());
            assert_eq!(actual, &Digest::sha256_of(BODY).to_string());
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    // By tag, the same bytes are accepted and hashed.
    let (bytes, mt, d) = reg.fetch_manifest(&iref(&format!("{host}/x/y:t"))).await.expect("by tag");
    assert_eq!((bytes.as_slice(), mt.as_str(), d), (BODY, OCI_MANIFEST, Digest::sha256_of(BODY)));
    task.abort();
}

#[tokio::test]
async fn unreachable_registry_error_names_it() {
    let reg = reg();
    // Port 9 on loopback: connection refused, retried, then a clear error.
    let started = std::time::Instant::now();
    let err = reg.fetch_manifest(&iref("127.0.0.1:9/x/y:z")).await.expect_err("nothing listens");
    let msg = err.to_string();
    eprintln!("unreachable: {msg}");
    assert!(msg.starts_with("registry 127.0.0.1:9: manifest for x/y:z"), "{msg}");
    assert!(msg.contains("connect"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
