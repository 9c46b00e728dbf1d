//! The engine's only `unsafe`: returning freed heap to the kernel
//! (`malloc_trim`); bringing up the loopback interface of a
//! container's network namespace (Docker's `--network none` has `lo` up
//! with 127.0.0.1; a fresh namespace has it down). Also: taking over the
//! listening socket the daemon hands a monitor as its stdin.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixListener;

/// Takes the listening unix socket the daemon handed the monitor as its
/// stdin (`berth monitor --listen-fd 0`), as a close-on-exec copy: stdin
/// itself is replaced by /dev/null later, which closes it there. Any other
/// descriptor number is refused (the daemon only ever passes 0).
pub fn inherited_listener(fd: RawFd) -> std::io::Result<UnixListener> {
    if fd != 0 {
        return Err(std::io::Error::other(format!("descriptor {fd}: the listener comes as stdin, 0")));
    }
    let owned = rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 3)?;
    let st = rustix::fs::fstat(&owned)?;
    let is_socket = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket;
    if !is_socket || !rustix::net::sockopt::socket_acceptconn(&owned).unwrap_or(false) {
        return Err(std::io::Error::other("stdin is not a listening socket"));
    }
    Ok(UnixListener::from(owned))
}

/// Gives the heap's free pages back to the kernel (glibc's `malloc_trim`).
/// The monitor calls it once its container runs: setting up (the spec,
/// the seccomp filter, the runtime's state) leaves about a megabyte freed
/// but still resident, and a monitor lives as long as its container.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks and trims the allocator's own free
    // lists; it takes no pointers from us and is safe to call any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets `lo` up in the network namespace at `netns` (a `/proc/PID/ns/net`
/// path), returning the caller's thread to its own namespace after. Must
/// be called from a single-threaded process (the monitor).
pub fn loopback_up(netns: &std::path::Path) -> std::io::Result<()> {
    let ours = std::fs::File::open("/proc/thread-self/ns/net")?;
    let theirs = std::fs::File::open(netns)?;
    nix::sched::setns(theirs.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let res = set_up("lo");
    let back = nix::sched::setns(ours.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from);
    res.and(back)
}

/// SIOCGIFFLAGS + SIOCSIFFLAGS with IFF_UP on interface `name`.
fn set_up(name: &str) -> std::io::Result<()> {
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
