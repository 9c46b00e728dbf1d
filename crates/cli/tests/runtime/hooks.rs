//! OCI hooks: order, state on stdin, environment, timeouts, failures.

use serde_json::{json, Value};

use crate::common::{ok, stderr, Bundle};
use crate::require_root;

fn hook(log: &std::path::Path, name: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $HOOKVAR $(cat | tr -d '\\n' | sed 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/') >> {}", log.display())],
           "env": ["HOOKVAR=v"]})
}

#[test]
fn all_hooks_run_in_order_with_state_on_stdin() {
    require_root!();
    let mut b = Bundle::new("exec sleep 1000");
    let log = b.tmp.path().join("hooks.log");
    b.config["hooks"] = json!({
        "prestart": [hook(&log, "prestart")],
        "createRuntime": [hook(&log, "createRuntime")],
        "createContainer": [hook(&log, "createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer >> /tmp/hook-in-container"]}],
        "poststart": [hook(&log, "poststart")],
        "poststop": [hook(&log, "poststop")]
    });
    let id = b.create();
    ok(&b.rt(&["start", &id]));
    ok(&b.rt(&["kill", &id, "KILL"]));
    b.wait_status(&id, "stopped");
    ok(&b.rt(&["delete", &id]));
    let text = std::fs::read_to_string(&log).expect("hook log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            "prestart v creating",
            "createRuntime v creating",
            "createContainer v creating",
            "poststart v running",
            "poststop v stopped"
        ]
    );
    // startContainer ran inside the container (its path resolved there).
    let inside = std::fs::read_to_string(b.rootfs().join("tmp/hook-in-container")).expect("startContainer output");
    assert_eq!(inside.trim(), "startContainer");
}

#[test]
fn failing_or_slow_prestart_hook_fails_create_and_cleans_up() {
    require_root!();
    for (h, want) in [
        (json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}), "exit status: 3"),
        (json!({"path": "/bin/sh", "args": ["sh", "-c", "sleep 30"], "timeout": 1}), "timed out"),
        (json!({"path": "/no/such/hook"}), "cannot start"),
    ] {
        let mut b = Bundle::new("true");
        b.config["hooks"] = json!({"prestart": [h]});
        b.write();
        let id = b.track(&crate::common::unique("hook"));
        let out = b.rt(&["create", "--bundle", b.dir().to_str().expect("utf8"), &id]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("prestart hook") && stderr(&out).contains(want), "{}", stderr(&out));
        assert!(!b.state_root().join(&id).exists(), "failed create left state");
    }
}
