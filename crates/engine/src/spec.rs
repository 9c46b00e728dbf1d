//! A container's OCI runtime spec from Docker's `Config` + `HostConfig`,
//! with Docker's defaults: its capability set, seccomp profile, masked and
//! read-only /proc paths, device rules, /etc/hosts, /etc/hostname and
//! /etc/resolv.conf bind-mounted from the container's directory.

use std::sync::Mutex;

use berth_runtime::seccomp::{from_docker_profile, DOCKER_DEFAULT_CAPS, DOCKER_DEFAULT_PROFILE};
use bollard_stubs::models::{ContainerConfig, HostConfig};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::paths::ContainerPaths;
use crate::user::ResolvedUser;

/// Docker's masked paths.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// The PATH Docker sets when the image has none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process's argv: Entrypoint then Cmd (both already merged with the
/// image's at create time).
pub fn argv(config: &ContainerConfig) -> Vec<String> {
    let mut v = config.entrypoint.clone().unwrap_or_default();
    v.extend(config.cmd.clone().unwrap_or_default());
    v
}

/// The container's hostname: `Config.Hostname`, else the short id.
pub fn hostname(id: &str, config: &ContainerConfig) -> String {
    config.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| id.chars().take(12).collect())
}

/// Capabilities after `--cap-add`/`--cap-drop` (names `CAP_X`; `ALL` works
/// in both), or every capability this process holds with `--privileged`.
pub fn capabilities(host: &HostConfig) -> Result<Vec<String>> {
    let norm = |c: &str| {
        let c = c.trim().to_ascii_uppercase();
        if c == "ALL" || c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let held = || -> Result<Vec<String>> {
        let set = caps::read(None, caps::CapSet::Permitted)
            .map_err(|e| Error::BadRequest(format!("reading capabilities: {e}")))?;
        let mut v: Vec<String> = set.iter().map(|c| c.to_string()).collect();
        v.sort();
        Ok(v)
    };
    if host.privileged.unwrap_or(false) {
        return held();
    }
    let mut set: Vec<String> = DOCKER_DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let drops: Vec<String> = host.cap_drop.iter().flatten().map(|c| norm(c)).collect();
    let adds: Vec<String> = host.cap_add.iter().flatten().map(|c| norm(c)).collect();
    if drops.iter().any(|c| c == "ALL") {
        set.clear();
    } else {
        set.retain(|c| !drops.contains(c));
    }
    if adds.iter().any(|c| c == "ALL") {
        return held();
    }
    let known: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    for c in adds {
        if !known.contains(&c) {
            return Err(Error::BadRequest(format!("unknown capability: {c:?}")));
        }
        if !set.contains(&c) {
            set.push(c);
        }
    }
    Ok(set)
}

/// The seccomp section: Docker's default profile for these capabilities,
/// a profile given as JSON (the docker CLI reads `seccomp=<file>` and
/// sends its content; a path is refused), or none (`seccomp=unconfined`,
/// `--privileged`).
fn seccomp(host: &HostConfig, caps: &[String]) -> Result<Option<Value>> {
    let mut profile = if host.privileged.unwrap_or(false) { None } else { Some(DOCKER_DEFAULT_PROFILE.to_string()) };
    for opt in host.security_opt.iter().flatten() {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        if k == "seccomp" {
            profile = match v {
                "unconfined" => None,
                "" => return Err(Error::BadRequest("seccomp security option needs a profile".into())),
                json if json.trim_start().starts_with('{') => Some(json.to_string()),
                // A path would make the daemon read a file of its own
                // choosing for any API client; clients (the docker CLI,
                // berth's) read the file and send its JSON, as Docker's API
                // expects.
                _ => {
                    return Err(Error::BadRequest(
                        "seccomp security option must carry the profile's JSON (the client reads the file)".into(),
                    ))
                }
            };
        }
    }
    let Some(p) = profile else { return Ok(None) };
    // Docker's default profile, converted for the same capabilities as
    // last time: reused (reading and converting its ~60 KB of JSON costs
    // ~0.2 ms of every container start).
    static LAST_DEFAULT: Mutex<Option<(Vec<String>, Value)>> = Mutex::new(None);
    let default = p == DOCKER_DEFAULT_PROFILE;
    if default {
        let last = LAST_DEFAULT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = last.as_ref().filter(|(c, _)| c.as_slice() == caps) {
            return Ok(Some(v.clone()));
        }
    }
    let converted = from_docker_profile(&p, caps, std::env::consts::ARCH)
        .map_err(|e| Error::BadRequest(format!("seccomp profile: {e}")))?;
    let v = serde_json::to_value(converted).map_err(|e| Error::BadRequest(format!("seccomp profile: {e}")))?;
    if default {
        *LAST_DEFAULT.lock().unwrap_or_else(|e| e.into_inner()) = Some((caps.to_vec(), v.clone()));
    }
    Ok(Some(v))
}

fn no_new_privileges(host: &HostConfig) -> bool {
    host.security_opt.iter().flatten().any(|o| {
        let o = o.replace(':', "=");
        o == "no-new-privileges" || o == "no-new-privileges=true"
    })
}

/// `--ulimit` → OCI rlimits.
fn rlimits(host: &HostConfig) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for u in host.ulimits.iter().flatten() {
        let name = u.name.clone().unwrap_or_default();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(Error::BadRequest(format!("invalid ulimit name {name:?}")));
        }
        let (soft, hard) = (u.soft.unwrap_or(0), u.hard.unwrap_or(0));
        if soft > hard {
            return Err(Error::BadRequest(format!("ulimit {name}: soft limit {soft} is above the hard limit {hard}")));
        }
        out.push(json!({"type": format!("RLIMIT_{}", name.to_ascii_uppercase()), "soft": soft, "hard": hard}));
    }
    Ok(out)
}

/// Cgroup resources from the HostConfig.
fn resources(host: &HostConfig) -> Result<Value> {
    let mut r = json!({});
    if host.privileged.unwrap_or(false) {
        r["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        // Deny everything; the runtime adds the standard devices.
        r["devices"] = json!([{"allow": false, "access": "rwm"}]);
    }
    let mut mem = json!({});
    if let Some(m) = host.memory.filter(|m| *m > 0) {
        if m < 6 * 1024 * 1024 {
            return Err(Error::BadRequest("Minimum memory limit allowed is 6MB".into()));
        }
        mem["limit"] = json!(m);
        match host.memory_swap {
            Some(-1) => mem["swap"] = json!(-1),
            Some(s) if s > 0 => {
                if s < m {
                    return Err(Error::BadRequest(
                        "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
                    ));
                }
                mem["swap"] = json!(s);
            }
            // Docker's default: swap as large as memory (memory+swap = 2×).
            _ => mem["swap"] = json!(m * 2),
        }
    }
    if let Some(m) = host.memory_reservation.filter(|m| *m > 0) {
        mem["reservation"] = json!(m);
    }
    if mem.as_object().is_some_and(|o| !o.is_empty()) {
        r["memory"] = mem;
    }
    let mut cpu = json!({});
    if let Some(n) = host.nano_cpus.filter(|n| *n > 0) {
        let period = 100_000i64;
        cpu["period"] = json!(period);
        cpu["quota"] = json!(n * period / 1_000_000_000);
    }
    if let Some(q) = host.cpu_quota.filter(|q| *q > 0) {
        cpu["quota"] = json!(q);
    }
    if let Some(p) = host.cpu_period.filter(|p| *p > 0) {
        cpu["period"] = json!(p);
    }
    if let Some(s) = host.cpu_shares.filter(|s| *s > 0) {
        cpu["shares"] = json!(s);
    }
    if let Some(c) = host.cpuset_cpus.clone().filter(|c| !c.is_empty()) {
        cpu["cpus"] = json!(c);
    }
    if let Some(m) = host.cpuset_mems.clone().filter(|m| !m.is_empty()) {
        cpu["mems"] = json!(m);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        r["cpu"] = cpu;
    }
    if let Some(p) = host.pids_limit.filter(|p| *p > 0) {
        r["pids"] = json!({"limit": p});
    }
    Ok(r)
}

/// `--network host`: the container shares the host's network namespace.
pub fn host_network(host: &HostConfig) -> bool {
    host.network_mode.as_deref() == Some("host")
}

/// `--device HOST[:CONTAINER[:PERMS]]`: the device nodes to create in the
/// container and the cgroup rules that allow them.
fn devices(host: &HostConfig) -> Result<(Vec<Value>, Vec<Value>)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (mut nodes, mut rules) = (Vec::new(), Vec::new());
    for d in host.devices.iter().flatten() {
        let src = d.path_on_host.clone().unwrap_or_default();
        let dst = d.path_in_container.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| src.clone());
        let perms = d.cgroup_permissions.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "rwm".into());
        if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(Error::BadRequest(format!("invalid device cgroup permissions {perms:?} for {src}")));
        }
        let meta = std::fs::metadata(&src).map_err(|e| {
            Error::BadRequest(format!("error gathering device information while adding custom device {src:?}: {e}"))
        })?;
        let typ = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(Error::BadRequest(format!("{src} is not a device node")));
        };
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        nodes.push(json!({
            "path": dst, "type": typ, "major": major, "minor": minor,
            "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid(),
        }));
        rules.push(json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": perms}));
    }
    Ok((nodes, rules))
}

/// Everything [`build`] needs.
#[derive(Debug)]
pub struct SpecInput<'a> {
    /// Container id.
    pub id: &'a str,
    /// Merged container config.
    pub config: &'a ContainerConfig,
    /// Host config.
    pub host: &'a HostConfig,
    /// The container's files.
    pub paths: &'a ContainerPaths,
    /// The resolved user.
    pub user: &'a ResolvedUser,
    /// Binds, volumes and tmpfs mounts.
    pub mounts: &'a [crate::mounts::MountPoint],
}

/// Builds the OCI config.json for a container.
pub fn build(input: &SpecInput<'_>) -> Result<Value> {
    let SpecInput { id, config, host, paths, user, mounts } = input;
    let args = argv(config);
    if args.is_empty() {
        return Err(Error::BadRequest("no command specified".into()));
    }
    let hostname = hostname(id, config);
    let tty = config.tty.unwrap_or(false);
    let mut env: Vec<String> = Vec::new();
    for e in config.env.iter().flatten() {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        // "VAR" without '=' removes it (Docker's semantics).
        if e.contains('=') {
            env.push(e.clone());
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    env.push(format!("HOSTNAME={hostname}"));
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let caps = capabilities(host)?;
    let privileged = host.privileged.unwrap_or(false);
    let mut spec = berth_runtime::spec_default::default_spec(false);
    spec["process"] = json!({
        "terminal": tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": env,
        "cwd": config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": no_new_privileges(host),
        "rlimits": rlimits(host)?,
    });
    if let Some(adj) = host.oom_score_adj {
        spec["process"]["oomScoreAdj"] = json!(adj);
    }
    spec["root"] = json!({"path": paths.rootfs(), "readonly": host.readonly_rootfs.unwrap_or(false)});
    spec["hostname"] = json!(hostname);
    if let Some(d) = config.domainname.clone().filter(|d| !d.is_empty()) {
        spec["domainname"] = json!(d);
    }
    let mut mounts_json = spec["mounts"].as_array().cloned().unwrap_or_default();
    if privileged {
        // sysfs and cgroups writable, as Docker does for --privileged.
        for m in mounts_json.iter_mut() {
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| o != "ro");
            }
        }
    }
    let shm = host.shm_size.filter(|s| *s > 0).unwrap_or(64 * 1024 * 1024);
    for m in mounts_json.iter_mut() {
        if m["destination"] == "/dev/shm" {
            m["options"] = json!(["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm}")]);
        }
    }
    for name in ["hosts", "hostname", "resolv.conf"] {
        mounts_json.push(json!({
            "destination": format!("/etc/{name}"), "type": "bind", "source": paths.etc_file(name),
            "options": ["rbind", "rprivate"],
        }));
    }
    for m in *mounts {
        mounts_json.push(crate::mounts::oci_mount(m));
    }
    spec["mounts"] = json!(mounts_json);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if !host_network(host) {
        namespaces.push(json!({"type": "network"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": format!("/berth/{id}"),
        "resources": resources(host)?,
    });
    let (nodes, rules) = devices(host)?;
    if !nodes.is_empty() {
        linux["devices"] = json!(nodes);
        if let Some(list) = linux["resources"]["devices"].as_array_mut() {
            list.extend(rules);
        }
    }
    if !privileged {
        linux["maskedPaths"] = json!(MASKED);
        linux["readonlyPaths"] = json!(READONLY);
    }
    if let Some(s) = seccomp(host, &caps)? {
        linux["seccomp"] = s;
    }
    if let Some(sysctls) = &host.sysctls {
        linux["sysctl"] = json!(sysctls);
    }
    spec["linux"] = linux;
    if host.init.unwrap_or(false) {
        // `--init`: the runtime's init stays as PID 1 (berth_runtime::init).
        spec["annotations"] = json!({ berth_runtime::init::INIT_ANNOTATION: "true" });
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_add_drop_like_docker() {
        let mut h = HostConfig {
            cap_drop: Some(vec!["NET_RAW".into(), "chown".into()]),
            cap_add: Some(vec!["SYS_ADMIN".into()]),
            ..Default::default()
        };
        let c = capabilities(&h).expect("caps");
        assert!(!c.contains(&"CAP_NET_RAW".to_string()) && !c.contains(&"CAP_CHOWN".to_string()));
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()) && c.contains(&"CAP_KILL".to_string()));
        h.cap_drop = Some(vec!["ALL".into()]);
        h.cap_add = Some(vec!["KILL".into()]);
        assert_eq!(capabilities(&h).expect("caps"), vec!["CAP_KILL"]);
        h.cap_add = Some(vec!["NOT_A_CAP".into()]);
        assert!(capabilities(&h).is_err());
    }

    #[test]
    fn seccomp_takes_json_or_unconfined_never_a_path() {
        let with = |opt: &str| HostConfig { security_opt: Some(vec![opt.to_string()]), ..Default::default() };
        assert!(seccomp(&with("seccomp=/etc/shadow"), &[]).is_err(), "a path must not be read by the daemon");
        assert!(seccomp(&with("seccomp=unconfined"), &[]).expect("unconfined").is_none());
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#;
        assert!(seccomp(&with(&format!("seccomp={json}")), &[]).expect("json").is_some());
    }

    #[test]
    fn the_reused_default_profile_follows_the_capabilities() {
        let h = HostConfig::default();
        let caps: Vec<String> = DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        let mut admin = caps.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let fresh = |c: &[String]| {
            let p = from_docker_profile(DOCKER_DEFAULT_PROFILE, c, std::env::consts::ARCH).expect("profile");
            serde_json::to_value(p).expect("json")
        };
        for c in [&caps, &caps, &admin, &caps, &admin, &admin] {
            assert_eq!(seccomp(&h, c).expect("seccomp"), Some(fresh(c)));
        }
        assert_ne!(fresh(&caps), fresh(&admin), "CAP_SYS_ADMIN allows more syscalls");
    }

    #[test]
    fn limits_are_checked() {
        let mut h = HostConfig { memory: Some(1024), ..Default::default() };
        assert!(resources(&h).is_err());
        h.memory = Some(64 << 20);
        h.nano_cpus = Some(1_500_000_000);
        h.pids_limit = Some(20);
        let r = resources(&h).expect("resources");
        assert_eq!(r["memory"]["limit"], json!(64 << 20));
        assert_eq!(r["memory"]["swap"], json!(128 << 20));
        assert_eq!(r["cpu"]["quota"], json!(150_000));
        assert_eq!(r["pids"]["limit"], json!(20));
    }
}
