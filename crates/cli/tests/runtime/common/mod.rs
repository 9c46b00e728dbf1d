//! Shared helpers for berth's integration tests: busybox bundles in temp
//! dirs, unique container ids, a runtime state root per test, and guards
//! that delete containers even when an assertion fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Value};

/// Path of the berth binary under test: `$BERTH_BIN`, else cargo's build.
pub fn berth() -> &'static str {
    // BERTH_BIN: run the suite against another build of the same tree
    // (scripts/test runs it against the static release binary too).
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("BERTH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_berth").to_owned()))
}

/// True when running as root; tests that need the kernel's privileged
/// features print a reason and return early otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns early (with a message) from a test that needs root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// A unique name for this test process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A busybox rootfs built once per test binary, copied into each bundle.
fn base_rootfs() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        // Kept in cargo's per-target temp dir and reused across runs;
        // built under a temp name and renamed so parallel binaries agree.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs");
        if dir.join("bin/busybox").exists() {
            return dir;
        }
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("busybox-rootfs.{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mk-busybox-rootfs");
        let st = Command::new("bash").arg(script).arg(&tmp).status().expect("run mk-busybox-rootfs");
        assert!(st.success(), "mk-busybox-rootfs failed");
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

/// A bundle dir with a busybox rootfs and a config.json, plus a private
/// runtime state root. Dropping it force-deletes its containers and removes
/// every file.
pub struct Bundle {
    /// Temp dir holding everything.
    pub tmp: tempfile::TempDir,
    /// The config, edited by tests before `write`.
    pub config: Value,
    /// Ids created through this bundle (deleted on drop).
    pub ids: std::cell::RefCell<Vec<String>>,
}

impl Bundle {
    /// New bundle whose process runs `sh -c script`, with terminal off.
    pub fn new(script: &str) -> Bundle {
        let tmp = tempfile::Builder::new().prefix("berth-test-").tempdir().expect("tempdir");
        let rootfs = tmp.path().join("bundle/rootfs");
        std::fs::create_dir_all(rootfs.parent().expect("parent")).expect("mkdir bundle");
        let st = Command::new("cp").arg("-a").arg(base_rootfs()).arg(&rootfs).status().expect("cp");
        assert!(st.success());
        let out = Command::new(berth())
            .args(["runtime", "spec", "--bundle"])
            .arg(tmp.path().join("bundle"))
            .output()
            .expect("berth runtime spec");
        assert!(out.status.success(), "spec failed: {}", String::from_utf8_lossy(&out.stderr));
        let data = std::fs::read(tmp.path().join("bundle/config.json")).expect("read config");
        let mut config: Value = serde_json::from_slice(&data).expect("parse config");
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["sh", "-c", script]);
        // Docker's defaults are not read-only; most tests write to /tmp.
        config["root"]["readonly"] = json!(false);
        Bundle { tmp, config, ids: Default::default() }
    }

    /// The bundle directory.
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("bundle")
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir().join("rootfs")
    }

    /// The runtime's private `--root`.
    pub fn state_root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Writes config.json.
    pub fn write(&self) {
        let data = serde_json::to_vec_pretty(&self.config).expect("encode");
        std::fs::write(self.dir().join("config.json"), data).expect("write config");
    }

    /// A berth runtime command with this bundle's state root.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth());
        c.arg("runtime").arg("--root").arg(self.state_root()).args(args);
        c
    }

    /// Runs a runtime command to completion and returns its output.
    ///
    /// stdout/stderr go through files, not pipes: a container created by
    /// `create` inherits them and would keep a pipe open until it exits.
    pub fn rt(&self, args: &[&str]) -> Output {
        let n = unique("out");
        let (o, e) = (self.tmp.path().join(format!("{n}.stdout")), self.tmp.path().join(format!("{n}.stderr")));
        let status = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&o).expect("stdout file"))
            .stderr(std::fs::File::create(&e).expect("stderr file"))
            .status()
            .expect("spawn berth");
        let out = Output {
            status,
            stdout: std::fs::read(&o).unwrap_or_default(),
            stderr: std::fs::read(&e).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(o);
        let _ = std::fs::remove_file(e);
        out
    }

    /// Registers `id` for deletion on drop and returns it.
    pub fn track(&self, id: &str) -> String {
        self.ids.borrow_mut().push(id.to_string());
        id.to_string()
    }

    /// Writes the config and runs the container in the foreground.
    pub fn run(&self) -> Output {
        self.write();
        let id = self.track(&unique("run"));
        let dir = self.dir();
        self.rt(&["run", "--bundle", dir.to_str().expect("utf8"), &id])
    }

    /// Writes the config and creates a container; panics on failure.
    pub fn create(&self) -> String {
        self.write();
        let id = self.track(&unique("c"));
        let dir = self.dir();
        let out = self.rt(&["create", "--bundle", dir.to_str().expect("utf8"), &id]);
        assert!(out.status.success(), "create failed: {}", String::from_utf8_lossy(&out.stderr));
        id
    }

    /// The `status` field of `state`.
    pub fn status(&self, id: &str) -> String {
        let out = self.rt(&["state", id]);
        assert!(out.status.success(), "state failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("state json");
        v["status"].as_str().unwrap_or_default().to_string()
    }

    /// The `state` document.
    pub fn state(&self, id: &str) -> Value {
        let out = self.rt(&["state", id]);
        assert!(out.status.success(), "state failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("state json")
    }

    /// Waits until `state` reports `want` (up to 10 s).
    pub fn wait_status(&self, id: &str, want: &str) {
        for _ in 0..1000 {
            if self.status(id) == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("container {id} never became {want}; last: {}", self.status(id));
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.rt(&["delete", "--force", id]);
        }
    }
}

/// stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "command failed ({:?}):\nstdout: {}\nstderr: {}", o.status, stdout(o), stderr(o));
    stdout(o)
}
