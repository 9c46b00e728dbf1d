//! Re-execution from a sealed in-memory copy of our own binary.
//!
//! A process that enters a container (create/run/exec) is visible to the
//! container through `/proc/<pid>/exe` until it execs the container's
//! program. If that link pointed at the host's berth binary, a hostile
//! container could open it for writing and replace it (CVE-2019-5736).
//! We therefore re-exec from an immutable copy of the binary:
//!
//! 1. preferred: the binary seen through a *detached, read-only overlayfs*
//!    mount of its own directory (fsopen/fsmount, never attached to any
//!    path). Writing through it fails with EROFS, and it costs one mount
//!    instead of copying megabytes on every container start;
//! 2. fallback (no privilege for overlayfs): a memfd copy sealed against
//!    any change (F_SEAL_WRITE and friends).
//!
//! A long-lived parent (the daemon) can make the view once with
//! [`sealed_view`] and exec its children through it: they find themselves
//! sealed and skip the re-exec.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// Seals that make the memfd immutable forever.
fn all_seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// overlayfs's f_type.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Set once [`is_sealed`] found this process sealed (an exec starts a new
/// process image, and with it a cleared flag).
static SEALED: AtomicBool = AtomicBool::new(false);

/// True when the running executable is already a sealed memfd, or lives
/// on a read-only overlayfs mount (our own detached one).
pub fn is_sealed() -> bool {
    if SEALED.load(Ordering::Relaxed) {
        return true;
    }
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    let sealed = match nix::fcntl::fcntl(exe.as_fd(), FcntlArg::F_GET_SEALS) {
        Ok(seals) => SealFlag::from_bits_truncate(seals).contains(all_seals()),
        Err(_) => on_read_only_overlay(exe.as_fd()),
    };
    SEALED.store(sealed, Ordering::Relaxed);
    sealed
}

/// True when `f` lives on a read-only overlayfs mount.
fn on_read_only_overlay(f: BorrowedFd<'_>) -> bool {
    let on_overlay = nix::sys::statfs::fstatfs(f).is_ok_and(|s| s.filesystem_type().0 == OVERLAYFS_SUPER_MAGIC);
    on_overlay
        && nix::sys::statvfs::fstatvfs(f).is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// The binary `exe` seen through a detached, read-only overlayfs view of
/// its directory (an `O_PATH`, close-on-exec fd), for a long-lived process
/// that spawns children which must run sealed: made once, then each child
/// is executed through it (`/proc/self/fd/N`), and its [`ensure_sealed`]
/// finds it already sealed and skips the re-exec. Errors when the view
/// cannot be made (no privilege for overlayfs) or is not sealed.
pub fn sealed_view(exe: &Path) -> io::Result<OwnedFd> {
    let fd = overlay_view(exe)?;
    if on_read_only_overlay(fd.as_fd()) {
        Ok(fd)
    } else {
        Err(io::Error::other("the overlay view is not a read-only overlayfs"))
    }
}

/// Opens the binary `exe` through a detached read-only overlayfs mount of
/// its directory (over an empty tmpfs; no upper layer).
fn overlay_view(exe: &Path) -> io::Result<OwnedFd> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(io::Error::other("odd /proc/self/exe"));
    };
    // overlayfs without an upper layer needs two lower ones: the binary's
    // directory over an empty, detached tmpfs.
    let tmpfs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_create(&tmpfs)?;
    let empty = rustix::mount::fsmount(&tmpfs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::MOUNT_ATTR_RDONLY)?;
    let empty_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&empty));
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // "lowerdir+" takes one layer per call (no escaping of ':' needed).
    rustix::mount::fsconfig_set_string(&fs, "lowerdir+", dir)?;
    rustix::mount::fsconfig_set_string(&fs, "lowerdir+", empty_path.as_str())?;
    rustix::mount::fsconfig_create(&fs)?;
    let mnt = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )?;
    let fd = rustix::fs::openat(
        &mnt,
        name,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    Ok(fd)
}

/// Ensures the process runs from a sealed copy of its binary, re-executing
/// itself (same argv and environment) if it does not yet. Returns only when
/// already sealed; otherwise it either execs or returns the error.
pub fn ensure_sealed() -> io::Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let (args, env) = argv_env()?;
    if let Ok(fd) = std::fs::read_link("/proc/self/exe").and_then(|exe| overlay_view(&exe)) {
        // Falls through to the memfd copy if exec from the view fails.
        let _ = nix::unistd::execveat(&fd, c"", &args, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH);
    }
    let mut exe = File::open("/proc/self/exe")?;
    let memfd = memfd_create(c"berth", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(io::Error::from)?;
    let mut dst = File::from(memfd);
    let len = exe.metadata()?.len();
    // sendfile moves the bytes inside the kernel; fall back to a read/write
    // copy when it is not supported for this pair of files.
    let mut done: u64 = 0;
    while done < len {
        match nix::sys::sendfile::sendfile64(dst.as_fd(), exe.as_fd(), None, (len - done) as usize) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) if done == 0 => {
                io::copy(&mut exe, &mut dst)?;
                done = len;
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    nix::fcntl::fcntl(dst.as_fd(), FcntlArg::F_ADD_SEALS(all_seals())).map_err(io::Error::from)?;

    match nix::unistd::fexecve(dst.as_fd(), &args, &env) {
        Err(e) => Err(io::Error::from(e)),
        Ok(never) => match never {},
    }
}

/// The current argv and environment as C strings for exec.
fn argv_env() -> io::Result<(Vec<CString>, Vec<CString>)> {
    use std::os::unix::ffi::OsStrExt;
    let bad = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
    let args = std::env::args_os().map(|a| CString::new(a.as_bytes())).collect::<Result<_, _>>().map_err(bad)?;
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    Ok((args, env))
}
