//! The engine's only `unsafe`: bringing up the loopback interface of a
//! container's network namespace (Docker's `--network none` has `lo` up
//! with 127.0.0.1; a fresh namespace has it down).

use std::os::fd::{AsFd, AsRawFd};

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
