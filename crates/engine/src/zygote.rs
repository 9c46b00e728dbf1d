//! Pre-spawned monitors ("zygotes"). Starting a container starts its
//! monitor first, and a process start (spawn, exec of the static berth
//! binary, its start-up) is about half a millisecond of every `docker
//! run`. So the daemon keeps one monitor started ahead, idle: `berth
//! monitor --zygote …`, waiting on a socket for the container it is to
//! watch. A start hands it the container ([`Activation`], and the prebound
//! monitor socket if there is one); it then runs exactly as a freshly
//! spawned monitor does, answering on its stdout, and the daemon starts
//! the next zygote in the background.
//!
//! An idle zygote exits when its socket closes (the daemon exits or dies,
//! or drops it). Its command line says `--zygote`; once activated it
//! rewrites that to a monitor's (`monitor --root R --run-root RR ID`), so
//! `ps` shows which container each monitor watches.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The argument after `--zygote`: room in the idle process's command line
/// for the container id it shows once activated (see the module docs).
pub const CMDLINE_ROOM: &str = "                                                                        ";

/// What a zygote is told when a container starts: one message on its
/// socket, with the prebound monitor socket attached when there is one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Activation {
    /// The container to monitor.
    pub id: String,
    /// Attach clients to wait for before starting (`--wait-attach`).
    pub wait_attach: usize,
}

/// An idle zygote: its process, the daemon's end of its socket, and its
/// stdout, where it gives its one answer once activated.
#[derive(Debug)]
pub struct Zygote {
    child: Child,
    ctl: UnixStream,
    out: ChildStdout,
}

impl Zygote {
    /// Starts a zygote with `cmd` (`berth monitor --root R --run-root RR
    /// --zygote ROOM`); its stdin becomes the activation socket.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Zygote> {
        // Seqpacket: the activation arrives as one message.
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let ours = UnixStream::from(ours);
        // No descriptor to move in the child, so std still spawns with
        // posix_spawn (see Engine::spawn_monitor).
        cmd.stdin(Stdio::from(theirs)).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("zygote without stdout"));
        };
        Ok(Zygote { child, ctl: ours, out })
    }

    /// Hands the zygote its container. On success, the process (for the
    /// caller to reap) and the pipe of its answer; on failure (it died
    /// idle), the caller spawns a monitor the usual way, still holding
    /// `listener`.
    pub fn activate(self, a: &Activation, listener: Option<BorrowedFd<'_>>) -> std::io::Result<(Child, ChildStdout)> {
        let Zygote { mut child, mut ctl, out } = self;
        let sent = (|| {
            let msg = serde_json::to_vec(a).map_err(std::io::Error::other)?;
            match listener {
                Some(fd) => berth_runtime::sys::send_fd(ctl.as_fd(), fd, &msg),
                None => {
                    use std::io::Write;
                    ctl.write_all(&msg)
                }
            }
        })();
        // Our end closes here either way: the zygote has what it needs, or
        // it sees the end and exits.
        drop(ctl);
        match sent {
            Ok(()) => Ok((child, out)),
            Err(e) => {
                // It died idle (or is about to): reap it off this path.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                Err(e)
            }
        }
    }
}

/// The daemon's idle zygote, and the background start of the next.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Option<Zygote>>,
    refilling: AtomicBool,
}

impl Pool {
    /// The idle zygote, if there is one.
    pub fn take(&self) -> Option<Zygote> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Starts a zygote in the background unless one is idle or starting.
    pub fn refill(self: &Arc<Self>, cmd: Command) {
        if self.idle.lock().unwrap_or_else(|e| e.into_inner()).is_some() || self.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("zygote".into()).spawn(move || {
            if let Ok(z) = Zygote::spawn(cmd) {
                let mut idle = me.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.is_none() {
                    *idle = Some(z);
                }
            }
            me.refilling.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.refilling.store(false, Ordering::Release);
        }
    }
}
