//! The container's terminal: a pty allocated inside the container's own
//! devpts, whose master end goes to the caller over `--console-socket`
//! (SCM_RIGHTS), and whose slave becomes the process's stdio and
//! controlling terminal.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};

use crate::error::{Context, Error, Result};
use crate::sys;

/// Opens a new pty pair from the container's /dev/ptmx (called after
/// pivot_root), sends the master to `socket`, bind mounts the slave over
/// /dev/console and makes it stdio + controlling terminal.
pub fn setup(socket: &OwnedFd, size: Option<(u16, u16)>) -> Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).ctx(|| "opening /dev/ptmx".into())?;
    grantpt(&master).ctx(|| "grantpt".into())?;
    unlockpt(&master).ctx(|| "unlockpt".into())?;
    let name = ptsname_r(&master).ctx(|| "ptsname".into())?;
    let slave: OwnedFd = nix::fcntl::open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("opening {name}"))?;
    if let Some((rows, cols)) = size {
        let _ = sys::set_winsize(slave.as_fd(), rows, cols);
    }
    // /dev/console: bind the slave over an empty file.
    if !Path::new("/dev/console").exists() {
        let _ = std::fs::File::create("/dev/console");
    }
    nix::mount::mount(Some(Path::new(&name)), "/dev/console", None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .ctx(|| "bind mounting the pty over /dev/console".into())?;
    sys::send_fd(socket.as_fd(), master.as_fd(), name.as_bytes())
        .map_err(|e| Error::Io { context: "sending the pty master to the console socket".into(), source: e })?;
    drop(master);
    sys::set_controlling_tty(slave.as_fd()).ctx(|| "making the pty the controlling terminal".into())?;
    nix::unistd::dup2_stdin(&slave).ctx(|| "dup2 pty onto stdin".into())?;
    nix::unistd::dup2_stdout(&slave).ctx(|| "dup2 pty onto stdout".into())?;
    nix::unistd::dup2_stderr(&slave).ctx(|| "dup2 pty onto stderr".into())?;
    Ok(())
}
