//! `berth serve` driven by the real docker CLI (`DOCKER_HOST=unix://…`):
//! run (attached, detached, --rm, -i, -t through a pty), exit codes, logs,
//! ps, inspect, stop, kill, rm, restart policies, Docker's default
//! sandbox, and live restore after `kill -9` of the daemon.
//!
//! Each test runs its own daemon on its own roots and socket; a guard
//! removes containers, stops monitors, unmounts and deletes everything,
//! also when an assertion fails. Skipped (with the reason) when not root
//! or when the docker CLI is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn berth() -> &'static str {
    // BERTH_BIN: run the suite against another build of the same tree
    // (scripts/test runs it against the static release binary too).
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("BERTH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_berth").to_owned()))
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    match Command::new("docker").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the docker CLI is not installed (scripts/setup installs it)".into()),
    }
}

/// A busybox rootfs tarball, built once per test binary.
fn busybox_tarball() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let tarball = base.join("engine-busybox.tar.gz");
        if tarball.exists() {
            return tarball;
        }
        let dir = base.join(format!("engine-busybox-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mk-busybox-rootfs");
        let st = Command::new("bash").arg(script).arg(&dir).stdout(Stdio::null()).status().expect("mk-busybox-rootfs");
        assert!(st.success(), "mk-busybox-rootfs failed");
        let tmp = base.join(format!("engine-busybox-{}.tar.gz", std::process::id()));
        let st = Command::new("tar").arg("-C").arg(&dir).arg("-czf").arg(&tmp).arg(".").status().expect("tar");
        assert!(st.success());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::rename(&tmp, &tarball);
        tarball
    })
    .clone()
}

/// A daemon on private roots and socket, with a busybox image.
struct Daemon {
    tmp: tempfile::TempDir,
    child: Option<Child>,
}

impl Daemon {
    fn start() -> Option<Daemon> {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: {why}");
            return None;
        }
        // Short paths: unix socket paths are limited to 107 bytes.
        let tmp = tempfile::Builder::new().prefix("be").tempdir_in("/tmp").expect("tempdir");
        let root = tmp.path().join("root");
        let st = Command::new(berth())
            .arg("--root")
            .arg(&root)
            .args(["import", "-c", r#"CMD ["sh"]"#])
            .arg(busybox_tarball())
            .arg("busybox:latest")
            .stdout(Stdio::null())
            .status()
            .expect("berth import");
        assert!(st.success(), "importing busybox failed");
        let mut d = Daemon { tmp, child: None };
        d.spawn();
        Some(d)
    }

    /// A root with the busybox image and no daemon yet (for the CLI's
    /// on-demand start): `root()` and `run/` as a daemon would use them.
    fn image_only() -> Option<Daemon> {
        let mut d = Daemon::start()?;
        d.term();
        Some(d)
    }

    /// `berth` against this daemon (`-H`), no terminal on stdin.
    fn berth(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth());
        c.env_remove("DOCKER_HOST")
            .arg("--root")
            .arg(self.root())
            .arg("-H")
            .arg(format!("unix://{}", self.sock().display()))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `berth args` against this daemon.
    fn b(&self, args: &[&str]) -> Output {
        run_timeout(self.berth(args), Duration::from_secs(60))
    }

    /// `berth args` must succeed; its stdout.
    fn bok(&self, args: &[&str]) -> String {
        let o = self.b(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed ({:?}): {}{}\n--- daemon log ---\n{}",
            o.status.code(),
            text(&o.stdout),
            text(&o.stderr),
            self.serve_log()
        );
        text(&o.stdout)
    }

    /// `berth serve` processes on this root (started by the test or by the CLI).
    fn serves(&self) -> Vec<i32> {
        self.procs_with("\0serve\0")
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn sock(&self) -> PathBuf {
        self.tmp.path().join("api.sock")
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.tmp.path().join("serve.log")).expect("log");
        let child = Command::new(berth())
            .arg("serve")
            .arg("--root")
            .arg(self.root())
            .arg("--run-root")
            .arg(self.tmp.path().join("run"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn berth serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(self.sock()).is_err() {
            assert!(Instant::now() < deadline, "daemon did not come up: {}", self.serve_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn serve_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGTERM to the daemon; it must exit within 10 s.
    fn term(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if c.try_wait().expect("wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the daemon did not exit on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!self.sock().exists(), "the daemon left its socket behind");
    }

    /// kill -9 of the daemon (containers and monitors stay).
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.sock().display()))
            .env("DOCKER_CONFIG", self.tmp.path().join("docker-config"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        run_timeout(self.docker(args), Duration::from_secs(60))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed ({:?}): {}{}\n--- daemon log ---\n{}",
            o.status.code(),
            text(&o.stdout),
            text(&o.stderr),
            self.serve_log()
        );
        text(&o.stdout)
    }

    fn inspect(&self, name: &str, fmt: &str) -> String {
        self.ok(&["inspect", "-f", fmt, name]).trim().to_string()
    }

    /// Waits until `inspect -f fmt` prints `want`.
    fn wait_for(&self, name: &str, fmt: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.inspect(name, fmt);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name}: {fmt} is {got:?}, expected {want:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Monitor processes of this daemon's root (not the idle zygote, a
    /// monitor started ahead for the next container).
    fn monitors(&self) -> Vec<i32> {
        let zygotes = self.zygotes();
        self.procs_with("\0monitor\0").into_iter().filter(|p| !zygotes.contains(p)).collect()
    }

    /// Idle zygotes of this daemon's root.
    fn zygotes(&self) -> Vec<i32> {
        self.procs_with("\0--zygote\0")
    }

    /// berth processes on this root whose command line contains `verb`.
    fn procs_with(&self, verb: &str) -> Vec<i32> {
        let needle = format!("--root\0{}\0", self.root().display());
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains(verb) && cmd.contains(&needle) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.run(&["ps", "-aq"]);
            for id in text(&ids.stdout).lines() {
                let _ = self.run(&["rm", "-f", id]);
            }
        }
        self.kill9();
        // A daemon the CLI started on demand.
        for pid in self.serves() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        for pid in self.monitors() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        // Leftover container processes (a failed test) die with their cgroup.
        if let Ok(dirs) = std::fs::read_dir(self.tmp.path().join("run/runtime")) {
            for d in dirs.flatten() {
                let _ = Command::new(berth())
                    .arg("runtime")
                    .arg("--root")
                    .arg(self.tmp.path().join("run/runtime"))
                    .args(["delete", "--force"])
                    .arg(d.file_name())
                    .output();
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.tmp.path().display().to_string();
        let mut points: Vec<&str> =
            mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in points {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[path = "engine/berth_client.rs"]
mod berth_client;
// (The module allows its own dead code.)
#[path = "../../image/tests/common/mod.rs"]
mod common;

/// `docker events --since SINCE --until <now + 1 s> FILTERS… --format FORMAT`:
/// what was published from `since` up to now.
fn events_until_now(d: &Daemon, since: &str, filters: &[&str], format: &str) -> String {
    let until =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() + 1).to_string();
    let mut args = vec!["events", "--since", since, "--until", &until];
    for f in filters {
        args.extend(["--filter", f]);
    }
    args.extend(["--format", format]);
    d.ok(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command, killing it after `limit`.
fn run_timeout(mut c: Command, limit: Duration) -> Output {
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!("command timed out: {c:?}\n{}{}", text(&o.stdout), text(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_attached_rm_and_exit_codes() {
    let Some(d) = Daemon::start() else { return };
    assert_eq!(d.ok(&["run", "--rm", "busybox", "echo", "hi"]), "hi\n");
    // stdout and stderr both come back, on their own streams.
    let o = d.run(&["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");
    let o = d.run(&["run", "--rm", "busybox", "no-such-program"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("executable file not found"), "{}", text(&o.stderr));
    // --rm left nothing behind.
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    // Without --rm the container stays, exited with its code.
    let o = d.run(&["run", "--name", "kept", "busybox", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(d.inspect("kept", "{{.State.Status}} {{.State.ExitCode}}"), "exited 7");
    // Its image cannot be removed while it exists.
    let o = d.run(&["rmi", "busybox"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("image is being used by"), "{}", text(&o.stderr));
    d.ok(&["tag", "busybox", "other:1"]);
    assert!(d.ok(&["rmi", "other:1"]).contains("Untagged: other:1"), "untagging a second name is allowed");
    // logs -f follows until the container exits.
    let id = d.ok(&["run", "-d", "busybox", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done"]);
    assert_eq!(d.ok(&["logs", "-f", id.trim()]), "1\n2\n3\n");
    assert_eq!(d.ok(&["logs", "--tail", "1", id.trim()]), "3\n");
    d.ok(&["rm", id.trim()]);
    // stdin with -i.
    let mut c = d.docker(&["run", "-i", "--rm", "busybox", "sh", "-c", "read x; echo got $x"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    use std::io::Write as _;
    child.stdin.take().expect("stdin").write_all(b"hello\n").expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(text(&o.stdout), "got hello\n", "{}", text(&o.stderr));
}

#[test]
fn detached_lifecycle_logs_inspect_stop_rm() {
    let Some(d) = Daemon::start() else { return };
    let script = "trap 'echo bye; exit 0' TERM; echo started; echo warn >&2; while true; do sleep 0.1; done";
    let id = d.ok(&["run", "-d", "--name", "web", "--hostname", "webhost", "-e", "A=1", "busybox", "sh", "-c", script]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the id: {id:?}");
    d.wait_for("web", "{{.State.Status}}", "running");
    let ps = d.ok(&["ps"]);
    assert!(ps.lines().nth(1).is_some_and(|l| l.starts_with(&id[..12]) && l.ends_with("web")), "{ps}");
    assert_eq!(
        d.inspect("web", "{{.Name}} {{.Config.Hostname}} {{.State.Running}} {{index .Config.Env 0}}"),
        "/web webhost true A=1"
    );
    let pid: i32 = d.inspect("web", "{{.State.Pid}}").parse().expect("pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // Logs, split by stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = d.run(&["logs", "web"]);
        if text(&o.stdout) == "started\n" && text(&o.stderr) == "warn\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {:?} / {:?}", text(&o.stdout), text(&o.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }
    // A running container is not removed without -f.
    let o = d.run(&["rm", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("stop the container before removing or force remove"), "{}", text(&o.stderr));
    // stop: SIGTERM, the trap exits 0.
    d.ok(&["stop", "web"]);
    assert_eq!(d.inspect("web", "{{.State.Status}} {{.State.ExitCode}}"), "exited 0");
    assert!(d.ok(&["logs", "web"]).ends_with("bye\n"));
    assert!(d.ok(&["ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}"]).contains("web"));
    // Start again, kill with a signal, remove.
    d.ok(&["start", "web"]);
    d.wait_for("web", "{{.State.Status}}", "running");
    d.ok(&["kill", "web"]);
    d.wait_for("web", "{{.State.Status}} {{.State.ExitCode}}", "exited 137");
    d.ok(&["rm", "web"]);
    let o = d.run(&["inspect", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("No such"), "{}", text(&o.stderr));
    // rm -f of a running one.
    d.ok(&["run", "-d", "--name", "doomed", "busybox", "sleep", "100"]);
    d.ok(&["rm", "-f", "doomed"]);
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert!(d.monitors().is_empty(), "monitors left after rm");
}

#[test]
fn restart_policy_on_failure_and_always() {
    let Some(d) = Daemon::start() else { return };
    d.ok(&["run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 1"]);
    d.wait_for("flaky", "{{.RestartCount}} {{.State.Status}}", "2 exited");
    d.ok(&["run", "-d", "--name", "always", "--restart", "always", "busybox", "sh", "-c", "sleep 0.2; exit 0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.inspect("always", "{{.RestartCount}}").parse::<u32>().unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "always never restarted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A stop is final, whatever the policy.
    d.ok(&["stop", "-t", "1", "always"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.inspect("always", "{{.State.Status}}"), "exited");
}

#[test]
fn docker_default_sandbox_and_privileged() {
    let Some(d) = Daemon::start() else { return };
    // Docker's default capability set.
    let status = d.ok(&["run", "--rm", "busybox", "cat", "/proc/self/status"]);
    let capeff = status.lines().find(|l| l.starts_with("CapEff:")).expect("CapEff");
    assert_eq!(capeff.split_whitespace().nth(1), Some("00000000a80425fb"), "{capeff}");
    // mount needs CAP_SYS_ADMIN: refused by default, allowed privileged.
    let mount = "mkdir -p /m && mount -t tmpfs t /m";
    let o = d.run(&["run", "--rm", "busybox", "sh", "-c", mount]);
    assert_ne!(o.status.code(), Some(0), "mount worked in a default container");
    assert!(
        text(&o.stderr).contains("Operation not permitted") || text(&o.stderr).contains("denied"),
        "{}",
        text(&o.stderr)
    );
    d.ok(&["run", "--rm", "--privileged", "busybox", "sh", "-c", mount]);
    // So does unshare (seccomp and capabilities both refuse it by default).
    let o = d.run(&["run", "--rm", "busybox", "unshare", "-n", "true"]);
    assert_ne!(o.status.code(), Some(0), "unshare worked in a default container");
    assert!(text(&o.stderr).contains("Operation not permitted"), "{}", text(&o.stderr));
    d.ok(&["run", "--rm", "--privileged", "busybox", "unshare", "-n", "true"]);
    // Masked /proc paths read empty; /etc/hostname is the container's.
    assert_eq!(d.ok(&["run", "--rm", "busybox", "cat", "/proc/interrupts"]), "");
    assert!(!d.ok(&["run", "--rm", "--privileged", "busybox", "cat", "/proc/interrupts"]).is_empty());
    assert_eq!(d.ok(&["run", "--rm", "--hostname", "h1", "busybox", "cat", "/etc/hostname"]), "h1\n");
    // Loopback is up, as with Docker's none network.
    let lo = d.ok(&["run", "--rm", "busybox", "ip", "addr", "show", "lo"]);
    assert!(lo.contains("UP") && lo.contains("127.0.0.1"), "{lo}");
    // --network host shares the host's namespace.
    let host_ns = std::fs::read_link("/proc/self/ns/net").expect("netns").display().to_string();
    let inside = d.ok(&["run", "--rm", "--network", "host", "busybox", "readlink", "/proc/self/ns/net"]);
    assert_eq!(inside.trim(), host_ns);
    let inside = d.ok(&["run", "--rm", "busybox", "readlink", "/proc/self/ns/net"]);
    assert_ne!(inside.trim(), host_ns);
    // Docker's seccomp profile is loaded.
    let o = d.run(&["run", "--rm", "busybox", "sh", "-c", "cat /proc/self/status | grep Seccomp:"]);
    assert!(text(&o.stdout).contains("2"), "seccomp filter mode expected: {}", text(&o.stdout));
    // --cap-drop and --user.
    let status =
        d.ok(&["run", "--rm", "--cap-drop", "ALL", "--user", "1000:1000", "busybox", "cat", "/proc/self/status"]);
    assert!(status.lines().any(|l| l.starts_with("CapEff:") && l.ends_with("0000000000000000")), "{status}");
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("1000")), "{status}");
    // --device: the node exists and the device cgroup lets it be opened.
    // (/dev/mem, 1:1, is not in Docker's default device list.)
    assert_ne!(d.run(&["run", "--rm", "busybox", "sh", "-c", "mknod /x c 1 1 && head -c1 /x"]).status.code(), Some(0));
    if Path::new("/dev/kvm").exists() {
        assert_ne!(d.run(&["run", "--rm", "busybox", "test", "-e", "/dev/kvm"]).status.code(), Some(0));
        let o = d.run(&["run", "--rm", "--device", "/dev/kvm", "busybox", "sh", "-c", "exec 3</dev/kvm && echo ok"]);
        assert_eq!(text(&o.stdout), "ok\n", "{}", text(&o.stderr));
    }
    // The API socket is root's alone.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(d.sock()).expect("stat socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn tty_through_a_pty() {
    let Some(d) = Daemon::start() else { return };
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: script(1) is not installed (bsdutils)");
        return;
    }
    let cmd = format!(
        "DOCKER_HOST=unix://{} docker run -t --rm busybox sh -c 'tty; echo cols $(stty size)'",
        d.sock().display()
    );
    let o = run_timeout(
        {
            let mut c = Command::new("script");
            c.args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::null());
            c
        },
        Duration::from_secs(60),
    );
    let out = text(&o.stdout);
    assert!(out.contains("/dev/pts/"), "no tty inside: {out:?} {}", text(&o.stderr));
}

/// `run --rm` answers once the container is gone from the daemon; its
/// rootfs mount, cgroups and directory are released right after, in the
/// background. A removal cut short by the daemon's death (here: a leftover
/// container directory with its rootfs still mounted) is finished by the
/// next daemon.
#[test]
fn run_rm_releases_everything_and_restart_sweeps_leftovers() {
    let Some(mut d) = Daemon::start() else { return };
    assert_eq!(d.ok(&["run", "--rm", "--name", "gone", "busybox", "echo", "hi"]), "hi\n");
    // Gone at once: not listed, the name is free.
    assert_eq!(d.ok(&["ps", "-aq", "--filter", "name=gone"]), "");
    assert_eq!(d.ok(&["run", "--rm", "--name", "gone", "busybox", "true"]), "");
    let containers = d.root().join("containers");
    let released = || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let empty = std::fs::read_dir(&containers).map(|mut r| r.next().is_none()).unwrap_or(true);
        empty && !mounts.contains(&containers.display().to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !released() {
        assert!(Instant::now() < deadline, "run --rm left its directory or rootfs mount behind");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A leftover of an interrupted removal: no database record, a mount.
    d.kill9();
    let left = containers.join("ab".repeat(32));
    let rootfs = left.join("bundle/rootfs");
    std::fs::create_dir_all(&rootfs).expect("mkdir");
    nix::mount::mount(Some("tmpfs"), &rootfs, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)
        .expect("mount");
    // Not a container id: not the daemon's to touch.
    let other = containers.join("not-a-container");
    std::fs::create_dir_all(&other).expect("mkdir");
    // The record of a --rm container whose lazy removal a crash undid,
    // after its directory was released.
    {
        let db = berth_engine::db::ContainerDb::open(&d.root()).expect("open the container db");
        let ghost = serde_json::from_value(serde_json::json!({
            "id": "cd".repeat(32), "name": "ghost", "created": "", "image_name": "busybox", "image_id": "",
            "config": {}, "host_config": {"AutoRemove": true}, "log_path": "", "layers": [],
        }))
        .expect("record");
        db.insert(&ghost).expect("insert");
    }
    d.spawn();
    assert_eq!(d.ok(&["ps", "-aq", "--filter", "name=ghost"]), "", "a released --rm container came back");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!left.exists(), "the leftover container directory survived a restart");
    assert!(!mounts.contains(&rootfs.display().to_string()), "the leftover rootfs is still mounted");
    assert!(other.exists(), "the daemon removed a directory that is not a container's");
}

#[test]
fn live_restore_after_kill_9() {
    let Some(mut d) = Daemon::start() else { return };
    d.ok(&[
        "run",
        "-d",
        "--name",
        "survivor",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do echo tick; sleep 0.2; done",
    ]);
    d.wait_for("survivor", "{{.State.Status}}", "running");
    let pid = d.inspect("survivor", "{{.State.Pid}}");
    // After a start the daemon keeps a monitor ready for the next one (a
    // zygote); the next container's monitor is that process, and its
    // command line names the container.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.zygotes().len() != 1 {
        assert!(Instant::now() < deadline, "no zygote after a start: {:?}", d.zygotes());
        std::thread::sleep(Duration::from_millis(20));
    }
    let zygote = d.zygotes()[0];
    let second = d.ok(&["run", "-d", "--name", "second", "busybox", "sleep", "1000"]).trim().to_string();
    let cmdline = std::fs::read(format!("/proc/{zygote}/cmdline")).expect("the zygote became the monitor");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains(&format!(" monitor --root {} ", d.root().display())), "{cmdline}");
    assert!(cmdline.trim_end().ends_with(&second), "{cmdline}");
    assert!(d.monitors().contains(&zygote));
    let second_pid = d.inspect("second", "{{.State.Pid}}");
    d.kill9();
    std::thread::sleep(Duration::from_millis(300));
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the container died with the daemon");
    assert!(Path::new(&format!("/proc/{second_pid}")).exists(), "the zygote-born monitor's container died");
    // The idle zygote leaves with the daemon.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.zygotes().is_empty() {
        assert!(Instant::now() < deadline, "zygote left after the daemon died: {:?}", d.zygotes());
        std::thread::sleep(Duration::from_millis(20));
    }
    d.spawn();
    assert_eq!(d.inspect("survivor", "{{.State.Status}} {{.State.Pid}}"), format!("running {pid}"));
    assert_eq!(d.inspect("second", "{{.State.Status}} {{.State.Pid}}"), format!("running {second_pid}"));
    d.ok(&["rm", "-f", "second"]);
    // A SIGTERM'd daemon exits promptly (its watchers wait on containers
    // that outlive it) and leaves the container running too.
    d.term();
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the container died with the daemon");
    d.spawn();
    assert!(d.ok(&["logs", "survivor"]).contains("tick"));
    d.ok(&["stop", "survivor"]);
    assert_eq!(d.inspect("survivor", "{{.State.Status}} {{.State.ExitCode}}"), "exited 0");
    d.ok(&["rm", "survivor"]);
    assert!(d.monitors().is_empty(), "monitor left after rm");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&d.root().display().to_string()), "mounts left under the root");
}

#[test]
fn exec_into_a_running_container() {
    let Some(d) = Daemon::start() else { return };
    d.ok(&["run", "-d", "--name", "box", "-e", "A=from-run", "busybox", "sleep", "1000"]);
    d.wait_for("box", "{{.State.Status}}", "running");
    let o = d.run(&["exec", "-e", "B=from-exec", "box", "sh", "-c", "echo $A $B; echo e >&2; exit 4"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "from-run from-exec\n");
    assert_eq!(text(&o.stderr), "e\n");
    assert_eq!(d.ok(&["exec", "-u", "1000:1000", "-w", "/tmp", "box", "sh", "-c", "id -u; pwd"]), "1000\n/tmp\n");
    // Same pid namespace as the container's init.
    assert!(d.ok(&["exec", "box", "ps"]).contains("sleep 1000"));
    // stdin.
    let mut c = d.docker(&["exec", "-i", "box", "cat"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    use std::io::Write as _;
    child.stdin.take().expect("stdin").write_all(b"through stdin\n").expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(text(&o.stdout), "through stdin\n", "{}", text(&o.stderr));
    // Detached.
    d.ok(&["exec", "-d", "box", "touch", "/tmp/marker"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.run(&["exec", "box", "test", "-e", "/tmp/marker"]).status.success() {
        assert!(Instant::now() < deadline, "detached exec did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = d.run(&["exec", "box", "no-such-thing"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    d.ok(&["stop", "-t", "0", "box"]);
    let o = d.run(&["exec", "box", "true"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("is not running"), "{}", text(&o.stderr));
}

#[test]
fn python_docker_sdk() {
    let Some(d) = Daemon::start() else { return };
    let have_sdk = Command::new("python3").args(["-c", "import docker"]).output().is_ok_and(|o| o.status.success());
    if !have_sdk {
        eprintln!("SKIPPED: the Python docker SDK is not installed (scripts/setup installs it)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/docker_sdk_e2e.py");
    let mut c = Command::new("python3");
    c.arg(script).env("DOCKER_HOST", format!("unix://{}", d.sock().display())).stdin(Stdio::null());
    let o = run_timeout(c, Duration::from_secs(120));
    assert!(
        o.status.success(),
        "python docker SDK e2e failed:\n{}{}\n--- daemon log ---\n{}",
        text(&o.stdout),
        text(&o.stderr),
        d.serve_log()
    );
    assert!(text(&o.stdout).contains("sdk e2e ok"));
}

#[test]
fn events_with_since_until_and_filters() {
    let Some(d) = Daemon::start() else { return };
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    assert_eq!(d.run(&["run", "--name", "evt", "busybox", "sh", "-c", "exit 2"]).status.code(), Some(2));
    d.ok(&["rm", "evt"]);
    d.ok(&["run", "--rm", "--name", "other", "busybox", "true"]);
    std::thread::sleep(Duration::from_millis(300));
    let since = t0.to_string();
    let out = events_until_now(&d, &since, &["container=evt"], "{{.Action}} {{index .Actor.Attributes \"exitCode\"}}");
    let actions: Vec<&str> = out.lines().map(|l| l.trim().trim_end_matches(" <no value>")).collect();
    assert_eq!(actions, vec!["create", "start", "die 2", "destroy"], "{out}");
    let out = events_until_now(&d, &since, &["event=destroy"], "{{.Actor.Attributes.name}}");
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["evt", "other"], "{out}");
    // A container with a named volume: the volume's create, mount (with
    // where and how) and unmount, as Docker publishes them.
    d.ok(&["run", "--rm", "--name", "voluser", "-v", "evvol:/data:ro", "busybox", "true"]);
    std::thread::sleep(Duration::from_millis(300));
    let out = events_until_now(
        &d,
        &since,
        &["type=volume", "volume=evvol"],
        "{{.Action}} {{.Actor.ID}} {{index .Actor.Attributes \"destination\"}} {{index .Actor.Attributes \"read/write\"}}",
    );
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches(" <no value> <no value>").trim_end()).collect();
    assert_eq!(lines, vec!["create evvol", "mount evvol /data false", "unmount evvol"], "{out}");
    // exec's create, start and die, with the command and the exit code;
    // `event=exec_start` matches `exec_start: <command>`.
    d.ok(&["run", "-d", "--name", "execd", "busybox", "sleep", "1000"]);
    assert_eq!(d.run(&["exec", "execd", "sh", "-c", "exit 3"]).status.code(), Some(3));
    let out = events_until_now(
        &d,
        &since,
        &["container=execd"],
        "{{.Action}}|{{index .Actor.Attributes \"exitCode\"}}|{{len (index .Actor.Attributes \"execID\")}}",
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("exec")).collect();
    assert_eq!(lines, vec!["exec_create: sh -c exit 3||64", "exec_start: sh -c exit 3||64", "exec_die|3|64"], "{out}");
    let out = events_until_now(&d, &since, &["event=exec_start"], "{{.Action}}");
    assert_eq!(out, "exec_start: sh -c exit 3\n");
    d.ok(&["rm", "-f", "execd"]);
}

#[test]
fn volumes_binds_and_tmpfs() {
    let Some(d) = Daemon::start() else { return };
    d.ok(&["volume", "create", "--label", "k=v", "data"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "data");
    assert_eq!(d.ok(&["volume", "inspect", "-f", "{{.Driver}} {{.Labels.k}}", "data"]).trim(), "local v");
    d.ok(&["run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f"]);
    assert_eq!(d.ok(&["run", "--rm", "-v", "data:/data:ro", "busybox", "cat", "/data/f"]), "kept\n");
    let o = d.run(&["run", "--rm", "-v", "data:/data:ro", "busybox", "touch", "/data/g"]);
    assert_ne!(o.status.code(), Some(0), "a read-only volume was writable");
    // Created on demand, filled from the image (copy-up).
    assert!(d.ok(&["run", "--rm", "-v", "etc:/etc", "busybox", "ls", "/etc"]).contains("passwd"));
    let mp = d.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "etc"]);
    assert!(Path::new(mp.trim()).join("passwd").exists(), "copy-up did not fill {mp}");
    // In use: refused.
    d.ok(&["create", "--name", "user", "-v", "data:/data", "busybox", "true"]);
    let o = d.run(&["volume", "rm", "data"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("volume is in use"), "{}", text(&o.stderr));
    d.ok(&["rm", "user"]);
    d.ok(&["volume", "rm", "data"]);
    // Anonymous volume, shown by inspect, removed by rm -v.
    d.ok(&["run", "--name", "anon", "-v", "/scratch", "busybox", "sh", "-c", "echo x > /scratch/y"]);
    assert_eq!(d.inspect("anon", "{{(index .Mounts 0).Type}} {{(index .Mounts 0).Destination}}"), "volume /scratch");
    let before = d.ok(&["volume", "ls", "-q"]).lines().count();
    d.ok(&["rm", "-v", "anon"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).lines().count(), before - 1);
    // Bind mounts (read-only honoured) and tmpfs.
    let host = d.tmp.path().join("hostdir");
    std::fs::create_dir(&host).expect("mkdir");
    std::fs::write(host.join("hello"), "from host").expect("write");
    let bind = format!("{}:/h:ro", host.display());
    assert_eq!(d.ok(&["run", "--rm", "-v", &bind, "busybox", "cat", "/h/hello"]), "from host");
    assert_ne!(d.run(&["run", "--rm", "-v", &bind, "busybox", "touch", "/h/x"]).status.code(), Some(0));
    let mounts = d.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,dst=/t",
        "--tmpfs",
        "/u:size=1m",
        "busybox",
        "cat",
        "/proc/mounts",
    ]);
    assert!(
        mounts.lines().any(|l| l.contains(" /t tmpfs ")) && mounts.lines().any(|l| l.contains(" /u tmpfs ")),
        "{mounts}"
    );
    d.ok(&["volume", "prune", "-f", "--all"]);
}

#[test]
fn cp_diff_export_pause_rename_top() {
    let Some(d) = Daemon::start() else { return };
    d.ok(&[
        "run",
        "-d",
        "--name",
        "files",
        "busybox",
        "sh",
        "-c",
        "ln -s / /up; ln -s ../../../../../ /rel; echo inside > /tmp/in; ln -s in /tmp/in-link; ln -s /tmp /tmp-link; sleep 1000",
    ]);
    d.wait_for("files", "{{.State.Status}}", "running");
    std::thread::sleep(Duration::from_millis(300));
    let host = d.tmp.path().join("cp");
    std::fs::create_dir(&host).expect("mkdir");
    // Out: a file, and a directory tree.
    d.ok(&["cp", "files:/tmp/in", host.to_str().expect("utf8")]);
    assert_eq!(std::fs::read_to_string(host.join("in")).expect("read"), "inside\n");
    d.ok(&["cp", "files:/etc", host.join("etc").to_str().expect("utf8")]);
    assert!(host.join("etc/passwd").is_file());
    // In.
    std::fs::write(host.join("file"), "from host").expect("write");
    d.ok(&["cp", host.join("file").to_str().expect("utf8"), "files:/tmp/"]);
    assert_eq!(d.ok(&["exec", "files", "cat", "/tmp/file"]), "from host");
    // Symlinks pointing at / (absolute or by ..) resolve inside the container.
    let marker = format!("berth-cp-escape-{}", std::process::id());
    std::fs::write(host.join(&marker), "x").expect("write");
    for link in ["/up/tmp/", "/rel/tmp/"] {
        d.ok(&["cp", host.join(&marker).to_str().expect("utf8"), &format!("files:{link}")]);
        assert!(!Path::new("/tmp").join(&marker).exists(), "cp through {link} wrote to the host");
    }
    assert_eq!(d.ok(&["exec", "files", "cat", &format!("/tmp/{marker}")]), "x");
    let out = host.join("shadow-or-not");
    d.ok(&["cp", "files:/up/etc/passwd", out.to_str().expect("utf8")]);
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    assert_ne!(std::fs::read_to_string(&out).expect("read"), host_passwd, "cp read the host's /etc/passwd");
    let o = d.run(&["cp", "files:/no/such", host.to_str().expect("utf8")]);
    assert_ne!(o.status.code(), Some(0));
    // A symlink is copied as itself; with -L, what it leads to. A
    // destination that is a symlink to a directory is followed.
    let link = host.join("link");
    d.ok(&["cp", "files:/up", link.to_str().expect("utf8")]);
    assert_eq!(std::fs::read_link(&link).expect("a symlink"), Path::new("/"));
    let followed = host.join("followed");
    d.ok(&["cp", "-L", "files:/tmp/in-link", followed.to_str().expect("utf8")]);
    assert_eq!(std::fs::read_to_string(&followed).expect("a file"), "inside\n");
    d.ok(&["cp", host.join("file").to_str().expect("utf8"), "files:/tmp-link"]);
    assert_eq!(d.ok(&["exec", "files", "cat", "/tmp/file"]), "from host");
    // diff.
    let diff = d.ok(&["diff", "files"]);
    assert!(diff.lines().any(|l| l == "A /tmp/in"), "{diff}");
    assert!(diff.lines().any(|l| l == "A /up"), "{diff}");
    // top, stats, pause, rename.
    assert!(d.ok(&["top", "files"]).contains("sleep 1000"));
    let stats = d.ok(&["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.MemUsage}}", "files"]);
    let f: Vec<&str> = stats.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"files"), "{stats}");
    assert!(f.get(1).and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p >= 1), "{stats}");
    assert!(f.get(2).is_some_and(|m| m.ends_with("iB") && *m != "0B"), "{stats}");
    d.ok(&["pause", "files"]);
    assert_eq!(d.inspect("files", "{{.State.Status}}"), "paused");
    d.ok(&["unpause", "files"]);
    assert_eq!(d.inspect("files", "{{.State.Status}}"), "running");
    d.ok(&["rename", "files", "renamed"]);
    assert_eq!(d.inspect("renamed", "{{.Name}}"), "/renamed");
    // export of a stopped container.
    d.ok(&["stop", "-t", "0", "renamed"]);
    let tarball = d.tmp.path().join("export.tar");
    d.ok(&["export", "-o", tarball.to_str().expect("utf8"), "renamed"]);
    let list = Command::new("tar").arg("-tf").arg(&tarball).output().expect("tar");
    let names = text(&list.stdout);
    assert!(names.lines().any(|l| l.trim_start_matches("./") == "tmp/in"), "{names}");
    assert!(names.lines().any(|l| l.trim_start_matches("./") == "bin/busybox"), "{names}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&d.root().join("containers").display().to_string()), "export left the rootfs mounted");
}

#[test]
fn limits_read_only_ulimit_stop_signal() {
    let Some(d) = Daemon::start() else { return };
    let memory_v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let id = d
        .ok(&[
            "run",
            "-d",
            "--name",
            "limited",
            "--memory",
            "64m",
            "--pids-limit",
            "50",
            "--cpus",
            "0.5",
            "--read-only",
            "--ulimit",
            "nofile=256:512",
            "--stop-signal",
            "SIGUSR1",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 0' USR1; while true; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    d.wait_for("limited", "{{.State.Status}}", "running");
    if memory_v1 {
        let cg = |ctrl: &str, file: &str| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}/berth/{id}/{file}")).map(|s| s.trim().to_string())
        };
        assert_eq!(cg("memory", "memory.limit_in_bytes").expect("memory limit"), (64u64 << 20).to_string());
        assert_eq!(cg("pids", "pids.max").expect("pids"), "50");
        assert_eq!(cg("cpu", "cpu.cfs_quota_us").expect("quota"), "50000");
    }
    assert_eq!(d.ok(&["exec", "limited", "sh", "-c", "ulimit -n; ulimit -Hn"]), "256\n512\n");
    let o = d.run(&["exec", "limited", "touch", "/newfile"]);
    assert_ne!(o.status.code(), Some(0), "--read-only rootfs was writable");
    assert!(text(&o.stderr).contains("Read-only file system"), "{}", text(&o.stderr));
    let o = d.run(&["exec", "limited", "touch", "/tmp/ok"]);
    assert_ne!(o.status.code(), Some(0), "/tmp is part of the read-only rootfs (no --tmpfs)");
    // The image's or --stop-signal is what stop sends.
    d.ok(&["stop", "limited"]);
    assert_eq!(d.inspect("limited", "{{.State.ExitCode}}"), "0");
    assert!(d.ok(&["logs", "limited"]).contains("got-usr1"));
}

#[test]
fn health_checks_in_inspect_ps_and_events() {
    let Some(mut d) = Daemon::start() else { return };
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "test -e /tmp/ready && echo fine",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sh",
        "-c",
        "touch /tmp/ready; sleep 2; rm /tmp/ready; sleep 1000",
    ]);
    d.wait_for("hc", "{{.State.Health.Status}}", "healthy");
    assert!(d.ok(&["ps", "--format", "{{.Status}}"]).contains("(healthy)"));
    assert!(
        d.inspect("hc", "{{(index .State.Health.Log 0).Output}}").contains("fine")
            || d.inspect("hc", "{{len .State.Health.Log}}") != "0"
    );
    d.wait_for("hc", "{{.State.Health.Status}}", "unhealthy");
    assert!(d.inspect("hc", "{{.State.Health.FailingStreak}}").parse::<u32>().expect("streak") >= 2);
    let events = events_until_now(&d, &t0.to_string(), &["container=hc"], "{{.Action}}");
    let health: Vec<&str> = events.lines().filter(|l| l.starts_with("health_status")).collect();
    assert_eq!(health, vec!["health_status: healthy", "health_status: unhealthy"], "{events}");

    // After a live restore, the new daemon follows the checks again: a
    // live `events` stream gets the next change without anyone looking at
    // the container, and the changes before the restart are not news.
    d.kill9();
    d.spawn();
    let mut stream = d
        .docker(&["events", "--filter", "container=hc", "--format", "{{.Action}}"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker events");
    let out = stream.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The stream is subscribed once `docker events` has connected; an exec
    // event shows it is.
    d.ok(&["exec", "hc", "true"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("exec_die")) {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(rx.recv_timeout(left).unwrap_or_else(|_| panic!("no exec events: {seen:?}")));
    }
    d.ok(&["exec", "hc", "touch", "/tmp/ready"]);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no health event after the restart: {seen:?}"));
        if line.starts_with("health_status") {
            assert_eq!(line, "health_status: healthy", "{seen:?}");
            break;
        }
        seen.push(line);
    }
    let _ = stream.kill();
    let _ = stream.wait();
    assert_eq!(d.inspect("hc", "{{.State.Health.Status}}"), "healthy");
    d.ok(&["rm", "-f", "hc"]);
}

#[test]
fn image_verbs_know_the_engines_containers() {
    let Some(mut d) = Daemon::start() else { return };
    d.ok(&["create", "--name", "holder", "busybox", "true"]);
    // The image verbs open the store directly: stop the daemon first.
    d.term();
    let berth_cli = |args: &[&str]| {
        let mut c = Command::new(berth());
        c.arg("--root").arg(d.root()).args(args).stdin(Stdio::null());
        c.output().expect("berth")
    };
    let o = berth_cli(&["rmi", "busybox"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("image is being used by container"), "{}", text(&o.stderr));
    let df = text(&berth_cli(&["system", "df"]).stdout);
    let row = df.lines().find(|l| l.starts_with("Containers")).expect("Containers row");
    assert_eq!(row.split_whitespace().nth(1), Some("1"), "{df}");
    let images_row = df.lines().find(|l| l.starts_with("Images")).expect("Images row");
    assert_eq!(images_row.split_whitespace().nth(2), Some("1"), "the image is active: {df}");
    // -f removes it anyway, as docker rmi -f does.
    assert!(berth_cli(&["rmi", "-f", "busybox"]).status.success());
}

#[test]
fn commit_makes_an_image_from_a_container() {
    let Some(d) = Daemon::start() else { return };
    d.ok(&[
        "run",
        "--name",
        "builder",
        "busybox",
        "sh",
        "-c",
        "echo made > /made; rm /etc/hostname.orig 2>/dev/null; rm -r /home; true",
    ]);
    let id = d.ok(&["commit", "-c", "CMD [\"cat\", \"/made\"]", "-m", "a test commit", "builder", "committed:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(d.ok(&["run", "--rm", "committed:1"]), "made\n");
    // A deletion in the container is a deletion in the image.
    let o = d.run(&["run", "--rm", "committed:1", "ls", "/home"]);
    assert_ne!(o.status.code(), Some(0), "/home came back: {}", text(&o.stdout));
    let history = d.ok(&["history", "--format", "{{.Comment}}", "committed:1"]);
    assert_eq!(history.lines().next(), Some("a test commit"), "{history}");
    assert_eq!(d.ok(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", "committed:1"]).trim(), "2");
    // docker save / load through the daemon round-trip the image.
    let tarball = d.tmp.path().join("saved.tar");
    d.ok(&["save", "-o", tarball.to_str().expect("utf8"), "committed:1"]);
    d.ok(&["rm", "builder"]);
    d.ok(&["rmi", "committed:1"]);
    let out = d.ok(&["load", "-i", tarball.to_str().expect("utf8")]);
    assert!(out.contains("Loaded image: committed:1"), "{out}");
    assert_eq!(d.ok(&["run", "--rm", "committed:1"]), "made\n");
}
