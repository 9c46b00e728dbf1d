//! config.json coverage: namespaces, root and mounts, /dev, process
//! attributes, hostname, sysctl, masked and read-only paths, terminal.

use std::os::unix::net::UnixListener;

use serde_json::json;

use crate::common::{ok, stderr, stdout, Bundle};
use crate::require_root;

fn cap_eff(out: &str) -> u64 {
    let line = out.lines().find(|l| l.starts_with("CapEff:")).expect("CapEff line");
    u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
}

#[test]
fn namespaces_pid_uts_ipc_net_mount_cgroup() {
    require_root!();
    let mut b = Bundle::new(
        "echo pid=$$; hostname; cat /proc/sys/kernel/domainname; ls /sys/class/net | tr '\\n' ' '; echo; \
         cat /sys/class/net/lo/flags; for n in pid uts ipc net mnt cgroup; do readlink /proc/self/ns/$n; done",
    );
    b.config["hostname"] = json!("box1");
    b.config["domainname"] = json!("example.test");
    let out = ok(&b.run());
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pid=1"));
    assert_eq!(lines.next(), Some("box1"));
    assert_eq!(lines.next(), Some("example.test"));
    assert_eq!(lines.next().map(str::trim), Some("lo"), "new netns has only lo");
    // IFF_UP (0x1) | IFF_LOOPBACK (0x8): the runtime brought lo up, as runc.
    assert_eq!(lines.next(), Some("0x9"), "lo is up");
    for line in lines {
        let (name, rest) = line.split_once(':').expect("ns link");
        let host =
            std::fs::read_link(format!("/proc/self/ns/{}", if name == "mnt" { "mnt" } else { name })).expect("host ns");
        assert_ne!(rest, host.to_string_lossy().split_once(':').expect("host ns").1, "{name} namespace is the host's");
    }
}

#[test]
fn user_namespace_maps_ids() {
    require_root!();
    let mut b = Bundle::new(
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u /bin/busybox; cat /sys/class/net/lo/flags",
    );
    let ns = b.config["linux"]["namespaces"].as_array_mut().expect("namespaces");
    ns.push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // The rootfs must belong to the mapped root for a userns container.
    let st = std::process::Command::new("chown").args(["-R", "100000:100000"]).arg(b.rootfs()).status().expect("chown");
    assert!(st.success());
    let out = ok(&b.run());
    let fields: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(fields[4], vec!["0x9"], "lo is up in a netns owned by the new user namespace");
    assert_eq!(fields[0], vec!["0", "100000", "65536"]);
    assert_eq!(fields[1], vec!["0", "100000", "65536"]);
    assert_eq!(fields[2], vec!["0"]);
    assert_eq!(fields[3], vec!["0"], "files owned by host uid 100000 appear as root");
}

#[test]
fn joining_an_existing_network_namespace_by_path() {
    require_root!();
    let holder = Bundle::new("ip link add dummy7 type dummy 2>/dev/null || true; exec sleep 1000");
    let id = holder.create();
    ok(&holder.rt(&["start", &id]));
    let pid = holder.state(&id)["pid"].as_i64().expect("pid");
    let mut b = Bundle::new("readlink /proc/self/ns/net");
    for ns in b.config["linux"]["namespaces"].as_array_mut().expect("namespaces") {
        if ns["type"] == "network" {
            ns["path"] = json!(format!("/proc/{pid}/ns/net"));
        }
    }
    let out = ok(&b.run());
    let want = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns link");
    assert_eq!(out.trim(), want.to_string_lossy());
}

#[test]
fn hostname_in_a_uts_namespace_joined_by_path() {
    require_root!();
    let holder = Bundle::new("exec sleep 1000");
    let id = holder.create();
    let pid = holder.state(&id)["pid"].as_i64().expect("pid");
    let mut b = Bundle::new("hostname; readlink /proc/self/ns/uts");
    for ns in b.config["linux"]["namespaces"].as_array_mut().expect("namespaces") {
        if ns["type"] == "uts" {
            ns["path"] = json!(format!("/proc/{pid}/ns/uts"));
        }
    }
    b.config["hostname"] = json!("joined-uts");
    let out = ok(&b.run());
    let want = std::fs::read_link(format!("/proc/{pid}/ns/uts")).expect("ns link");
    assert_eq!(out, format!("joined-uts\n{}\n", want.to_string_lossy()));
    // The holder sees the name set in the namespace it shares.
    let seen = ok(&holder.rt(&["exec", &id, "hostname"]));
    assert_eq!(seen.trim(), "joined-uts");

    // Without any uts namespace the hostname would be the host's: refused.
    let mut b = Bundle::new("true");
    b.config["linux"]["namespaces"].as_array_mut().expect("namespaces").retain(|n| n["type"] != "uts");
    b.config["hostname"] = json!("nope");
    let out = b.run();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("hostname requires a uts namespace"), "{}", stderr(&out));
}

#[test]
fn mounts_tmpfs_bind_ro_and_options() {
    require_root!();
    let mut b = Bundle::new(
        "grep ' /data ' /proc/self/mounts; grep ' /scratch ' /proc/self/mounts; \
         cat /data/file; touch /data/new 2>/dev/null && echo writable || echo readonly; \
         stat -c %a /scratch",
    );
    let data = b.tmp.path().join("hostdata");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("file"), "from-host\n").expect("write");
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(
        json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro", "nosuid", "nodev"]}),
    );
    mounts.push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "size=1m", "mode=1770"]}));
    let out = ok(&b.run());
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains(" ro,") && lines[0].contains("nosuid") && lines[0].contains("nodev"), "{}", lines[0]);
    assert!(
        lines[1].contains("tmpfs") && lines[1].contains("size=1024k") && lines[1].contains("noexec"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "from-host");
    assert_eq!(lines[3], "readonly");
    assert_eq!(lines[4], "1770");
    assert!(!data.join("new").exists());
}

#[test]
fn rro_makes_submounts_of_an_rbind_read_only() {
    require_root!();
    let mut b = Bundle::new(
        "touch /data/sub/f 2>/dev/null && echo sub-rw || echo sub-ro; grep ' /data/sub ' /proc/self/mounts",
    );
    // A host tree with a submount (a tmpfs under it).
    let data = b.tmp.path().join("tree");
    std::fs::create_dir_all(data.join("sub")).expect("mkdir");
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(data.join("sub"))
        .status()
        .expect("mount");
    assert!(st.success());
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Umount(data.join("sub"));
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rro"]}));
    let out = ok(&b.run());
    assert!(out.starts_with("sub-ro\n"), "{out}");
    assert!(out.contains(" ro,") || out.contains(" ro "), "{out}");
}

#[test]
fn mount_target_symlink_cannot_escape_the_rootfs() {
    require_root!();
    // The image has /evil -> /<host dir>: a mount at /evil/x must resolve
    // the link inside the rootfs, never reach the host directory.
    for exists_inside in [true, false] {
        let mut b = Bundle::new("ls -d /evil/x >/dev/null && echo mounted-inside");
        let host_dir = b.tmp.path().join("host-target");
        std::fs::create_dir_all(&host_dir).expect("mkdir");
        std::os::unix::fs::symlink(&host_dir, b.rootfs().join("evil")).expect("symlink");
        let inside = b.rootfs().join(host_dir.strip_prefix("/").expect("abs"));
        if exists_inside {
            std::fs::create_dir_all(&inside).expect("mkdir inside");
        }
        let mounts = b.config["mounts"].as_array_mut().expect("mounts");
        mounts.push(json!({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"}));
        let out = b.run();
        assert!(!host_dir.join("x").exists(), "mount target was created on the host");
        if exists_inside {
            assert_eq!(ok(&out).trim(), "mounted-inside");
            assert!(inside.join("x").is_dir(), "expected {} inside the rootfs", inside.display());
        } else {
            // A dangling link is refused with an error naming the mount.
            assert!(!out.status.success());
            assert!(stderr(&out).contains("/evil/x"), "{}", stderr(&out));
        }
    }
}

#[test]
fn readonly_root_and_propagation() {
    require_root!();
    let mut b = Bundle::new("touch /x 2>/dev/null && echo rw || echo ro; grep ' / ' /proc/self/mountinfo | head -1");
    b.config["root"]["readonly"] = json!(true);
    b.config["linux"]["rootfsPropagation"] = json!("private");
    let out = ok(&b.run());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ro");
    assert!(!lines[1].contains("shared:") && !lines[1].contains("master:"), "{}", lines[1]);
}

#[test]
fn dev_has_default_and_spec_devices_and_pts() {
    require_root!();
    let mut b = Bundle::new(
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
         stat -c '%n %F %t:%T %a %u:%g' /dev/mydev; readlink /dev/ptmx; readlink /dev/fd; readlink /dev/stdin; \
         echo x > /dev/null && head -c 3 /dev/zero | wc -c; test -d /dev/pts && test -d /dev/shm && echo ok",
    );
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 7, "fileMode": 0o640, "uid": 12, "gid": 34}]);
    let out = ok(&b.run());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "/dev/null character special file 1:3 666");
    assert_eq!(lines[1], "/dev/zero character special file 1:5 666");
    assert_eq!(lines[5], "/dev/tty character special file 5:0 666");
    assert_eq!(lines[6], "/dev/mydev character special file 1:7 640 12:34");
    assert_eq!(&lines[7..10], &["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0"]);
    assert_eq!(lines[10].trim(), "3");
    assert_eq!(lines[11], "ok");
}

#[test]
fn process_user_groups_umask_cwd_env() {
    require_root!();
    let mut b = Bundle::new("id; umask; pwd; echo $MYVAR; touch /tmp/f; stat -c %a /tmp/f");
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [5, 20], "umask": 0o077});
    b.config["process"]["cwd"] = json!("/tmp");
    b.config["process"]["env"] = json!(["PATH=/bin", "MYVAR=hello world"]);
    let out = ok(&b.run());
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("uid=1000 gid=1001"), "{}", lines[0]);
    assert!(
        lines[0].contains("groups=5(tty),20") || lines[0].contains("groups=5,20") || lines[0].contains("5(tty)"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "0077");
    assert_eq!(lines[2], "/tmp");
    assert_eq!(lines[3], "hello world");
    assert_eq!(lines[4], "600");
}

#[test]
fn capabilities_all_five_sets() {
    require_root!();
    let mut b = Bundle::new("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status");
    let set = json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SYS_TIME"],
        "effective": set, "permitted": set, "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]
    });
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    let out = ok(&b.run());
    let get = |name: &str| {
        let line = out.lines().find(|l| l.starts_with(name)).expect(name);
        u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
    };
    let (chown, kill, net_raw, sys_time) = (1u64 << 0, 1u64 << 5, 1u64 << 13, 1u64 << 25);
    // A non-root user after exec keeps only ambient caps in permitted/effective.
    assert_eq!(get("CapBnd"), chown | kill | net_raw | sys_time);
    assert_eq!(get("CapInh"), kill);
    assert_eq!(get("CapAmb"), kill);
    assert_eq!(get("CapEff"), kill);
    assert_eq!(get("CapPrm"), kill);

    // As root the effective set is exactly the spec's.
    let mut b = Bundle::new("grep CapEff /proc/self/status");
    b.config["process"]["capabilities"] = json!({"bounding": set, "effective": set, "permitted": set});
    let out = ok(&b.run());
    assert_eq!(cap_eff(&out), chown | kill | net_raw);
}

#[test]
fn capabilities_the_runtime_lacks_fail_create_and_bad_names_are_named() {
    require_root!();
    // Every capability this kernel knows; the ones our own process lacks
    // (this host has no CAP_SYS_RESOURCE) must fail create, not the
    // container after start.
    let last: u32 =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").expect("cap_last_cap").trim().parse().expect("n");
    let names = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let all: Vec<String> = names.iter().take(last as usize + 1).map(|n| format!("CAP_{n}")).collect();
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let ours = cap_prm(&status);
    let missing: Vec<&String> =
        all.iter().enumerate().filter(|(i, _)| ours & (1u64 << i) == 0).map(|(_, n)| n).collect();
    let mut b = Bundle::new("grep CapEff /proc/self/status");
    b.config["process"]["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
    b.write();
    let id = b.track(&crate::common::unique("caps"));
    let dir = b.dir();
    let out = b.rt(&["create", "--bundle", dir.to_str().expect("utf8"), &id]);
    if missing.is_empty() {
        assert!(out.status.success(), "{}", stderr(&out));
    } else {
        assert!(!out.status.success(), "create accepted capabilities the runtime lacks: {missing:?}");
        for m in &missing {
            assert!(stderr(&out).contains(m.as_str()), "{m} not named: {}", stderr(&out));
        }
        assert!(!b.state_root().join(&id).exists(), "failed create left state behind");
    }

    // An unknown capability name is refused, naming it.
    let mut b = Bundle::new("true");
    b.config["process"]["capabilities"] = json!({"bounding": ["CAP_TEST"]});
    let out = b.run();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("CAP_TEST"), "{}", stderr(&out));
    let mut b = Bundle::new("true");
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_TEST", "hard": 1, "soft": 1}]);
    let out = b.run();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("RLIMIT_TEST"), "{}", stderr(&out));
}

fn cap_prm(status: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with("CapPrm:")).expect("CapPrm line");
    u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
}

#[test]
fn no_new_privileges_rlimits_and_oom_score() {
    require_root!();
    let mut b = Bundle::new("grep NoNewPrivs /proc/self/status; ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj");
    b.config["process"]["noNewPrivileges"] = json!(true);
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]);
    b.config["process"]["oomScoreAdj"] = json!(123);
    let out = ok(&b.run());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].split_whitespace().nth(1), Some("1"));
    assert_eq!(lines[1], "100");
    assert_eq!(lines[2], "200");
    assert_eq!(lines[3], "123");

    // Asking for more than the host allows names the limit.
    let mut b = Bundle::new("true");
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1u64 << 40, "hard": 1u64 << 40}]);
    let out = b.run();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("RLIMIT_NOFILE"), "{}", stderr(&out));
}

#[test]
fn apparmor_request_without_apparmor_is_a_clear_error() {
    require_root!();
    if std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y") {
        eprintln!("skipped: AppArmor is enabled on this host");
        return;
    }
    let mut b = Bundle::new("true");
    b.config["process"]["apparmorProfile"] = json!("docker-default");
    let out = b.run();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("AppArmor is not enabled"), "{}", stderr(&out));
}

#[test]
fn sysctl_masked_and_readonly_paths() {
    require_root!();
    let mut b = Bundle::new(
        "cat /proc/sys/net/ipv4/ip_forward; cat /proc/kcore | wc -c; ls /sys/firmware | wc -l; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo writable || echo readonly",
    );
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    let out = ok(&b.run());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1");
    assert_eq!(lines[1].trim(), "0", "masked file reads empty");
    assert_eq!(lines[2].trim(), "0", "masked dir is empty");
    assert_eq!(lines[3], "readonly");
}

#[test]
fn terminal_through_console_socket() {
    require_root!();
    let mut b = Bundle::new("tty; test -t 0 && echo stdin-is-tty; stty size");
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    b.write();
    let sock_path = b.tmp.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).expect("bind console socket");
    let id = b.track(&crate::common::unique("tty"));
    let dir = b.dir();
    let out = b.rt(&[
        "create",
        "--bundle",
        dir.to_str().expect("utf8"),
        "--console-socket",
        sock_path.to_str().expect("utf8"),
        &id,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (conn, _) = listener.accept().expect("accept");
    let master = berth_recv_fd(&conn);
    ok(&b.rt(&["start", &id]));
    let mut text = String::new();
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    loop {
        use std::io::Read;
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(text.contains("stdin-is-tty"), "{text:?}");
    assert!(text.contains("30 100"), "{text:?}");
    let _ = stdout(&out);
}

/// Receives one fd over a unix stream (SCM_RIGHTS), as a console-socket
/// consumer (conmon, containerd-shim) would.
fn berth_recv_fd(conn: &std::os::unix::net::UnixStream) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = [0u8; 1024];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).expect("recvmsg");
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just gave us this descriptor.
            return unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received on the console socket");
}

#[test]
fn foreground_run_and_exec_with_a_terminal_proxy_the_pty() {
    require_root!();
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1) not installed");
        return;
    }
    // No --console-socket: berth allocates the pty and copies between it
    // and its own terminal (here a pty made by script(1)).
    let mut b = Bundle::new("tty; echo exit-code-next; exit 4");
    b.config["process"]["terminal"] = json!(true);
    b.write();
    let id = b.track(&crate::common::unique("fg"));
    let cmdline = format!(
        "{} runtime --root {} run --bundle {} {id}",
        crate::common::berth(),
        b.state_root().display(),
        b.dir().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = stdout(&out);
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(text.contains("exit-code-next"), "{text:?}");
    assert_eq!(out.status.code(), Some(4), "{text:?} {}", stderr(&out));
}
