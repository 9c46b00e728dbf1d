//! Re-execution from a sealed in-memory copy of our own binary.
//!
//! A process that enters a container (create/run/exec) is visible to the
//! container through `/proc/<pid>/exe` until it execs the container's
//! program. If that link pointed at the host's berth binary, a hostile
//! container could open it for writing and replace it (CVE-2019-5736).
//! We therefore copy the binary into a memfd, seal it against any change,
//! and `execveat` it: `/proc/self/exe` then names an immutable anonymous file.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{MFdFlags, memfd_create};

/// Seals that make the memfd immutable forever.
fn all_seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// True when the running executable is already a sealed memfd.
pub fn is_sealed() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    match nix::fcntl::fcntl(exe.as_fd(), FcntlArg::F_GET_SEALS) {
        Ok(seals) => SealFlag::from_bits_truncate(seals).contains(all_seals()),
        Err(_) => false,
    }
}

/// Ensures the process runs from a sealed copy of its binary, re-executing
/// itself (same argv and environment) if it does not yet. Returns only when
/// already sealed; otherwise it either execs or returns the error.
pub fn ensure_sealed() -> io::Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let mut exe = File::open("/proc/self/exe")?;
    let memfd = memfd_create(c"berth", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(io::Error::from)?;
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

    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
        .collect::<Result<_, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
            kv.push(b'=');
            kv.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    match nix::unistd::fexecve(dst.as_fd(), &args, &env) {
        Err(e) => Err(io::Error::from(e)),
        Ok(never) => match never {},
    }
}
