//! podman ↔ berth interop: podman 4.x (through conmon) drives berth as its
//! OCI runtime, via a symlink named `berth-runtime` to the berth binary.
//!
//! Everything podman owns lives in one unique temp dir: image and container
//! storage (`--root`), run state (`--runroot`), `--tmpdir`, the network
//! config dir and the containers.conf/storage.conf it reads (through
//! `CONTAINERS_CONF` / `CONTAINERS_STORAGE_CONF`). Containers go into a
//! unique cgroup parent. A guard removes containers, storage, leftover
//! mounts and cgroups even when an assertion fails, and the test checks at
//! the end that no mount is left under the temp dir.
//!
//! podman does not pass `--root` to the runtime (nor does its exit command
//! keep `--runtime-flag`), so berth keeps its state in its default root, as
//! runc does under podman; the container ids are unique anyway.
//!
//! Skipped (with a reason on stderr) when not root or podman is missing.
//! Run: `cargo test -p berth --test podman_e2e -- --nocapture`.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::resource::{getrlimit, Resource};

const IMAGE: &str = "localhost/busybox:test";
/// Limit for one podman command (a hung runtime must not hang CI).
const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of one log file quoted in a failure message.
const LOG_TAIL: usize = 8192;

/// Why this test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (podman rootful storage, overlay mounts, cgroups)".into());
    }
    match Command::new("podman").arg("--version").stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            Some(format!("`podman --version` failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim()))
        }
        Err(e) => Some(format!("podman not found on PATH ({e}); install it (apt-get install podman)")),
    }
}

/// The result of one command run under a time limit.
struct Run {
    /// The command line, for messages.
    cmdline: String,
    /// None when the command ran past its limit and was killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("TIMED OUT after {CMD_TIMEOUT:?} (killed)"),
        };
        format!(
            "command: {}\nstatus: {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            tail(&self.stdout, LOG_TAIL),
            tail(&self.stderr, LOG_TAIL)
        )
    }
}

/// The last `max` bytes of `s` (on a char boundary), marked when cut.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes cut …]{}", &s[start..])
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Reads a child's pipe on a thread and hands the text over a channel.
fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut p) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
    }
    rx
}

/// Runs `cmd` with `stdin`, capturing output; kills it after `timeout`.
fn run_with_timeout(mut cmd: Command, stdin: Stdio, timeout: Duration) -> Run {
    let line = cmdline(&cmd);
    let mut child: Child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{line}`: {e}"));
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait for `{line}`: {e}"),
        }
    };
    // A grandchild (conmon) could keep a pipe open: don't wait forever.
    let grace = Duration::from_secs(if status.is_some() { 30 } else { 2 });
    let stdout = out.recv_timeout(grace).unwrap_or_else(|_| "<stdout not closed>".into());
    let stderr = err.recv_timeout(grace).unwrap_or_else(|_| "<stderr not closed>".into());
    Run { cmdline: line, status, stdout, stderr }
}

/// Undoes the octal escapes (`\040` …) of a /proc/self/mountinfo field.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = b[i + 1..i + 4].iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape_mountinfo(f)))
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

/// Mounts under the dir that are not podman's own: containers/storage
/// keeps its overlay home (`storage/overlay`) bind-mounted on itself.
fn foreign_mounts_under(dir: &Path) -> Vec<PathBuf> {
    let own = dir.join("storage/overlay");
    mounts_under(dir).into_iter().filter(|m| *m != own).collect()
}

/// Text of the logs podman, conmon and the runtime leave for containers:
/// the runtime's `--log` (`oci-log`), conmon's `ctr.log`, exec logs and
/// exit files.
fn collect_logs(dir: &Path) -> String {
    fn walk(p: &Path, depth: u32, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth > 0 && !path.ends_with("shm") && !path.ends_with("secrets") {
                walk(&path, depth - 1, out);
            } else if ft.is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains("log") || name.ends_with("-status") {
                    out.push(path);
                }
            }
        }
    }
    let mut files = Vec::new();
    for top in ["storage/overlay-containers", "run/overlay-containers"] {
        let Ok(rd) = std::fs::read_dir(dir.join(top)) else { continue };
        for c in rd.flatten() {
            walk(&c.path().join("userdata"), 2, &mut files);
        }
    }
    // conmon's exit files (named by container or exec session id) hold
    // the exit codes podman reports.
    if let Ok(rd) = std::fs::read_dir(dir.join("tmp/exits")) {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    files.sort();
    let mut s = String::new();
    for f in files {
        let text = std::fs::read(&f).map(|b| String::from_utf8_lossy(&b).into_owned());
        match text {
            Ok(t) if t.trim().is_empty() => {}
            Ok(t) => {
                let _ = write!(s, "\n--- {} ---\n{}", f.display(), tail(&t, LOG_TAIL));
            }
            Err(e) => {
                let _ = write!(s, "\n--- {} --- (unreadable: {e})", f.display());
            }
        }
    }
    if s.is_empty() {
        "\n(no runtime/conmon logs found under the container dirs)".into()
    } else {
        s
    }
}

/// What cleanup could not undo.
#[derive(Default, Debug)]
struct Leftovers {
    /// Mounts found under the temp dir after podman removed everything.
    mounts: Vec<PathBuf>,
    /// Container cgroups (not podman's own `conmon` one) still present.
    cgroups: Vec<PathBuf>,
    /// Anything that failed while cleaning up.
    errors: Vec<String>,
}

/// An isolated podman setup in a unique temp dir, removed on drop.
struct Podman {
    dir: PathBuf,
    runtime: PathBuf,
    cgroup_parent: String,
    done: bool,
}

impl Podman {
    fn new() -> Podman {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("berth-podman-e2e-{}-{nanos:09}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let dir = dir.canonicalize().expect("canonicalize temp dir");
        // Guard first: from here on, a panic still cleans up.
        let mut p = Podman { runtime: dir.join("bin/berth-runtime"), dir, cgroup_parent: name, done: false };
        p.setup();
        p
    }

    fn setup(&mut self) {
        let d = &self.dir;
        for sub in ["bin", "storage", "run", "tmp", "net"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), &self.runtime).expect("symlink berth-runtime");

        // podman 4.3 asks for nofile/nproc 1048576 by default, above this
        // host's hard limits (root lacks CAP_SYS_RESOURCE here): ask for
        // what the host allows instead.
        let cap = |r: Resource, want: u64| getrlimit(r).map(|(_, hard)| hard.min(want)).unwrap_or(want);
        let nofile = cap(Resource::RLIMIT_NOFILE, 1024);
        let nproc = cap(Resource::RLIMIT_NPROC, 4096);
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
netns = "none"
log_driver = "k8s-file"

[network]
network_config_dir = "{net}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "{tmp}"
# podman then passes --log/--log-format=json to the runtime (create, exec)
# and reads its errors from that log, as it does for runc and crun.
runtime_supports_json = ["berth-runtime"]
"#,
            net = d.join("net").display(),
            tmp = d.join("tmp").display(),
        );
        std::fs::write(d.join("containers.conf"), conf).expect("write containers.conf");
        let storage = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            d.join("storage").display(),
            d.join("run").display()
        );
        std::fs::write(d.join("storage.conf"), storage).expect("write storage.conf");
    }

    /// A podman command with every piece of state redirected into the dir.
    fn cmd(&self) -> Command {
        let d = &self.dir;
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
            .args(["--storage-driver", "overlay", "--cgroup-manager=cgroupfs", "--events-backend=file"])
            .arg("--runtime")
            .arg(&self.runtime);
        c
    }

    fn podman(&self, args: &[&str]) -> Run {
        let mut c = self.cmd();
        c.args(args);
        run_with_timeout(c, Stdio::null(), CMD_TIMEOUT)
    }

    /// `podman run` options shared by every case.
    fn run_args<'a>(&'a self, extra: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["run", "--network", "none", "--cgroup-parent", &self.cgroup_parent];
        v.extend_from_slice(extra);
        v.push(IMAGE);
        v.extend_from_slice(cmd);
        v
    }

    /// Everything a failure message needs: the command's output and the
    /// runtime/conmon logs; for a failed `run --rm` (whose logs podman has
    /// removed) a second, debug-level run that keeps the container.
    fn diagnose(&self, what: &str, r: &Run, args: &[&str]) -> String {
        let mut s = format!("{what}\n{}\n=== runtime/conmon logs ==={}", r.describe(), collect_logs(&self.dir));
        if args.first() == Some(&"run") && args.contains(&"--rm") {
            let mut c = self.cmd();
            c.arg("--log-level=debug").args(args.iter().filter(|a| **a != "--rm"));
            let again = run_with_timeout(c, Stdio::null(), CMD_TIMEOUT);
            let _ = write!(
                s,
                "\n=== the same run again, without --rm, at --log-level=debug ===\n{}\n=== logs after it ==={}",
                again.describe(),
                collect_logs(&self.dir)
            );
        }
        s
    }

    /// Removes every container, image and mount, the cgroup parent and the
    /// dir; reports what could not be undone (or was leaked).
    fn cleanup(&mut self) -> Leftovers {
        self.done = true;
        let mut left = Leftovers::default();
        let rm = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        if !rm.ok() {
            left.errors.push(format!("podman rm -af failed:\n{}", rm.describe()));
        }
        // Mounts still here with no container left are leaks (podman's
        // per-container mounts go away with the containers).
        left.mounts = foreign_mounts_under(&self.dir);
        let reset = self.podman(&["system", "reset", "--force"]);
        if !reset.ok() {
            left.errors.push(format!("podman system reset -f failed:\n{}", reset.describe()));
        }
        for m in mounts_under(&self.dir) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                left.errors.push(format!("umount {}: {e}", m.display()));
            }
        }
        self.remove_cgroups(&mut left);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            left.errors.push(format!("remove {}: {e}", self.dir.display()));
        }
        left
    }

    /// Removes the cgroup parent in every hierarchy, children first. Any
    /// child but podman's `conmon` cgroup is a container cgroup the
    /// runtime's `delete` should have removed.
    fn remove_cgroups(&self, left: &mut Leftovers) {
        fn rmtree(p: &Path, errors: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rmtree(&e.path(), errors);
                    }
                }
            }
            // Retry briefly: a just-killed process can linger a moment.
            let mut last = None;
            for _ in 0..50 {
                match std::fs::remove_dir(p) {
                    Ok(()) => return,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(e) = last {
                errors.push(format!("rmdir cgroup {}: {e}", p.display()));
            }
        }
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else { return };
        for h in rd.flatten() {
            let parent = h.path().join(&self.cgroup_parent);
            if !parent.is_dir() {
                continue;
            }
            if let Ok(kids) = std::fs::read_dir(&parent) {
                for k in kids.flatten() {
                    if k.file_type().is_ok_and(|t| t.is_dir()) && k.file_name() != "conmon" {
                        left.cgroups.push(k.path());
                    }
                }
            }
            rmtree(&parent, &mut left.errors);
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let left = self.cleanup();
        if !left.mounts.is_empty() || !left.cgroups.is_empty() || !left.errors.is_empty() {
            eprintln!("podman_e2e cleanup (after a failure) left: {left:#?}");
        }
    }
}

/// Builds the busybox rootfs and imports it as `IMAGE`.
fn import_image(p: &Podman) {
    let rootfs = p.dir.join("rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mk-busybox-rootfs");
    let mut mk = Command::new("bash");
    mk.arg(&script).arg(&rootfs);
    let r = run_with_timeout(mk, Stdio::null(), CMD_TIMEOUT);
    assert!(r.ok(), "building the busybox rootfs failed (is busybox-static installed?):\n{}", r.describe());

    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn tar");
    let tar_out = tar.stdout.take().expect("tar stdout");
    let mut c = p.cmd();
    c.args(["import", "-", IMAGE]);
    let r = run_with_timeout(c, Stdio::from(tar_out), CMD_TIMEOUT);
    let tar_status = tar.wait().expect("wait tar");
    assert!(tar_status.success(), "tar of the rootfs failed: {tar_status}");
    assert!(r.ok(), "podman import failed:\n{}", r.describe());
}

/// Ids in the runtime's default state root (where podman's calls land).
fn runtime_list(p: &Podman) -> Run {
    let mut c = Command::new(&p.runtime);
    c.args(["list", "--format", "json"]);
    run_with_timeout(c, Stdio::null(), CMD_TIMEOUT)
}

#[test]
fn podman_drives_berth_runtime() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped podman_e2e: {why}");
        return;
    }
    let mut p = Podman::new();
    eprintln!("podman_e2e: state in {}, cgroup parent /{}", p.dir.display(), p.cgroup_parent);
    import_image(&p);

    // 1. Foreground run: output and exit status pass through.
    let args = p.run_args(&["--rm"], &["echo", "hi"]);
    let r = p.podman(&args);
    assert!(
        r.ok() && r.stdout == "hi\n",
        "{}",
        p.diagnose("`podman run --rm … echo hi` should print exactly \"hi\\n\" and exit 0", &r, &args)
    );

    // 2. The container's exit code becomes podman's.
    let args = p.run_args(&["--rm"], &["sh", "-c", "exit 7"]);
    let r = p.podman(&args);
    assert_eq!(r.code(), Some(7), "{}", p.diagnose("`podman run --rm … sh -c 'exit 7'` should exit 7", &r, &args));

    // 3. Detached container, exec into it, force-remove it.
    let args = p.run_args(&["-d"], &["sleep", "100"]);
    let r = p.podman(&args);
    let id = r.stdout.trim().to_string();
    assert!(
        r.ok() && id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        p.diagnose("`podman run -d … sleep 100` should print a container id", &r, &args)
    );

    let st = p.podman(&["inspect", "--format", "{{.State.Status}}", &id]);
    assert!(
        st.ok() && st.stdout.trim() == "running",
        "{}",
        p.diagnose("the detached container should be running", &st, &[])
    );

    let r = p.podman(&["exec", &id, "echo", "ok"]);
    assert!(
        r.ok() && r.stdout == "ok\n",
        "{}",
        p.diagnose("`podman exec <id> echo ok` should print exactly \"ok\\n\" and exit 0", &r, &[])
    );

    let r = p.podman(&["exec", &id, "sh", "-c", "exit 3"]);
    assert_eq!(r.code(), Some(3), "{}", p.diagnose("`podman exec <id> sh -c 'exit 3'` should exit 3", &r, &[]));

    // sleep is pid 1 and ignores SIGTERM: don't wait the default 10 s.
    let r = p.podman(&["rm", "--force", "--time", "0", &id]);
    assert!(r.ok(), "{}", p.diagnose("`podman rm -f <id>` should succeed", &r, &[]));

    let ps = p.podman(&["ps", "--all", "--quiet", "--no-trunc"]);
    assert!(ps.ok() && !ps.stdout.contains(&id), "container still listed after rm:\n{}", ps.describe());

    // The runtime's delete removed its state and the container's cgroups.
    let ls = runtime_list(&p);
    assert!(ls.ok(), "`berth-runtime list --format json` failed:\n{}", ls.describe());
    assert!(!ls.stdout.contains(&id), "runtime state for {id} left after podman rm:\n{}", ls.stdout);
    let leaked: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|h| h.path().join(&p.cgroup_parent).join(format!("libpod-{id}")))
                .filter(|c| c.exists())
                .collect()
        })
        .unwrap_or_default();
    assert!(leaked.is_empty(), "container cgroups left after podman rm -f: {leaked:?}");

    // No container left: nothing of theirs may stay mounted in this mount
    // namespace (rootfs/proc/dev mounts must not propagate back out).
    let mounts = foreign_mounts_under(&p.dir);
    assert!(mounts.is_empty(), "mounts left under {} with no container running: {mounts:#?}", p.dir.display());

    let dir = p.dir.clone();
    let left = p.cleanup();
    let remaining = mounts_under(&dir);
    assert!(remaining.is_empty(), "mounts remain under {} after cleanup: {remaining:#?}", dir.display());
    assert!(left.mounts.is_empty(), "mounts were left after `podman rm -af`: {:#?}", left.mounts);
    assert!(left.cgroups.is_empty(), "container cgroups were left behind: {:#?}", left.cgroups);
    assert!(left.errors.is_empty(), "cleanup failed: {:#?}", left.errors);
    assert!(!dir.exists(), "{} still exists after cleanup", dir.display());
}
