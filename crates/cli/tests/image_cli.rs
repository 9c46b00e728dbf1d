//! The image verbs through the `berth` binary, as users run them: import
//! with --change, history, system df, login/push/logout against a
//! password-protected registry, a skopeo-pushed image pulled and run, and
//! a pull killed with SIGKILL mid-download that a later pull completes.
//!
//! Registries are real (Debian's docker-registry on loopback) except where
//! the test needs one to misbehave (common::fake_registry).

#[path = "../../image/tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_image::Digest;
use common::fake_registry::{FakeRegistry, Fault};
use common::TestRegistry;

fn berth(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.arg("--root").arg(root).stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("spawn berth")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(c: Command) -> String {
    let o = run(c);
    assert!(o.status.success(), "berth failed ({}): {}{}", o.status, text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

/// A gzipped rootfs tarball with busybox as /bin/busybox and /bin/sh.
fn rootfs_tarball(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox (apt-get install busybox-static)");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("symlink");
    let tarball = dir.join("rootfs.tar.gz");
    let st = Command::new("tar").arg("-C").arg(&root).arg("-czf").arg(&tarball).arg(".").status().expect("tar");
    assert!(st.success());
    tarball
}

/// Every stored blob hashes to its name.
fn assert_blobs_verify(root: &Path) {
    for e in std::fs::read_dir(root.join("blobs/sha256")).expect("blobs").flatten() {
        let data = std::fs::read(e.path()).expect("read blob");
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(Digest::sha256_of(&data).hex(), name, "bad blob {}", e.path().display());
    }
}

#[test]
fn import_with_changes_history_and_df() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    let tarball = rootfs_tarball(tmp.path());
    let mut c = berth(&root);
    c.args(["import", "-c", r#"CMD ["sh", "-c", "echo hi"]"#, "-c", "ENV A=1 B=two", "-c", "EXPOSE 8080"])
        .args(["-c", "WORKDIR /srv", "-m", "from a test"])
        .arg(&tarball)
        .arg("imported:v1");
    let id = ok(c).trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "import printed {id:?}");

    let mut c = berth(&root);
    c.args(["image", "inspect", "imported:v1"]);
    let v: serde_json::Value = serde_json::from_str(&ok(c)).expect("inspect json");
    let img = &v[0];
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(img["RepoTags"], serde_json::json!(["imported:v1"]));
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["sh", "-c", "echo hi"]));
    assert_eq!(img["Config"]["Env"], serde_json::json!(["A=1", "B=two"]));
    assert_eq!(img["Config"]["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(img["Config"]["WorkingDir"], "/srv");
    assert_eq!(img["Comment"], "from a test");
    assert_eq!(img["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));

    let mut c = berth(&root);
    c.args(["history", "imported:v1"]);
    let h = ok(c);
    let lines: Vec<&str> = h.lines().collect();
    assert!(lines[0].starts_with("IMAGE") && lines[0].contains("CREATED BY"), "{h}");
    assert!(lines[1].starts_with(&id[7..19]) && lines[1].contains("from a test"), "{h}");

    let mut c = berth(&root);
    c.args(["system", "df"]);
    let df = ok(c);
    let images = df.lines().find(|l| l.starts_with("Images")).expect("Images row");
    let cols: Vec<&str> = images.split_whitespace().collect();
    assert_eq!(&cols[1..3], &["1", "0"], "{df}");
    assert!(cols[3].ends_with("MB"), "{df}");

    // images --filter.
    let mut c = berth(&root);
    c.args(["import", "-c", "LABEL tier=web"]).arg(&tarball).arg("webimg:2");
    ok(c);
    let list = |filter: &str| {
        let mut c = berth(&root);
        c.args(["images", "--format", "{{json .}}", "--filter", filter]);
        let out = ok(c);
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| format!("{}:{}", v["Repository"].as_str().unwrap_or(""), v["Tag"].as_str().unwrap_or("")))
            .collect();
        names.sort();
        names
    };
    assert_eq!(list("label=tier=web"), vec!["webimg:2"]);
    assert_eq!(list("reference=imp*"), vec!["imported:v1"]);
    assert_eq!(list("dangling=false"), vec!["imported:v1", "webimg:2"]);
    assert_eq!(list("before=webimg:2"), vec!["imported:v1"]);
    let mut c = berth(&root);
    c.args(["images", "--filter", "bogus=1"]);
    assert_eq!(run(c).status.code(), Some(1));

    // A bad change is refused before anything is stored.
    let mut c = berth(&root);
    c.args(["import", "-c", "RUN rm -rf /"]).arg(&tarball);
    let o = run(c);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("RUN is not a valid change command"), "{}", text(&o.stderr));
}

/// A tar with an entry named `../escaped` (the tar crate refuses to write
/// such names, so the header is filled by hand).
fn hostile_tarball(dir: &Path) -> PathBuf {
    let path = dir.join("hostile.tar");
    let mut h = [0u8; 512];
    let name = b"../escaped";
    h[..name.len()].copy_from_slice(name);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(b"00000000004");
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut data = h.to_vec();
    let mut body = [0u8; 512];
    body[..4].copy_from_slice(b"pwn\n");
    data.extend_from_slice(&body);
    data.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&path, data).expect("write hostile tar");
    path
}

#[test]
fn hostile_import_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("store");
    let tarball = hostile_tarball(tmp.path());
    let mut c = berth(&root);
    c.arg("import").arg(&tarball).arg("evil:latest");
    let o = run(c);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(text(&o.stderr).contains("../escaped"), "error must name the entry: {}", text(&o.stderr));
    assert!(!tmp.path().join("escaped").exists() && !root.join("escaped").exists());
    let mut c = berth(&root);
    c.args(["images", "-q"]);
    assert_eq!(ok(c).trim(), "", "no image may be recorded");
    let blobs = std::fs::read_dir(root.join("blobs/sha256")).expect("blobs").count();
    assert_eq!(blobs, 0, "no blob may be left behind");
}

#[test]
fn login_push_logout_with_a_protected_registry() {
    let Some(reg) = TestRegistry::start_with_auth("alice", "open-sesame") else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    let cfg = tmp.path().join("docker-config");
    let tarball = rootfs_tarball(tmp.path());
    let name = reg.image("team/app:v1");
    let mut c = berth(&root);
    c.arg("import").arg(&tarball).arg(&name);
    ok(c);

    let login = |pass: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.env("DOCKER_CONFIG", &cfg).args(["login", "-u", "alice", "--password-stdin", &reg.host]);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn login");
        child.stdin.take().expect("stdin").write_all(format!("{pass}\n").as_bytes()).expect("write password");
        child.wait_with_output().expect("login")
    };
    let bad = login("wrong");
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("incorrect username or password"), "{}", text(&bad.stderr));
    assert!(!cfg.join("config.json").exists(), "refused credentials must not be saved");

    // Unauthenticated push fails and says why.
    let mut c = berth(&root);
    c.env("DOCKER_CONFIG", &cfg).args(["push", &name]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("unauthorized"), "{}", text(&o.stderr));

    let good = login("open-sesame");
    assert!(good.status.success(), "{}", text(&good.stderr));
    assert_eq!(text(&good.stdout).trim(), "Login Succeeded");

    let mut c = berth(&root);
    c.env("DOCKER_CONFIG", &cfg).args(["push", &name]);
    let out = ok(c);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("The push refers to repository [{}/team/app]", reg.host), "{out}");
    assert!(lines.iter().any(|l| l.ends_with(": Pushed")), "{out}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.starts_with("v1: digest: sha256:") && last.contains(" size: "), "{out}");
    let digest = last.split_whitespace().nth(2).expect("digest").to_string();

    // Again: the registry has every layer.
    let mut c = berth(&root);
    c.env("DOCKER_CONFIG", &cfg).args(["push", &name]);
    assert!(ok(c).contains(": Layer already exists"));

    // Someone else's tools read it: skopeo sees the digest berth reported.
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", "alice:open-sesame", "--raw"])
        .arg(format!("docker://{name}"))
        .output()
        .expect("skopeo inspect");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(Digest::sha256_of(&o.stdout).to_string(), digest);

    // A fresh store pulls it back by digest with the saved login.
    let mut c = berth(&tmp.path().join("root2"));
    c.env("DOCKER_CONFIG", &cfg).args(["pull", "-q", &format!("{}/team/app@{digest}", reg.host)]);
    ok(c);

    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.env("DOCKER_CONFIG", &cfg).args(["logout", &reg.host]);
    assert_eq!(ok(c).trim(), format!("Removing login credentials for {}", reg.host));
    let mut c = berth(&tmp.path().join("root3"));
    c.env("DOCKER_CONFIG", &cfg).args(["pull", "-q", &name]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(1), "pull after logout must fail");
}

/// Unmounts on drop, also when an assertion fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn skopeo_pushed_image_pulls_and_runs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (overlay mount, container)");
        return;
    }
    let Some(reg) = TestRegistry::start() else { return };
    reg.push_image("multilayer", "interop/multi:latest");
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    let mut c = berth(&root);
    c.args(["pull", &reg.image("interop/multi:latest")]);
    let out = ok(c);
    assert!(out.contains("Status: Downloaded newer image"), "{out}");

    // Stack the layers the way the engine will, and run a container in them.
    let store = berth_image::store::ImageStore::open(&root).expect("open store");
    let image = store.resolve(&reg.image("interop/multi:latest")).expect("resolve");
    let lowers: Vec<Digest> = image.layers.iter().map(|l| l.chain_id.clone()).collect();
    let bundle = tmp.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("mkdir rootfs");
    store
        .snapshots()
        .mount_overlay(&lowers, Some(&tmp.path().join("upper")), Some(&tmp.path().join("work")), &rootfs)
        .expect("mount overlay");
    let _mounted = Mounted(rootfs.clone());
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.args(["runtime", "spec", "--bundle"]).arg(&bundle);
    ok(c);
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("read config")).expect("config json");
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["process"]["args"] =
        serde_json::json!(["sh", "-c", "echo ran from $(cat /etc/hostname 2>/dev/null || echo image)"]);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).expect("encode")).expect("write config");
    let id = format!("interop-{}", std::process::id());
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.arg("runtime").arg("--root").arg(tmp.path().join("state")).args(["run", "--bundle"]).arg(&bundle).arg(&id);
    let o = run(c);
    let _ = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("runtime")
        .arg("--root")
        .arg(tmp.path().join("state"))
        .args(["delete", "--force", &id])
        .output();
    assert!(o.status.success(), "run failed: {}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).starts_with("ran from"), "{}", text(&o.stdout));
}

#[test]
fn pull_killed_mid_download_resumes_and_stores_no_bad_blob() {
    let (_, _, layers) = common::image_parts("busybox");
    let layer = layers[0].clone();
    let layout = common::test_images().join("busybox");
    let half = 400_000;
    let stalling = FakeRegistry::start(&layout, Fault::Stall(layer.clone(), half));
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    let mut child = berth(&root)
        .args(["pull", &format!("{}/x/busybox:latest", stalling.host)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pull");
    // Wait until the first bytes of the layer are on disk, then kill -9.
    let partial = root.join("ingest").join(format!("sha256-{}", layer.trim_start_matches("sha256:")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < half as u64 {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the pull never wrote {half} bytes of {layer}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    drop(stalling);

    // Nothing half-done is visible.
    assert!(!root.join("blobs/sha256").join(layer.trim_start_matches("sha256:")).exists());
    assert_blobs_verify(&root);
    let mut c = berth(&root);
    c.args(["images", "-q"]);
    assert_eq!(ok(c).trim(), "", "no image may be recorded by a killed pull");

    // A later pull completes, resuming the partial layer.
    let good = FakeRegistry::start(&layout, Fault::None);
    let mut c = berth(&root);
    c.args(["pull", &format!("{}/x/busybox:latest", good.host)]);
    assert!(ok(c).contains("Status: Downloaded newer image"));
    let ranges = good.ranges.lock().expect("lock").clone();
    assert!(ranges.iter().any(|r| r == &format!("bytes={half}-")), "no resumed download: {ranges:?}");
    assert_blobs_verify(&root);
    assert_eq!(std::fs::read_dir(root.join("ingest")).expect("ingest").count(), 0);
    let mut c = berth(&root);
    c.args(["images", "-q"]);
    assert_eq!(ok(c).lines().count(), 1);
}
