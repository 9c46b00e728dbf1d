//! The few `bpf(2)` commands berth needs to restrict device access on
//! cgroup v2: load a `BPF_PROG_TYPE_CGROUP_DEVICE` program, attach it to a
//! cgroup directory, list the programs already attached there, and detach
//! them.
//!
//! Neither `nix` nor `rustix` wraps `bpf(2)`, so the calls are made with
//! `libc::syscall`. The `union bpf_attr` argument is built in a zeroed,
//! 8-byte aligned 256-byte buffer and passed whole: the kernel accepts a
//! larger-than-known attribute as long as the tail is zero, and some
//! commands (`BPF_PROG_QUERY`, `BPF_PROG_LOAD`) write results back into
//! fields further into the union than the ones we fill, so a short buffer
//! would let the kernel write past it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `BPF_PROG_LOAD` command.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_ATTACH` command.
const BPF_PROG_ATTACH: libc::c_long = 8;
/// `BPF_PROG_DETACH` command.
const BPF_PROG_DETACH: libc::c_long = 9;
/// `BPF_PROG_GET_FD_BY_ID` command.
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
/// `BPF_PROG_QUERY` command.
const BPF_PROG_QUERY: libc::c_long = 16;

/// `BPF_PROG_TYPE_CGROUP_DEVICE`.
pub const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_CGROUP_DEVICE` attach type.
pub const ATTACH_CGROUP_DEVICE: u32 = 6;
/// `BPF_F_ALLOW_MULTI`: other programs may be attached next to this one
/// (all of them must allow an access).
pub const F_ALLOW_MULTI: u32 = 2;

/// Size of the attribute buffer handed to the kernel (larger than any
/// `union bpf_attr` member berth uses, tail kept zero).
const ATTR_SIZE: usize = 256;

/// A zeroed, aligned `union bpf_attr` image filled field by field.
#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Self {
        Attr([0; ATTR_SIZE])
    }

    fn put_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }

    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
}

/// Runs `bpf(cmd, attr, sizeof attr)`; returns the non-negative result.
fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, exclusively borrowed buffer of ATTR_SIZE
    // bytes that lives for the whole call; every pointer stored inside it by
    // the callers of this function refers to memory that also outlives the
    // call and is large enough for what the kernel reads or writes there
    // (the sizes are given next to the pointers).
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), ATTR_SIZE as libc::c_ulong) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Wraps a descriptor number just returned by the kernel.
fn owned_fd(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(r).map_err(|_| io::Error::other("bpf returned an out-of-range descriptor"))?;
    // SAFETY: `fd` was just created by a successful bpf(2) call that returns
    // a new descriptor; nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program made of raw `struct
/// bpf_insn` values (each `u64` holds one instruction in memory order).
///
/// On a verifier rejection the error message carries the verifier log.
pub fn load_cgroup_device_prog(insns: &[u64], license: &str) -> io::Result<OwnedFd> {
    let license = std::ffi::CString::new(license).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let cnt = u32::try_from(insns.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let build = |log: Option<&mut Vec<u8>>| {
        let mut a = Attr::new();
        a.put_u32(0, PROG_TYPE_CGROUP_DEVICE); // prog_type
        a.put_u32(4, cnt); // insn_cnt
        a.put_u64(8, insns.as_ptr() as u64); // insns
        a.put_u64(16, license.as_ptr() as u64); // license
        if let Some(buf) = log {
            a.put_u32(24, 1); // log_level
            a.put_u32(28, buf.len() as u32); // log_size
            a.put_u64(32, buf.as_mut_ptr() as u64); // log_buf
        }
        a.0[48..48 + 5].copy_from_slice(b"berth"); // prog_name
        a.put_u32(68, ATTACH_CGROUP_DEVICE); // expected_attach_type
        a
    };
    let mut attr = build(None);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => owned_fd(fd),
        Err(first) => {
            // Load again with the verifier log switched on, to say why.
            let mut log = vec![0u8; 64 * 1024];
            let mut attr = build(Some(&mut log));
            match bpf(BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => owned_fd(fd),
                Err(_) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    let text = String::from_utf8_lossy(&log[..end]);
                    let text = text.trim();
                    if text.is_empty() {
                        Err(first)
                    } else {
                        let tail: String = text
                            .lines()
                            .rev()
                            .take(8)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("; ");
                        Err(io::Error::new(first.kind(), format!("{first} (verifier: {tail})")))
                    }
                }
            }
        }
    }
}

/// Attaches program `prog` to the cgroup directory `cgroup`.
pub fn prog_attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32, flags: u32) -> io::Result<()> {
    let mut a = Attr::new();
    a.put_u32(0, cgroup.as_raw_fd() as u32); // target_fd
    a.put_u32(4, prog.as_raw_fd() as u32); // attach_bpf_fd
    a.put_u32(8, attach_type);
    a.put_u32(12, flags);
    bpf(BPF_PROG_ATTACH, &mut a).map(drop)
}

/// Detaches program `prog` from the cgroup directory `cgroup`.
pub fn prog_detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    let mut a = Attr::new();
    a.put_u32(0, cgroup.as_raw_fd() as u32);
    a.put_u32(4, prog.as_raw_fd() as u32);
    a.put_u32(8, attach_type);
    bpf(BPF_PROG_DETACH, &mut a).map(drop)
}

/// Ids of the programs attached directly to `cgroup` for `attach_type`.
pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut cap = 64usize;
    loop {
        let mut ids = vec![0u32; cap];
        let mut a = Attr::new();
        a.put_u32(0, cgroup.as_raw_fd() as u32); // target_fd
        a.put_u32(4, attach_type);
        a.put_u64(16, ids.as_mut_ptr() as u64); // prog_ids
        a.put_u32(24, cap as u32); // prog_cnt (in: room, out: count)
        match bpf(BPF_PROG_QUERY, &mut a) {
            Ok(_) => {
                let n = (a.get_u32(24) as usize).min(cap);
                ids.truncate(n);
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && cap < 1 << 16 => {
                cap = (a.get_u32(24) as usize).max(cap * 2);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens the loaded program with kernel id `id`.
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.put_u32(0, id); // prog_id
    bpf(BPF_PROG_GET_FD_BY_ID, &mut a).and_then(owned_fd)
}

/// Ids of the device programs attached directly to the cgroup directory
/// at `dir` (a convenience for tests and diagnostics).
pub fn cgroup_device_progs(dir: &std::path::Path) -> io::Result<Vec<u32>> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(dir)?;
    prog_query(f.as_fd(), ATTACH_CGROUP_DEVICE)
}
