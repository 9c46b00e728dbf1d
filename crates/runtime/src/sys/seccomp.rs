//! `seccomp(2)` with `SECCOMP_SET_MODE_FILTER`: installs a classic-BPF
//! program that was rendered earlier (by libseccomp, in the runtime process
//! before the fork), so the container's init does only this one syscall
//! between the start handshake and exec.
//!
//! libseccomp's own `seccomp_load` generates the program at load time:
//! milliseconds for Docker's profile, spent after `start` returned, when a
//! signal sent right away could reach the process before it runs. Neither
//! `nix` nor `rustix` wraps `seccomp(2)`, hence the raw syscall.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `SECCOMP_SET_MODE_FILTER` operation.
const SET_MODE_FILTER: libc::c_uint = 1;

/// `SECCOMP_FILTER_FLAG_TSYNC`: install on every thread of the process.
pub const FLAG_TSYNC: u32 = 1;
/// `SECCOMP_FILTER_FLAG_LOG`: log every action but `ALLOW`.
pub const FLAG_LOG: u32 = 1 << 1;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`: keep speculative store bypass on.
pub const FLAG_SPEC_ALLOW: u32 = 1 << 2;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: return a user-notification fd.
pub const FLAG_NEW_LISTENER: u32 = 1 << 3;
/// `SECCOMP_FILTER_FLAG_TSYNC_ESRCH`: report TSYNC failure as ESRCH (lets
/// TSYNC combine with NEW_LISTENER).
pub const FLAG_TSYNC_ESRCH: u32 = 1 << 4;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`.
pub const FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;

/// Installs `program` as a seccomp filter of the calling thread (or
/// process, with [`FLAG_TSYNC`]). With [`FLAG_NEW_LISTENER`] the kernel's
/// notify listener comes back (close-on-exec, as the kernel makes it).
///
/// Without no_new_privs the caller must hold CAP_SYS_ADMIN.
pub fn set_filter(program: &[libc::sock_filter], flags: u32) -> io::Result<Option<OwnedFd>> {
    let len = u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: `prog` points at `program`, which outlives the call; the
    // kernel only reads `len` instructions from it and copies them.
    let r = unsafe {
        libc::syscall(libc::SYS_seccomp, SET_MODE_FILTER, flags as libc::c_uint, &prog as *const libc::sock_fprog)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & FLAG_NEW_LISTENER != 0 {
        let fd = i32::try_from(r).map_err(|_| io::Error::other("seccomp returned a bad listener fd"))?;
        // SAFETY: with NEW_LISTENER a non-negative return is a new fd that
        // nothing else owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    if r > 0 {
        // TSYNC without TSYNC_ESRCH: the id of a thread that could not sync.
        return Err(io::Error::other(format!("thread {r} could not take the filter (TSYNC)")));
    }
    Ok(None)
}
