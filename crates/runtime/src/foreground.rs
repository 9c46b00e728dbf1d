//! Foreground supervision for `run` and `exec` without `--detach`: waits
//! for the container process, forwards signals to it, and when berth owns
//! the terminal, copies bytes between our stdio and the pty master.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Context, Result};
use crate::sys;

/// Signals forwarded to the container process.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Blocks the forwarded signals and SIGCHLD so they can be read from a
/// signalfd; call before forking (children unblock them again).
pub fn block_signals() -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).ctx(|| "blocking signals".into())?;
    Ok(set)
}

/// Restores the terminal mode on drop.
struct RawMode {
    fd: i32,
    saved: termios::Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY-free: the fd is our stdin, alive for the whole process.
        let fd = std::io::stdin();
        let _ = self.fd;
        let _ = termios::tcsetattr(fd.as_fd(), termios::SetArg::TCSANOW, &self.saved);
    }
}

fn make_raw(fd: BorrowedFd<'_>) -> Option<RawMode> {
    let saved = termios::tcgetattr(fd).ok()?;
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(fd, termios::SetArg::TCSANOW, &raw).ok()?;
    Some(RawMode { fd: fd.as_raw_fd(), saved })
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return false,
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Waits for `pid` to exit, forwarding signals and proxying the pty if
/// `master` is given. Returns the shell-style exit code.
pub fn supervise(pid: i32, sigs: SigSet, master: Option<OwnedFd>) -> Result<i32> {
    let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ctx(|| "signalfd".into())?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let _raw = master.as_ref().and_then(|_| make_raw(stdin.as_fd()));
    if let (Some(m), Some((rows, cols))) = (&master, sys::get_winsize(stdin.as_fd())) {
        let _ = sys::set_winsize(m.as_fd(), rows, cols);
    }
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut exit: Option<i32> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if let Some(code) = exit {
            if !master_open {
                return Ok(code);
            }
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master.as_ref().filter(|_| master_open) {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        let stdin_idx = fds.len();
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        // Once the process is gone, drain the pty briefly, then stop.
        let timeout = if exit.is_some() { PollTimeout::from(100u16) } else { PollTimeout::NONE };
        match poll(&mut fds, timeout) {
            Ok(0) => {
                if exit.is_some() {
                    master_open = false;
                }
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| "poll".into()),
        }
        let ready = |i: usize, fds: &[PollFd<'_>]| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
        };
        let sig_ready = ready(0, &fds);
        let master_ready = master_open && ready(1, &fds);
        let stdin_ready = stdin_open && ready(stdin_idx, &fds);
        drop(fds);
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else { continue };
                match sig {
                    Signal::SIGCHLD => {
                        if exit.is_none() {
                            exit = reap(pid)?;
                        }
                    }
                    Signal::SIGWINCH => {
                        if let (Some(m), Some((r, c))) = (&master, sys::get_winsize(stdin.as_fd())) {
                            let _ = sys::set_winsize(m.as_fd(), r, c);
                        }
                    }
                    s => {
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid), s);
                    }
                }
            }
        }
        if master_ready {
            if let Some(m) = &master {
                match nix::unistd::read(m.as_fd(), &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => master_open = false,
                    Ok(n) => {
                        let _ = write_all(stdout.as_fd(), &buf[..n]);
                    }
                    Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                    Err(_) => master_open = false,
                }
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // Pass EOF on to the terminal as ^D.
                    if let Some(m) = &master {
                        let _ = write_all(m.as_fd(), &[4]);
                    }
                }
                Ok(n) => {
                    if let Some(m) = &master {
                        let _ = write_all(m.as_fd(), &buf[..n]);
                    }
                }
            }
        }
        if exit.is_none() && master.is_none() {
            // No pty: SIGCHLD may have been merged; poll for the exit too.
            exit = reap(pid)?;
        }
    }
}

fn reap(pid: i32) -> Result<Option<i32>> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => return Ok(Some(128 + sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| "waitpid".into()),
        }
    }
}
