//! The engine's only `unsafe`: returning freed heap to the kernel
//! (`malloc_trim`). Also: taking over the listening socket the daemon
//! hands a monitor as its stdin.

use std::os::fd::RawFd;
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
