//! Seccomp: compiles `linux.seccomp` from config.json into a libseccomp
//! filter, and loads it in the container's init just before exec.
//!
//! [`compile`] runs in the runtime process before the fork, so that a bad
//! profile fails `create` with a clear message. It also renders the BPF
//! program there (libseccomp takes milliseconds for Docker's profile); the
//! returned [`Filter`] is inherited by the child through the fork and
//! [`Filter::load`] is then a single `seccomp(2)` call, cheap enough to sit
//! between the start handshake and exec.
//!
//! The translation follows the OCI runtime-spec (config-linux.md,
//! "Seccomp") and runc's behaviour where the spec leaves room:
//!
//! * `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` take `errnoRet` (or
//!   `defaultErrnoRet` for the default action), defaulting to `EPERM`;
//! * syscall names that this libseccomp does not know are skipped (profiles
//!   list syscalls of newer kernels and other architectures); they are
//!   listed by [`Filter::unknown_syscalls`];
//! * rules whose action equals the default action are skipped (libseccomp
//!   refuses them);
//! * when the `args` of one rule name the same argument index more than
//!   once, each condition becomes a rule of its own (so the conditions are
//!   OR-ed, as runc does; Docker's profiles rely on it); otherwise all
//!   conditions go into one rule (AND);
//! * `SCMP_CMP_MASKED_EQ` matches `(arg & value) == valueTwo`: `value` is
//!   the mask, `valueTwo` the datum, as libseccomp's `datum_a`/`datum_b`;
//! * the native architecture is always in the filter, next to the listed
//!   `architectures`;
//! * no_new_privs is left alone (libseccomp's `CTL_NNP` is turned off): the
//!   runtime sets it from `process.noNewPrivileges`.
//!
//! [`from_docker_profile`] converts Docker's daemon profile format (with
//! `archMap` and `includes`/`excludes`) into the OCI form.

mod cache;
mod docker;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;

use crate::sys::seccomp as sys_seccomp;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

pub use cache::compile_cached;
pub use docker::from_docker_profile;

/// Docker's default seccomp profile (moby `profiles/seccomp/default.json`,
/// Apache-2.0), in Docker's daemon format: feed it to
/// [`from_docker_profile`] with the container's capabilities.
pub const DOCKER_DEFAULT_PROFILE: &str = include_str!("docker-default.json");

/// Docker's default capability set (what a container gets without
/// `--cap-add`/`--cap-drop`), for [`from_docker_profile`] and callers.
pub const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
];

/// Errors from compiling, loading or converting a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libseccomp could not create a filter context.
    #[error("seccomp: cannot create a filter with default action {action}: {source}")]
    Init {
        /// The default action, as written in the profile.
        action: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The action cannot be used where it appears.
    #[error("seccomp: {action} cannot be used as {place}")]
    InvalidAction {
        /// The action, as written in the profile.
        action: String,
        /// Where it was used ("defaultAction", …).
        place: String,
    },
    /// An `errnoRet`/`defaultErrnoRet` does not fit the 16 bits the kernel
    /// passes back.
    #[error("seccomp: {place}: errnoRet {value} for {action} is out of range (0..=65535)")]
    ErrnoOutOfRange {
        /// Where it was used ("defaultAction", "syscall mkdir", …).
        place: String,
        /// The action, as written in the profile.
        action: String,
        /// The refused value.
        value: u32,
    },
    /// The architecture is not supported by the libseccomp in use.
    #[error("seccomp: architecture {arch} is not supported by libseccomp {version}: {source}")]
    Arch {
        /// The architecture, as written in the profile.
        arch: String,
        /// The version of the linked libseccomp.
        version: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// A filter flag is unknown to the linked libseccomp or this kernel.
    #[error("seccomp: flag {flag} is not supported: {reason}")]
    Flag {
        /// The flag, as written in the profile.
        flag: String,
        /// Why it is refused.
        reason: String,
    },
    /// An argument condition cannot be expressed.
    #[error("seccomp: syscall {syscall}: {msg}")]
    Arg {
        /// The syscall (the rule's first name when the rule has several).
        syscall: String,
        /// What is wrong with the condition.
        msg: String,
    },
    /// libseccomp refused a rule.
    #[error("seccomp: cannot add rule for syscall {syscall} with action {action}: {source}")]
    Rule {
        /// The syscall.
        syscall: String,
        /// The action, as written in the profile.
        action: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// libseccomp refused a filter attribute.
    #[error("seccomp: cannot set filter attribute {attr}: {source}")]
    Attr {
        /// The attribute.
        attr: &'static str,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// `SCMP_ACT_NOTIFY` is used but there is nowhere to send the listener.
    #[error("seccomp: syscall {syscall} uses SCMP_ACT_NOTIFY but linux.seccomp.listenerPath is not set")]
    NoListenerPath {
        /// The first syscall using the action.
        syscall: String,
    },
    /// The kernel refused the filter.
    #[error("seccomp: loading the filter: {msg}")]
    Load {
        /// The kernel's or libseccomp's reason, with a hint when known.
        msg: String,
    },
    /// The filter could not be exported (as BPF for loading, or as pfc for
    /// inspection).
    #[error("seccomp: exporting the filter: {0}")]
    Export(String),
    /// The Docker-format profile is not valid JSON or has the wrong shape.
    #[error("seccomp profile: invalid json: {0}")]
    ProfileJson(#[from] serde_json::Error),
    /// The Docker-format profile is well-formed but inconsistent.
    #[error("seccomp profile: {0}")]
    Profile(String),
}

/// Shorthand result type of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A compiled filter, ready to load in the container's init just before exec.
///
/// It may hold a libseccomp filter context (not when it came from the
/// cache), so it is neither `Send` nor `Sync`; it survives a fork (the child gets its own copy of the memory).
pub struct Filter {
    /// None when the program came from the cache ([`compile_cached`]).
    ctx: Option<ScmpFilterContext>,
    /// The rendered program, as `seccomp(2)` takes it.
    program: Vec<libc::sock_filter>,
    /// `SECCOMP_FILTER_FLAG_*` for the load.
    flags: u32,
    default_action: ScmpAction,
    notify: bool,
    rules: usize,
    unknown: Vec<String>,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("default_action", &self.default_action)
            .field("notify", &self.notify)
            .field("rules", &self.rules)
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .field("unknown_syscalls", &self.unknown)
            .finish_non_exhaustive()
    }
}

/// Compile config.json's `linux.seccomp` into a filter.
///
/// Called in the runtime process *before* fork, so errors surface from
/// `create`; the result is loaded in the child with [`Filter::load`].
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter> {
    let default_name = action_name(seccomp.default_action());
    if seccomp.default_action() == LinuxSeccompAction::ScmpActNotify {
        // The runtime's own syscalls between load and exec would wait on a
        // listener that has not been handed to the agent yet.
        return Err(Error::InvalidAction { action: default_name, place: "defaultAction".into() });
    }
    let default_action = map_action(seccomp.default_action(), seccomp.default_errno_ret(), "defaultAction")?;
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|source| Error::Init { action: default_name, source })?;
    ctx.set_ctl_nnp(false).map_err(|source| Error::Attr { attr: "SCMP_FLTATR_CTL_NNP", source })?;
    // Report the kernel's errno (EACCES, EINVAL, …) from a failed load
    // rather than libseccomp's generic ECANCELED. Old libseccomps lack the
    // attribute; the load still works there, only its errors are vaguer.
    let _ = ctx.set_api_sysrawrc(true);
    // A binary tree of syscall numbers instead of one comparison after
    // another: Docker's profile allows ~350 syscalls, and both the kernel's
    // filter cache (which emulates the program for every syscall number
    // when it is loaded) and each filtered syscall walk O(log n) compares
    // instead of O(n). Measured here (perf trace of the container's
    // seccomp(SET_MODE_FILTER) with Docker's profile): 1.6-1.7 ms -> 0.7 ms
    // per container start. libseccomp < 2.5 lacks the attribute: linear.
    let _ = ctx.set_ctl_optimize(2);

    for arch in seccomp.architectures().iter().flatten() {
        let scmp = map_arch(*arch);
        if scmp == ScmpArch::Native {
            continue;
        }
        ctx.add_arch(scmp).map_err(|source| Error::Arch {
            arch: arch_name(*arch),
            version: libseccomp_version(),
            source,
        })?;
    }

    let mut flags = 0;
    for flag in seccomp.flags().iter().flatten() {
        apply_flag(&mut ctx, *flag)?;
        flags |= kernel_flag(*flag);
    }

    let mut notify = false;
    let mut rules = 0;
    let mut unknown = Vec::new();
    for rule in seccomp.syscalls().iter().flatten() {
        let first = rule.names().first().map(String::as_str).unwrap_or("<no name>");
        let place = format!("syscall {first}");
        let action = map_action(rule.action(), rule.errno_ret(), &place)?;
        if action == default_action {
            continue;
        }
        if action == ScmpAction::Notify && seccomp.listener_path().is_none() {
            return Err(Error::NoListenerPath { syscall: first.to_string() });
        }
        let condition_sets = conditions(rule.args().as_deref().unwrap_or_default(), first)?;
        for name in rule.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                unknown.push(name.clone());
                continue;
            };
            for set in &condition_sets {
                ctx.add_rule_conditional(action, nr, set).map_err(|source| Error::Rule {
                    syscall: name.clone(),
                    action: action_name(rule.action()),
                    source,
                })?;
                rules += 1;
                // Only a notify rule that made it into the filter makes the
                // kernel create a listener.
                notify |= action == ScmpAction::Notify;
            }
        }
    }
    if notify {
        flags |= sys_seccomp::FLAG_NEW_LISTENER;
        if flags & sys_seccomp::FLAG_TSYNC != 0 {
            // The kernel refuses TSYNC next to NEW_LISTENER unless TSYNC
            // failures are reported as ESRCH (libseccomp does the same).
            flags |= sys_seccomp::FLAG_TSYNC_ESRCH;
        }
    }
    let program = render(&ctx)?;
    Ok(Filter { ctx: Some(ctx), program, flags, default_action, notify, rules, unknown })
}

impl Filter {
    /// Load into the kernel for the calling thread (or, with
    /// `SECCOMP_FILTER_FLAG_TSYNC`, all threads of the process): one
    /// `seccomp(2)` call with the program rendered by [`compile`].
    ///
    /// Does not set no_new_privs: without it the caller must hold
    /// CAP_SYS_ADMIN. If the profile uses `SCMP_ACT_NOTIFY`, returns the
    /// notify listener fd (close-on-exec) for the runtime to send to
    /// `linux.seccomp.listenerPath`.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        sys_seccomp::set_filter(&self.program, self.flags).map_err(|e| Error::Load { msg: load_error_message(&e) })
    }

    /// Whether a rule uses `SCMP_ACT_NOTIFY` (then [`Filter::load`] returns
    /// the listener fd).
    pub fn uses_notify(&self) -> bool {
        self.notify
    }

    /// The syscall names of the profile that this libseccomp does not know
    /// and that were left out of the filter.
    pub fn unknown_syscalls(&self) -> &[String] {
        &self.unknown
    }

    /// The filter in libseccomp's human-readable pseudo filter code (PFC),
    /// for debugging. Not available for a filter read from the cache.
    pub fn pfc(&self) -> Result<String> {
        let Some(ctx) = &self.ctx else {
            return Err(Error::Export("a cached filter has no libseccomp context: use compile".into()));
        };
        let fd = rustix::fs::memfd_create("berth-seccomp-pfc", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| Error::Export(format!("memfd_create: {e}")))?;
        let mut file = std::fs::File::from(fd);
        ctx.export_pfc(&file).map_err(|e| Error::Export(e.to_string()))?;
        let mut out = String::new();
        file.seek(std::io::SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut out))
            .map_err(|e| Error::Export(format!("reading it back: {e}")))?;
        Ok(out)
    }
}

/// Renders the filter into the BPF program the kernel takes, through a
/// memfd (`seccomp_export_bpf_mem` needs libseccomp 2.6; Debian 12 has 2.5).
fn render(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let fd = rustix::fs::memfd_create("berth-seccomp-bpf", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::Export(format!("memfd_create: {e}")))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file).map_err(|e| Error::Export(e.to_string()))?;
    let mut bytes = Vec::new();
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| Error::Export(format!("reading it back: {e}")))?;
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % INSN != 0 {
        return Err(Error::Export(format!(
            "libseccomp produced {} bytes, not a whole number of {INSN}-byte instructions",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn load_error_message(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("{e} (without no_new_privs, loading a filter needs CAP_SYS_ADMIN)")
        }
        Some(libc::EINVAL) => format!("{e} (a filter flag unknown to this kernel?)"),
        _ => e.to_string(),
    }
}

/// The OCI spelling of an action (`SCMP_ACT_ERRNO`).
fn action_name(a: LinuxSeccompAction) -> String {
    a.to_string()
}

/// The OCI spelling of an architecture (`SCMP_ARCH_X86_64`).
fn arch_name(a: Arch) -> String {
    a.to_string()
}

fn libseccomp_version() -> String {
    match libseccomp::ScmpVersion::current() {
        Ok(v) => format!("{}.{}.{}", v.major, v.minor, v.micro),
        Err(_) => "(unknown version)".into(),
    }
}

/// Maps an OCI action and its `errnoRet` to libseccomp's. `ERRNO` and
/// `TRACE` default to `EPERM`; `errnoRet` is ignored for other actions.
fn map_action(action: LinuxSeccompAction, errno_ret: Option<u32>, place: &str) -> Result<ScmpAction> {
    let ret = || -> Result<u16> {
        match errno_ret {
            None => Ok(libc::EPERM as u16),
            Some(v) => u16::try_from(v).map_err(|_| Error::ErrnoOutOfRange {
                place: place.to_string(),
                action: action_name(action),
                value: v,
            }),
        }
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(ret()?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret()?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

/// Maps an OCI architecture to libseccomp's token.
fn map_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// The `SECCOMP_FILTER_FLAG_*` bit for an OCI filter flag.
fn kernel_flag(flag: LinuxSeccompFilterFlag) -> u32 {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => sys_seccomp::FLAG_LOG,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => sys_seccomp::FLAG_SPEC_ALLOW,
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => sys_seccomp::FLAG_TSYNC,
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => sys_seccomp::FLAG_WAIT_KILLABLE_RECV,
    }
}

/// Sets the libseccomp attribute behind a filter flag (it checks the
/// flag against the running kernel, so an unsupported one fails `create`).
fn apply_flag(ctx: &mut ScmpFilterContext, flag: LinuxSeccompFilterFlag) -> Result<()> {
    let res = match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
    };
    res.map(|_| ()).map_err(|e| Error::Flag {
        flag: flag.to_string(),
        reason: format!("libseccomp {} or this kernel lacks it ({e})", libseccomp_version()),
    })
}

/// Maps an OCI operator; `MASKED_EQ` takes `value` as the mask.
fn map_op(op: LinuxSeccompOperator, value: u64) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value),
    }
}

/// Highest syscall argument index (syscalls have six arguments).
const MAX_ARG_INDEX: usize = 5;

/// One libseccomp condition: `arg[index] <op> value`, or for `MASKED_EQ`
/// `(arg[index] & value) == valueTwo`.
fn map_arg(arg: &LinuxSeccompArg, syscall: &str) -> Result<ScmpArgCompare> {
    let index = arg.index();
    if index > MAX_ARG_INDEX {
        return Err(Error::Arg {
            syscall: syscall.to_string(),
            msg: format!("argument index {index} is out of range (0..={MAX_ARG_INDEX})"),
        });
    }
    let arg_index = u32::try_from(index).map_err(|_| Error::Arg {
        syscall: syscall.to_string(),
        msg: format!("argument index {index} is out of range"),
    })?;
    let op = map_op(arg.op(), arg.value());
    let datum = match arg.op() {
        LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
        _ => arg.value(),
    };
    Ok(ScmpArgCompare::new(arg_index, op, datum))
}

/// The rules to add for one OCI syscall entry, as sets of conditions: one
/// set with every condition (AND) when each argument index appears once,
/// else one single-condition set per condition (OR), as runc does, since
/// libseccomp refuses two conditions on the same argument in one rule.
fn conditions(args: &[LinuxSeccompArg], syscall: &str) -> Result<Vec<Vec<ScmpArgCompare>>> {
    let conds = args.iter().map(|a| map_arg(a, syscall)).collect::<Result<Vec<_>>>()?;
    let mut seen = [0usize; MAX_ARG_INDEX + 1];
    for a in args {
        // Indexes were validated by map_arg.
        if let Some(n) = seen.get_mut(a.index()) {
            *n += 1;
        }
    }
    if seen.iter().any(|&n| n > 1) {
        Ok(conds.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conds])
    }
}
