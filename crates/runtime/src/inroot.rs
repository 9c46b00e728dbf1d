//! Paths resolved inside a container's root filesystem.
//!
//! Every lookup treats the rootfs as `/`: absolute symlinks and `..` stay
//! inside it, so an image cannot send a mount target or a device node out
//! to the host. The kernel does this itself with `openat2(RESOLVE_IN_ROOT)`
//! (Linux 5.6+), which is what [`RootDir`] uses; on older kernels it falls
//! back to `pathrs`' userspace resolver.
//!
//! Why not `pathrs` always: its handles are fine, but each lookup also
//! opens and verifies procfs (`/proc/thread-self`, mount ids, fsopen) as a
//! hardening step: ~40 syscalls per path, most of a container's setup time.
//! The kernel's resolver needs none of that.

use std::fs::{File, Permissions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// How many times a lookup is retried when the kernel reports a concurrent
/// rename or mount (`EAGAIN` from `RESOLVE_IN_ROOT`).
const RETRIES: usize = 16;

/// An open container root under which paths are resolved.
pub struct RootDir {
    fd: OwnedFd,
    /// Set when the kernel lacks `openat2`.
    fallback: Option<pathrs::Root>,
}

impl std::fmt::Debug for RootDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootDir").field("fd", &self.fd).field("fallback", &self.fallback.is_some()).finish()
    }
}

impl RootDir {
    /// Opens `path` (a host path) as the root.
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let probe = rustix::fs::openat2(&fd, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT);
        let fallback = match probe {
            Err(rustix::io::Errno::NOSYS) => {
                Some(pathrs::Root::open(path).map_err(|e| crate::error::pathrs_to_io(&e))?)
            }
            _ => None,
        };
        Ok(RootDir { fd, fallback })
    }

    /// An `O_PATH` descriptor of the existing object at `path` (symlinks
    /// followed, inside the root; magic links refused).
    pub fn resolve(&self, path: &Path) -> io::Result<File> {
        if let Some(root) = &self.fallback {
            let h = root.resolve(path).map_err(|e| crate::error::pathrs_to_io(&e))?;
            return Ok(File::from(OwnedFd::from(h)));
        }
        self.openat2(path, OFlags::PATH | OFlags::CLOEXEC).map(File::from)
    }

    /// Opens the existing regular file at `path` (resolved inside the
    /// root) for reading: resolved to an `O_PATH` descriptor first, then
    /// reopened through `/proc/self/fd`, so the path is walked only once.
    pub fn open_read(&self, path: &Path) -> io::Result<File> {
        let f = self.resolve(path)?;
        if !f.metadata()?.is_file() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        File::open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f)))
    }

    /// Creates the directory `path` and its missing parents (mode 0755
    /// before umask), and returns an `O_PATH` descriptor of it.
    pub fn mkdir_all(&self, path: &Path) -> io::Result<File> {
        if let Some(root) = &self.fallback {
            let h = root.mkdir_all(path, &Permissions::from_mode(0o755)).map_err(|e| crate::error::pathrs_to_io(&e))?;
            return Ok(File::from(OwnedFd::from(h)));
        }
        if let Ok(f) = self.openat2(Path::new(path), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC) {
            return Ok(f.into());
        }
        // Walk down from the deepest prefix that exists (usually the
        // parent: found first, looking upwards); every prefix is resolved
        // from the root again, so symlinks met on the way (absolute or
        // `..`) are followed as inside the container, never relative to a
        // subdirectory.
        let parts = normal_components(path);
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut found = None;
        for n in (1..parts.len()).rev() {
            let prefix: PathBuf =
                std::iter::once(PathBuf::from("/")).chain(parts[..n].iter().map(PathBuf::from)).collect();
            if let Ok(fd) = self.openat2(&prefix, flags) {
                found = Some((n, prefix, fd));
                break;
            }
        }
        let (start, mut prefix, mut dir) = match found {
            Some(f) => f,
            None => (0, PathBuf::from("/"), self.openat2(Path::new("/"), flags)?),
        };
        for part in parts.into_iter().skip(start) {
            prefix.push(&part);
            dir = match self.openat2(&prefix, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // `part` is a single component: mkdirat never follows it.
                    match rustix::fs::mkdirat(&dir, &part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.openat2(&prefix, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(File::from(dir))
    }

    /// Creates an empty regular file at `path` (mode 0644, parents as
    /// needed) unless something already exists there, and returns an
    /// `O_PATH` descriptor of what is there.
    pub fn create_file(&self, path: &Path) -> io::Result<File> {
        if let Ok(f) = self.resolve(path) {
            return Ok(f);
        }
        let name = path.file_name().ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let parent = self.mkdir_all(path.parent().unwrap_or(Path::new("/")))?;
        if let Some(root) = &self.fallback {
            match root.create_file(
                path,
                pathrs::flags::OpenFlags::O_WRONLY | pathrs::flags::OpenFlags::O_CLOEXEC,
                &Permissions::from_mode(0o644),
            ) {
                Ok(_) => {}
                Err(e) if crate::error::pathrs_to_io(&e).raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(crate::error::pathrs_to_io(&e)),
            }
            return self.resolve(path);
        }
        // O_NOFOLLOW|O_EXCL: never create through a dangling symlink.
        match rustix::fs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(_) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.resolve(path)
    }

    /// `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
    /// retried while the kernel reports a concurrent rename (`EAGAIN`).
    fn openat2(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        for _ in 0..RETRIES {
            match rustix::fs::openat2(&self.fd, path, flags, Mode::empty(), resolve) {
                Err(rustix::io::Errno::AGAIN) => continue,
                r => return r.map_err(io::Error::from),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }
}

/// The normal components of `path`, after folding `.` and `..` lexically
/// (`..` at the top stays at the root, as the kernel does for IN_ROOT).
fn normal_components(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(PathBuf::from(n)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, RootDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../..", root.join("etc/up")).expect("symlink");
        let r = RootDir::open(&root).expect("open");
        (tmp, r)
    }

    fn host_path(f: &File) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f))).expect("readlink")
    }

    #[test]
    fn absolute_symlinks_and_dotdot_stay_inside() {
        let (tmp, r) = setup();
        let root = tmp.path().join("root");
        assert_eq!(host_path(&r.resolve(Path::new("/abs")).expect("abs")), root.join("etc"));
        assert_eq!(host_path(&r.resolve(Path::new("/etc/up")).expect("up")), root);
        assert_eq!(host_path(&r.resolve(Path::new("/../../..")).expect("dotdot")), root);
    }

    #[test]
    fn mkdir_all_through_symlinks_creates_inside() {
        let (tmp, r) = setup();
        let root = tmp.path().join("root");
        let d = r.mkdir_all(Path::new("/abs/new/deeper")).expect("mkdir_all");
        assert_eq!(host_path(&d), root.join("etc/new/deeper"));
        let d = r.mkdir_all(Path::new("/etc/up/escape")).expect("mkdir_all up");
        assert_eq!(host_path(&d), root.join("escape"));
        assert!(!tmp.path().join("escape").exists());
    }

    #[test]
    fn create_file_never_follows_out() {
        let (tmp, r) = setup();
        let root = tmp.path().join("root");
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("dangling")).expect("symlink");
        let f = r.create_file(Path::new("/etc/up/file")).expect("create");
        assert_eq!(host_path(&f), root.join("file"));
        // A dangling absolute symlink resolves in-root: the file lands inside.
        let _ = r.create_file(Path::new("/dangling"));
        assert!(!tmp.path().join("outside").exists());
    }
}
