//! Files in and out of a container's root filesystem: `docker cp` (both
//! directions), `export`, and `diff`.
//!
//! Every path a request names is resolved inside the container's root with
//! openat2 `RESOLVE_IN_ROOT`, so `..` and symlinks (absolute or relative)
//! can never lead outside it; trees are then read from the resolved
//! descriptor without following symlinks, and archives are extracted with
//! the image unpacker, which resolves every entry the same way. A stopped
//! container's rootfs is mounted for the operation and unmounted after.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_runtime::inroot::RootDir;
use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};

/// What `HEAD /archive` reports (Docker's `X-Docker-Container-Path-Stat`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PathStat {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Go's os.FileMode bits (type bits in Go's positions).
    pub mode: u32,
    /// RFC 3339.
    pub mtime: String,
    /// Symlink target, if the path is one.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Go's `os.FileMode` for a Unix mode (what docker's client decodes).
fn go_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHARDEV: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut m = mode & 0o777;
    match mode & libc::S_IFMT {
        libc::S_IFDIR => m |= DIR,
        libc::S_IFLNK => m |= SYMLINK,
        libc::S_IFBLK => m |= DEVICE,
        libc::S_IFCHR => m |= DEVICE | CHARDEV,
        libc::S_IFIFO => m |= PIPE,
        libc::S_IFSOCK => m |= SOCKET,
        _ => {}
    }
    if mode & libc::S_ISUID != 0 {
        m |= SETUID;
    }
    if mode & libc::S_ISGID != 0 {
        m |= SETGID;
    }
    if mode & libc::S_ISVTX != 0 {
        m |= STICKY;
    }
    m
}

fn proc_path(f: &std::fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f)))
}

fn not_found(path: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOENT) {
        Error::NoSuchPath(path.to_string())
    } else {
        Error::Io { context: format!("resolving {path} in the container"), source: e }
    }
}

/// Appends `src` (an object reached through a resolved descriptor) to `tar`
/// as `name`, recursing into directories without following symlinks.
///
/// At the top, `src` is `/proc/self/fd/N`, itself a (magic) symlink: it is
/// followed there — it names the object already resolved inside the
/// root — or the archive would hold a link to the host path instead of the
/// object. Below it, nothing is followed.
fn append_tree(tar: &mut tar::Builder<impl Write>, src: &Path, name: &Path, top: bool) -> std::io::Result<()> {
    let meta = if top { std::fs::metadata(src)? } else { std::fs::symlink_metadata(src)? };
    if meta.is_dir() {
        tar.append_dir(name, src)?;
        let mut entries: Vec<_> = std::fs::read_dir(src)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            append_tree(tar, &e.path(), &name.join(e.file_name()), false)?;
        }
        Ok(())
    } else if top && meta.is_file() {
        tar.append_file(name, &mut std::fs::File::open(src)?)
    } else {
        tar.append_path_with_name(src, name)
    }
}

/// What a `cp` path names inside the root. Like docker, a symlink as the
/// last component is the link itself (`docker cp -L` asks for its target
/// next), unless the path ends in `/` or `/.`, or is the root.
enum Named {
    /// A symlink, not followed: its own metadata, the text of the link,
    /// and where it leads inside the container ("" when nowhere).
    Link { meta: Box<std::fs::Metadata>, text: PathBuf, target: String },
    /// Anything else, resolved (following symlinks inside the root).
    Object(std::fs::File),
}

fn lookup(root: &RootDir, rootfs: &Path, path: &str) -> Result<Named> {
    let p = Path::new(path);
    let follow = path.ends_with('/') || path.ends_with("/.") || p.file_name().is_none();
    if !follow {
        if let (Some(parent), Some(name)) = (p.parent(), p.file_name()) {
            let dir = root.resolve(parent).map_err(|e| not_found(path, e))?;
            let link = proc_path(&dir).join(name);
            let meta = std::fs::symlink_metadata(&link).map_err(|e| not_found(path, e))?;
            if meta.file_type().is_symlink() {
                let text = std::fs::read_link(&link).ctx(|| format!("reading the link {path}"))?;
                // Where it leads, as a path inside the container.
                let target = root
                    .resolve(p)
                    .ok()
                    .and_then(|f| std::fs::read_link(proc_path(&f)).ok())
                    .and_then(|host| host.strip_prefix(rootfs).ok().map(|r| Path::new("/").join(r)))
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                return Ok(Named::Link { meta: Box::new(meta), text, target });
            }
        }
    }
    Ok(Named::Object(root.resolve(p).map_err(|e| not_found(path, e))?))
}

impl Engine {
    /// Runs `f` with the container's root filesystem mounted (mounting it
    /// for the duration when the container is not running).
    pub fn with_rootfs<T>(&self, id: &str, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let c = self.resolve(id)?;
        let paths = self.container_paths(&c.record.id);
        let rootfs = paths.rootfs();
        let mounted_here = if crate::engine::is_mountpoint(&rootfs) {
            false
        } else {
            let lowers: Vec<berth_image::Digest> =
                c.record.layers.iter().map(|l| l.parse()).collect::<berth_image::Result<_>>()?;
            self.images().snapshots().mount_overlay(&lowers, Some(&paths.upper()), Some(&paths.work()), &rootfs)?;
            true
        };
        let res = f(&rootfs);
        if mounted_here && !matches!(self.current_state(&c.record.id).status, crate::record::Status::Running) {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        res
    }

    /// Stat of `path` in the container (`HEAD /archive`); a symlink is
    /// reported as itself, with where it leads in `linkTarget`.
    pub fn archive_stat(&self, id: &str, path: &str) -> Result<PathStat> {
        self.with_rootfs(id, |rootfs| {
            let root = RootDir::open(rootfs).ctx(|| format!("opening {}", rootfs.display()))?;
            let (meta, link_target) = match lookup(&root, rootfs, path)? {
                Named::Link { meta, target, .. } => (*meta, target),
                Named::Object(f) => (std::fs::metadata(proc_path(&f)).ctx(|| format!("stat {path}"))?, String::new()),
            };
            let name =
                Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into());
            Ok(PathStat {
                name,
                size: meta.len(),
                mode: go_mode(meta.mode()),
                mtime: berth_runtime::state::rfc3339(meta.mtime(), meta.mtime_nsec() as u32),
                link_target,
            })
        })
    }

    /// Writes a tar of `path` in the container to `out` (`docker cp
    /// CONTAINER:path …`): a file as itself, a directory with its tree,
    /// named by the path's base name.
    pub fn archive_get(&self, id: &str, path: &str, out: impl Write) -> Result<PathStat> {
        let stat = self.archive_stat(id, path)?;
        self.with_rootfs(id, |rootfs| {
            let root = RootDir::open(rootfs).ctx(|| format!("opening {}", rootfs.display()))?;
            let mut tar = tar::Builder::new(out);
            tar.follow_symlinks(false);
            let name = if stat.name == "/" { ".".to_string() } else { stat.name.clone() };
            match lookup(&root, rootfs, path)? {
                Named::Link { meta, text, .. } => {
                    let mut h = tar::Header::new_gnu();
                    h.set_metadata(&meta);
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    tar.append_link(&mut h, &name, &text).ctx(|| format!("archiving {path}"))?;
                }
                Named::Object(f) => {
                    append_tree(&mut tar, &proc_path(&f), Path::new(&name), true)
                        .ctx(|| format!("archiving {path}"))?;
                }
            }
            tar.finish().ctx(|| format!("archiving {path}"))?;
            Ok(())
        })?;
        Ok(stat)
    }

    /// Extracts a tar into the directory `path` in the container (`docker
    /// cp … CONTAINER:path`), every entry resolved inside the root.
    pub fn archive_put(&self, id: &str, path: &str, tar: impl Read) -> Result<()> {
        self.with_rootfs(id, |rootfs| {
            let root = RootDir::open(rootfs).ctx(|| format!("opening {}", rootfs.display()))?;
            let f = root.resolve(Path::new(path)).map_err(|e| not_found(path, e))?;
            if !std::fs::metadata(proc_path(&f)).map(|m| m.is_dir()).unwrap_or(false) {
                return Err(Error::BadRequest(format!("extraction point is not a directory: {path}")));
            }
            let opts = berth_image::unpack::UnpackOptions {
                layer: format!("archive for {path}"),
                privileged: nix::unistd::geteuid().is_root(),
            };
            berth_image::unpack::unpack_layer(tar, &proc_path(&f), &opts)?;
            Ok(())
        })
    }

    /// A tar of the whole root filesystem (`docker export`).
    pub fn export(&self, id: &str, out: impl Write) -> Result<()> {
        self.with_rootfs(id, |rootfs| {
            let root = std::fs::File::open(rootfs).ctx(|| format!("opening {}", rootfs.display()))?;
            let mut tar = tar::Builder::new(out);
            tar.follow_symlinks(false);
            let base = proc_path(&root);
            let mut entries: Vec<_> = std::fs::read_dir(&base).ctx(|| "reading rootfs".into())?.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                append_tree(&mut tar, &e.path(), Path::new(&e.file_name()), false).ctx(|| "exporting".into())?;
            }
            tar.finish().ctx(|| "exporting".into())
        })
    }

    /// Changes against the image (`docker diff`): (path, kind) with kind 0
    /// changed, 1 added, 2 deleted; read from the container's upper dir.
    pub fn diff(&self, id: &str) -> Result<Vec<(String, u8)>> {
        let c = self.resolve(id)?;
        let paths = self.container_paths(&c.record.id);
        let lowers: Vec<PathBuf> =
            c.record.layers.iter().filter_map(|l| l.parse().ok()).map(|d| self.images().snapshots().path(&d)).collect();
        let in_image = |rel: &Path| lowers.iter().any(|l| l.join(rel).symlink_metadata().is_ok());
        let mut out = Vec::new();
        fn walk(dir: &Path, rel: &Path, out: &mut Vec<(String, u8)>, in_image: &dyn Fn(&Path) -> bool) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let r = rel.join(e.file_name());
                let Ok(meta) = e.path().symlink_metadata() else { continue };
                let whiteout = meta.file_type().is_char_device_like() && meta.rdev() == 0;
                let kind = if whiteout {
                    2
                } else if in_image(&r) {
                    0
                } else {
                    1
                };
                out.push((format!("/{}", r.display()), kind));
                if meta.is_dir() && !whiteout {
                    walk(&e.path(), &r, out, in_image);
                }
            }
        }
        walk(&paths.upper(), Path::new(""), &mut out, &in_image);
        Ok(out)
    }
}

/// Character device check through std's `FileTypeExt`.
trait CharDev {
    fn is_char_device_like(&self) -> bool;
}

impl CharDev for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_char_device(self)
    }
}
