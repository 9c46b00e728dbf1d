//! Safe extraction of layer tarballs into a snapshot directory.
//!
//! The tar stream is parsed with the `tar` crate, but every file is created
//! here, relative to a descriptor of the destination: parent directories are
//! looked up with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so
//! symlinks inside the layer (absolute or `..`) are followed as if the
//! destination were `/`, and the last component is made with `*at` calls that
//! never follow it. Nothing a layer says can write outside the destination.
//!
//! Paths are cleaned lexically as Docker and containerd do: a leading `/` is
//! dropped, `.` is ignored, `..` removes the previous component and is refused
//! when it would climb above the root.
//!
//! OCI whiteouts become overlayfs ones: `dir/.wh.name` a character device
//! 0:0 named `name`, `dir/.wh..wh..opq` the `trusted.overlay.opaque=y`
//! xattr on `dir`.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::manifest::Compression;

/// Longest path the kernel accepts (`PATH_MAX`, including the NUL).
const PATH_MAX: usize = 4096;
/// Longest single path component (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// How many dangling symlinks one parent lookup may follow while creating
/// missing directories (the kernel's own limit is 40).
const MAX_LINKS: u32 = 40;
/// How often a lookup is retried when the kernel reports a concurrent
/// rename (`EAGAIN` from `RESOLVE_IN_ROOT`).
const RETRIES: usize = 16;
/// OCI whiteout prefix.
const WH_PREFIX: &[u8] = b".wh.";
/// AUFS metadata prefix (`.wh..wh.`): such entries are ignored.
const WH_META_PREFIX: &[u8] = b".wh..wh.";
/// The opaque-directory marker.
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
/// The overlayfs xattr marking an opaque directory.
const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";

/// What happened during an unpack (for progress and tests).
#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    /// Entries applied (files, directories, links, nodes, whiteouts).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers created.
    pub whiteouts: u64,
}

/// Options for one layer.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Name used in error messages (the layer digest).
    pub layer: String,
    /// Create device nodes and keep file ownership (true when running as root).
    pub privileged: bool,
}

/// Wraps `r` in a decompressor for `c`.
pub fn decompress<'a>(c: Compression, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r).ctx(|| "starting zstd decoder".into())?),
    })
}

/// Extracts the uncompressed tar stream `tar` into the existing, empty directory `dest`.
///
/// On error the directory is left as it is; removing it is the caller's job.
pub fn unpack_layer(tar: impl Read, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let root = rustix::fs::open(dest, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .ctx(|| format!("layer {}: opening {}", opts.layer, dest.display()))?;
    // A default ACL on the destination would decide modes instead of the umask.
    let acl = rustix::fs::getxattr(dest, "system.posix_acl_default", &mut [0u8; 0]).is_ok();
    let mut u = Unpacker {
        root,
        opts,
        stats: UnpackStats::default(),
        dirs: BTreeMap::new(),
        buf: vec![0; 1 << 16],
        parent: None,
        removed: false,
        creator: (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()),
        umask: if acl { None } else { current_umask() },
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(|e| u.bad(format!("reading tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| u.bad(format!("reading tar: {e}")))?;
        u.entry(&mut entry)?;
    }
    u.finish_dirs()?;
    Ok(u.stats)
}

/// Metadata of one tar entry, as applied to what it creates.
#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Timespec,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// State of one unpack.
struct Unpacker<'o> {
    /// `O_PATH` descriptor of the destination.
    root: OwnedFd,
    opts: &'o UnpackOptions,
    stats: UnpackStats,
    /// Directories whose mode and times are applied at the end (children
    /// change a directory's mtime, and a read-only mode would stop them
    /// being created without privileges). Keyed by cleaned path; the last
    /// entry for a path wins.
    dirs: BTreeMap<Vec<u8>, Meta>,
    /// Copy buffer for file contents.
    buf: Vec<u8>,
    /// The parent directory of the last entry (cleaned path, descriptor):
    /// a layer lists a directory's files one after the other, and each
    /// would otherwise resolve its parent from the root again. Dropped
    /// whenever an entry removes anything (a path may then lead elsewhere).
    parent: Option<(Vec<u8>, OwnedFd)>,
    /// This entry removed something: the cached parent is not kept.
    removed: bool,
    /// Who creates the files (euid, egid): an entry owned by them needs no chown.
    creator: (u32, u32),
    /// The process umask, when files may be created with their final mode
    /// at once (none: every file gets a chmod). Off once a directory gets
    /// a default ACL, which then decides new files' modes instead.
    umask: Option<u32>,
}

/// The process umask, from /proc/self/status (reading it with umask(2)
/// would change it for a moment, for every thread).
fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The kinds of entry this unpacker writes.
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl Unpacker<'_> {
    fn bad(&self, reason: String) -> Error {
        Error::BadLayer { layer: self.opts.layer.clone(), reason }
    }

    fn refuse(&self, entry: &[u8], reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            layer: self.opts.layer.clone(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    /// An I/O error while applying `entry`.
    fn io(&self, entry: &[u8], what: &str, e: impl Into<io::Error>) -> Error {
        Error::Io {
            context: format!("layer {}: entry {:?}: {what}", self.opts.layer, String::from_utf8_lossy(entry)),
            source: e.into(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::GNUSparse => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            // Global PAX headers carry nothing berth uses (Docker ignores them too).
            tar::EntryType::XGlobalHeader => return Ok(()),
            other => {
                return Err(self.refuse(&raw_path, format!("unsupported entry type {:?}", other.as_byte() as char)))
            }
        };
        let comps = self.clean(&raw_path, &raw_path, "path")?;
        let meta = self.meta(entry, &raw_path)?;

        // Whiteouts: never written as what the entry says they are.
        if let Some((name, parent)) = comps.split_last() {
            if name.starts_with(WH_PREFIX) {
                return self.whiteout(&raw_path, parent, name);
            }
        }

        let Some((name, parent)) = comps.split_last() else {
            // The root itself: only a directory entry makes sense.
            return match kind {
                Kind::Dir => {
                    let dir = self.reopen_dir(&raw_path, self.root.as_fd(), OsStr::new("."))?;
                    self.chown_fd(&raw_path, &dir, &meta)?;
                    self.set_xattrs_fd(&raw_path, &dir, &meta)?;
                    self.dirs.insert(Vec::new(), meta);
                    self.stats.entries += 1;
                    Ok(())
                }
                _ => Err(self.refuse(&raw_path, "entry would replace the root directory")),
            };
        };
        let name = OsStr::from_bytes(name);
        let key = parent.join(&b'/');
        let parent = match self.parent.take() {
            Some((k, fd)) if k == key => fd,
            _ => self.mkdir_all(&raw_path, parent)?,
        };
        self.removed = false;
        let written = self.apply(entry, kind, &raw_path, &comps, name, &parent, meta)?;
        if !self.removed {
            self.parent = Some((key, parent));
        }
        if written {
            self.stats.entries += 1;
        }
        Ok(())
    }

    /// Writes the entry `raw_path` (cleaned: `comps`) as `parent/name`;
    /// false if it is skipped.
    #[allow(clippy::too_many_arguments)]
    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: Kind,
        raw_path: &[u8],
        comps: &[&[u8]],
        name: &OsStr,
        parent: &OwnedFd,
        meta: Meta,
    ) -> Result<bool> {
        match kind {
            Kind::Dir => {
                match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        self.removed = true;
                        remove_all_at(parent.as_fd(), name).map_err(|e| self.io(&raw_path, "replacing", e))?;
                        self.mkdir(&raw_path, parent, name)?;
                    }
                    Err(Errno::NOENT) => self.mkdir(&raw_path, parent, name)?,
                    Err(e) => return Err(self.io(&raw_path, "inspecting", e)),
                }
                let dir = self.reopen_dir(&raw_path, parent.as_fd(), name)?;
                self.chown_fd(&raw_path, &dir, &meta)?;
                self.set_xattrs_fd(&raw_path, &dir, &meta)?;
                if meta.xattrs.iter().any(|(k, _)| k == "system.posix_acl_default") {
                    // Files made in it get the ACL's modes, not the umask's.
                    self.umask = None;
                }
                self.dirs.insert(comps.join(&b'/'), meta);
            }
            Kind::File => {
                // Owned by whoever unpacks (root, as a rule) and with a mode
                // the umask leaves alone: created with its final mode, no
                // chown or chmod after. Otherwise 0600 first, the owner,
                // then the mode (chown clears setuid and setgid).
                let chown = self.opts.privileged && (meta.uid, meta.gid) != self.creator;
                let exact = self.umask.is_some_and(|u| meta.mode & u == 0) && !(chown && meta.mode & 0o6000 != 0);
                let create = |parent: &OwnedFd| {
                    rustix::fs::openat(
                        parent,
                        name,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::from_raw_mode(if exact { meta.mode } else { 0o600 }),
                    )
                };
                // Try first: a path that is already there (a later entry
                // wins) is the exception.
                let fd = match create(parent) {
                    Err(Errno::EXIST) => {
                        self.replace(&raw_path, parent, name)?;
                        create(parent)
                    }
                    r => r,
                }
                .map_err(|e| self.io(&raw_path, "creating file", e))?;
                let mut file = File::from(fd);
                let expected = entry.size();
                let mut written = 0u64;
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.bad(format!("entry {:?}: reading: {e}", lossy(&raw_path)))),
                    };
                    file.write_all(&self.buf[..n]).map_err(|e| self.io(&raw_path, "writing", e))?;
                    written += n as u64;
                }
                let sparse = entry.header().entry_type() == tar::EntryType::GNUSparse;
                if !sparse && written != expected {
                    return Err(
                        self.bad(format!("entry {:?}: truncated: {written} of {expected} bytes", lossy(&raw_path)))
                    );
                }
                self.stats.bytes += written;
                if chown {
                    self.chown_fd(&raw_path, &file, &meta)?;
                }
                if !exact {
                    rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode))
                        .map_err(|e| self.io(&raw_path, "setting mode", e))?;
                }
                self.set_xattrs_fd(&raw_path, &file, &meta)?;
                rustix::fs::futimens(&file, &times(&meta)).map_err(|e| self.io(&raw_path, "setting times", e))?;
            }
            Kind::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if target.is_empty() {
                    return Err(self.refuse(&raw_path, "symlink without a target"));
                }
                self.check_name(&raw_path, &target, "symlink target")?;
                self.replace(&raw_path, parent, name)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), parent, name)
                    .map_err(|e| self.io(&raw_path, "creating symlink", e))?;
                self.after_node(&raw_path, parent, name, &meta, false)?;
            }
            Kind::Hardlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let tcomps = self.clean(&raw_path, &target, "hardlink target")?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(self.refuse(&raw_path, "hardlink to the root directory"));
                };
                if tcomps == comps {
                    return Err(self.refuse(&raw_path, "hardlink to itself"));
                }
                let tname = OsStr::from_bytes(tname);
                let tparent = match self.lookup_dir(tparent) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                        return Err(
                            self.refuse(&raw_path, format!("hardlink target {:?} does not exist", lossy(&target)))
                        )
                    }
                    Err(e) => return Err(self.io(&raw_path, "resolving hardlink target", e)),
                };
                match rustix::fs::statat(&tparent, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        return Err(self.refuse(&raw_path, "hardlink to a directory"))
                    }
                    Ok(_) => {}
                    Err(Errno::NOENT) => {
                        return Err(
                            self.refuse(&raw_path, format!("hardlink target {:?} does not exist", lossy(&target)))
                        )
                    }
                    Err(e) => return Err(self.io(&raw_path, "inspecting hardlink target", e)),
                }
                self.replace(&raw_path, parent, name)?;
                // Flags 0: a symlink target is linked itself, never followed.
                rustix::fs::linkat(&tparent, tname, parent, name, AtFlags::empty())
                    .map_err(|e| self.io(&raw_path, "creating hardlink", e))?;
            }
            Kind::Char | Kind::Block if !self.opts.privileged => {
                // Rootless engines skip device nodes the same way.
                return Ok(false);
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let (ft, dev) = match kind {
                    Kind::Char => (FileType::CharacterDevice, self.dev(entry, &raw_path)?),
                    Kind::Block => (FileType::BlockDevice, self.dev(entry, &raw_path)?),
                    _ => (FileType::Fifo, 0),
                };
                self.replace(&raw_path, parent, name)?;
                rustix::fs::mknodat(parent, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| self.io(&raw_path, "creating node", e))?;
                self.after_node(&raw_path, parent, name, &meta, true)?;
            }
        }
        Ok(true)
    }

    /// Ownership, mode, xattrs and times of a symlink or node just made at
    /// `parent/name` (never followed: it is not a symlink, or the calls use
    /// `AT_SYMLINK_NOFOLLOW`).
    fn after_node(&self, raw: &[u8], parent: &OwnedFd, name: &OsStr, meta: &Meta, chmod: bool) -> Result<()> {
        if self.opts.privileged {
            rustix::fs::chownat(
                parent,
                name,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.io(raw, "setting owner", e))?;
        }
        if chmod {
            // A node we just created with mknodat: not a symlink.
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|e| self.io(raw, "setting mode", e))?;
        }
        if !meta.xattrs.is_empty() {
            // lsetxattr through the parent's descriptor: the last component
            // is not followed.
            let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            path.extend_from_slice(name.as_bytes());
            let path = OsStr::from_bytes(&path);
            for (k, v) in &meta.xattrs {
                match rustix::fs::lsetxattr(path, k.as_str(), v, XattrFlags::empty()) {
                    Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
                    Err(e) => return Err(self.io(raw, &format!("setting xattr {k}"), e)),
                }
            }
        }
        rustix::fs::utimensat(parent, name, &times(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io(raw, "setting times", e))
    }

    fn chown_fd(&self, raw: &[u8], fd: impl AsFd, meta: &Meta) -> Result<()> {
        if !self.opts.privileged {
            return Ok(());
        }
        rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(meta.uid)), Some(rustix::fs::Gid::from_raw(meta.gid)))
            .map_err(|e| self.io(raw, "setting owner", e))
    }

    fn set_xattrs_fd(&self, raw: &[u8], fd: impl AsFd, meta: &Meta) -> Result<()> {
        for (k, v) in &meta.xattrs {
            match rustix::fs::fsetxattr(fd.as_fd(), k.as_str(), v, XattrFlags::empty()) {
                // As Docker: file systems without xattrs (or without this
                // namespace) lose them rather than failing the pull.
                Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
                Err(e) => return Err(self.io(raw, &format!("setting xattr {k}"), e)),
            }
        }
        Ok(())
    }

    /// Handles `parent/name` where `name` starts with `.wh.`.
    fn whiteout(&mut self, raw: &[u8], parent: &[&[u8]], name: &[u8]) -> Result<()> {
        // It removes what it hides.
        self.parent = None;
        if name == WH_OPAQUE {
            let dir = self.mkdir_all(raw, parent)?;
            let dir = self.reopen_dir(raw, dir.as_fd(), OsStr::new("."))?;
            rustix::fs::fsetxattr(&dir, OVERLAY_OPAQUE, b"y", XattrFlags::empty())
                .map_err(|e| self.io(raw, "marking directory opaque", e))?;
            self.stats.whiteouts += 1;
            self.stats.entries += 1;
            return Ok(());
        }
        if name.starts_with(WH_META_PREFIX) {
            // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless here.
            return Ok(());
        }
        let orig = &name[WH_PREFIX.len()..];
        if orig.is_empty() || orig == b"." || orig == b".." {
            return Err(self.refuse(raw, "whiteout of an invalid name"));
        }
        let orig = OsStr::from_bytes(orig);
        let dir = self.mkdir_all(raw, parent)?;
        self.replace(raw, &dir, orig)?;
        rustix::fs::mknodat(&dir, orig, FileType::CharacterDevice, Mode::empty(), 0)
            .map_err(|e| self.io(raw, "creating whiteout", e))?;
        self.stats.whiteouts += 1;
        self.stats.entries += 1;
        Ok(())
    }

    /// Removes whatever is at `parent/name` (a later entry wins).
    fn replace(&mut self, raw: &[u8], parent: &OwnedFd, name: &OsStr) -> Result<()> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {
                self.removed = true;
                remove_all_at(parent.as_fd(), name).map_err(|e| self.io(raw, "replacing", e))
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io(raw, "inspecting", e)),
        }
    }

    fn mkdir(&self, raw: &[u8], parent: &OwnedFd, name: &OsStr) -> Result<()> {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
            .map_err(|e| self.io(raw, "creating directory", e))?;
        // The real mode comes at the end; until then the owner may write.
        rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o755), AtFlags::empty())
            .map_err(|e| self.io(raw, "setting mode", e))
    }

    /// A readable descriptor of the directory `dir/name` (not followed).
    fn reopen_dir(&self, raw: &[u8], dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd> {
        rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io(raw, "opening directory", e))
    }

    /// Resolves the existing directory `comps` inside the root.
    fn lookup_dir(&self, comps: &[&[u8]]) -> io::Result<OwnedFd> {
        self.openat2(&comps.join(&b'/'))
    }

    /// `openat2(root, path, O_PATH|O_DIRECTORY, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)`.
    fn openat2(&self, path: &[u8]) -> io::Result<OwnedFd> {
        let path: &[u8] = if path.is_empty() { b"." } else { path };
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        for _ in 0..RETRIES {
            match rustix::fs::openat2(
                &self.root,
                OsStr::from_bytes(path),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            ) {
                Err(Errno::AGAIN) => continue,
                r => return r.map_err(io::Error::from),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// The directory `comps` (resolved inside the root), created with its
    /// missing parents (mode 0755) when needed.
    fn mkdir_all(&self, raw: &[u8], comps: &[&[u8]]) -> Result<OwnedFd> {
        let mut links = 0;
        self.mkdir_all_path(&comps.join(&b'/'), &mut links).map_err(|e| self.io(raw, "creating parent directories", e))
    }

    /// Walks `path` from the root, each prefix resolved inside the root
    /// again, creating missing directories; a dangling symlink met on the
    /// way gets its target created (inside the root) and is then followed.
    /// Recursion happens only per symlink, so its depth is bounded.
    fn mkdir_all_path(&self, path: &[u8], links: &mut u32) -> io::Result<OwnedFd> {
        match self.openat2(path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            r => return r,
        }
        let mut dir = self.openat2(b"")?;
        let mut prefix: Vec<u8> = Vec::with_capacity(path.len());
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let parent_len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(comp);
            match self.openat2(&prefix) {
                Ok(fd) => {
                    dir = fd;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            if comp == b"." || comp == b".." {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            let name = OsStr::from_bytes(comp);
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(0o755), AtFlags::empty())?,
                Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match self.openat2(&prefix) {
                Ok(fd) => {
                    dir = fd;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            // `comp` exists but does not resolve: a dangling symlink.
            let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            *links += 1;
            if *links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = rustix::fs::readlinkat(&dir, name, Vec::new())?.into_bytes();
            let next = if target.starts_with(b"/") {
                target
            } else {
                let mut p = prefix[..parent_len].to_vec();
                p.push(b'/');
                p.extend_from_slice(&target);
                p
            };
            if next.len() >= PATH_MAX {
                return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
            }
            self.mkdir_all_path(&next, links)?;
            dir = self.openat2(&prefix)?;
        }
        Ok(dir)
    }

    /// Lexically cleans `raw` into normal components: leading `/` and `.`
    /// dropped, `..` applied, refused when it climbs above the root.
    fn clean<'p>(&self, entry: &[u8], raw: &'p [u8], what: &str) -> Result<Vec<&'p [u8]>> {
        self.check_name(entry, raw, what)?;
        let mut out: Vec<&[u8]> = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if out.pop().is_none() {
                        return Err(self.refuse(entry, format!("{what} escapes from the root")));
                    }
                }
                c => out.push(c),
            }
        }
        Ok(out)
    }

    /// Length and NUL checks for a path from the tar.
    fn check_name(&self, entry: &[u8], raw: &[u8], what: &str) -> Result<()> {
        if raw.contains(&0) {
            return Err(self.refuse(entry, format!("{what} contains a NUL byte")));
        }
        if raw.len() >= PATH_MAX {
            return Err(self.refuse(entry, format!("{what} is {} bytes long (limit {})", raw.len(), PATH_MAX - 1)));
        }
        if let Some(c) = raw.split(|&b| b == b'/').find(|c| c.len() > NAME_MAX) {
            return Err(self.refuse(entry, format!("{what} has a component of {} bytes (limit {NAME_MAX})", c.len())));
        }
        Ok(())
    }

    fn dev<R: Read>(&self, entry: &tar::Entry<'_, R>, raw: &[u8]) -> Result<rustix::fs::Dev> {
        let h = entry.header();
        let bad_field = |e: io::Error| self.bad(format!("entry {:?}: {e}", lossy(raw)));
        let (major, minor) = match h.as_ustar() {
            Some(u) => (&u.dev_major, &u.dev_minor),
            None => match h.as_gnu() {
                Some(g) => (&g.dev_major, &g.dev_minor),
                None => return Err(self.bad(format!("entry {:?}: device node in a pre-POSIX header", lossy(raw)))),
            },
        };
        let num = |r: io::Result<Option<u32>>, field: &[u8]| or_empty(r.map(|v| u64::from(v.unwrap_or(0))), field);
        let major = num(h.device_major(), major).map_err(bad_field)?;
        let minor = num(h.device_minor(), minor).map_err(bad_field)?;
        let to32 = |v: u64| u32::try_from(v).map_err(|_| self.refuse(raw, "device number out of range"));
        Ok(rustix::fs::makedev(to32(major)?, to32(minor)?))
    }

    /// Mode, owner, times and xattrs of `entry`, PAX records applied.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Meta> {
        let h = entry.header();
        let bad_field = |e: io::Error| self.bad(format!("entry {:?}: {e}", lossy(raw)));
        let old = h.as_old();
        let mode = or_empty(h.mode().map(u64::from), &old.mode).map_err(bad_field)? as u32 & 0o7777;
        let uid = or_empty(h.uid(), &old.uid).map_err(bad_field)?;
        let gid = or_empty(h.gid(), &old.gid).map_err(bad_field)?;
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| self.refuse(raw, format!("{what} {v} is out of range")))
        };
        let (uid, gid) = (id(uid, "uid")?, id(gid, "gid")?);
        let secs = or_empty(h.mtime(), &old.mtime).map_err(bad_field)?;
        let mut mtime = Timespec { tv_sec: i64::try_from(secs).unwrap_or(i64::MAX), tv_nsec: 0 };
        let mut atime = None;
        let mut xattrs = Vec::new();
        let privileged = self.opts.privileged;
        if let Some(pax) = entry.pax_extensions().map_err(bad_field)? {
            for ext in pax {
                let ext = ext.map_err(bad_field)?;
                let Ok(key) = ext.key() else { continue };
                match key {
                    "mtime" => mtime = pax_time(ext.value_bytes()).unwrap_or(mtime),
                    "atime" => atime = pax_time(ext.value_bytes()),
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            if xattr_allowed(name, privileged) && CString::new(name).is_ok() {
                                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(Meta { mode, uid, gid, atime: atime.unwrap_or(mtime), mtime, xattrs })
    }

    /// Applies the deferred mode and times of the directories.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, meta) in dirs.iter().rev() {
            let comps: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
            let fd = match comps.split_last() {
                None => self.reopen_dir(path, self.root.as_fd(), OsStr::new("."))?,
                Some((name, parent)) => {
                    // A later entry may have replaced or removed it.
                    let Ok(parent) = self.lookup_dir(parent) else { continue };
                    match rustix::fs::openat(
                        &parent,
                        OsStr::from_bytes(name),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                        Err(e) => return Err(self.io(path, "opening directory", e)),
                    }
                }
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode)).map_err(|e| self.io(path, "setting mode", e))?;
            rustix::fs::futimens(&fd, &times(meta)).map_err(|e| self.io(path, "setting times", e))?;
        }
        Ok(())
    }
}

/// A numeric header field, read as 0 when it is empty (all NULs or
/// spaces), as Go's archive/tar (which wrote most layers) reads it.
fn or_empty(r: io::Result<u64>, field: &[u8]) -> io::Result<u64> {
    match r {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        r => r,
    }
}

/// Which xattrs from a layer are applied.
fn xattr_allowed(name: &str, privileged: bool) -> bool {
    if name.is_empty() || name.len() > NAME_MAX {
        return false;
    }
    if name.starts_with("user.") {
        return true;
    }
    // overlayfs interprets its own xattrs (redirect, metacopy, origin…):
    // a layer must not set them; opaque dirs come from `.wh..wh..opq`.
    if name.starts_with("trusted.overlay.") {
        return false;
    }
    privileged && (name == "security.capability" || name.starts_with("trusted."))
}

/// A PAX time (`seconds[.fraction]`, possibly negative).
fn pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if !neg {
        Timespec { tv_sec: secs, tv_nsec: nanos }
    } else if nanos == 0 {
        Timespec { tv_sec: -secs, tv_nsec: 0 }
    } else {
        Timespec { tv_sec: -secs - 1, tv_nsec: 1_000_000_000 - nanos }
    })
}

fn times(meta: &Meta) -> Timestamps {
    Timestamps { last_access: meta.atime, last_modification: meta.mtime }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Removes `dir/name` and, when it is a directory, everything below it,
/// never following symlinks. Directories are made writable on the way (a
/// layer may have left them read-only). Iterative, holding two descriptors
/// at most, so a hostile deep tree cannot exhaust the stack or the fds.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(top) = open_dir_for_removal(dir, name)? else { return Ok(()) };
    let mut cur = top;
    // Per level: the directory's name in its parent, and its subdirectories
    // still to remove.
    let mut levels: Vec<(Vec<u8>, Vec<Vec<u8>>)> = vec![(name.as_bytes().to_vec(), empty_dir_files(&cur)?)];
    while let Some((_, pending)) = levels.last_mut() {
        if let Some(sub) = pending.pop() {
            if let Some(child) = open_dir_for_removal(cur.as_fd(), OsStr::from_bytes(&sub))? {
                cur = child;
                let subdirs = empty_dir_files(&cur)?;
                levels.push((sub, subdirs));
            }
            continue;
        }
        let Some((done, _)) = levels.pop() else { break };
        if levels.is_empty() {
            drop(cur);
            return rustix::fs::unlinkat(dir, OsStr::from_bytes(&done), AtFlags::REMOVEDIR).map_err(io::Error::from);
        }
        // `..` of a directory opened without following symlinks is the
        // directory we came from.
        cur = rustix::fs::openat(&cur, "..", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        rustix::fs::unlinkat(&cur, OsStr::from_bytes(&done), AtFlags::REMOVEDIR)?;
    }
    Ok(())
}

/// Opens the directory `dir/name` to empty it, made writable by its owner;
/// `None` when it is gone or turned out not to be a directory (then it is
/// unlinked).
fn open_dir_for_removal(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ACCESS) => {
            // O_DIRECTORY|O_NOFOLLOW got as far as permissions: a real
            // directory, so chmod (which follows) acts on it.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(dir, name, flags, Mode::empty())?
        }
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & 0o700 != 0o700 {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
    }
    Ok(Some(fd))
}

/// Unlinks every non-directory in `dir`; returns the names of its
/// subdirectories.
fn empty_dir_files(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push((n.to_vec(), e.file_type()));
        }
    }
    let mut subdirs = Vec::new();
    for (n, ft) in names {
        if ft == FileType::Directory {
            subdirs.push(n);
            continue;
        }
        match rustix::fs::unlinkat(dir, OsStr::from_bytes(&n), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) => subdirs.push(n),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(subdirs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A tar built entry by entry.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Tar {
            Tar(tar::Builder::new(Vec::new()))
        }

        fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Tar {
            let mut data = Vec::new();
            for (k, v) in recs {
                let rest = k.len() + v.len() + 3;
                let mut len = rest + 1;
                loop {
                    let l = len.to_string().len() + rest;
                    if l == len {
                        break;
                    }
                    len = l;
                }
                data.extend_from_slice(format!("{len} {k}=").as_bytes());
                data.extend_from_slice(v);
                data.push(b'\n');
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_path("PaxHeader").unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.0.append(&h, &data[..]).unwrap();
            self
        }

        #[allow(clippy::too_many_arguments)]
        fn add(
            &mut self,
            kind: tar::EntryType,
            path: &str,
            mode: u32,
            data: &[u8],
            link: Option<&str>,
            mtime: u64,
            owner: (u64, u64),
        ) -> &mut Tar {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_path(path).unwrap();
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_mtime(mtime);
            h.set_uid(owner.0);
            h.set_gid(owner.1);
            h.set_device_major(0).unwrap();
            h.set_device_minor(0).unwrap();
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Tar {
            self.add(tar::EntryType::Regular, path, mode, data, None, 1_000_000, (0, 0))
        }

        fn dir(&mut self, path: &str, mode: u32) -> &mut Tar {
            self.add(tar::EntryType::Directory, path, mode, b"", None, 1_000_000, (0, 0))
        }

        fn symlink(&mut self, path: &str, target: &str) -> &mut Tar {
            self.add(tar::EntryType::Symlink, path, 0o777, b"", Some(target), 1_000_000, (0, 0))
        }

        fn hardlink(&mut self, path: &str, target: &str) -> &mut Tar {
            self.add(tar::EntryType::Link, path, 0o644, b"", Some(target), 1_000_000, (0, 0))
        }

        fn bytes(&mut self) -> Vec<u8> {
            self.0.get_mut().clone().into_iter().chain(std::iter::repeat_n(0u8, 1024)).collect()
        }
    }

    fn unpack(tar: &[u8], dest: &Path, privileged: bool) -> Result<UnpackStats> {
        unpack_layer(tar, dest, &UnpackOptions { layer: "test-layer".into(), privileged })
    }

    fn mtime(p: &Path) -> (i64, i64) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    }

    #[test]
    fn files_dirs_links_modes_times_owner_xattrs() {
        let root = is_root();
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        let tar = Tar::new()
            .add(tar::EntryType::Directory, "d/", 0o750, b"", None, 1000, (0, 0))
            .pax(&[
                ("mtime", b"2000.5"),
                ("SCHILY.xattr.user.k", b"v\0x"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/x"),
            ])
            .add(tar::EntryType::Regular, "d/f", 0o4755, b"hello", None, 5, (1234, 5678))
            .add(tar::EntryType::Symlink, "d/l", 0o777, b"", Some("f"), 3000, (0, 0))
            .hardlink("d/h", "d/f")
            .hardlink("d/hl", "/d/l")
            .add(tar::EntryType::Fifo, "p", 0o640, b"", None, 4000, (0, 0))
            .file("ro", 0o444, b"r")
            .dir("rodir/", 0o555)
            .file("rodir/x", 0o600, b"x")
            .file("./implicit/parent/file", 0o600, b"")
            .bytes();
        let stats = unpack(&tar, d, root).unwrap();
        assert_eq!(stats.entries, 10);
        assert_eq!(stats.bytes, 7);
        assert_eq!(stats.whiteouts, 0);

        assert_eq!(std::fs::read(d.join("d/f")).unwrap(), b"hello");
        let f = std::fs::metadata(d.join("d/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!(mtime(&d.join("d/f")), (2000, 500_000_000), "PAX mtime wins");
        if root {
            assert_eq!((f.uid(), f.gid()), (1234, 5678));
        }
        let mut buf = vec![0u8; 64];
        match rustix::fs::getxattr(d.join("d/f"), "user.k", &mut buf) {
            Ok(n) => assert_eq!(&buf[..n], b"v\0x"),
            Err(Errno::NOTSUP) => eprintln!("user xattrs not supported here"),
            Err(e) => panic!("getxattr: {e}"),
        }
        assert_eq!(rustix::fs::getxattr(d.join("d/f"), "trusted.overlay.redirect", &mut buf), Err(Errno::NODATA));

        let dm = std::fs::metadata(d.join("d")).unwrap();
        assert!(dm.is_dir());
        assert_eq!(dm.mode() & 0o7777, 0o750);
        assert_eq!(mtime(&d.join("d")), (1000, 0), "dir mtime set after its children");

        assert_eq!(std::fs::read_link(d.join("d/l")).unwrap(), Path::new("f"));
        assert_eq!(mtime(&d.join("d/l")), (3000, 0), "symlink's own mtime");
        assert_eq!(std::fs::metadata(d.join("d/h")).unwrap().ino(), f.ino(), "hardlink");
        let hl = std::fs::symlink_metadata(d.join("d/hl")).unwrap();
        assert!(hl.file_type().is_symlink(), "hardlink to a symlink links the symlink");

        let p = std::fs::symlink_metadata(d.join("p")).unwrap();
        assert!(p.file_type().is_fifo());
        assert_eq!(p.mode() & 0o7777, 0o640);
        assert_eq!(std::fs::metadata(d.join("ro")).unwrap().mode() & 0o7777, 0o444);
        assert_eq!(std::fs::metadata(d.join("rodir")).unwrap().mode() & 0o7777, 0o555);
        assert_eq!(std::fs::read(d.join("rodir/x")).unwrap(), b"x");
        assert_eq!(std::fs::metadata(d.join("implicit/parent")).unwrap().mode() & 0o7777, 0o755);
    }

    #[test]
    fn umask_does_not_change_modes() {
        let dest = tempfile::tempdir().unwrap();
        // In a child process: the umask is the whole process's, and the
        // other tests unpack in parallel threads.
        let exe = std::env::current_exe().unwrap();
        let st = std::process::Command::new(exe)
            .args(["--exact", "unpack::tests::umask_child", "--nocapture"])
            .env("BERTH_UNPACK_UMASK_CHILD", dest.path())
            .status()
            .unwrap();
        assert!(st.success(), "{st:?}");
        let mode = |p: &str| std::fs::metadata(dest.path().join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("a/b"), 0o666);
        assert_eq!(mode("c"), 0o777);
        assert_eq!(mode("a"), 0o755);
    }

    /// The unpack of [`umask_does_not_change_modes`], under umask 077.
    #[test]
    fn umask_child() {
        let Some(dest) = std::env::var_os("BERTH_UNPACK_UMASK_CHILD") else { return };
        let tar = Tar::new().file("a/b", 0o666, b"").dir("c/", 0o777).bytes();
        rustix::process::umask(Mode::from_raw_mode(0o077));
        unpack(&tar, Path::new(&dest), false).unwrap();
    }

    #[test]
    fn modes_and_owners_whether_or_not_a_chown_is_needed() {
        let dest = tempfile::tempdir().unwrap();
        let me = (rustix::process::geteuid().as_raw() as u64, rustix::process::getegid().as_raw() as u64);
        let tar = Tar::new()
            .add(tar::EntryType::Regular, "bin/suid-mine", 0o4755, b"x", None, 5, me)
            .add(tar::EntryType::Regular, "bin/suid-other", 0o6755, b"x", None, 5, (1000, 1000))
            .add(tar::EntryType::Regular, "bin/none", 0o000, b"x", None, 5, me)
            .add(tar::EntryType::Regular, "bin/other", 0o640, b"x", None, 5, (1000, 1001))
            .add(tar::EntryType::Regular, "bin/wide", 0o777, b"x", None, 5, me)
            .bytes();
        unpack(&tar, dest.path(), is_root()).unwrap();
        let meta = |p: &str| std::fs::metadata(dest.path().join(p)).unwrap();
        assert_eq!(meta("bin/suid-mine").mode() & 0o7777, 0o4755);
        assert_eq!(meta("bin/none").mode() & 0o7777, 0o000);
        assert_eq!(meta("bin/wide").mode() & 0o7777, 0o777);
        assert_eq!(meta("bin/other").mode() & 0o7777, 0o640);
        if is_root() {
            // chown clears setuid/setgid: the mode must come after it.
            let m = meta("bin/suid-other");
            assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o6755, 1000, 1000));
            assert_eq!((meta("bin/other").uid(), meta("bin/other").gid()), (1000, 1001));
        }
        assert_eq!(std::fs::read(dest.path().join("bin/none")).unwrap(), b"x");
    }

    #[test]
    fn a_parent_replaced_by_a_symlink_is_followed_by_later_entries() {
        let dest = tempfile::tempdir().unwrap();
        let tar = Tar::new()
            .dir("e/", 0o755)
            .file("d/one", 0o644, b"1")
            .file("d/two", 0o644, b"2")
            .symlink("d", "e")
            .file("d/three", 0o644, b"3")
            .file("d/two", 0o644, b"22")
            .bytes();
        unpack(&tar, dest.path(), false).unwrap();
        let p = dest.path();
        assert!(std::fs::symlink_metadata(p.join("d")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(p.join("e/three")).unwrap(), b"3");
        assert_eq!(std::fs::read(p.join("e/two")).unwrap(), b"22");
        assert!(!p.join("e/one").exists(), "the replaced directory's files went with it");
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !is_root() {
            eprintln!("skipped: needs root (trusted.* xattrs)");
            return;
        }
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        let tar = Tar::new()
            .file("a/b", 0o644, b"this layer's b")
            .file("a/.wh.b", 0o644, b"not written")
            .file("x/.wh.gone", 0o644, b"")
            .dir("c/", 0o755)
            .file("c/.wh..wh..opq", 0o644, b"")
            .file("new/.wh..wh..opq", 0o644, b"")
            .file(".wh..wh.plnk", 0o644, b"")
            .bytes();
        let stats = unpack(&tar, d, true).unwrap();
        assert_eq!(stats.whiteouts, 4);
        for p in ["a/b", "x/gone"] {
            let m = std::fs::symlink_metadata(d.join(p)).unwrap();
            assert!(m.file_type().is_char_device(), "{p} is a whiteout");
            assert_eq!(m.rdev(), 0);
        }
        assert!(!d.join("a/.wh.b").exists());
        assert!(!d.join(".wh..wh.plnk").exists());
        let mut buf = [0u8; 8];
        for p in ["c", "new"] {
            let n = rustix::fs::getxattr(d.join(p), OVERLAY_OPAQUE, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"y");
            assert!(!d.join(p).join(".wh..wh..opq").exists());
        }
    }

    #[test]
    fn later_entry_wins() {
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let tar = Tar::new()
            .file("x", 0o644, b"file")
            .dir("x/", 0o700)
            .file("x/y", 0o644, b"y")
            .dir("d/", 0o755)
            .file("d/f", 0o644, b"")
            .dir("d/sub/", 0o500)
            .file("d/sub/z", 0o400, b"")
            .file("d", 0o644, b"now a file")
            .symlink("s", victim.to_str().unwrap())
            .file("s", 0o644, b"replaced the symlink")
            .file("a", 0o644, b"one")
            .hardlink("b", "a")
            .file("a", 0o644, b"two")
            .bytes();
        unpack(&tar, d, false).unwrap();
        assert!(d.join("x").is_dir());
        assert_eq!(std::fs::read(d.join("x/y")).unwrap(), b"y");
        assert_eq!(std::fs::read(d.join("d")).unwrap(), b"now a file");
        assert!(std::fs::symlink_metadata(d.join("s")).unwrap().is_file());
        assert_eq!(std::fs::read(d.join("s")).unwrap(), b"replaced the symlink");
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"two");
        assert_eq!(std::fs::read(d.join("b")).unwrap(), b"one", "old inode unlinked, not rewritten");
    }

    #[test]
    fn root_entry_updates_dest() {
        let dest = tempfile::tempdir().unwrap();
        let tar =
            Tar::new().add(tar::EntryType::Directory, "./", 0o711, b"", None, 42, (0, 0)).file("f", 0o644, b"").bytes();
        unpack(&tar, dest.path(), false).unwrap();
        assert_eq!(std::fs::metadata(dest.path()).unwrap().mode() & 0o7777, 0o711);
        assert_eq!(mtime(dest.path()), (42, 0));
        // A non-directory cannot replace the root.
        let tar = Tar::new().file("./", 0o644, b"").bytes();
        let err = unpack(&tar, dest.path(), false).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    }

    #[test]
    fn devices_only_when_privileged() {
        let tar = Tar::new()
            .add(tar::EntryType::Char, "dev/null", 0o666, b"", None, 0, (0, 0))
            .add(tar::EntryType::Block, "dev/loop9", 0o660, b"", None, 0, (0, 0))
            .bytes();
        let mut tar_dev = tar.clone();
        // Device numbers: patch the headers (the builder has no setters for
        // them on append); major 1 minor 3 for the first entry.
        {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Char);
            h.set_path("dev/null").unwrap();
            h.set_mode(0o666);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_cksum();
            tar_dev[..512].copy_from_slice(h.as_bytes());
        }
        let dest = tempfile::tempdir().unwrap();
        let stats = unpack(&tar_dev, dest.path(), false).unwrap();
        assert_eq!(stats.entries, 0);
        assert!(std::fs::symlink_metadata(dest.path().join("dev/null")).is_err());
        if is_root() {
            let dest = tempfile::tempdir().unwrap();
            unpack(&tar_dev, dest.path(), true).unwrap();
            let m = std::fs::symlink_metadata(dest.path().join("dev/null")).unwrap();
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
            assert_eq!(m.mode() & 0o7777, 0o666);
            assert!(std::fs::symlink_metadata(dest.path().join("dev/loop9")).unwrap().file_type().is_block_device());
        }
    }

    #[test]
    fn decompress_gzip_zstd_none() {
        use std::io::Write as _;
        let tar = Tar::new().file("f", 0o644, b"content").bytes();
        // Two gzip members back to back: MultiGzDecoder reads both.
        let (a, b) = tar.split_at(512);
        let mut gz = Vec::new();
        for part in [a, b] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            gz.extend(e.finish().unwrap());
        }
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (c, data) in [(Compression::Gzip, gz), (Compression::Zstd, zst), (Compression::None, tar.clone())] {
            let mut out = Vec::new();
            decompress(c, &data[..]).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, tar);
            let dest = tempfile::tempdir().unwrap();
            unpack_layer(
                decompress(c, &data[..]).unwrap(),
                dest.path(),
                &UnpackOptions { layer: "l".into(), privileged: false },
            )
            .unwrap();
            assert_eq!(std::fs::read(dest.path().join("f")).unwrap(), b"content");
        }
    }

    #[test]
    fn pax_times() {
        let t = |s: &str| pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("12"), Some((12, 0)));
        assert_eq!(t("12.5"), Some((12, 500_000_000)));
        assert_eq!(t("12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("x"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("1.2.3"), None);
    }

    #[test]
    fn remove_all_at_handles_read_only_and_deep_trees() {
        let top = tempfile::tempdir().unwrap();
        let mut p = top.path().join("t");
        let base = p.clone();
        for _ in 0..300 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("f"), b"").unwrap();
        std::os::unix::fs::symlink("/", p.join("l")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::set_permissions(base.join("d"), std::fs::Permissions::from_mode(0o500)).unwrap();
        let fd = rustix::fs::open(top.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        remove_all_at(fd.as_fd(), OsStr::new("t")).unwrap();
        assert!(!base.exists());
        assert!(Path::new("/").exists());
    }
}
