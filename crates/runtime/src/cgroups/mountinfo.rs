//! `/proc/self/mountinfo`, read once and kept until the mount table changes.
//!
//! Every cgroup [`Manager`](super::Manager) starts from the mount table, and
//! a container start builds several (create, start, status checks, delete):
//! reading mountinfo cost ~0.9 ms of each `run --rm` (the kernel formats
//! every mount each time). The text is cached per process together with an
//! open descriptor of the file: the kernel flags that descriptor
//! (POLLPRI) whenever its mount namespace's table changes, so one `poll`
//! with a zero timeout says whether the cached text is still the table.
//! A process that moved to another mount namespace (the container's init
//! after unshare) re-reads too: the cache remembers the namespace it read.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

struct Cached {
    file: File,
    mnt_ns: u64,
    text: Arc<String>,
}

static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

/// The current text of `/proc/self/mountinfo` (None when unreadable).
pub fn read() -> Option<Arc<String>> {
    let mnt_ns = std::fs::metadata("/proc/self/ns/mnt").map(|m| m.ino()).unwrap_or(0);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache.as_mut() {
        if c.mnt_ns == mnt_ns && mnt_ns != 0 && !changed(&c.file) {
            return Some(c.text.clone());
        }
    }
    // Open first, read after: a change in between flags the new
    // descriptor, so the next call reads again rather than trusting text
    // older than the table.
    let mut file = File::open("/proc/self/mountinfo").ok()?;
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    if text.is_empty() {
        return None;
    }
    let text = Arc::new(text);
    *cache = Some(Cached { file, mnt_ns, text: text.clone() });
    Some(text)
}

/// True when the kernel reports a change of the mount table since `f`
/// was opened or last polled (or when it cannot tell).
fn changed(f: &File) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => true,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn follows_the_mount_table() {
        let a = super::read().expect("mountinfo");
        let b = super::read().expect("mountinfo");
        // Unchanged table: the very same text.
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // A mount and an unmount in our namespace (on a private temp dir)
        // must both show in the next read.
        let dir = tempfile::tempdir().expect("tempdir");
        nix::mount::mount(Some("tmpfs"), dir.path(), Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)
            .expect("mount");
        let c = super::read().expect("mountinfo");
        let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
        assert!(c.contains(&dir.path().display().to_string()), "the new mount is not in the cached text");
        let d = super::read().expect("mountinfo");
        assert!(!d.contains(&dir.path().display().to_string()), "the unmount is not in the cached text");
    }
}
