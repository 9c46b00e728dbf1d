//! create → start → kill → delete, exec, pause/resume, errors.

use serde_json::json;

use crate::common::{self, ok, stderr, stdout, Bundle};
use crate::require_root;

#[test]
fn full_lifecycle_create_start_kill_delete() {
    require_root!();
    let b = Bundle::new("echo started > /tmp/marker; exec sleep 1000");
    let id = b.create();
    let st = b.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["ociVersion"], "1.2.0");
    let pid = st["pid"].as_i64().expect("pid");
    assert!(pid > 0);
    assert_eq!(st["bundle"], json!(b.dir().to_str()));
    // Created: the user process has not run yet.
    assert!(!b.rootfs().join("tmp/marker").exists());

    ok(&b.rt(&["start", &id]));
    assert_eq!(b.status(&id), "running");
    for _ in 0..500 {
        if b.rootfs().join("tmp/marker").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(b.rootfs().join("tmp/marker").exists(), "process did not run after start");

    // Starting twice is refused.
    let again = b.rt(&["start", &id]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("running"), "{}", stderr(&again));

    ok(&b.rt(&["kill", &id, "KILL"]));
    b.wait_status(&id, "stopped");
    ok(&b.rt(&["delete", &id]));
    let gone = b.rt(&["state", &id]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("does not exist"), "{}", stderr(&gone));
    assert!(!b.state_root().join(&id).exists());
}

#[test]
fn run_returns_the_exit_code_and_cleans_up() {
    require_root!();
    let b = Bundle::new("echo out; echo err >&2; exit 7");
    let out = b.run();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err"));
    let list = ok(&b.rt(&["list", "-q"]));
    assert_eq!(list.trim(), "", "run left state behind: {list}");
}

#[test]
fn run_detached_then_delete() {
    require_root!();
    let b = Bundle::new("exec sleep 1000");
    b.write();
    let id = b.track(&common::unique("d"));
    let dir = b.dir();
    ok(&b.rt(&["run", "-d", "--bundle", dir.to_str().expect("utf8"), &id]));
    assert_eq!(b.status(&id), "running");
    ok(&b.rt(&["delete", "--force", &id]));
}

#[test]
fn delete_refuses_running_container_without_force() {
    require_root!();
    let b = Bundle::new("exec sleep 1000");
    let id = b.create();
    ok(&b.rt(&["start", &id]));
    let out = b.rt(&["delete", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("running"), "{}", stderr(&out));
    let st = b.state(&id);
    let pid = st["pid"].as_i64().expect("pid") as i32;
    ok(&b.rt(&["delete", "--force", &id]));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.contains(") Z")
        }
    );
}

#[test]
fn exec_runs_inside_the_container() {
    require_root!();
    let mut b = Bundle::new("echo hello > /tmp/greeting; exec sleep 1000");
    b.config["hostname"] = json!("exec-host");
    let id = b.create();
    ok(&b.rt(&["start", &id]));
    b.wait_status(&id, "running");
    for _ in 0..500 {
        if b.rootfs().join("tmp/greeting").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = b.rt(&["exec", &id, "sh", "-c", "cat /tmp/greeting; hostname; echo $FOO; pwd; id -u"]);
    assert_eq!(ok(&out), "hello\nexec-host\n\n/\n0\n");
    let out = b.rt(&[
        "exec",
        "-e",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "-u",
        "65534:65534",
        &id,
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g",
    ]);
    assert_eq!(ok(&out), "bar\n/tmp\n65534\n65534\n");
    // The exit code of the exec'd process is ours.
    let out = b.rt(&["exec", &id, "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    // Same pid namespace: the container's init is pid 1 for exec'd processes.
    let out = b.rt(&["exec", &id, "cat", "/proc/1/cmdline"]);
    assert!(ok(&out).starts_with("sleep"), "{}", stdout(&out));
    // A missing binary fails exec with a clear error.
    let out = b.rt(&["exec", &id, "no-such-binary"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    // --process with a process.json.
    let proc_json = json!({"args": ["sh", "-c", "echo from-process-json"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                           "env": ["PATH=/bin"]});
    let pfile = b.tmp.path().join("process.json");
    std::fs::write(&pfile, proc_json.to_string()).expect("write process.json");
    let out = b.rt(&["exec", "--process", pfile.to_str().expect("utf8"), &id]);
    assert_eq!(ok(&out), "from-process-json\n");
    // Detached exec with a pid file.
    let pidf = b.tmp.path().join("exec.pid");
    ok(&b.rt(&["exec", "-d", "--pid-file", pidf.to_str().expect("utf8"), &id, "sleep", "1000"]));
    let pid: i32 = std::fs::read_to_string(&pidf).expect("pid file").trim().parse().expect("pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let ps = ok(&b.rt(&["ps", "--format", "json", &id]));
    let pids: Vec<i32> = serde_json::from_str(&ps).expect("ps json");
    assert!(pids.contains(&pid), "ps {pids:?} lacks exec'd {pid}");
}

#[test]
fn pause_and_resume() {
    require_root!();
    let b = Bundle::new("exec sleep 1000");
    let id = b.create();
    ok(&b.rt(&["start", &id]));
    ok(&b.rt(&["pause", &id]));
    assert_eq!(b.status(&id), "paused");
    let pid = b.state(&id)["pid"].as_i64().expect("pid");
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(st.contains("State:\tD") || st.contains("State:\tS") || st.contains("State:\tT"), "{st}");
    // Exec into a paused container is refused.
    let out = b.rt(&["exec", &id, "true"]);
    assert!(!out.status.success());
    ok(&b.rt(&["resume", &id]));
    assert_eq!(b.status(&id), "running");
    let out = b.rt(&["resume", &id]);
    assert!(!out.status.success(), "resume of a running container must fail");
    // Force-delete of a paused container works.
    ok(&b.rt(&["pause", &id]));
    ok(&b.rt(&["delete", "--force", &id]));
}

#[test]
fn errors_missing_bundle_and_duplicate_id() {
    require_root!();
    let b = Bundle::new("exec sleep 1000");
    let out = b.rt(&["create", "--bundle", "/nonexistent/bundle", "x1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/bundle"), "{}", stderr(&out));

    let id = b.create();
    let dir = b.dir();
    let out = b.rt(&["create", "--bundle", dir.to_str().expect("utf8"), &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    // The first container is untouched.
    assert_eq!(b.status(&id), "created");

    let out = b.rt(&["create", "--bundle", dir.to_str().expect("utf8"), "../escape"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid container id"), "{}", stderr(&out));
    let out = b.rt(&["state", "no-such-container"]);
    assert!(stderr(&out).contains("does not exist"));
    let out = b.rt(&["kill", "no-such-container"]);
    assert!(!out.status.success());
}

#[test]
fn errors_malformed_configs_from_the_spec_test_suite() {
    require_root!();
    let b = Bundle::new("true");
    let bad = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtime/data/bad-configs");
    let cases = ["invalid-json.json", "linux-netdevice.json", "linux-rdma.json", "linux-hugepage.json"];
    for case in cases {
        let text = std::fs::read_to_string(bad.join(case)).expect("read bad config");
        // Give each a valid process/root so only the bad part can fail.
        let doc = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(mut v) => {
                v["process"] = b.config["process"].clone();
                v["root"] = json!({"path": "rootfs"});
                v.to_string()
            }
            Err(_) => text,
        };
        std::fs::write(b.dir().join("config.json"), doc).expect("write");
        let id = b.track(&common::unique("bad"));
        let dir = b.dir();
        let out = b.rt(&["create", "--bundle", dir.to_str().expect("utf8"), &id]);
        assert!(!out.status.success(), "{case} was accepted");
        assert!(stderr(&out).contains("config.json"), "{case}: {}", stderr(&out));
        assert!(!b.state_root().join(&id).exists(), "{case} left state behind");
    }
}

#[test]
fn exec_fifo_blocks_until_start_and_dead_init_is_reported() {
    require_root!();
    let b = Bundle::new("exit 0");
    let id = b.create();
    // Kill init while created: start must fail instead of hanging.
    let pid = b.state(&id)["pid"].as_i64().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
    b.wait_status(&id, "stopped");
    let out = b.rt(&["start", &id]);
    assert!(!out.status.success());
    ok(&b.rt(&["delete", &id]));
}

/// `start` returns once the user program runs (init has exec'd it: the
/// runtime-tools `killsig` case sends its signal right after), even with
/// Docker's seccomp profile to install; `kill` then reaches the program's
/// own handler. The program is PID 1 of its namespace, so a signal
/// arriving before its trap would be dropped: the test waits for the trap
/// to be installed (SigCgt) so it does not race the shell's start-up,
/// which no runtime controls.
#[test]
fn signal_sent_right_after_start_reaches_the_programs_handler() {
    require_root!();
    let caps: Vec<String> = berth_runtime::seccomp::DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    let seccomp = berth_runtime::seccomp::from_docker_profile(
        berth_runtime::seccomp::DOCKER_DEFAULT_PROFILE,
        &caps,
        std::env::consts::ARCH,
    )
    .expect("convert profile");
    for (sig, signo) in [("TERM", libc::SIGTERM), ("USR1", libc::SIGUSR1)] {
        let mut b = Bundle::new(&format!("trap 'touch /got-{sig}; exit 0' {sig}; sleep 10 & wait $!"));
        b.config["linux"]["seccomp"] = serde_json::to_value(&seccomp).expect("json");
        let id = b.create();
        let pid = b.state(&id)["pid"].as_i64().expect("pid");
        ok(&b.rt(&["start", &id]));
        // Already the program, not the runtime's init.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
        assert!(exe.ends_with("busybox"), "start returned before the exec: init is {}", exe.display());
        let caught = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("SigCgt:").map(|v| v.trim().to_owned())))
                .and_then(|v| u64::from_str_radix(&v, 16).ok())
                .is_some_and(|mask| mask & (1u64 << (signo - 1)) != 0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !caught() {
            assert!(std::time::Instant::now() < deadline, "the shell never set its SIG{sig} trap");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        ok(&b.rt(&["kill", &id, sig]));
        b.wait_status(&id, "stopped");
        assert!(b.rootfs().join(format!("got-{sig}")).exists(), "SIG{sig} did not reach the trap");
        ok(&b.rt(&["delete", &id]));
    }
}
