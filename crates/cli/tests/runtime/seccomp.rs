//! seccomp profiles applied by the runtime, checked from inside.

use serde_json::json;

use crate::common::{ok, Bundle};
use crate::require_root;

#[test]
fn errno_kill_and_args_rules() {
    require_root!();
    let mut b = Bundle::new(
        "mkdir /tmp/d 2>&1; echo mkdir=$?; hostname -F /etc/hostname 2>&1; echo sethostname=$?; echo alive",
    );
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    });
    std::fs::write(b.rootfs().join("etc/hostname"), "x\n").expect("write");
    b.config["hostname"] = json!("h");
    let out = ok(&b.run());
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("mkdir=1"), "{out}");
    assert!(out.contains("not implemented") || out.contains("Function not implemented"), "{out}");
    assert!(out.ends_with("alive\n"));
}

#[test]
fn kill_process_action_kills_with_sigsys() {
    require_root!();
    let mut b = Bundle::new("exec mkdir /tmp/x");
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]
    });
    let out = b.run();
    assert_eq!(out.status.code(), Some(128 + 31), "expected death by SIGSYS: {out:?}");
}

#[test]
fn docker_default_profile_loads_and_blocks_privileged_calls() {
    require_root!();
    let profile = berth_runtime::seccomp::DOCKER_DEFAULT_PROFILE;
    let caps: Vec<String> = berth_runtime::seccomp::DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    let oci =
        berth_runtime::seccomp::from_docker_profile(profile, &caps, std::env::consts::ARCH).expect("convert profile");
    let mut b = Bundle::new(
        "unshare -U true 2>/dev/null && echo unshare-ok || echo unshare-denied; echo x > /tmp/f && cat /tmp/f",
    );
    b.config["linux"]["seccomp"] = serde_json::to_value(&oci).expect("json");
    b.config["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    let out = ok(&b.run());
    assert_eq!(out, "unshare-denied\nx\n");
}
