//! Applies config.json's `process` to the calling process just before exec:
//! rlimits, OOM score, AppArmor, user and groups, capabilities,
//! no_new_privs, seccomp; and finds the executable in the container.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability as Cap, CapsHashSet};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};

use crate::error::{Context, Error, Result};
use crate::seccomp;

/// Default PATH when the process env has none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Sets the process's rlimits; an EPERM names the limit that was refused
/// (raising a hard limit needs CAP_SYS_RESOURCE).
pub fn apply_rlimits(process: &Process) -> Result<()> {
    for rl in process.rlimits().as_deref().unwrap_or_default() {
        let res = rlimit_resource(rl.typ());
        setrlimit(res, rl.soft(), rl.hard()).map_err(|e| {
            let name = serde_json::to_string(&rl.typ()).unwrap_or_default().trim_matches('"').to_string();
            let hint = if e == nix::errno::Errno::EPERM {
                " (raising a hard limit needs CAP_SYS_RESOURCE, which this host does not grant)"
            } else {
                ""
            };
            Error::Io {
                context: format!("setting rlimit {name} soft={} hard={}{hint}", rl.soft(), rl.hard()),
                source: e.into(),
            }
        })?;
    }
    Ok(())
}

/// Writes /proc/self/oom_score_adj.
pub fn apply_oom_score_adj(process: &Process) -> Result<()> {
    if let Some(v) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", v.to_string()).map_err(|e| Error::Io {
            context: format!(
                "setting oomScoreAdj to {v}{}",
                if v < 0 { " (a negative score needs CAP_SYS_RESOURCE)" } else { "" }
            ),
            source: e,
        })?;
    }
    Ok(())
}

/// True when the kernel has AppArmor enabled.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").map(|s| s.trim() == "Y").unwrap_or(false)
}

/// Checks an AppArmor request up front (before fork), so `create` fails
/// with a clear message on hosts without AppArmor.
pub fn check_apparmor(process: &Process) -> Result<()> {
    match process.apparmor_profile().as_deref() {
        None | Some("") | Some("unconfined") => Ok(()),
        Some(p) if !apparmor_enabled() => Err(Error::Unsupported(format!(
            "apparmor profile {p:?} requested but AppArmor is not enabled on this host"
        ))),
        Some(_) => Ok(()),
    }
}

/// Arranges for the AppArmor profile to be applied at exec.
pub fn apply_apparmor(process: &Process) -> Result<()> {
    let Some(p) = process.apparmor_profile().as_deref().filter(|p| !p.is_empty() && *p != "unconfined") else {
        return Ok(());
    };
    check_apparmor(process)?;
    let attr = if Path::new("/proc/self/attr/apparmor/exec").exists() {
        "/proc/self/attr/apparmor/exec"
    } else {
        "/proc/self/attr/exec"
    };
    std::fs::write(attr, format!("exec {p}")).ctx(|| format!("setting apparmor profile {p}"))
}

/// Capabilities this kernel knows: every one up to
/// `/proc/sys/kernel/cap_last_cap` (one read, where probing costs a prctl
/// per capability), else probed.
fn supported_caps() -> &'static CapsHashSet {
    static SUPPORTED: std::sync::OnceLock<CapsHashSet> = std::sync::OnceLock::new();
    SUPPORTED.get_or_init(|| {
        let last =
            std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse::<u8>().ok());
        match last {
            Some(last) => caps::all().into_iter().filter(|c| c.index() <= last).collect(),
            None => caps::runtime::thread_all_supported(),
        }
    })
}

fn to_caps(set: Option<&HashSet<oci_spec::runtime::Capability>>) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    for c in set.into_iter().flatten() {
        if let Ok(cap) = format!("CAP_{c}").parse::<Cap>() {
            // Capabilities this kernel does not know are skipped, as runc does.
            if supported_caps().contains(&cap) {
                out.insert(cap);
            }
        }
    }
    out
}

/// The process's capability sets, converted and filtered to this kernel.
#[derive(Debug, Clone, Default)]
pub struct CapSets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

impl CapSets {
    /// Converts the spec's capabilities (absent means: none).
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> CapSets {
        let Some(c) = c else { return CapSets::default() };
        CapSets {
            bounding: to_caps(c.bounding().as_ref()),
            effective: to_caps(c.effective().as_ref()),
            permitted: to_caps(c.permitted().as_ref()),
            inheritable: to_caps(c.inheritable().as_ref()),
            ambient: to_caps(c.ambient().as_ref()),
        }
    }

    /// Checks that every capability to keep (permitted, effective) is one
    /// this process holds: capset could not grant others, and the error
    /// would come only after `start`, on the container's stderr.
    pub fn check_available(&self) -> Result<()> {
        let ours =
            caps::read(None, CapSet::Permitted).map_err(|e| Error::Other(format!("reading capabilities: {e}")))?;
        let mut missing: Vec<String> =
            self.permitted.union(&self.effective).filter(|c| !ours.contains(c)).map(|c| c.to_string()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort();
        Err(Error::Other(format!(
            "process.capabilities asks for {} which the runtime does not hold (not in its permitted set)",
            missing.join(", ")
        )))
    }

    /// Drops the bounding set down to the spec's (needs CAP_SETPCAP, so it
    /// runs before the user switch).
    pub fn apply_bounding(&self) -> Result<()> {
        for &cap in supported_caps() {
            if !self.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| Error::Other(format!("dropping {cap} from the bounding set: {e}")))?;
            }
        }
        Ok(())
    }

    /// Sets effective, permitted, inheritable and ambient sets.
    pub fn apply(&self) -> Result<()> {
        let set = |which: CapSet, v: &CapsHashSet, name: &str| {
            caps::set(None, which, v).map_err(|e| Error::Other(format!("setting {name} capabilities: {e}")))
        };
        // Order matters: effective must stay a subset of permitted.
        set(CapSet::Effective, &self.effective.intersection(&self.permitted).copied().collect(), "effective")?;
        set(CapSet::Permitted, &self.permitted, "permitted")?;
        set(CapSet::Inheritable, &self.inheritable, "inheritable")?;
        set(CapSet::Effective, &self.effective, "effective")?;
        if !self.ambient.is_empty() {
            caps::clear(None, CapSet::Ambient)
                .map_err(|e| Error::Other(format!("clearing ambient capabilities: {e}")))?;
            for cap in &self.ambient {
                // Raising an ambient cap needs it in permitted and
                // inheritable; others are skipped as runc does.
                if self.permitted.contains(cap) && self.inheritable.contains(cap) {
                    caps::raise(None, CapSet::Ambient, *cap)
                        .map_err(|e| Error::Other(format!("raising ambient {cap}: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

/// Switches to the process's uid/gid/groups, keeping permitted
/// capabilities across the switch (they are set for real right after).
pub fn switch_user(process: &Process, userns_setgroups_denied: bool) -> Result<()> {
    let user = process.user();
    nix::sys::prctl::set_keepcaps(true).ctx(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    if !userns_setgroups_denied {
        let groups: Vec<Gid> =
            user.additional_gids().as_deref().unwrap_or_default().iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).ctx(|| format!("setgroups {:?}", user.additional_gids()))?;
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {}", user.gid()))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {}", user.uid()))?;
    nix::sys::prctl::set_keepcaps(false).ctx(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

/// Capabilities, no_new_privs and seccomp, in the order that lets each
/// step still be allowed: without no_new_privs a filter can only be loaded
/// while CAP_SYS_ADMIN is effective, so it goes in before the final capset.
pub fn finalize_privileges(
    process: &Process,
    caps: &CapSets,
    filter: Option<&seccomp::Filter>,
) -> Result<Option<std::os::fd::OwnedFd>> {
    let nnp = process.no_new_privileges().unwrap_or(false);
    let mut listener = None;
    if let (Some(f), false) = (filter, nnp) {
        // Regain CAP_SYS_ADMIN in the effective set for the load (a non-root
        // user lost its effective set at setuid).
        let _ = caps::raise(None, CapSet::Effective, Cap::CAP_SYS_ADMIN);
        listener = f.load()?;
    }
    caps.apply()?;
    if nnp {
        nix::sys::prctl::set_no_new_privs().ctx(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
        if let Some(f) = filter {
            listener = f.load()?;
        }
    }
    Ok(listener)
}

/// Looks `arg0` up the way execvp would, in the container's filesystem,
/// using PATH from the process env. Returns the path to exec.
pub fn find_executable(arg0: &str, env: &[String], cwd: &Path) -> Result<PathBuf> {
    if arg0.is_empty() {
        return Err(Error::Other("process.args[0] is empty".into()));
    }
    let check = |p: &Path| -> Option<std::io::Error> {
        match nix::unistd::access(p, nix::unistd::AccessFlags::X_OK) {
            Ok(()) => match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => Some(std::io::Error::from_raw_os_error(libc::EACCES)),
                Ok(_) => None,
                Err(e) => Some(e),
            },
            Err(e) => Some(e.into()),
        }
    };
    if arg0.contains('/') {
        let p = if Path::new(arg0).is_absolute() { PathBuf::from(arg0) } else { cwd.join(arg0) };
        return match check(&p) {
            None => Ok(PathBuf::from(arg0)),
            Some(e) => Err(Error::Io { context: format!("exec {arg0:?}"), source: e }),
        };
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(arg0);
        if check(&p).is_none() {
            return Ok(p);
        }
    }
    Err(Error::Other(format!("exec {arg0:?}: executable file not found in $PATH")))
}

/// execve's arguments, converted once.
#[derive(Debug)]
pub struct ExecArgs {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

impl ExecArgs {
    /// Prepares the exec of `path` with the process's args and env.
    pub fn new(path: &Path, process: &Process) -> Result<ExecArgs> {
        let c = |s: &[u8]| CString::new(s).map_err(|_| Error::Other("argument or env var contains a NUL byte".into()));
        Ok(ExecArgs {
            path: c(path.as_os_str().as_bytes())?,
            args: process
                .args()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|a| c(a.as_bytes()))
                .collect::<Result<_>>()?,
            env: process.env().as_deref().unwrap_or_default().iter().map(|a| c(a.as_bytes())).collect::<Result<_>>()?,
        })
    }

    /// Replaces the process image; returns only on failure.
    pub fn exec(&self) -> Error {
        match nix::unistd::execve(&self.path, &self.args, &self.env) {
            Err(e) => Error::Io { context: format!("exec {:?}", self.path), source: e.into() },
            Ok(never) => match never {},
        }
    }
}
