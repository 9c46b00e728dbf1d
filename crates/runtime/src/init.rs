//! A tiny init for containers that ask for one (`docker run --init`): the
//! container's first process stays as PID 1, runs the program as its
//! child, forwards every signal to it and reaps every orphan, then exits
//! with the program's status (128 + signal when it was killed), as tini
//! does. Docker bind-mounts a separate `docker-init` binary for this; here
//! the runtime's own init process, already inside the container and
//! already confined (user, capabilities, seccomp), simply does not exec
//! itself away — no extra file in the container, nothing to keep in sync.
//!
//! Asked for with the annotation [`INIT_ANNOTATION`] = `"true"`.

use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::process::ExecArgs;
use crate::sys::{self, Fork};

/// The spec annotation that turns the init on.
pub const INIT_ANNOTATION: &str = "dev.berth.init";

/// True when `spec` asks for the init.
pub fn wanted(spec: &oci_spec::runtime::Spec) -> bool {
    spec.annotations().as_ref().and_then(|a| a.get(INIT_ANNOTATION)).is_some_and(|v| v == "true")
}

/// Forks the program (which execs `exec`) and serves as its init; never
/// returns on success. Call as the last step before where exec would be,
/// with every descriptor but stdio already close-on-exec.
pub fn run(exec: ExecArgs) -> Result<std::convert::Infallible> {
    // Block everything first: the signals wait in the queue until the loop
    // takes them, and blocked signals reach a PID 1 even from outside its
    // namespace (the kernel drops only unhandled, unblocked ones).
    let all = SigSet::all();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old))
        .map_err(|e| Error::Other(format!("init: blocking signals: {e}")))?;
    let child = match sys::fork().map_err(|e| Error::Other(format!("init: fork: {e}")))? {
        Fork::Child => {
            // Own process group, in the foreground of the tty if there is
            // one, so ^C reaches the program once (not through us too).
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid());
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            let e = exec.exec();
            eprintln!("berth-init: {e}");
            sys::exit_now(127);
        }
        Fork::Parent(pid) => pid,
    };
    // The descriptors the program inherited (the start fifo among them)
    // must not stay open here.
    let _ = sys::close_from(3);
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGCHLD {
            if let Some(code) = reap(child) {
                sys::exit_now(code);
            }
            continue;
        }
        let _ = kill(child, sig);
    }
}

/// Reaps every exited child; the program's exit code once it is gone.
fn reap(program: Pid) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program => result = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == program => result = Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(_) => {}
        }
    }
}
