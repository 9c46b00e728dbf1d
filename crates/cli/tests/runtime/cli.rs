//! The command line itself: list, ps, features, spec, argv[0] dispatch,
//! signal parsing, log files.

use serde_json::Value;

use crate::common::{self, ok, stderr, Bundle};
use crate::require_root;

#[test]
fn features_document_is_valid_json_with_required_fields() {
    let out = std::process::Command::new(common::berth()).args(["runtime", "features"]).output().expect("run");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ociVersionMin"], "1.0.0");
    assert!(v["hooks"].as_array().expect("hooks").len() == 6);
    assert!(v["linux"]["namespaces"].as_array().expect("ns").iter().any(|n| n == "user"));
    assert!(v["linux"]["capabilities"].as_array().expect("caps").iter().any(|c| c == "CAP_SYS_ADMIN"));
    assert_eq!(v["linux"]["seccomp"]["enabled"], true);
}

#[test]
fn spec_writes_a_loadable_config_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = || {
        std::process::Command::new(common::berth())
            .args(["runtime", "spec", "--bundle"])
            .arg(dir.path())
            .output()
            .expect("run")
    };
    ok(&run());
    let v: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).expect("read")).expect("json");
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["process"]["noNewPrivileges"], true);
    let again = run();
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"));
}

#[test]
fn invoked_as_berth_runtime_through_argv0() {
    let dir = tempfile::tempdir().expect("tmp");
    let link = dir.path().join("berth-runtime");
    std::os::unix::fs::symlink(common::berth(), &link).expect("symlink");
    let out =
        std::process::Command::new(&link).arg("--root").arg(dir.path().join("s")).arg("list").output().expect("run");
    let text = ok(&out);
    assert!(text.starts_with("ID"), "{text}");
}

#[test]
fn list_and_ps_show_containers_and_processes() {
    require_root!();
    let b = Bundle::new("sleep 1000 & exec sleep 1001");
    let id = b.create();
    ok(&b.rt(&["start", &id]));
    let table = ok(&b.rt(&["list"]));
    let header = table.lines().next().expect("header");
    for col in ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.contains(&id) && table.contains("running"), "{table}");
    let json: Value = serde_json::from_str(&ok(&b.rt(&["list", "--format", "json"]))).expect("json");
    assert_eq!(json[0]["id"], id.as_str());
    // Two sleeps in the container's cgroup.
    let mut pids = Vec::new();
    for _ in 0..200 {
        pids = serde_json::from_str::<Vec<i32>>(&ok(&b.rt(&["ps", "--format", "json", &id]))).expect("ps json");
        if pids.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(pids.len(), 2, "{pids:?}");
    let table = ok(&b.rt(&["ps", &id]));
    assert!(table.lines().next().expect("header").contains("PID"));
    assert_eq!(table.lines().filter(|l| l.contains("sleep 100")).count(), 2, "{table}");
    // kill --all reaches every process; signal by number works too.
    ok(&b.rt(&["kill", "--all", &id, "9"]));
    b.wait_status(&id, "stopped");
}

#[test]
fn errors_go_to_the_json_log_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("runtime.log");
    let out = std::process::Command::new(common::berth())
        .args(["runtime", "--log"])
        .arg(&log)
        .args(["--log-format", "json", "--root"])
        .arg(dir.path().join("s"))
        .args(["state", "nope"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let line = std::fs::read_to_string(&log).expect("log");
    let v: Value = serde_json::from_str(line.lines().next().expect("line")).expect("json log line");
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().expect("msg").contains("does not exist"));
}

#[test]
fn unknown_signal_is_rejected() {
    let out =
        std::process::Command::new(common::berth()).args(["runtime", "kill", "x", "SIGNOPE"]).output().expect("run");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown signal"), "{}", stderr(&out));
}
