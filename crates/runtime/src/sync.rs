//! The channel between the runtime process and the processes it forks to
//! build the container: a SOCK_SEQPACKET socketpair carrying one small JSON
//! message per packet. Both ends are close-on-exec, so the parent sees EOF
//! exactly when the container's program has been exec'd (or the child died).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

/// Messages exchanged while a container (or an exec'd process) is set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Child → parent: stage 1 started (and unshared its user namespace
    /// if `userns`); asks the parent to write id maps and join cgroups.
    Stage1Ready {
        /// A new user namespace was created and needs id maps.
        userns: bool,
    },
    /// Parent → child: carry on.
    Go,
    /// Stage 1 → parent: host pid of the container process it forked.
    Pid(i32),
    /// Init → parent: mounts are done, run prestart/createRuntime hooks now.
    RunHooks,
    /// Init → parent: setup is complete; waiting for `start`.
    Ready,
    /// Child → parent: setup failed.
    Error(String),
}

/// One end of the setup channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair of channel ends (both close-on-exec).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Sends one message.
    pub fn send(&self, msg: &Msg) -> io::Result<()> {
        let data = serde_json::to_vec(msg).map_err(io::Error::other)?;
        loop {
            match socket::send(self.fd.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one message; `None` when the other side closed its end.
    pub fn recv(&self) -> io::Result<Option<Msg>> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n]).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Sends, then waits for [`Msg::Go`]; any other answer is an error.
    pub fn request(&self, msg: &Msg) -> io::Result<()> {
        self.send(msg)?;
        match self.recv()? {
            Some(Msg::Go) => Ok(()),
            Some(Msg::Error(e)) => Err(io::Error::other(e)),
            other => Err(io::Error::other(format!("unexpected setup message {other:?}"))),
        }
    }

    /// The raw descriptor (for poll loops).
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
