//! Real-kernel tests of the cgroup manager. They need root and the
//! relevant controllers; otherwise they print why and pass.
//!
//! Every cgroup gets a unique name (test pid + counter) and is removed by a
//! drop guard, which also thaws the cgroup and kills the children, so a
//! failing assertion leaves nothing behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_runtime::cgroups::{paths, Manager, Mode};
use oci_spec::runtime::LinuxResources;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(kind: &str) -> String {
    format!("/berth-test-{kind}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

fn skip(why: &str) {
    eprintln!("skipping: {why}");
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn res(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).expect("valid resources")
}

/// Thaws, kills the children, then removes the cgroups (innermost first).
struct Guard {
    managers: Vec<Manager>,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for m in &self.managers {
            let _ = m.thaw();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in &self.managers {
            let deadline = Instant::now() + Duration::from_secs(2);
            while m.pids().is_ok_and(|p| !p.is_empty()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = m.destroy();
        }
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

fn dir_of(m: &Manager, controller: &str) -> Option<PathBuf> {
    m.host_dirs().into_iter().find(|(n, _)| n == controller).map(|(_, d)| d)
}

#[test]
fn lifecycle_limits_pids_freeze_destroy() {
    if !is_root() {
        return skip("not root");
    }
    let parent = unique("life");
    let path = format!("{parent}/c");
    let m = match Manager::new(&path, false) {
        Ok(m) => m,
        Err(e) => return skip(&format!("no usable cgroups: {e}")),
    };
    let parent_m = Manager::new(&parent, false).expect("parent manager");
    let (mem_dir, pids_dir) = match m.mode() {
        Mode::V1 => {
            let need = ["memory", "pids", "freezer", "cpuset", "devices"];
            if let Some(missing) = need.iter().find(|c| dir_of(&m, c).is_none()) {
                return skip(&format!("cgroup v1 controller {missing} is not mounted"));
            }
            (dir_of(&m, "memory").expect("memory"), dir_of(&m, "pids").expect("pids"))
        }
        Mode::V2 => {
            let d = m.host_dirs()[0].1.clone();
            (d.clone(), d)
        }
    };
    let mut g = Guard { managers: vec![m.clone(), parent_m.clone()], children: Vec::new() };

    let child = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = child.id() as i32;
    g.children.push(child);
    m.apply(pid).expect("apply");
    m.set(&res(serde_json::json!({
        "memory": {"limit": 64 * 1024 * 1024},
        "pids": {"limit": 10},
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        ]
    })))
    .expect("set limits");

    match m.mode() {
        Mode::V1 => {
            assert_eq!(read(&mem_dir, "memory.limit_in_bytes"), "67108864");
            let devices = dir_of(&m, "devices").expect("devices");
            assert_eq!(read(&devices, "devices.list"), "c 1:3 rwm");
            // cpuset: both levels got CPUs and memory nodes copied down.
            let cpuset = dir_of(&m, "cpuset").expect("cpuset");
            for d in [cpuset.as_path(), cpuset.parent().expect("parent")] {
                assert!(!read(d, "cpuset.cpus").is_empty(), "{}", d.display());
                assert!(!read(d, "cpuset.mems").is_empty(), "{}", d.display());
            }
            // The kernel still has memory.kmem.limit_in_bytes but ignores
            // writes (Linux 6.x): that must be reported, not swallowed.
            if mem_dir.join("memory.kmem.limit_in_bytes").exists() {
                match m.set(&res(serde_json::json!({"memory": {"kernel": 32 * 1024 * 1024}}))) {
                    Err(e) => assert!(e.to_string().contains("kernel memory limit requested"), "{e}"),
                    Ok(()) => assert_eq!(read(&mem_dir, "memory.kmem.limit_in_bytes"), "33554432"),
                }
            }
            let blkio = dir_of(&m, "blkio");
            // Only BFQ weights exist here (in child cgroups, not the root).
            if let Some(b) =
                blkio.as_ref().filter(|b| b.join("blkio.bfq.weight").exists() && !b.join("blkio.weight").exists())
            {
                m.set(&res(serde_json::json!({"blockIO": {"weight": 500}}))).expect("bfq weight");
                assert!(read(b, "blkio.bfq.weight").contains("500"), "{}", read(b, "blkio.bfq.weight"));
            }
            if let Some(b) = blkio.filter(|b| !b.join("blkio.weight").exists() && !b.join("blkio.bfq.weight").exists())
            {
                let e = m.set(&res(serde_json::json!({"blockIO": {"weight": 500}}))).expect_err("no weight file");
                assert_eq!(
                    e.to_string(),
                    "cgroup: blkio weight requested but this kernel has no blkio.weight file",
                    "{}",
                    b.display()
                );
            }
        }
        Mode::V2 => assert_eq!(read(&mem_dir, "memory.max"), "67108864"),
    }
    assert_eq!(read(&pids_dir, "pids.max"), "10");
    assert!(m.pids().expect("pids").contains(&pid), "child {pid} not listed");
    assert!(parent_m.pids().expect("pids").contains(&pid), "pids() is recursive");
    if m.mode() == Mode::V1 && paths_has_unified() {
        // Hybrid host: the child also joined the cgroup2 hierarchy.
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("proc cgroup");
        assert!(own.lines().any(|l| l == format!("0::{path}")), "{own}");
    }

    assert!(!m.is_frozen().expect("state"));
    m.freeze().expect("freeze");
    assert!(m.is_frozen().expect("state"));
    m.thaw().expect("thaw");
    assert!(!m.is_frozen().expect("state"));

    for c in &mut g.children {
        c.kill().expect("kill");
        c.wait().expect("wait");
    }
    g.children.clear();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !m.pids().expect("pids").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    m.destroy().expect("destroy");
    parent_m.destroy().expect("destroy parent");
    for (name, d) in m.host_dirs().into_iter().chain(parent_m.host_dirs()) {
        assert!(!d.exists(), "{name}: {} still exists", d.display());
    }
    let unified = Path::new("/sys/fs/cgroup/unified").join(parent.trim_start_matches('/'));
    assert!(!unified.exists(), "{} still exists", unified.display());
    m.destroy().expect("destroying twice is fine");
}

/// Whether /sys/fs/cgroup/unified is a cgroup2 mount (hybrid layout).
fn paths_has_unified() -> bool {
    cgroup2_mount().is_some_and(|m| m == Path::new("/sys/fs/cgroup/unified"))
}

/// The cgroup2 mount to use for the eBPF device test.
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts = paths::parse_mountinfo(&text);
    let v2: Vec<_> = mounts.into_iter().filter(|m| m.v2).collect();
    v2.iter()
        .find(|m| m.mountpoint == Path::new("/sys/fs/cgroup/unified"))
        .or_else(|| v2.iter().find(|m| m.mountpoint == Path::new("/sys/fs/cgroup")))
        .map(|m| m.mountpoint.clone())
}

#[test]
fn ebpf_device_filter_denies_dev_zero_allows_dev_null() {
    if !is_root() {
        return skip("not root");
    }
    let Some(mount) = cgroup2_mount() else {
        return skip("no cgroup2 mount");
    };
    let m = Manager::with_root(Mode::V2, &mount, &unique("dev")).expect("manager");
    let mut g = Guard { managers: vec![m.clone()], children: Vec::new() };
    // The shell proves it can read /dev/zero, then waits on stdin until it
    // has been moved into the restricted cgroup before trying again.
    let script = "head -c1 /dev/zero >/dev/null; echo pre=$?; read x; \
                  head -c1 /dev/zero >/dev/null; echo zero=$?; \
                  echo hi >/dev/null; echo null=$?";
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut stderr = child.stderr.take().expect("stderr");
    g.children.push(child);

    let mut line = String::new();
    stdout.read_line(&mut line).expect("read pre");
    assert_eq!(line.trim(), "pre=0", "/dev/zero must be readable outside the cgroup");

    m.apply(pid).expect("apply");
    let rules = res(serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]}));
    m.set(&rules).expect("attach device program");
    // Setting again replaces the program instead of stacking another.
    m.set(&rules).expect("replace device program");
    let dir = m.host_dirs()[0].1.clone();
    let progs = berth_runtime::sys::bpf::cgroup_device_progs(&dir).expect("query programs");
    assert_eq!(progs.len(), 1, "attached programs: {progs:?}");

    stdin.write_all(b"go\n").expect("release the child");
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read results");
    let mut err = String::new();
    stderr.read_to_string(&mut err).expect("read stderr");
    let status = g.children[0].wait().expect("wait");
    g.children.clear();
    eprintln!("child stdout: {rest:?}, stderr: {err:?}, {status}");
    assert!(rest.contains("null=0"), "/dev/null must stay usable: {rest:?} {err:?}");
    assert!(!rest.contains("zero=0"), "/dev/zero must be denied: {rest:?}");
    assert!(err.contains("Operation not permitted"), "expected EPERM opening /dev/zero: {err:?}");

    drop(g);
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn destroy_reports_busy_and_thaws_frozen_cgroups() {
    if !is_root() {
        return skip("not root");
    }
    let m = match Manager::new(&unique("busy"), false) {
        Ok(m) => m,
        Err(e) => return skip(&format!("no usable cgroups: {e}")),
    };
    if m.mode() == Mode::V1 && dir_of(&m, "freezer").is_none() {
        return skip("cgroup v1 freezer is not mounted");
    }
    let mut g = Guard { managers: vec![m.clone()], children: Vec::new() };
    let child = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = child.id() as i32;
    g.children.push(child);
    m.apply(pid).expect("apply");

    // A live process keeps the cgroup busy: every failing directory is
    // reported, after a bounded retry.
    let start = Instant::now();
    let e = m.destroy().expect_err("busy cgroup");
    assert!(start.elapsed() < Duration::from_secs(5), "retry budget is shared");
    let msg = e.to_string();
    assert!(msg.starts_with("cgroup: removing ") && msg.contains("device or resource busy"), "{msg}");

    // Killed while frozen, the process can only exit once thawed; destroy
    // takes care of that.
    m.freeze().expect("freeze");
    g.children[0].kill().expect("kill");
    m.destroy().expect("destroy thaws and removes");
    g.children[0].wait().expect("reap");
    g.children.clear();
    for (name, d) in m.host_dirs() {
        assert!(!d.exists(), "{name}: {} still exists", d.display());
    }
}

#[test]
fn v2_manager_on_the_cgroup2_mount() {
    if !is_root() {
        return skip("not root");
    }
    let Some(mount) = cgroup2_mount() else {
        return skip("no cgroup2 mount");
    };
    let parent = unique("v2");
    let m = Manager::with_root(Mode::V2, &mount, &format!("{parent}/c")).expect("manager");
    let parent_m = Manager::with_root(Mode::V2, &mount, &parent).expect("manager");
    let mut g = Guard { managers: vec![m.clone(), parent_m.clone()], children: Vec::new() };
    let child = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = child.id() as i32;
    g.children.push(child);
    m.apply(pid).expect("apply");
    let dir = m.host_dirs()[0].1.clone();
    assert_eq!(read(&dir, "cgroup.procs"), pid.to_string());
    assert_eq!(parent_m.pids().expect("pids"), [pid]);

    let available = read(&mount, "cgroup.controllers");
    let r = m.set(&res(serde_json::json!({"pids": {"limit": 7}})));
    if available.split_whitespace().any(|c| c == "pids") {
        r.expect("pids limit");
        assert_eq!(read(&dir, "pids.max"), "7");
        assert!(read(dir.parent().expect("parent"), "cgroup.subtree_control").contains("pids"));
    } else {
        // Hybrid host: the controller belongs to v1, so v2 has no pids.max.
        let e = r.expect_err("no pids controller on this cgroup2 mount").to_string();
        assert!(e.contains("pids controller is missing or not enabled"), "{e}");
    }

    m.freeze().expect("freeze");
    assert!(m.is_frozen().expect("state"));
    assert_eq!(read(&dir, "cgroup.freeze"), "1");
    m.thaw().expect("thaw");
    assert!(!m.is_frozen().expect("state"));

    g.children[0].kill().expect("kill");
    g.children[0].wait().expect("wait");
    g.children.clear();
    m.destroy().expect("destroy");
    parent_m.destroy().expect("destroy parent");
    assert!(!dir.exists() && !dir.parent().expect("parent").exists());
}
