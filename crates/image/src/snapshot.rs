//! Unpacked layers keyed by chain ID, stacked with overlayfs.
//!
//! Layout: `<root>/snapshots/<alg>-<hex>/fs` holds the files of the
//! snapshot whose chain ID is `<alg>:<hex>`. A snapshot is filled in a
//! temporary directory `<root>/snapshots/.tmp-…` and renamed into place, so
//! a half-unpacked layer is never visible under its chain ID. A temporary
//! directory is `flock`ed by its writer while in use; [`Snapshots::open`]
//! removes the ones nobody holds (left over from a crash).
//!
//! The snapshots directory is mode 0700: layers carry setuid binaries that
//! host users must not reach.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::unpack::remove_all_at;

/// Prefix of temporary (in-progress or dead) snapshot directories.
const TMP_PREFIX: &str = ".tmp-";

/// The snapshot store under `<root>/snapshots/`.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    /// Opens (creating) `<root>/snapshots`.
    pub fn open(root: &Path) -> Result<Snapshots> {
        std::fs::create_dir_all(root).ctx(|| format!("creating {}", root.display()))?;
        let dir = root.join("snapshots");
        match rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).ctx(|| format!("creating {}", dir.display())),
        }
        let s = Snapshots { dir };
        s.remove_stale_temps()?;
        Ok(s)
    }

    /// OCI chain ID: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)) (strings of the digests).
    pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(p) => Digest::sha256_of(format!("{p} {diff_id}").as_bytes()),
        }
    }

    /// Whether a committed snapshot exists.
    pub fn exists(&self, chain: &Digest) -> bool {
        std::fs::symlink_metadata(self.path(chain)).map(|m| m.is_dir()).unwrap_or(false)
    }

    /// The directory holding the snapshot's files (`<root>/snapshots/<alg>-<hex>/fs`).
    pub fn path(&self, chain: &Digest) -> PathBuf {
        self.dir.join(entry_name(chain)).join("fs")
    }

    /// Creates the snapshot `chain` by calling `fill` on a fresh temporary
    /// directory, then atomically renaming it into place (after a `syncfs`,
    /// and with an fsync of the parent). If `fill` fails, the temporary
    /// directory is removed entirely and nothing is visible. If the snapshot
    /// already exists, returns Ok without calling `fill`.
    pub fn create(&self, chain: &Digest, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        if self.exists(chain) {
            return Ok(());
        }
        let parent = self.open_dir()?;
        let (tmp_name, tmp_fd) = self.new_temp(&parent)?;
        let tmp_path = self.dir.join(&tmp_name);
        let fs = tmp_path.join("fs");
        let result = rustix::fs::mkdirat(&tmp_fd, "fs", Mode::from_raw_mode(0o755))
            .and_then(|()| rustix::fs::chmodat(&tmp_fd, "fs", Mode::from_raw_mode(0o755), AtFlags::empty()))
            .ctx(|| format!("creating {}", fs.display()))
            .and_then(|()| fill(&fs))
            .and_then(|()| {
                // The files must be on disk before the name says they are.
                rustix::fs::syncfs(&tmp_fd).ctx(|| format!("syncing {}", tmp_path.display()))?;
                let name = entry_name(chain);
                match rustix::fs::renameat_with(&parent, &tmp_name, &parent, &name, RenameFlags::NOREPLACE) {
                    Ok(()) => {
                        rustix::fs::fsync(&parent).ctx(|| format!("syncing {}", self.dir.display()))?;
                        Ok(true)
                    }
                    // Someone else committed it meanwhile: theirs stands.
                    Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => Ok(false),
                    Err(e) => Err(e).ctx(|| format!("committing snapshot {chain}")),
                }
            });
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                remove_all_at(parent.as_fd(), OsStr::new(&tmp_name))
                    .ctx(|| format!("removing {}", tmp_path.display()))?;
                Ok(())
            }
            Err(e) => {
                // Best effort: a leftover is removed by the next `open`.
                let _ = remove_all_at(parent.as_fd(), OsStr::new(&tmp_name));
                Err(e)
            }
        }
    }

    /// Removes a snapshot (no-op when absent).
    pub fn remove(&self, chain: &Digest) -> Result<()> {
        let parent = self.open_dir()?;
        let name = entry_name(chain);
        let fd = match rustix::fs::openat(
            &parent,
            name.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e).ctx(|| format!("opening snapshot {chain}")),
        };
        // Locked and renamed away first: the chain ID disappears at once,
        // and a crash during the removal leaves a stale temp for `open`.
        rustix::fs::flock(&fd, FlockOperation::LockExclusive).ctx(|| format!("locking snapshot {chain}"))?;
        let tmp = self.temp_name();
        match rustix::fs::renameat_with(&parent, name.as_str(), &parent, tmp.as_str(), RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e).ctx(|| format!("removing snapshot {chain}")),
        }
        rustix::fs::fsync(&parent).ctx(|| format!("syncing {}", self.dir.display()))?;
        remove_all_at(parent.as_fd(), OsStr::new(&tmp)).ctx(|| format!("removing snapshot {chain}"))
    }

    /// All committed snapshots.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let rd = std::fs::read_dir(&self.dir).ctx(|| format!("listing {}", self.dir.display()))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.ctx(|| format!("listing {}", self.dir.display()))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((alg, hex)) = name.split_once('-') else { continue };
            if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                if self.exists(&d) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Mounts overlayfs at `target` with the given snapshots as lower layers
    /// (`lowers` ordered bottom (base) to top), and `upper`/`work` dirs
    /// (created if missing) for the container's writable layer. With a single
    /// lower and `upper == None`, mounts it read-only (a bind mount: overlayfs
    /// needs two lowers without an upper). Uses the new mount API
    /// (`lowerdir+` per layer) when the kernel has it, so long lower lists do
    /// not hit the page-size limit of the legacy option string; falls back to
    /// mount(2) with `lowerdir=top:…:base`.
    pub fn mount_overlay(
        &self,
        lowers: &[Digest],
        upper: Option<&Path>,
        work: Option<&Path>,
        target: &Path,
    ) -> Result<()> {
        let ctx = || format!("mounting overlay at {}", target.display());
        if lowers.is_empty() {
            return Err(Error::Io { context: ctx(), source: std::io::Error::other("no lower layers") });
        }
        let mut dirs = Vec::with_capacity(lowers.len());
        for l in lowers {
            if !self.exists(l) {
                return Err(Error::Io {
                    context: ctx(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("snapshot {l} does not exist")),
                });
            }
            dirs.push(self.path(l));
        }
        // Top first, as overlayfs lists them.
        dirs.reverse();
        let rw = match (upper, work) {
            (Some(u), Some(w)) => {
                for d in [u, w] {
                    std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
                }
                Some((u, w))
            }
            (None, None) => None,
            _ => {
                return Err(Error::Io {
                    context: ctx(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "upper and work directories go together",
                    ),
                })
            }
        };
        if rw.is_none() && dirs.len() == 1 {
            rustix::mount::mount_bind(&dirs[0], target).ctx(ctx)?;
            let flags = rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY;
            if let Err(e) = rustix::mount::mount_remount(target, flags, "") {
                let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
                return Err(e).ctx(ctx);
            }
            return Ok(());
        }
        match mount_new_api(&dirs, rw, target) {
            Ok(()) => Ok(()),
            Err(NewApi::Unsupported) => mount_legacy(&dirs, rw, target).ctx(ctx),
            Err(NewApi::Failed(e)) => Err(e).ctx(ctx),
        }
    }

    fn open_dir(&self) -> Result<OwnedFd> {
        rustix::fs::open(&self.dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .ctx(|| format!("opening {}", self.dir.display()))
    }

    fn temp_name(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{TMP_PREFIX}{}-{n}-{nanos}", std::process::id())
    }

    /// A fresh temporary directory, created and locked.
    fn new_temp(&self, parent: &OwnedFd) -> Result<(String, OwnedFd)> {
        loop {
            let name = self.temp_name();
            match rustix::fs::mkdirat(parent, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e).ctx(|| format!("creating a temporary directory in {}", self.dir.display())),
            }
            let fd = rustix::fs::openat(
                parent,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("opening {}/{name}", self.dir.display()))?;
            rustix::fs::flock(&fd, FlockOperation::LockExclusive).ctx(|| format!("locking {name}"))?;
            return Ok((name, fd));
        }
    }

    /// Removes temporary directories nobody holds a lock on.
    fn remove_stale_temps(&self) -> Result<()> {
        let parent = self.open_dir()?;
        let rd = std::fs::read_dir(&self.dir).ctx(|| format!("listing {}", self.dir.display()))?;
        for e in rd {
            let e = e.ctx(|| format!("listing {}", self.dir.display()))?;
            let name = e.file_name();
            if !name.as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                continue;
            }
            let path = self.dir.join(&name);
            let fd = match rustix::fs::openat(
                &parent,
                name.as_os_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => Some(fd),
                Err(Errno::NOENT) => continue,
                // Not a directory, or unreadable: nobody can be using it.
                Err(_) => None,
            };
            if let Some(fd) = &fd {
                match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) => {}
                    Err(Errno::WOULDBLOCK) => continue, // in use by another process
                    Err(e) => return Err(e).ctx(|| format!("locking {}", path.display())),
                }
            }
            remove_all_at(parent.as_fd(), name.as_os_str()).ctx(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

/// `<alg>-<hex>`: the directory name of a snapshot.
fn entry_name(chain: &Digest) -> String {
    format!("{}-{}", chain.algorithm().name(), chain.hex())
}

enum NewApi {
    /// The kernel lacks the new mount API or `lowerdir+`.
    Unsupported,
    Failed(std::io::Error),
}

fn mount_new_api(
    lowers_top_first: &[PathBuf],
    rw: Option<(&Path, &Path)>,
    target: &Path,
) -> std::result::Result<(), NewApi> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
    let fail = |e: Errno| NewApi::Failed(e.into());
    let fs = match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS) => return Err(NewApi::Unsupported),
        Err(e) => return Err(fail(e)),
    };
    for (i, l) in lowers_top_first.iter().enumerate() {
        match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l.as_os_str()) {
            Ok(()) => {}
            // Before Linux 6.8 overlayfs does not know `lowerdir+`.
            Err(Errno::INVAL) if i == 0 => return Err(NewApi::Unsupported),
            Err(e) => return Err(fail(e)),
        }
    }
    if let Some((u, w)) = rw {
        rustix::mount::fsconfig_set_string(&fs, "upperdir", u.as_os_str()).map_err(fail)?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", w.as_os_str()).map_err(fail)?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(fail)?;
    let attrs = if rw.is_none() { MountAttrFlags::MOUNT_ATTR_RDONLY } else { MountAttrFlags::empty() };
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(fail)?;
    rustix::mount::move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH).map_err(fail)
}

fn mount_legacy(lowers_top_first: &[PathBuf], rw: Option<(&Path, &Path)>, target: &Path) -> std::io::Result<()> {
    let bad = |p: &Path| {
        let b = p.as_os_str().as_bytes();
        b.contains(&b':') || b.contains(&b',')
    };
    if lowers_top_first.iter().any(|p| bad(p)) || rw.is_some_and(|(u, w)| bad(u) || bad(w)) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "overlay paths containing ':' or ',' need the new mount API (Linux 6.8+)",
        ));
    }
    let mut data = b"lowerdir=".to_vec();
    for (i, l) in lowers_top_first.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(l.as_os_str().as_bytes());
    }
    if let Some((u, w)) = rw {
        data.extend_from_slice(b",upperdir=");
        data.extend_from_slice(u.as_os_str().as_bytes());
        data.extend_from_slice(b",workdir=");
        data.extend_from_slice(w.as_os_str().as_bytes());
    }
    let data = std::ffi::CString::new(data).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if rw.is_none() { rustix::mount::MountFlags::RDONLY } else { rustix::mount::MountFlags::empty() };
    rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str())).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::unpack::{unpack_layer, UnpackOptions};

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Lazily unmounts on drop, so a failed assertion leaves no mount.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }

    #[test]
    fn chain_ids() {
        let (a, b, c) = (digest('a'), digest('b'), digest('c'));
        assert_eq!(Snapshots::chain_id(None, &a), a, "a base layer's chain ID is its diff ID");
        let ab = Snapshots::chain_id(Some(&a), &b);
        assert_eq!(ab.to_string(), "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
        let abc = Snapshots::chain_id(Some(&ab), &c);
        assert_eq!(abc.to_string(), "sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588");
    }

    #[test]
    fn create_exists_list_remove() {
        let root = tempfile::tempdir().unwrap();
        let s = Snapshots::open(root.path()).unwrap();
        let snapdir = root.path().join("snapshots");
        assert_eq!(std::fs::metadata(&snapdir).unwrap().permissions().mode() & 0o777, 0o700);
        let a = digest('a');
        assert!(!s.exists(&a));
        assert!(s.list().unwrap().is_empty());
        s.create(&a, |dir| {
            std::fs::write(dir.join("f"), b"x").unwrap();
            Ok(())
        })
        .unwrap();
        assert!(s.exists(&a));
        assert_eq!(s.path(&a), snapdir.join(format!("sha256-{}", "a".repeat(64))).join("fs"));
        assert_eq!(std::fs::read(s.path(&a).join("f")).unwrap(), b"x");
        assert_eq!(s.list().unwrap(), vec![a.clone()]);
        // Existing: fill is not called.
        s.create(&a, |_| panic!("fill called for an existing snapshot")).unwrap();
        // Removal, also of read-only contents.
        std::fs::create_dir(s.path(&a).join("ro")).unwrap();
        std::fs::write(s.path(&a).join("ro/f"), b"").unwrap();
        std::fs::set_permissions(s.path(&a).join("ro"), std::fs::Permissions::from_mode(0o500)).unwrap();
        s.remove(&a).unwrap();
        assert!(!s.exists(&a));
        assert!(entries(&snapdir).is_empty(), "{:?}", entries(&snapdir));
        s.remove(&a).unwrap();
    }

    #[test]
    fn failed_create_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let s = Snapshots::open(root.path()).unwrap();
        let a = digest('a');
        let err = s
            .create(&a, |dir| {
                std::fs::create_dir(dir.join("ro")).unwrap();
                std::fs::write(dir.join("ro/f"), b"").unwrap();
                std::fs::set_permissions(dir.join("ro/f"), std::fs::Permissions::from_mode(0o000)).unwrap();
                std::fs::set_permissions(dir.join("ro"), std::fs::Permissions::from_mode(0o000)).unwrap();
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).unwrap();
                if is_root() {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        dir.join("wh"),
                        rustix::fs::FileType::CharacterDevice,
                        Mode::empty(),
                        0,
                    )
                    .unwrap();
                }
                Err(Error::BadLayer { layer: "l".into(), reason: "boom".into() })
            })
            .unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert!(!s.exists(&a));
        assert!(entries(&root.path().join("snapshots")).is_empty());
        // An unpack that fails halfway is cleaned up the same way.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("f").unwrap();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &b"data"[..]).unwrap();
        let mut bytes = tar.into_inner().unwrap();
        bytes.truncate(512 + 2);
        let opts = UnpackOptions { layer: "l".into(), privileged: false };
        s.create(&a, |dir| unpack_layer(&bytes[..], dir, &opts).map(drop)).unwrap_err();
        assert!(entries(&root.path().join("snapshots")).is_empty());
    }

    #[test]
    fn open_removes_stale_temps_only() {
        let root = tempfile::tempdir().unwrap();
        let snapdir = root.path().join("snapshots");
        let s = Snapshots::open(root.path()).unwrap();
        std::fs::create_dir_all(snapdir.join(".tmp-stale/fs/d")).unwrap();
        std::fs::set_permissions(snapdir.join(".tmp-stale/fs"), std::fs::Permissions::from_mode(0o500)).unwrap();
        std::fs::write(snapdir.join(".tmp-file"), b"").unwrap();
        // One in use by a live writer (we hold its lock).
        let parent = s.open_dir().unwrap();
        let (busy, _lock) = s.new_temp(&parent).unwrap();
        Snapshots::open(root.path()).unwrap();
        assert_eq!(entries(&snapdir), vec![busy]);
    }

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_path(p).unwrap();
            h.set_mtime(0);
            if p.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            } else {
                h.set_mode(0o644);
            }
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn overlay_merges_layers_with_whiteouts() {
        if !is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let s = Snapshots::open(root.path()).unwrap();
        let l1 = layer(&[("etc/", b""), ("etc/a", b"a1"), ("etc/b", b"b1"), ("opq/", b""), ("opq/old", b"o")]);
        let l2 = layer(&[("etc/.wh.a", b""), ("opq/.wh..wh..opq", b""), ("opq/new", b"n"), ("etc/c", b"c2")]);
        let d1 = Digest::sha256_of(&l1);
        let d2 = Digest::sha256_of(&l2);
        let c1 = Snapshots::chain_id(None, &d1);
        let c2 = Snapshots::chain_id(Some(&c1), &d2);
        for (c, data) in [(&c1, &l1), (&c2, &l2)] {
            let opts = UnpackOptions { layer: c.to_string(), privileged: true };
            s.create(c, |dir| unpack_layer(&data[..], dir, &opts).map(drop)).unwrap();
        }

        // Read-write: both lowers plus an upper.
        let target = root.path().join("merged");
        std::fs::create_dir(&target).unwrap();
        let upper = root.path().join("c/upper");
        let work = root.path().join("c/work");
        s.mount_overlay(&[c1.clone(), c2.clone()], Some(&upper), Some(&work), &target).unwrap();
        let guard = Unmount(target.clone());
        assert!(!target.join("etc/a").exists(), "whited out");
        assert_eq!(std::fs::read(target.join("etc/b")).unwrap(), b"b1");
        assert_eq!(std::fs::read(target.join("etc/c")).unwrap(), b"c2");
        assert!(!target.join("opq/old").exists(), "hidden by the opaque dir");
        assert_eq!(std::fs::read(target.join("opq/new")).unwrap(), b"n");
        std::fs::write(target.join("written"), b"w").unwrap();
        assert_eq!(std::fs::read(upper.join("written")).unwrap(), b"w");
        drop(guard);

        // Read-only: two lowers, no upper.
        s.mount_overlay(&[c1.clone(), c2.clone()], None, None, &target).unwrap();
        let guard = Unmount(target.clone());
        assert_eq!(std::fs::read(target.join("etc/b")).unwrap(), b"b1");
        assert!(!target.join("etc/a").exists());
        let e = std::fs::write(target.join("x"), b"").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        drop(guard);

        // Read-only: a single lower.
        s.mount_overlay(std::slice::from_ref(&c1), None, None, &target).unwrap();
        let guard = Unmount(target.clone());
        assert_eq!(std::fs::read(target.join("etc/a")).unwrap(), b"a1");
        let e = std::fs::write(target.join("x"), b"").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        drop(guard);

        // Many lowers: more than the legacy option string could hold.
        let mut chain = c2.clone();
        let mut lowers = vec![c1.clone(), c2.clone()];
        for i in 0..60u32 {
            let data = layer(&[(&format!("l{i}"), b"")]);
            let c = Snapshots::chain_id(Some(&chain), &Digest::sha256_of(&data));
            let opts = UnpackOptions { layer: c.to_string(), privileged: true };
            s.create(&c, |dir| unpack_layer(&data[..], dir, &opts).map(drop)).unwrap();
            lowers.push(c.clone());
            chain = c;
        }
        let long: usize = lowers.iter().map(|l| s.path(l).as_os_str().len() + 1).sum();
        assert!(long > 4096, "lower list of {long} bytes");
        s.mount_overlay(&lowers, None, None, &target).unwrap();
        let guard = Unmount(target.clone());
        assert!(target.join("l0").exists() && target.join("l59").exists() && target.join("etc/b").exists());
        drop(guard);

        assert!(s.mount_overlay(&[digest('f')], None, None, &target).is_err(), "missing snapshot");
    }
}
