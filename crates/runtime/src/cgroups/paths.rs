//! Where a container's cgroup lives: normalisation of `cgroupsPath`, the
//! systemd `slice:prefix:name` form, and host discovery from
//! `/proc/self/mountinfo` and `/proc/self/cgroup`.

use std::path::{Path, PathBuf};

use super::{Error, Result};

/// Normalises an absolute cgroup path: collapses repeated and trailing
/// slashes and `.` components, and rejects `..` (which would leave the
/// hierarchy) and the hierarchy root itself (a container must not be
/// limited, frozen or removed at the root).
pub fn normalize(path: &str) -> Result<String> {
    let mut out = String::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid_path(path, "\"..\" is not allowed")),
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        return Err(invalid_path(path, "it names the root of the hierarchy"));
    }
    Ok(out)
}

fn invalid_path(path: &str, why: &str) -> Error {
    Error::Invalid { what: format!("cgroup path {path:?}"), msg: why.to_string() }
}

/// Joins a base cgroup path ("/a" or "/") and a relative one.
pub fn join(base: &str, rel: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), rel)
}

/// The parent of a cgroup path ("/a/b" -> "/a", "/a" -> "/").
pub fn parent(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Expands a systemd slice name into its cgroup path: `a-b.slice` lives
/// at `/a.slice/a-b.slice`, and `-.slice` is the root.
pub fn expand_slice(slice: &str) -> Result<String> {
    let bad = |why: &str| Error::Invalid { what: format!("systemd slice {slice:?}"), msg: why.to_string() };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(bad("it must end in \".slice\""));
    };
    if slice.contains('/') {
        return Err(bad("it must not contain '/'"));
    }
    if stem == "-" {
        return Ok("/".to_string());
    }
    if stem.is_empty() || stem.split('-').any(str::is_empty) {
        return Err(bad("empty name component"));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// Converts the systemd form `slice:prefix:name` to the cgroupfs path
/// systemd would use: `system.slice:berth:abc` becomes
/// `/system.slice/berth-abc.scope`. An empty slice means `system.slice`;
/// an empty prefix gives `name.scope`; a name that is itself a slice
/// (`x.slice`) is used as is.
pub fn systemd_to_cgroupfs(spec: &str) -> Result<String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(Error::Invalid {
            what: format!("systemd cgroup path {spec:?}"),
            msg: "expected \"slice:prefix:name\"".into(),
        });
    };
    if name.is_empty() || name.contains('/') || prefix.contains('/') {
        return Err(Error::Invalid {
            what: format!("systemd cgroup path {spec:?}"),
            msg: "the name must be non-empty and neither part may contain '/'".into(),
        });
    }
    let slice = if slice.is_empty() { "system.slice" } else { slice };
    let base = expand_slice(slice)?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    normalize(&join(&base, &unit))
}

/// One line of `/proc/self/mountinfo` that mounts a cgroup filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The cgroup (in this cgroup namespace) shown at the mountpoint.
    pub root: String,
    /// `true` for cgroup2.
    pub v2: bool,
    /// v1 controllers (and `name=` hierarchies, by their bare name).
    pub controllers: Vec<String>,
}

/// v1 controller names that may appear in super options.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// Undoes mountinfo's octal escapes (`\040` for space and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v =
                (u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0')) as u8;
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts listed in a mountinfo text, in order.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (fstype, superopts) = (post[0], post[2]);
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            superopts
                .split(',')
                .filter_map(|o| {
                    if let Some(n) = o.strip_prefix("name=") {
                        Some(n.to_string())
                    } else if V1_CONTROLLERS.contains(&o) {
                        Some(o.to_string())
                    } else {
                        None
                    }
                })
                .collect()
        };
        out.push(CgroupMount { mountpoint: PathBuf::from(unescape(pre[4])), root: unescape(pre[3]), v2, controllers });
    }
    out
}

/// The calling process's cgroups from a `/proc/self/cgroup` text:
/// `(controllers, path)` per line, with an empty list for the v2 line.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctl = it.next()?;
            let path = it.next()?;
            let ctl = ctl
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| c.strip_prefix("name=").unwrap_or(c).to_string())
                .collect();
            Some((ctl, path.to_string()))
        })
        .collect()
}

/// `own` (a cgroup path in this namespace) as seen below a mount whose
/// root is `mount_root`.
pub fn below_mount_root(own: &str, mount_root: &str) -> String {
    if mount_root == "/" || mount_root.is_empty() {
        return own.to_string();
    }
    match own.strip_prefix(mount_root) {
        Some("") => "/".to_string(),
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => own.to_string(),
    }
}

/// The host directory of cgroup `path` in a hierarchy mounted at `mount`.
pub fn dir_in(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("/berth//x/").expect("ok"), "/berth/x");
        assert_eq!(normalize("berth/./x").expect("ok"), "/berth/x");
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("/").is_err());
        assert!(normalize("").is_err());
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x/y"), "/a/x/y");
    }

    #[test]
    fn systemd_paths() {
        assert_eq!(systemd_to_cgroupfs("system.slice:berth:abc").expect("ok"), "/system.slice/berth-abc.scope");
        assert_eq!(
            systemd_to_cgroupfs("user-1000.slice:docker:x").expect("ok"),
            "/user.slice/user-1000.slice/docker-x.scope"
        );
        assert_eq!(systemd_to_cgroupfs("a-b-c.slice:p:n").expect("ok"), "/a.slice/a-b.slice/a-b-c.slice/p-n.scope");
        assert_eq!(systemd_to_cgroupfs(":berth:abc").expect("ok"), "/system.slice/berth-abc.scope");
        assert_eq!(systemd_to_cgroupfs("-.slice::abc").expect("ok"), "/abc.scope");
        assert_eq!(systemd_to_cgroupfs("machine.slice:x:sub.slice").expect("ok"), "/machine.slice/sub.slice");
        assert!(systemd_to_cgroupfs("system.slice:berth").is_err());
        assert!(systemd_to_cgroupfs("system:berth:abc").is_err());
        assert!(systemd_to_cgroupfs("a--b.slice:berth:abc").is_err());
        assert!(systemd_to_cgroupfs("-a.slice:berth:abc").is_err());
        assert!(systemd_to_cgroupfs("system.slice:berth:").is_err());
        assert!(systemd_to_cgroupfs("system.slice:berth:a/b").is_err());
    }

    #[test]
    fn mountinfo() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 /docker/x /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 31 0:38 / /mnt/with\\040space rw - cgroup cgroup rw,memory
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[0].mountpoint, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m[1].controllers, ["systemd"]);
        assert_eq!(m[1].root, "/docker/x");
        assert!(m[2].v2);
        assert_eq!(m[3].mountpoint, Path::new("/mnt/with space"));
    }

    #[test]
    fn proc_cgroup() {
        let p = parse_proc_cgroup("4:memory:/a/b\n3:cpu,cpuacct:/\n1:name=systemd:/s\n0::/u\n");
        assert_eq!(p[0], (vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(p[1].0, ["cpu", "cpuacct"]);
        assert_eq!(p[2].0, ["systemd"]);
        assert_eq!(p[3], (vec![], "/u".to_string()));
        assert_eq!(below_mount_root("/docker/x/y", "/docker/x"), "/y");
        assert_eq!(below_mount_root("/docker/x", "/docker/x"), "/");
        assert_eq!(below_mount_root("/other", "/docker/x"), "/other");
    }
}
