//! Builds the container's filesystem view inside its new mount namespace:
//! the rootfs bind, the spec's mounts, /dev, pivot_root, masked and
//! read-only paths.
//!
//! Every mount target is resolved *inside* the rootfs with `pathrs`
//! (openat2 `RESOLVE_IN_ROOT`), then mounted through its `/proc/self/fd/N`
//! magic link, so a symlink planted in an image can never redirect a mount
//! onto the host.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::inroot::RootDir;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::error::{Context, Error, Result};
use crate::mount_options::{self, MountOptions};
use crate::sys;

/// What the rootfs setup needs beyond the spec.
#[derive(Debug)]
pub struct RootfsContext<'a> {
    /// The validated spec.
    pub spec: &'a Spec,
    /// Absolute host path of the bundle.
    pub bundle: &'a Path,
    /// Absolute host path of the rootfs.
    pub rootfs: &'a Path,
    /// The container has a new user namespace (device nodes must be bind
    /// mounted, locked mount flags must be kept on remount).
    pub userns: bool,
    /// Host cgroup dirs of the container, per v1 controller ("" for v2).
    pub cgroup_dirs: Vec<(String, PathBuf)>,
    /// The container has its own cgroup namespace.
    pub cgroupns: bool,
}

fn magic(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn io_err(context: String, e: nix::Error) -> Error {
    Error::Io { context, source: e.into() }
}

/// Sets propagation of `/` for the new mount namespace and turns the rootfs
/// into a mount point of its own (pivot_root needs one).
pub fn prepare(ctx: &RootfsContext<'_>) -> Result<()> {
    let prop = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .map(|p| {
            mount_options::propagation_flag(p).ok_or_else(|| Error::Other(format!("invalid rootfsPropagation {p:?}")))
        })
        .transpose()?
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
        .map_err(|e| io_err("setting propagation of /".into(), e))?;
    // After a recursive slave or private, no mount is shared any more: the
    // mount table (read and parsed on every start otherwise) need not be
    // looked at.
    let none_shared = prop.contains(MsFlags::MS_REC) && prop.intersects(MsFlags::MS_SLAVE | MsFlags::MS_PRIVATE);
    if !none_shared {
        make_parent_private(ctx.rootfs)?;
    }
    mount(Some(ctx.rootfs), ctx.rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| io_err(format!("bind mounting rootfs {}", ctx.rootfs.display()), e))?;
    Ok(())
}

/// pivot_root refuses a new root whose parent mount is shared: make the
/// mount holding the rootfs private when it is.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading /proc/self/mountinfo".into())?;
    let mut best: Option<(PathBuf, bool)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        if rootfs.starts_with(&mp) && best.as_ref().is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len()) {
            let shared = fields.iter().skip(6).take_while(|f| **f != "-").any(|f| f.starts_with("shared:"));
            best = Some((mp, shared));
        }
    }
    if let Some((mp, true)) = best {
        mount(None::<&str>, &mp, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(|e| io_err(format!("making {} private", mp.display()), e))?;
    }
    Ok(())
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens the rootfs as a pathrs root for in-root resolution.
pub fn open_root(rootfs: &Path) -> Result<RootDir> {
    RootDir::open(rootfs).ctx(|| format!("opening rootfs {}", rootfs.display()))
}

/// Mounts every entry of the spec's `mounts` list, in order.
pub fn mount_all(ctx: &RootfsContext<'_>, root: &RootDir) -> Result<()> {
    for m in ctx.spec.mounts().as_deref().unwrap_or_default() {
        mount_entry(ctx, root, m).map_err(|e| match e {
            Error::Io { context, source } => {
                Error::Io { context: format!("mount {}: {context}", m.destination().display()), source }
            }
            other => other,
        })?;
    }
    Ok(())
}

/// Normalises a container path to a relative path inside the root,
/// refusing nothing: `..` is clamped at the root by the resolver anyway.
fn in_root(dest: &Path) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in dest.components() {
        match c {
            Component::Normal(n) => p.push(n),
            Component::ParentDir => p.push(".."),
            _ => {}
        }
    }
    p
}

fn mount_entry(ctx: &RootfsContext<'_>, root: &RootDir, m: &Mount) -> Result<()> {
    let dest = in_root(m.destination());
    let typ = m.typ().as_deref().unwrap_or("none");
    let opts = mount_options::parse(m.options().as_deref().unwrap_or_default());
    let is_bind = opts.bind || typ == "bind";

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(ctx, root, &dest, typ, &opts);
    }

    let source = m.source().as_ref().map(|s| if s.is_relative() && is_bind { ctx.bundle.join(s) } else { s.clone() });

    if is_bind {
        let source = source.ok_or_else(|| Error::Other("bind mount without source".into()))?;
        let meta = std::fs::metadata(&source).ctx(|| format!("bind source {}", source.display()))?;
        let target = if meta.is_dir() { mkdir_in(root, &dest)? } else { create_file_in(root, &dest)? };
        let mut flags = MsFlags::MS_BIND;
        if opts.recursive {
            flags |= MsFlags::MS_REC;
        }
        mount(Some(&source), &magic(&target), None::<&str>, flags, None::<&str>)
            .map_err(|e| io_err(format!("bind {} ", source.display()), e))?;
        if opts.needs_bind_remount() {
            let target = resolve(root, &dest)?;
            remount(&magic(&target), opts.flags, ctx.userns)?;
        }
        if opts.recursive_ro {
            let target = resolve(root, &dest)?;
            crate::sys::set_recursive_readonly(std::os::fd::AsFd::as_fd(&target))
                .ctx(|| "making the bind mount recursively read-only (rro)".into())?;
        }
        apply_propagation(root, &dest, &opts)?;
        return Ok(());
    }

    let target = mkdir_in(root, &dest)?;
    let data = opts.data_string();
    let src = source.map(|s| s.into_os_string()).unwrap_or_else(|| typ.into());
    let res = mount(Some(src.as_os_str()), &magic(&target), Some(typ), opts.flags, data.as_deref());
    match res {
        Ok(()) => {}
        // Inside a user namespace that does not own the network (sysfs) or
        // ipc (mqueue) namespace the kernel refuses a fresh instance:
        // bind the host's one instead, as other runtimes do.
        Err(nix::errno::Errno::EPERM) if ctx.userns && (typ == "sysfs" || typ == "mqueue") => {
            let host = if typ == "sysfs" { "/sys" } else { "/dev/mqueue" };
            mount(Some(host), &magic(&target), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(|e| io_err(format!("bind {host} (fallback)"), e))?;
            let target = resolve(root, &dest)?;
            remount(&magic(&target), opts.flags, true)?;
        }
        Err(e) => return Err(io_err(format!("mounting {typ}"), e)),
    }
    apply_propagation(root, &dest, &opts)
}

fn apply_propagation(root: &RootDir, dest: &Path, opts: &MountOptions) -> Result<()> {
    if opts.propagation.is_empty() {
        return Ok(());
    }
    let target = resolve(root, dest)?;
    for p in &opts.propagation {
        mount(None::<&str>, &magic(&target), None::<&str>, *p, None::<&str>)
            .map_err(|e| io_err("setting propagation".into(), e))?;
    }
    Ok(())
}

/// The container's cgroup view: cgroup2 with a cgroup namespace (the
/// kernel scopes it), otherwise binds of the container's own cgroup dirs.
fn mount_cgroup(ctx: &RootfsContext<'_>, root: &RootDir, dest: &Path, typ: &str, opts: &MountOptions) -> Result<()> {
    let v2 = ctx.cgroup_dirs.len() == 1 && ctx.cgroup_dirs[0].0.is_empty();
    let target = mkdir_in(root, dest)?;
    if v2 || typ == "cgroup2" {
        if ctx.cgroupns {
            let r = mount(Some("cgroup2"), &magic(&target), Some("cgroup2"), opts.flags, None::<&str>);
            if r.is_ok() {
                return Ok(());
            }
        }
        let Some((_, dir)) = ctx.cgroup_dirs.first() else { return Ok(()) };
        mount(Some(dir.as_path()), &magic(&target), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| io_err(format!("bind {}", dir.display()), e))?;
        let target = resolve(root, dest)?;
        return remount(&magic(&target), opts.flags, ctx.userns);
    }
    // cgroup v1: a tmpfs holding one bind per hierarchy, at the name it
    // has on the host; a co-mounted controller's own name is a symlink to
    // it (net_prio -> net_cls,net_prio), as on the host and as runc does,
    // instead of binding the same hierarchy two or three times.
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), &magic(&target), Some("tmpfs"), tmpfs_flags, Some("mode=755"))
        .map_err(|e| io_err("mounting cgroup tmpfs".into(), e))?;
    // The tmpfs was mounted over `target`: its root, reopened, is fresh and
    // ours alone (nothing of the container runs yet), so its entries are
    // made relative to it rather than each resolved from the rootfs again.
    let base = resolve(root, dest)?;
    let (binds, links) = v1_layout(&ctx.cgroup_dirs);
    let entry = |name: &str| -> Result<OwnedFd> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        nix::fcntl::openat(&base, name, flags, Mode::empty())
            .map_err(|e| io_err(format!("opening {name} in {}", dest.display()), e))
    };
    for (controller, dir) in &binds {
        nix::sys::stat::mkdirat(&base, *controller, Mode::from_bits_truncate(0o755))
            .map_err(|e| io_err(format!("creating {controller} in {}", dest.display()), e))?;
        let t = entry(controller)?;
        mount(Some(*dir), &magic(&t), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| io_err(format!("bind {}", dir.display()), e))?;
    }
    for (name, to) in links {
        nix::unistd::symlinkat(to, &base, name)
            .map_err(|e| io_err(format!("symlink {} -> {to} in {}", name, dest.display()), e))?;
    }
    // One mount_setattr for the tmpfs and every bind under it; a kernel
    // without it (before 5.12) gets the remounts one by one.
    let all = opts.flags | tmpfs_flags;
    let readonly = opts.flags.contains(MsFlags::MS_RDONLY);
    let attrs = [
        (MsFlags::MS_NOSUID, sys::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, sys::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, sys::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_RDONLY, sys::MOUNT_ATTR_RDONLY),
    ]
    .iter()
    .filter(|(f, _)| all.contains(*f))
    .fold(0, |acc, (_, a)| acc | a);
    if sys::set_recursive_attrs(std::os::fd::AsFd::as_fd(&base), attrs).is_err() {
        for (controller, _) in &binds {
            let t = entry(controller)?;
            remount(&magic(&t), all, ctx.userns)?;
        }
        if readonly {
            remount_fs(&magic(&base), tmpfs_flags | MsFlags::MS_RDONLY)?;
        }
    }
    Ok(())
}

/// A cgroup v1 hierarchy bound into the container: (name, host directory).
type CgroupBind<'a> = (&'a str, &'a Path);
/// A controller name that links to its hierarchy's bind: (name, target).
type CgroupLink<'a> = (&'a str, &'a str);

/// How cgroup v1 hierarchies appear under the container's /sys/fs/cgroup:
/// one bind per distinct host directory, named as the hierarchy's mount
/// (the comma-joined name when it has one), and symlinks (name, target)
/// for the other controller names of the same hierarchy.
fn v1_layout(dirs: &[(String, PathBuf)]) -> (Vec<CgroupBind<'_>>, Vec<CgroupLink<'_>>) {
    let mut binds: Vec<CgroupBind<'_>> = Vec::new();
    for (name, dir) in dirs {
        match binds.iter_mut().find(|(_, d)| *d == dir.as_path()) {
            // A joint name ("net_cls,net_prio") is the mount's own.
            Some(b) if name.contains(',') && !b.0.contains(',') => b.0 = name,
            Some(_) => {}
            None => binds.push((name, dir)),
        }
    }
    let links = dirs
        .iter()
        .filter_map(|(name, dir)| {
            let primary = binds.iter().find(|(_, d)| *d == dir.as_path())?.0;
            (primary != name.as_str()).then_some((name.as_str(), primary))
        })
        .collect();
    (binds, links)
}

/// Resolves an existing path inside the root to an O_PATH handle.
fn resolve(root: &RootDir, path: &Path) -> Result<File> {
    root.resolve(path).ctx(|| format!("resolving {} in rootfs", path.display()))
}

/// Creates a directory (and parents) inside the root; returns its handle.
pub fn mkdir_in(root: &RootDir, path: &Path) -> Result<File> {
    root.mkdir_all(path).ctx(|| format!("creating directory {} in rootfs", path.display()))
}

/// Creates an empty file (and parent dirs) inside the root unless
/// something already exists there; returns its handle.
fn create_file_in(root: &RootDir, path: &Path) -> Result<File> {
    root.create_file(path).ctx(|| format!("creating {} in rootfs", path.display()))
}

/// Flags that a user namespace may have locked on a mount: a remount must
/// repeat them or the kernel answers EPERM.
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = nix::sys::statvfs::statvfs(path) else { return MsFlags::empty() };
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut m = MsFlags::empty();
    for (a, b) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(a) {
            m |= b;
        }
    }
    m
}

/// Applies `flags` to an existing bind mount at `target`.
fn remount(target: &Path, flags: MsFlags, _userns: bool) -> Result<()> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(None::<&str>, target, None::<&str>, base | flags, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let keep = locked_flags(target) & !MsFlags::MS_RDONLY;
            mount(None::<&str>, target, None::<&str>, base | flags | keep, None::<&str>)
                .map_err(|e| io_err("remounting bind mount".into(), e))
        }
        Err(e) => Err(io_err("remounting bind mount".into(), e)),
    }
}

fn remount_fs(target: &Path, flags: MsFlags) -> Result<()> {
    mount(None::<&str>, target, None::<&str>, MsFlags::MS_REMOUNT | flags, None::<&str>)
        .map_err(|e| io_err("remounting".into(), e))
}

/// The devices every container gets (runtime-spec "Default Devices").
fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
}

/// True when the spec bind-mounts the host's /dev wholesale (then we must
/// not create nodes in it).
fn dev_is_bind(spec: &Spec) -> bool {
    spec.mounts().as_deref().unwrap_or_default().iter().any(|m| {
        in_root(m.destination()) == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options().as_deref().unwrap_or_default().iter().any(|o| o == "bind" || o == "rbind"))
    })
}

/// Creates default and spec devices plus the standard /dev symlinks.
pub fn setup_dev(ctx: &RootfsContext<'_>, root: &RootDir) -> Result<()> {
    if dev_is_bind(ctx.spec) {
        return Ok(());
    }
    let spec_devices: &[LinuxDevice] =
        ctx.spec.linux().as_ref().and_then(|l| l.devices().as_deref()).unwrap_or_default();
    for (path, major, minor) in default_devices() {
        if spec_devices.iter().any(|d| in_root(d.path()) == Path::new(path)) {
            continue;
        }
        make_device(root, Path::new(path), SFlag::S_IFCHR, major, minor, 0o666, 0, 0, ctx.userns)?;
    }
    for d in spec_devices {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::Other(format!("device {}: type 'a' is not a node type", d.path().display())))
            }
        };
        let (major, minor) = (u64::try_from(d.major()).unwrap_or(0), u64::try_from(d.minor()).unwrap_or(0));
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        make_device(
            root,
            &in_root(d.path()),
            kind,
            major,
            minor,
            mode,
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
            ctx.userns,
        )?;
    }
    let dev = mkdir_in(root, Path::new("/dev"))?;
    let links: &[(&str, &str)] = &[
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        symlink_at(&dev, name, target)?;
    }
    if Path::new("/proc/kcore").exists() {
        symlink_at(&dev, "core", "/proc/kcore")?;
    }
    // /dev/ptmx must point into the container's own devpts instance.
    let _ = nix::unistd::unlinkat(&dev, "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
    symlink_at(&dev, "ptmx", "pts/ptmx")?;
    Ok(())
}

fn symlink_at(dir: &File, name: &str, target: &str) -> Result<()> {
    match nix::unistd::symlinkat(target, dir, name) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(io_err(format!("creating symlink /dev/{name}"), e)),
    }
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    root: &RootDir,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    userns: bool,
) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().ok_or_else(|| Error::Other(format!("invalid device path {}", path.display())))?;
    let dir = mkdir_in(root, parent)?;
    if userns {
        // mknod is not allowed in a user namespace: bind the host's node.
        let target = create_file_in(root, path)?;
        let host = Path::new("/dev").join(path.strip_prefix("/dev").unwrap_or(path));
        return mount(Some(&host), &magic(&target), None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| io_err(format!("binding device {}", host.display()), e));
    }
    let dev = nix::sys::stat::makedev(major, minor);
    // Replace whatever the image put there (a regular file, an old node).
    if let Ok(st) = nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        let ft = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if ft == kind && st.st_rdev == dev {
            return chown_chmod(&dir, name, uid, gid, mode, path);
        }
        let flag = if ft == SFlag::S_IFDIR {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(&dir, name, flag).map_err(|e| io_err(format!("replacing {}", path.display()), e))?;
    }
    nix::sys::stat::mknodat(&dir, name, kind, Mode::from_bits_truncate(mode), dev)
        .map_err(|e| io_err(format!("mknod {}", path.display()), e))?;
    chown_chmod(&dir, name, uid, gid, mode, path)
}

fn chown_chmod(dir: &File, name: &std::ffi::OsStr, uid: u32, gid: u32, mode: u32, path: &Path) -> Result<()> {
    nix::unistd::fchownat(
        dir,
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_err(format!("chown {}", path.display()), e))?;
    nix::sys::stat::fchmodat(dir, name, Mode::from_bits_truncate(mode), nix::sys::stat::FchmodatFlags::FollowSymlink)
        .map_err(|e| io_err(format!("chmod {}", path.display()), e))
}

/// Swaps the root: the rootfs becomes `/` and the old root is detached, so
/// nothing of the host filesystem stays reachable.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let old = File::open("/").ctx(|| "opening old root".into())?;
    let new = File::open(rootfs).ctx(|| format!("opening rootfs {}", rootfs.display()))?;
    nix::unistd::fchdir(&new).map_err(|e| io_err("chdir to rootfs".into(), e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| io_err(format!("pivot_root into {}", rootfs.display()), e))?;
    // The old root is now mounted on top of "."; step onto it, make sure no
    // unmount propagates to the host, and detach it.
    nix::unistd::fchdir(&old).map_err(|e| io_err("chdir to old root".into(), e))?;
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| io_err("making old root rslave".into(), e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| io_err("detaching old root".into(), e))?;
    nix::unistd::chdir("/").map_err(|e| io_err("chdir /".into(), e))?;
    drop(old);
    drop(new);
    Ok(())
}

/// After pivot: re-applies rootfsPropagation, makes / read-only when asked,
/// then handles readonlyPaths and maskedPaths.
pub fn finish(spec: &Spec, userns: bool) -> Result<()> {
    let linux = spec.linux().as_ref();
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        if let Some(flag) = mount_options::propagation_flag(p) {
            mount(None::<&str>, "/", None::<&str>, flag, None::<&str>)
                .map_err(|e| io_err("setting rootfs propagation".into(), e))?;
        }
    }
    for p in linux.and_then(|l| l.readonly_paths().as_deref()).unwrap_or_default() {
        readonly_path(Path::new(p), userns)?;
    }
    for p in linux.and_then(|l| l.masked_paths().as_deref()).unwrap_or_default() {
        mask_path(Path::new(p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        remount(Path::new("/"), MsFlags::MS_RDONLY, userns).map_err(|e| match e {
            Error::Io { source, .. } => Error::Io { context: "making rootfs read-only".into(), source },
            e => e,
        })?;
    }
    Ok(())
}

fn readonly_path(p: &Path, userns: bool) -> Result<()> {
    match mount(Some(p), p, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>) {
        Ok(()) => {}
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io_err(format!("readonly path {}", p.display()), e)),
    }
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_REC;
    remount(p, flags, userns).map_err(|e| match e {
        Error::Io { source, .. } => Error::Io { context: format!("readonly path {}", p.display()), source },
        e => e,
    })
}

fn mask_path(p: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("masked path {}", p.display())),
    };
    let r = if meta.is_dir() {
        mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, Some("size=0k"))
    } else if meta.file_type().is_symlink() {
        return Ok(());
    } else {
        mount(Some("/dev/null"), p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    };
    match r {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_err(format!("masking {}", p.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_normalised_into_root() {
        assert_eq!(in_root(Path::new("/dev/pts")), PathBuf::from("/dev/pts"));
        assert_eq!(in_root(Path::new("dev//shm/")), PathBuf::from("/dev/shm"));
        assert_eq!(in_root(Path::new("/a/../../etc")), PathBuf::from("/a/../../etc"));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        // Out-of-range escapes must not panic.
        assert_eq!(unescape_mountinfo("\\777"), "?");
    }

    #[test]
    fn v1_layout_binds_each_hierarchy_once() {
        let d = |n: &str, p: &str| (n.to_string(), PathBuf::from(p));
        let dirs = vec![
            d("cpu", "/cg/cpu/c1"),
            d("net_cls", "/cg/net_cls,net_prio/c1"),
            d("net_prio", "/cg/net_cls,net_prio/c1"),
            d("net_cls,net_prio", "/cg/net_cls,net_prio/c1"),
            d("memory", "/cg/memory/c1"),
        ];
        let (binds, links) = v1_layout(&dirs);
        let names: Vec<&str> = binds.iter().map(|b| b.0).collect();
        assert_eq!(names, ["cpu", "net_cls,net_prio", "memory"]);
        assert_eq!(links, [("net_cls", "net_cls,net_prio"), ("net_prio", "net_cls,net_prio")]);
    }
}
