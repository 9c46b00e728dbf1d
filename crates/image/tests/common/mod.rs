//! Test helpers: a throwaway local registry (Debian's docker-registry via
//! scripts/test-registry) and test images (scripts/mk-test-images, pushed
//! with skopeo).
#![allow(dead_code)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script(name: &str) -> PathBuf {
    repo_root().join("scripts").join(name)
}

/// Whether `bin` is on PATH (or an existing absolute path).
fn have(bin: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().is_ok_and(|o| o.status.success())
}

/// Makes sure the Debian package providing `bin` is installed (installs it
/// with apt-get when running as root). Returns why not, if it is not there.
fn ensure_tool(bin: &str, package: &str) -> Result<(), String> {
    if have(bin) {
        return Ok(());
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
    }
    if have(bin) {
        Ok(())
    } else {
        Err(format!("{bin} is not installed and `apt-get install {package}` did not provide it"))
    }
}

/// Ok if the registry and skopeo are usable, else the reason (printed once by callers).
pub fn registry_tools() -> Result<(), String> {
    static TOOLS: OnceLock<Result<(), String>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            ensure_tool("docker-registry", "docker-registry")?;
            ensure_tool("skopeo", "skopeo")?;
            ensure_tool("curl", "curl")?;
            Ok(())
        })
        .clone()
}

/// A registry on 127.0.0.1:<free port> with storage in a temp dir; stopped
/// (and the dir removed) on drop, also when the test panics.
pub struct TestRegistry {
    dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
    /// "127.0.0.1:<port>".
    pub host: String,
    /// USER:PASS when started with htpasswd auth.
    pub creds: Option<(String, String)>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl TestRegistry {
    /// Starts an anonymous registry, or prints why it cannot and returns None.
    pub fn start() -> Option<TestRegistry> {
        Self::start_inner(None)
    }

    /// Starts a registry that wants HTTP Basic auth as user:pass.
    pub fn start_with_auth(user: &str, pass: &str) -> Option<TestRegistry> {
        Self::start_inner(Some((user.to_string(), pass.to_string())))
    }

    fn start_inner(creds: Option<(String, String)>) -> Option<TestRegistry> {
        if let Err(why) = registry_tools() {
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let mut last_err = String::new();
        // A port found free may be taken before the registry binds it: retry.
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().expect("tempdir");
            let port = free_port();
            let mut cmd = Command::new(script("test-registry"));
            cmd.arg("start").arg(dir.path()).arg(port.to_string());
            if let Some((u, p)) = &creds {
                cmd.arg("--htpasswd").arg(format!("{u}:{p}"));
            }
            let out = cmd.output().expect("run scripts/test-registry");
            let reg = TestRegistry { dir, port, host: format!("127.0.0.1:{port}"), creds: creds.clone() };
            if out.status.success() {
                return Some(reg);
            }
            last_err = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            drop(reg);
        }
        panic!("cannot start the test registry: {last_err}");
    }

    /// The storage dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// "127.0.0.1:<port>/<repo_tag>".
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }

    /// Copies test image `name` (see [`test_images`]) to `repo:tag` here with skopeo.
    pub fn push_image(&self, name: &str, repo_tag: &str) {
        let src = test_images().join(name);
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--all", "--quiet", "--insecure-policy", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        } else {
            cmd.arg("--dest-no-creds");
        }
        // Keep skopeo away from the invoking user's auth files.
        let authfile = self.dir.path().join("skopeo-auth.json");
        std::fs::write(&authfile, b"{}").expect("write skopeo auth file");
        cmd.arg("--dest-authfile").arg(&authfile);
        cmd.arg(format!("oci:{}:latest", src.display())).arg(format!("docker://{}", self.image(repo_tag)));
        let out = cmd.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {name} -> {repo_tag} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = Command::new(script("test-registry")).arg("stop").arg(self.dir.path()).output();
    }
}

/// The directory holding the test images (OCI layouts `busybox`,
/// `multilayer`, `multiarch`, and `digests.json`), built once and cached
/// under CARGO_TARGET_TMPDIR keyed by the scripts' contents.
pub fn test_images() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut key = Vec::new();
        for s in ["mk-test-images", "mk-busybox-rootfs"] {
            key.extend(std::fs::read(script(s)).expect("read script"));
        }
        if let Ok(meta) = std::fs::metadata("/bin/busybox") {
            key.extend(format!("{}", meta.len()).bytes());
        }
        let hash = berth_image::Digest::sha256_of(&key);
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("berth-test-images-{}", &hash.hex()[..16]));
        if dir.join("digests.json").exists() {
            return dir;
        }
        let tmp = base.join(format!("berth-test-images.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let out = Command::new(script("mk-test-images")).arg(&tmp).output().expect("run scripts/mk-test-images");
        assert!(
            out.status.success(),
            "mk-test-images failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Another test binary may have won the race; either copy is the same.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        assert!(dir.join("digests.json").exists(), "test images missing in {}", dir.display());
        dir
    })
    .clone()
}

/// digests.json of the test images: {"busybox": "sha256:…", "multiarch": …,
/// "multiarch_manifests": {"amd64": …, "arm64": …}, "multilayer": …}.
pub fn test_digests() -> serde_json::Value {
    let text = std::fs::read(test_images().join("digests.json")).expect("read digests.json");
    serde_json::from_slice(&text).expect("parse digests.json")
}

/// A blob of test image `image` by digest.
pub fn test_blob(image: &str, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(test_images().join(image).join("blobs/sha256").join(hex)).expect("read blob")
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Writes a docker config.json with `auths` for host into dir; returns its path.
pub fn write_docker_config(dir: &Path, host: &str, user: &str, pass: &str) -> PathBuf {
    let path = dir.join("config.json");
    let mut f = std::fs::File::create(&path).expect("create config.json");
    let auth = base64(format!("{user}:{pass}").as_bytes());
    write!(f, r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#).expect("write config.json");
    path
}

pub mod fake_registry;

/// (manifest digest, config digest, layer digests) of test image `name`'s
/// tagged manifest.
pub fn image_parts(name: &str) -> (String, String, Vec<String>) {
    let layout = test_images().join(name);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json")).expect("parse index");
    let manifest = index["manifests"][0]["digest"].as_str().expect("manifest digest").to_string();
    let m: serde_json::Value = serde_json::from_slice(&test_blob(name, &manifest)).expect("parse manifest");
    let config = m["config"]["digest"].as_str().expect("config digest").to_string();
    let layers = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_string())
        .collect();
    (manifest, config, layers)
}
