//! Seccomp filters loaded into the real kernel.
//!
//! A filter cannot be taken off once loaded, so every case runs in a child
//! process: this test binary run again with `BERTH_SECCOMP_CHILD=<case>`
//! and only the `child_entry` test selected. The child compiles and loads a
//! filter, makes syscalls through safe std/nix/rustix wrappers, prints
//! `RESULT key=value` lines and exits; the parent checks those lines, the
//! exit status and the signal (SIGSYS for KILL_PROCESS and TRAP).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use berth_runtime::seccomp;
use serde_json::json;

const CHILD_ENV: &str = "BERTH_SECCOMP_CHILD";
const DIR_ENV: &str = "BERTH_SECCOMP_DIR";

// ---------------------------------------------------------------- parent side

struct Outcome {
    status: ExitStatus,
    results: BTreeMap<String, String>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn get(&self, key: &str) -> &str {
        self.results.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!(
                "child printed no RESULT {key}=…\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
                self.status, self.stdout, self.stderr
            )
        })
    }

    fn describe(&self) -> String {
        format!("status: {:?}\nstdout:\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `case` in a child process (at most 60 s) and collects its results.
fn run_child(case: &str) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .env(DIR_ENV, dir.path())
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    // Read the pipes on threads so a chatty child cannot block on them.
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait child") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let st = child.wait().expect("wait killed child");
            let out = out_reader.join().unwrap_or_default();
            let err = err_reader.join().unwrap_or_default();
            panic!("case {case} timed out ({st:?})\nstdout:\n{out}\nstderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let results = stdout
        .lines()
        // libtest may have printed "test child_entry ... " on the same line.
        .filter_map(|l| l.find("RESULT ").and_then(|i| l.get(i + "RESULT ".len()..)))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Outcome { status, results, stdout, stderr }
}

fn assert_exited_ok(o: &Outcome) {
    assert_eq!(o.status.code(), Some(0), "child failed\n{}", o.describe());
}

fn assert_sigsys(o: &Outcome) {
    assert_eq!(o.status.signal(), Some(libc::SIGSYS), "expected death by SIGSYS\n{}", o.describe());
}

#[test]
fn errno_with_errno_ret() {
    let o = run_child("errno38");
    assert_exited_ok(&o);
    assert_eq!(o.get("mkdir"), "err38", "{}", o.describe());
    assert_eq!(o.get("exists"), "false");
    // Other syscalls are untouched.
    assert_eq!(o.get("write"), "ok");
}

#[test]
fn errno_defaults_to_eperm() {
    let o = run_child("errno_default");
    assert_exited_ok(&o);
    assert_eq!(o.get("mkdir"), "err1", "{}", o.describe());
}

#[test]
fn kill_process_kills_with_sigsys() {
    let o = run_child("kill_process");
    assert_sigsys(&o);
    assert_eq!(o.get("loaded"), "yes");
    assert!(!o.results.contains_key("mkdir"), "the syscall must not return\n{}", o.describe());
}

#[test]
fn trap_raises_sigsys() {
    let o = run_child("trap");
    assert_sigsys(&o);
    assert_eq!(o.get("loaded"), "yes");
    assert!(!o.results.contains_key("mkdir"), "{}", o.describe());
}

#[test]
fn kill_thread_kills_only_the_thread() {
    let o = run_child("kill_thread");
    assert_exited_ok(&o);
    assert_eq!(o.get("thread"), "gone", "{}", o.describe());
    assert_eq!(o.get("exists"), "false");
}

#[test]
fn trace_without_tracer_fails_with_enosys() {
    let o = run_child("trace");
    assert_exited_ok(&o);
    assert_eq!(o.get("mkdir"), format!("err{}", libc::ENOSYS), "{}", o.describe());
}

#[test]
fn log_lets_the_syscall_through() {
    let o = run_child("log");
    assert_exited_ok(&o);
    assert_eq!(o.get("mkdir"), "ok", "{}", o.describe());
    assert_eq!(o.get("exists"), "true");
}

#[test]
fn allow_rules_pass_under_a_blocking_default() {
    let o = run_child("allow");
    assert_exited_ok(&o);
    assert_eq!(o.get("mkdir"), "ok", "{}", o.describe());
    assert_eq!(o.get("rmdir"), "err1", "{}", o.describe());
}

#[test]
fn argument_comparators() {
    let o = run_child("args");
    assert_exited_ok(&o);
    // MASKED_EQ: (option & 0xf0) == 0x20; value is the mask, valueTwo the datum.
    assert_eq!(o.get("get_child_subreaper"), "err13", "{}", o.describe());
    assert_eq!(o.get("get_no_new_privs"), "err13");
    assert_eq!(o.get("get_timerslack"), "ok", "{}", o.describe());
    assert_eq!(o.get("get_name"), "ok");
    // Two EQ conditions on arg 0 in one rule are OR-ed.
    assert_eq!(o.get("get_dumpable"), "err1", "{}", o.describe());
    assert_eq!(o.get("get_keepcaps"), "err1");
    // EQ on arg 0 AND GE on arg 1 (prlimit64(0, resource, …)).
    assert_eq!(o.get("rlimit_nofile"), "err1");
    assert_eq!(o.get("rlimit_memlock"), "err1");
    assert_eq!(o.get("rlimit_stack"), "ok");
}

#[test]
fn notify_returns_a_working_listener() {
    let o = run_child("notify");
    assert_exited_ok(&o);
    assert_eq!(o.get("listener"), "some", "{}", o.describe());
    assert_eq!(o.get("cloexec"), "true");
    assert_eq!(o.get("notify_fds"), "1", "exactly the one returned (no copy kept behind)\n{}", o.describe());
    assert_eq!(o.get("notify_fds_cloexec"), "true", "both must go away at exec");
    // glibc calls mkdir or mkdirat depending on the arch.
    assert!(["mkdir", "mkdirat"].contains(&o.get("notified")), "{}", o.describe());
    assert_eq!(o.get("mkdir"), format!("err{}", libc::EXDEV));
}

#[test]
fn load_without_no_new_privs_keeps_it_unset() {
    let o = run_child("no_nnp");
    assert_exited_ok(&o);
    if o.get("root") == "no" {
        eprintln!("skipped: needs CAP_SYS_ADMIN");
        return;
    }
    assert_eq!(o.get("load"), "ok", "{}", o.describe());
    assert_eq!(o.get("nnp"), "false", "load must not set no_new_privs");
    assert_eq!(o.get("mkdir"), "err1");
}

#[test]
fn load_without_no_new_privs_or_cap_sys_admin_fails_clearly() {
    let o = run_child("no_nnp_no_cap");
    assert_exited_ok(&o);
    let load = o.get("load");
    assert!(load.starts_with("err:"), "{}", o.describe());
    assert!(load.contains("CAP_SYS_ADMIN"), "{load}");
}

#[test]
fn docker_default_profile_blocks_privileged_calls() {
    let o = run_child("docker");
    assert_exited_ok(&o);
    assert_eq!(o.get("load"), "ok", "{}", o.describe());
    let eperm = format!("err{}", libc::EPERM);
    assert_eq!(o.get("unshare_user"), eperm, "{}", o.describe());
    assert_eq!(o.get("mount"), eperm, "{}", o.describe());
    assert_eq!(o.get("umount"), eperm);
    assert_eq!(o.get("file_io"), "ok", "{}", o.describe());
    assert_eq!(o.get("spawn_true"), "ok", "clone without namespace flags must work\n{}", o.describe());
}

// ---------------------------------------------------------------- child side

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("BERTH_SECCOMP_DIR"));
    run_case(&case, &dir);
    // Leave before libtest does anything else under the filter.
    std::process::exit(0);
}

fn result(key: &str, value: impl std::fmt::Display) {
    println!("RESULT {key}={value}");
}

fn io_result<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(n) => format!("err{n}"),
            None => format!("error:{e}"),
        },
    }
}

fn nix_result<T>(r: nix::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("err{}", e as i32),
    }
}

fn compile(v: serde_json::Value) -> seccomp::Filter {
    let spec: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(v).expect("seccomp json");
    seccomp::compile(&spec).expect("compile")
}

fn load_nnp(f: &seccomp::Filter) -> Option<std::os::fd::OwnedFd> {
    nix::sys::prctl::set_no_new_privs().expect("set no_new_privs");
    let fd = f.load().expect("load");
    result("loaded", "yes");
    fd
}

fn mkdir_rule(action: &str, errno_ret: Option<u32>) -> serde_json::Value {
    let mut rule = json!({"names": ["mkdir", "mkdirat"], "action": action});
    if let Some(e) = errno_ret {
        rule["errnoRet"] = json!(e);
    }
    json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]})
}

fn run_case(case: &str, dir: &Path) {
    let target = dir.join("d");
    match case {
        "errno38" => {
            load_nnp(&compile(mkdir_rule("SCMP_ACT_ERRNO", Some(38))));
            result("mkdir", io_result(std::fs::create_dir(&target)));
            result("exists", target.exists());
            result("write", io_result(std::fs::write(dir.join("f"), b"x")));
        }
        "errno_default" => {
            load_nnp(&compile(mkdir_rule("SCMP_ACT_ERRNO", None)));
            result("mkdir", io_result(std::fs::create_dir(&target)));
        }
        "kill_process" => {
            load_nnp(&compile(mkdir_rule("SCMP_ACT_KILL_PROCESS", None)));
            result("mkdir", io_result(std::fs::create_dir(&target)));
        }
        "trap" => {
            load_nnp(&compile(mkdir_rule("SCMP_ACT_TRAP", None)));
            result("mkdir", io_result(std::fs::create_dir(&target)));
        }
        "kill_thread" => kill_thread(&target),
        "trace" => {
            load_nnp(&compile(mkdir_rule("SCMP_ACT_TRACE", None)));
            result("mkdir", io_result(std::fs::create_dir(&target)));
        }
        "log" => {
            let mut spec = mkdir_rule("SCMP_ACT_LOG", None);
            spec["flags"] = json!(["SECCOMP_FILTER_FLAG_LOG"]);
            load_nnp(&compile(spec));
            result("mkdir", io_result(std::fs::create_dir(&target)));
            result("exists", target.exists());
        }
        "allow" => allow(dir),
        "args" => args(),
        "notify" => notify(&target),
        "no_nnp" => no_nnp(&target),
        "no_nnp_no_cap" => no_nnp_no_cap(),
        "docker" => docker(dir),
        other => panic!("unknown child case {other}"),
    }
}

/// KILL_THREAD in a side thread: the thread vanishes, the process lives on.
fn kill_thread(target: &Path) {
    let filter_spec = mkdir_rule("SCMP_ACT_KILL_THREAD", None);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = target.to_path_buf();
    // Detached on purpose: joining a thread killed by the kernel would wait
    // for a result it never stored.
    std::thread::spawn(move || {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        let f = compile(filter_spec);
        nix::sys::prctl::set_no_new_privs().expect("nnp");
        f.load().expect("load");
        tx.send(tid).expect("send tid");
        let _ = std::fs::create_dir(&t);
        result("thread_survived", "yes");
    });
    let tid = rx.recv().expect("tid");
    let task = PathBuf::from(format!("/proc/self/task/{tid}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while task.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    result("thread", if task.exists() { "alive" } else { "gone" });
    result("exists", target.exists());
}

/// ALLOW rules under a default that refuses everything else.
fn allow(dir: &Path) {
    let target = dir.join("d");
    let pre = dir.join("pre");
    std::fs::create_dir(&pre).expect("mkdir pre");
    // Just what this child needs after the load: mkdir, printing and exiting
    // (and what std/glibc may do on the way). rmdir is not in the list.
    let f = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["mkdir", "mkdirat", "write", "writev", "exit", "exit_group", "futex",
            "brk", "mmap", "munmap", "mremap", "madvise", "rt_sigprocmask", "rt_sigaction", "sigaltstack",
            "getpid", "gettid", "tgkill", "close"], "action": "SCMP_ACT_ALLOW"}]
    }));
    nix::sys::prctl::set_no_new_privs().expect("nnp");
    f.load().expect("load");
    result("mkdir", io_result(std::fs::create_dir(&target)));
    result("rmdir", io_result(std::fs::remove_dir(&pre)));
}

/// Argument comparators, checked on prctl(2) (arg 0 is the option) and
/// prlimit64(2), through nix's safe wrappers.
fn args() {
    use nix::sys::prctl;
    use nix::sys::resource::{getrlimit, Resource};
    let f = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            // (option & 0xf0) == 0x20: value = mask, valueTwo = datum.
            {"names": ["prctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 0, "value": 0xf0, "valueTwo": 0x20, "op": "SCMP_CMP_MASKED_EQ"}]},
            // Same index twice: either matches (PR_GET_DUMPABLE, PR_GET_KEEPCAPS).
            {"names": ["prctl"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 7, "op": "SCMP_CMP_EQ"}]},
            // Distinct indexes: both must match (pid 0 and resource >= 7).
            {"names": ["prlimit64"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 7, "op": "SCMP_CMP_GE"}]}
        ]
    }));
    load_nnp(&f);
    // PR_GET_CHILD_SUBREAPER = 37 = 0x25 and PR_GET_NO_NEW_PRIVS = 39 = 0x27 match the mask.
    result("get_child_subreaper", nix_result(prctl::get_child_subreaper()));
    result("get_no_new_privs", nix_result(prctl::get_no_new_privs()));
    // PR_GET_TIMERSLACK = 30 = 0x1e and PR_GET_NAME = 16 = 0x10 do not.
    result("get_timerslack", nix_result(prctl::get_timerslack()));
    result("get_name", nix_result(prctl::get_name()));
    result("get_dumpable", nix_result(prctl::get_dumpable()));
    result("get_keepcaps", nix_result(prctl::get_keepcaps()));
    result("rlimit_nofile", nix_result(getrlimit(Resource::RLIMIT_NOFILE)));
    result("rlimit_memlock", nix_result(getrlimit(Resource::RLIMIT_MEMLOCK)));
    result("rlimit_stack", nix_result(getrlimit(Resource::RLIMIT_STACK)));
}

/// SCMP_ACT_NOTIFY: the listener comes back from load() and works.
fn notify(target: &Path) {
    let f = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/nonexistent/agent.sock",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    }));
    let Some(listener) = load_nnp(&f) else {
        result("listener", "none");
        return;
    };
    result("listener", "some");
    let flags = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    result("cloexec", flags & libc::FD_CLOEXEC != 0);
    // Only the returned listener exists, and it is closed at exec.
    let notify_fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            link.to_string_lossy().contains("seccomp notify").then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    result("notify_fds", notify_fds.len());
    let all_cloexec = notify_fds.iter().all(|fd| {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .is_some_and(|f| f & libc::O_CLOEXEC as u32 != 0)
    });
    result("notify_fds_cloexec", all_cloexec);

    // The supervisor: answer the one notification with EXDEV.
    let raw = listener.as_raw_fd();
    let supervisor = std::thread::spawn(move || {
        let req = libseccomp::ScmpNotifReq::receive(raw).expect("receive notification");
        let name = req.data.syscall.get_name().unwrap_or_else(|_| "?".into());
        let resp = libseccomp::ScmpNotifResp::new_error(req.id, -libc::EXDEV, libseccomp::ScmpNotifRespFlags::empty());
        resp.respond(raw).expect("respond");
        name
    });
    let r = io_result(std::fs::create_dir(target));
    result("notified", supervisor.join().expect("supervisor"));
    result("mkdir", r);
    drop(listener);
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Loading without no_new_privs, as root: works and leaves NNP unset.
fn no_nnp(target: &Path) {
    if !is_root() {
        result("root", "no");
        return;
    }
    result("root", "yes");
    let f = compile(mkdir_rule("SCMP_ACT_ERRNO", None));
    result(
        "load",
        match f.load() {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("err:{e}"),
        },
    );
    result("nnp", nix::sys::prctl::get_no_new_privs().expect("get nnp"));
    result("mkdir", io_result(std::fs::create_dir(target)));
}

/// Without no_new_privs and without CAP_SYS_ADMIN the kernel refuses.
fn no_nnp_no_cap() {
    if is_root() {
        caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).expect("drop CAP_SYS_ADMIN");
    }
    let f = compile(mkdir_rule("SCMP_ACT_ERRNO", None));
    result(
        "load",
        match f.load() {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("err:{e}"),
        },
    );
}

/// Docker's default profile, converted for Docker's default capabilities.
fn docker(dir: &Path) {
    let json = berth_runtime::seccomp::DOCKER_DEFAULT_PROFILE;
    let caps: Vec<String> = seccomp::DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    let spec = seccomp::from_docker_profile(json, &caps, std::env::consts::ARCH).expect("convert");
    let f = seccomp::compile(&spec).expect("compile");
    nix::sys::prctl::set_no_new_privs().expect("nnp");
    result(
        "load",
        match f.load() {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("err:{e}"),
        },
    );
    result("unshare_user", nix_result(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)));
    // Without the filter this fails with ENODEV (no such filesystem type)
    // or succeeds — never EPERM for root.
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    result(
        "mount",
        nix_result(nix::mount::mount(
            Some("none"),
            &mnt,
            Some("berth-no-such-fs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )),
    );
    // ENOENT without the filter.
    result("umount", nix_result(nix::mount::umount2(&dir.join("not-mounted"), nix::mount::MntFlags::empty())));
    let file = dir.join("file");
    let io = std::fs::write(&file, b"hello").and_then(|_| std::fs::read(&file)).map(|d| d == b"hello");
    result(
        "file_io",
        match io {
            Ok(true) => "ok".to_string(),
            Ok(false) => "mismatch".to_string(),
            Err(e) => io_result::<()>(Err(e)),
        },
    );
    result(
        "spawn_true",
        match Command::new("/bin/true").status() {
            Ok(s) if s.success() => "ok".to_string(),
            Ok(s) => format!("status {s}"),
            Err(e) => io_result::<()>(Err(e)),
        },
    );
}
