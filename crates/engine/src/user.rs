//! `--user` resolution against the image's own `/etc/passwd` and
//! `/etc/group`, as Docker does: `name`, `uid`, `name:group`, `uid:gid`.
//! The files are opened inside the container's root (openat2
//! `RESOLVE_IN_ROOT`), so a symlinked `/etc/passwd` cannot point the
//! daemon at a host file.

use std::io::Read;
use std::path::Path;

use berth_runtime::inroot::RootDir;

use crate::error::{Error, Result};

/// A user resolved to ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids (groups listing the user, plus `--group-add`).
    pub additional_gids: Vec<u32>,
    /// Home directory (for `HOME`).
    pub home: String,
}

/// Most bytes read from /etc/passwd or /etc/group.
const MAX_DB: u64 = 4 << 20;

fn read_in_root(root: &RootDir, path: &str) -> Option<String> {
    let f = root.open_read(Path::new(path)).ok()?;
    let mut s = String::new();
    f.take(MAX_DB).read_to_string(&mut s).ok()?;
    Some(s)
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry { name: f[0].into(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].into() })
        })
        .collect()
}

/// (name, gid, members)
fn groups(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolves `user` (empty = root) inside `rootfs`; `group_add` are extra
/// groups by name or gid.
pub fn resolve(rootfs: &Path, user: &str, group_add: &[String]) -> Result<ResolvedUser> {
    let root =
        RootDir::open(rootfs).map_err(|e| Error::Io { context: format!("opening {}", rootfs.display()), source: e })?;
    let users = read_in_root(&root, "/etc/passwd").map(|t| passwd(&t)).unwrap_or_default();
    let grps = read_in_root(&root, "/etc/group").map(|t| groups(&t)).unwrap_or_default();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let (uid, mut gid, home, name) = match u.parse::<u32>() {
        Ok(uid) => match users.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, e.home.clone(), Some(e.name.clone())),
            None => (uid, 0, "/".to_string(), None),
        },
        Err(_) => match users.iter().find(|e| e.name == u) {
            Some(e) => (e.uid, e.gid, e.home.clone(), Some(e.name.clone())),
            None => {
                return Err(Error::BadRequest(format!("unable to find user {u}: no matching entries in passwd file")))
            }
        },
    };
    let find_group = |g: &str| -> Result<u32> {
        match g.parse::<u32>() {
            Ok(n) => Ok(n),
            Err(_) => grps.iter().find(|(n, _, _)| n == g).map(|(_, id, _)| *id).ok_or_else(|| {
                Error::BadRequest(format!("unable to find group {g}: no matching entries in group file"))
            }),
        }
    };
    let mut additional = Vec::new();
    if let Some(g) = g {
        gid = find_group(g)?;
    } else if let Some(n) = &name {
        // Supplementary groups only when the group was not given explicitly.
        additional = grps.iter().filter(|(_, _, m)| m.contains(n)).map(|(_, id, _)| *id).collect();
    }
    for g in group_add {
        additional.push(find_group(g)?);
    }
    additional.retain(|g| *g != gid);
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser { uid, gid, additional_gids: additional, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_docker() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(tmp.path().join("etc")).expect("mkdir");
        std::fs::write(
            tmp.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(tmp.path().join("etc/group"), "root:x:0:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:\n")
            .expect("group");
        let r = resolve(tmp.path(), "", &[]).expect("root");
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let a = resolve(tmp.path(), "app", &[]).expect("app");
        assert_eq!((a.uid, a.gid, a.additional_gids.clone()), (1000, 1000, vec![10]));
        let b = resolve(tmp.path(), "1000:audio", &["wheel".into()]).expect("1000:audio");
        assert_eq!((b.uid, b.gid, b.additional_gids), (1000, 29, vec![10]));
        let n = resolve(tmp.path(), "4242", &[]).expect("numeric");
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 0, "/"));
        assert!(resolve(tmp.path(), "nobody", &[]).is_err());
        assert!(resolve(tmp.path(), "app:nogroup", &[]).is_err());
    }

    #[test]
    fn a_passwd_symlink_cannot_leave_the_root() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(tmp.path().join("etc")).expect("mkdir");
        // Absolute link: resolved inside the root, where it does not exist.
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("etc/passwd")).expect("symlink");
        assert!(resolve(tmp.path(), "root", &[]).is_err(), "host /etc/passwd must not be read");
    }
}
