//! A cache of rendered BPF programs, so that a profile is compiled by
//! libseccomp once rather than on every `create` and `exec` (Docker's
//! default profile costs ~15 ms to compile, more than the rest of a
//! container's setup).
//!
//! An entry is a file `<dir>/<hash>.json` holding the program, the filter's
//! load flags and the *whole* key it was made from: the profile as JSON
//! and everything else the rendering depends on (this module's source,
//! berth's version, libseccomp's version, the kernel's release and build:
//! libseccomp's API level follows from those two, and asking for it probes
//! the kernel with a dozen syscalls on every start). An
//! entry is used only when its key is byte-for-byte the one asked for, so
//! a hash collision or a stale entry can only cost a compile, never hand
//! out another profile's program.
//!
//! The directory is the runtime root's `.seccomp-cache` (not a valid
//! container id, so never taken for one): created 0700, and used only while
//! it and the entry are owned by us and writable by nobody else. Entries
//! are written temp-file + rename; when the directory holds more than
//! [`MAX_ENTRIES`], it is emptied before a new one goes in.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use oci_spec::runtime::LinuxSeccomp;
use serde::{Deserialize, Serialize};

use super::{compile, map_action, Filter, Result};

/// Entries kept before the directory is emptied.
const MAX_ENTRIES: usize = 64;

/// The largest entry read back.
const MAX_ENTRY_BYTES: u64 = 4 << 20;

/// What `compile` depends on besides the profile: its own source.
const TRANSLATION_SOURCE: &str = include_str!("mod.rs");

/// One cached program.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    key: String,
    flags: u32,
    notify: bool,
    rules: usize,
    unknown: Vec<String>,
    /// The program's bytes, hex.
    program: String,
}

/// Like [`compile`], through the cache in `dir`: a hit skips libseccomp
/// (the [`Filter`] then has no PFC export). Any problem with the cache
/// falls back to compiling; errors are those of [`compile`].
pub fn compile_cached(seccomp: &LinuxSeccomp, dir: &Path) -> Result<Filter> {
    let Some(key) = cache_key(seccomp) else { return compile(seccomp) };
    let name = format!("{:016x}.json", hash(&key));
    if let Some(f) = load(dir, &name, &key, seccomp) {
        return Ok(f);
    }
    let filter = compile(seccomp)?;
    store(dir, &name, key, &filter);
    Ok(filter)
}

fn hash(s: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Everything the rendered program depends on, the profile last.
fn cache_key(seccomp: &LinuxSeccomp) -> Option<String> {
    let profile = serde_json::to_string(seccomp).ok()?;
    let version = libseccomp::ScmpVersion::current().ok()?;
    let uts = rustix::system::uname();
    Some(format!(
        "berth-seccomp-cache 2\nberth {}\nsource {:016x}\nlibseccomp {}.{}.{}\nkernel {} {} {}\n{profile}",
        env!("CARGO_PKG_VERSION"),
        hash(TRANSLATION_SOURCE),
        version.major,
        version.minor,
        version.micro,
        uts.release().to_string_lossy(),
        uts.version().to_string_lossy(),
        uts.machine().to_string_lossy(),
    ))
}

/// Ours and writable by nobody else.
fn trusted(m: &fs::Metadata) -> bool {
    m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
}

fn load(dir: &Path, name: &str, key: &str, seccomp: &LinuxSeccomp) -> Option<Filter> {
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && trusted(&m)) {
        return None;
    }
    let mut f =
        fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(dir.join(name)).ok()?;
    let m = f.metadata().ok()?;
    if !m.is_file() || !trusted(&m) || m.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    f.read_to_end(&mut data).ok()?;
    let e: Entry = serde_json::from_slice(&data).ok()?;
    if e.key != key {
        return None;
    }
    let program = decode_program(&e.program)?;
    let default_action = map_action(seccomp.default_action(), seccomp.default_errno_ret(), "defaultAction").ok()?;
    Some(Filter {
        ctx: None,
        program,
        flags: e.flags,
        default_action,
        notify: e.notify,
        rules: e.rules,
        unknown: e.unknown,
    })
}

fn store(dir: &Path, name: &str, key: String, f: &Filter) {
    if fs::DirBuilder::new().mode(0o700).create(dir).is_err() && !dir.is_dir() {
        return;
    }
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && trusted(&m)) {
        return;
    }
    if fs::read_dir(dir).is_ok_and(|rd| rd.count() >= MAX_ENTRIES) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    let entry = Entry {
        key,
        flags: f.flags,
        notify: f.notify,
        rules: f.rules,
        unknown: f.unknown.clone(),
        program: encode_program(&f.program),
    };
    if let Ok(data) = serde_json::to_vec(&entry) {
        let _ = crate::state::write_atomic(&dir.join(name), &data, 0o600);
    }
}

fn encode_program(p: &[libc::sock_filter]) -> String {
    let mut out = String::with_capacity(p.len() * 16);
    for i in p {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&i.code.to_ne_bytes());
        b[2] = i.jt;
        b[3] = i.jf;
        b[4..].copy_from_slice(&i.k.to_ne_bytes());
        for x in b {
            out.push_str(&format!("{x:02x}"));
        }
    }
    out
}

fn decode_program(s: &str) -> Option<Vec<libc::sock_filter>> {
    let hex = s.as_bytes();
    if hex.is_empty() || hex.len() % 16 != 0 {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        bytes.push(nib(pair[0])? << 4 | nib(pair[1])?);
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompAction, LinuxSyscallBuilder};

    fn profile(errno: u32) -> LinuxSeccomp {
        let mut s = LinuxSeccomp::default();
        s.set_default_action(LinuxSeccompAction::ScmpActAllow);
        s.set_syscalls(Some(vec![LinuxSyscallBuilder::default()
            .names(vec!["mkdir".to_string(), "no_such_syscall".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno)
            .build()
            .expect("syscall")]));
        s
    }

    fn same(a: &Filter, b: &Filter) -> bool {
        a.program.len() == b.program.len()
            && a.program.iter().zip(&b.program).all(|(x, y)| (x.code, x.jt, x.jf, x.k) == (y.code, y.jt, y.jf, y.k))
            && (a.flags, a.notify, a.rules, &a.unknown) == (b.flags, b.notify, b.rules, &b.unknown)
    }

    #[test]
    fn hit_matches_a_fresh_compile_and_keys_differ_by_profile() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("cache");
        let fresh = compile(&profile(1)).expect("compile");
        let first = compile_cached(&profile(1), &dir).expect("miss");
        assert!(first.ctx.is_some());
        assert_eq!(fs::read_dir(&dir).expect("dir").count(), 1);
        let hit = compile_cached(&profile(1), &dir).expect("hit");
        assert!(hit.ctx.is_none(), "second compile comes from the cache");
        assert!(same(&fresh, &hit) && hit.unknown_syscalls() == ["no_such_syscall"]);
        let other = compile_cached(&profile(2), &dir).expect("other");
        assert!(other.ctx.is_some(), "another profile is not a hit");
        assert!(same(&compile(&profile(2)).expect("compile"), &other));
        assert_eq!(fs::read_dir(&dir).expect("dir").count(), 2);
    }

    #[test]
    fn entries_with_another_key_or_garbage_are_not_used() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("cache");
        compile_cached(&profile(1), &dir).expect("miss");
        let key = cache_key(&profile(1)).expect("key");
        let path = dir.join(format!("{:016x}.json", hash(&key)));
        // The same file name with another key inside: a collision.
        let mut e: Entry = serde_json::from_slice(&fs::read(&path).expect("read")).expect("entry");
        e.key.push(' ');
        fs::write(&path, serde_json::to_vec(&e).expect("json")).expect("write");
        assert!(compile_cached(&profile(1), &dir).expect("compile").ctx.is_some());
        // Rewritten by that compile: a hit again.
        assert!(compile_cached(&profile(1), &dir).expect("hit").ctx.is_none());
        fs::write(&path, b"{\"garbage\": true}").expect("write");
        assert!(compile_cached(&profile(1), &dir).expect("compile").ctx.is_some());
    }

    #[test]
    fn a_directory_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("cache");
        compile_cached(&profile(1), &dir).expect("miss");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(compile_cached(&profile(1), &dir).expect("compile").ctx.is_some());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(compile_cached(&profile(1), &dir).expect("hit").ctx.is_none());
    }

    #[test]
    fn program_round_trips() {
        let f = compile(&profile(1)).expect("compile");
        let back = decode_program(&encode_program(&f.program)).expect("decode");
        assert!(same(&f, &Filter { program: back, ctx: None, ..compile(&profile(1)).expect("compile") }));
        assert!(decode_program("").is_none() && decode_program("zz00000000000000").is_none());
    }
}
