//! The runtime's own security: sealed re-exec, no fd or cwd leaks, no view
//! of the host root.

use std::os::fd::AsRawFd;

use serde_json::json;

use crate::common::{ok, stderr, Bundle};
use crate::require_root;

/// Reads the parent's exe link. PPid comes from /proc/self/status, which
/// shows pids of the /proc mount's namespace (the hook may sit in the
/// container's new pid namespace while /proc is still the host's).
/// The loop runs in the hook's shell itself, so /proc/self is that shell.
/// It also tries to write through the link, as CVE-2019-5736 did.
const PARENT_EXE: &str = "while read k v; do [ \"$k\" = PPid: ] && p=$v; done < /proc/self/status; \
    readlink /proc/$p/exe; (: >> /proc/$p/exe) 2>/dev/null && echo WRITABLE; true";

#[test]
fn runtime_processes_run_from_a_sealed_memfd() {
    require_root!();
    // Hooks are children of the runtime processes: createRuntime of the
    // runtime itself, createContainer of the container's init before exec.
    let mut b = Bundle::new("true");
    let out1 = b.tmp.path().join("runtime-exe");
    let out2 = b.tmp.path().join("init-exe");
    b.config["hooks"] = json!({
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", format!("{{ {PARENT_EXE}; }} > {}", out1.display())]}],
        "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", format!("{{ {PARENT_EXE}; }} > {}", out2.display())]}]
    });
    ok(&b.run());
    let host_exe = std::fs::canonicalize(crate::common::berth()).expect("berth path");
    for f in [&out1, &out2] {
        let exe = std::fs::read_to_string(f).expect("hook output");
        // Either our detached read-only overlayfs view ("/berth") or the
        // sealed memfd fallback; never the host binary, never writable.
        assert!(exe.starts_with("/memfd:berth") || exe.starts_with("/berth\n"), "{} runs from {exe:?}", f.display());
        assert_ne!(exe.lines().next(), host_exe.to_str(), "runs from the host binary");
        assert!(!exe.contains("WRITABLE"), "{}: the runtime's exe is writable", f.display());
    }
}

#[test]
fn no_file_descriptor_leaks_into_the_container() {
    require_root!();
    // An inheritable fd in the caller (like a leaky parent would have).
    let leaked =
        nix::fcntl::open("/etc/hostname", nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).expect("open");
    let n = leaked.as_raw_fd();
    let b = Bundle::new("ls /proc/self/fd | sort -n | tr '\\n' ' '");
    let out = ok(&b.run());
    // ls itself holds one fd for the directory it reads (3).
    assert_eq!(out.trim(), "0 1 2 3", "container saw fds beyond stdio (leaked fd was {n})");
    drop(leaked);
}

#[test]
fn preserve_fds_passes_exactly_the_requested_fds() {
    require_root!();
    let b = Bundle::new("cat <&3; ls /proc/self/fd | sort -n | tr '\\n' ' '");
    b.write();
    let id = b.track(&crate::common::unique("pf"));
    let f = std::fs::File::open(b.rootfs().join("etc/hosts")).expect("open");
    let mut cmd = b.cmd(&["run", "--preserve-fds", "1", "--bundle", b.dir().to_str().expect("utf8"), &id]);
    let raw = f.as_raw_fd();
    use std::os::unix::process::CommandExt;
    // SAFETY: dup2 and fcntl in the pre_exec hook are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep the close-on-exec flag.
            let r = if raw == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(raw, 3) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run");
    let text = ok(&out);
    assert!(text.starts_with("127.0.0.1 localhost"), "{text}");
    assert!(text.trim_end().ends_with("0 1 2 3 4"), "{text}");
}

#[test]
fn cwd_through_a_leaked_descriptor_is_refused() {
    require_root!();
    // CVE-2024-21626: a cwd like /proc/self/fd/N naming a host directory
    // fd of the runtime must not put the process outside its root.
    for n in 3..10 {
        let mut b = Bundle::new("pwd");
        b.config["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        let out = b.run();
        if out.status.success() {
            let pwd = String::from_utf8_lossy(&out.stdout);
            assert!(
                !pwd.contains("unreachable") && pwd.starts_with('/'),
                "fd {n}: process started outside root: {pwd}"
            );
        }
    }
}

#[test]
fn host_root_is_not_visible_after_start() {
    require_root!();
    let marker = std::env::temp_dir().join(crate::common::unique("host-marker"));
    std::fs::write(&marker, "x").expect("marker");
    let b = Bundle::new(&format!(
        "test -e {} && echo host-visible; cat /proc/self/mountinfo | awk '{{print $5}}' | sort -u | tr '\\n' ' '",
        marker.display()
    ));
    let out = ok(&b.run());
    let _ = std::fs::remove_file(&marker);
    assert!(!out.contains("host-visible"), "{out}");
    // Only the container's own mount points remain.
    for mp in out.split_whitespace() {
        assert!(
            ["/", "/proc", "/dev", "/sys"].iter().any(|p| mp == *p || mp.starts_with(&format!("{p}/"))),
            "unexpected mount point {mp} in {out}"
        );
    }
}

#[test]
fn missing_executable_fails_create_with_a_clear_error() {
    require_root!();
    let mut b = Bundle::new("true");
    b.config["process"]["args"] = json!(["/no/such/program"]);
    b.write();
    let id = b.track(&crate::common::unique("noexe"));
    let out = b.rt(&["create", "--bundle", b.dir().to_str().expect("utf8"), &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/no/such/program"), "{}", stderr(&out));
    assert!(!b.state_root().join(&id).exists());
}
