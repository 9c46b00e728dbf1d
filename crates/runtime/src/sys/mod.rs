//! Thin safe wrappers over raw Linux syscalls. Every `unsafe` block of the
//! crate lives under this module, each with a `// SAFETY:` comment.
//!
//! Most calls go through `nix`/`rustix`, which already expose safe APIs;
//! what remains here are the few calls those crates leave `unsafe` or lack.

pub mod bpf;
pub mod sealed_exe;
pub mod seccomp;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};

use nix::unistd::Pid;

/// What Rust's runtime does before `main` that berth relies on, for the
/// `berth` binary, which skips that runtime (it is `no_main`: the
/// runtime's stack-overflow guard reads /proc/self/maps and sets up an
/// alternate signal stack, ~0.15 ms of every exec, and a container start
/// execs berth two or three times):
/// - a closed stdin, stdout or stderr is opened on /dev/null, so that no
///   file berth opens later lands on fd 0–2 and receives its output;
/// - SIGPIPE is ignored: a write to a closed pipe or socket is an EPIPE
///   error to report, not a silent death. (std's process spawning still
///   resets it to the default in children.)
pub fn process_start() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: fds 0–2 are only polled here, before anything could own them.
    let stdio = [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
    let mut fds = stdio.map(|fd| PollFd::new(fd, PollFlags::empty()));
    if poll(&mut fds, PollTimeout::ZERO).is_ok() {
        for (fd, p) in stdio.iter().zip(fds.iter()) {
            if p.revents().is_some_and(|r| r.contains(PollFlags::POLLNVAL)) {
                // open() returns the lowest free descriptor: this one.
                match nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
                    Ok(null) if null.as_raw_fd() == fd.as_raw_fd() => std::mem::forget(null),
                    _ => std::process::abort(),
                }
            }
        }
    }
    // SAFETY: SIG_IGN runs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// Result of [`fork`], as seen by the calling process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// We are the parent; the value is the child's pid.
    Parent(Pid),
    /// We are the new child process.
    Child,
}

/// Forks the calling process.
///
/// The runtime only forks from single-threaded processes (the CLI never
/// starts threads), so the child may safely allocate and run arbitrary code.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: berth's runtime paths are single-threaded (no tokio, no thread
    // spawning before this point), so the child inherits a consistent heap
    // and no locks held by other threads.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Fork::Parent(child)),
        Ok(nix::unistd::ForkResult::Child) => Ok(Fork::Child),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// `struct clone_args` of `clone3(2)` (the fields up to `cgroup`, the
/// kernel 5.7 size).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP`: the child starts in the cgroup2 directory given.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks like [`fork`], but the child starts in the cgroup2 directory
/// `cgroup` (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7+). Joining a
/// cgroup this way takes the kernel's threadgroup lock only for reading,
/// while a write to `cgroup.procs` takes it for writing and waits for an
/// RCU grace period: about 10 ms per container start on an idle host.
///
/// Fails (and forks nothing) on kernels without clone3/CLONE_INTO_CGROUP;
/// the caller then forks and writes `cgroup.procs`.
pub fn fork_into_cgroup(cgroup: BorrowedFd<'_>) -> io::Result<Fork> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: as for `fork`, the process is single-threaded. Without
    // CLONE_VM and with no stack given, clone3 behaves as fork: the child
    // runs on a copy of our stack and memory. Unlike glibc's fork it does
    // not refresh glibc's cached thread id (used only by pthread_kill/raise
    // and error-checking mutexes, none of which the child's code uses; the
    // child's own fork() of stage 2 goes through glibc and is exact).
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    match r {
        0 => Ok(Fork::Child),
        r if r > 0 => Ok(Fork::Parent(Pid::from_raw(r as i32))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Terminates the calling process immediately, without running atexit
/// handlers or flushing stdio buffers (correct for forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Marks every descriptor numbered `first` or above close-on-exec, so none
/// leaks into the container while the ones still needed stay usable until
/// `execve` (the CVE-2024-21626 class of leaks).
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes flags of this process's own fd table;
    // the arguments are plain integers.
    let r =
        unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: walk /proc/self/fd.
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) {
            if fd >= first as RawFd {
                fds.push(fd);
            }
        }
    }
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on a descriptor number is harmless even
        // if it was closed in between (EBADF is ignored).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Sets the NIS domain name of the current UTS namespace.
pub fn set_domainname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live byte slice.
    let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the terminal `fd` the controlling terminal of the calling session.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument and fd is a live descriptor.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the window size of the terminal `fd`.
pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a `winsize` struct that lives on our stack.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads the window size of the terminal `fd`, if it is one.
pub fn get_winsize(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a `winsize` struct that lives on our stack.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS), with a short payload.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let iov = [io::IoSlice::new(payload)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    socket::sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map(|_| ()).map_err(io::Error::from)
}

/// Receives one descriptor sent with [`send_fd`].
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    recv_with_fd(sock, &mut buf)?.1.ok_or_else(|| io::Error::other("no file descriptor received"))
}

/// Receives one message into `buf` and the descriptor sent with it, if
/// any ([`send_fd`], or a plain write): (payload length, descriptor).
/// A length of 0 is the peer's end.
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    let mut got = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for (i, &fd) in fds.iter().enumerate() {
                // SAFETY: the kernel just installed these descriptors in
                // our table for us; nothing else owns them.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if i == 0 && got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, got))
}

/// Closes every descriptor from `first` up (the init's copies of what it
/// handed to the program).
pub fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only closes this process's own descriptors; the
    // caller owns none of them any more (no OwnedFd refers to them after).
    let r =
        unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restores default dispositions for every catchable signal and unblocks
/// them all, so the container's program starts with a clean slate (Rust's
/// runtime ignores SIGPIPE; the runtime blocks signals it forwards).
pub fn reset_signals() {
    use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code, so there is
        // no async-signal-safety concern.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Makes the mount at `fd` and every mount below it read-only
/// (mount_setattr with AT_RECURSIVE: the "rro" mount option).
pub fn set_recursive_readonly(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_recursive_attrs(fd, MOUNT_ATTR_RDONLY)
}

/// `MOUNT_ATTR_*` bits of mount_setattr(2).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Sets the `MOUNT_ATTR_*` bits `set` on the mount at `fd` and every mount
/// below it, in one mount_setattr(2) with AT_RECURSIVE (Linux 5.12):
/// what would otherwise take one remount per mount. Not in rustix.
pub fn set_recursive_attrs(fd: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    const AT_RECURSIVE: libc::c_int = 0x8000;
    // struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd }
    let attr: [u64; 4] = [set, 0, 0, 0];
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` lives
    // on our stack for the call and its size is passed along.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | AT_RECURSIVE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets network interface `name` up (SIOCGIFFLAGS, then SIOCSIFFLAGS with
/// IFF_UP) in this thread's network namespace: the loopback of a new
/// network namespace starts down.
pub fn set_link_up(name: &str) -> std::io::Result<()> {
    let sock = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::DGRAM, None)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq living across the call; SIOCGIFFLAGS
    // only writes ifr_flags inside it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the flags member of the union was just set by the kernel.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
