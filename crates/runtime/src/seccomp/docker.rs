//! Docker's daemon seccomp profile format → OCI `linux.seccomp`.
//!
//! Docker's format (moby `profiles/seccomp`) adds to the OCI one:
//!
//! * `archMap`: families of architectures (`SCMP_ARCH_X86_64` with its
//!   sub-architectures `SCMP_ARCH_X86` and `SCMP_ARCH_X32`); only the
//!   host's family ends up in `architectures`;
//! * per-syscall `includes` / `excludes` with `caps`, `arches` (Go
//!   `GOARCH` names: `amd64`, `arm64`, …) and `minKernel` (`"4.8"`): an
//!   entry is kept when every `includes` condition holds and no `excludes`
//!   one does, like Docker does it;
//! * a single `name` next to `names`, and a free-form `comment`.

use std::path::PathBuf;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Deserialize;

use super::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    syscalls: Option<Vec<Syscall>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Conditions>,
    #[serde(default)]
    excludes: Option<Conditions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conditions {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// A kernel version, compared as (major, minor, patch).
pub(super) type KernelVersion = (u32, u32, u32);

/// Convert a Docker-style seccomp profile (the daemon's format, as in
/// Docker's `default.json`) into the OCI `linux.seccomp` form.
///
/// `caps` are the container's capabilities (`"CAP_SYS_ADMIN"`; Docker
/// checks the bounding set), `arch` the host architecture, as Rust
/// (`std::env::consts::ARCH`: `x86_64`, `aarch64`), Go (`amd64`, `arm64`) or
/// `uname -m` spell it. `minKernel` conditions are checked against the
/// running kernel.
pub fn from_docker_profile(json: &str, caps: &[String], arch: &str) -> Result<LinuxSeccomp> {
    convert(json, caps, arch, host_kernel()?)
}

/// [`from_docker_profile`] with the kernel version given.
pub(super) fn convert(json: &str, caps: &[String], arch: &str, kernel: KernelVersion) -> Result<LinuxSeccomp> {
    let profile: Profile = serde_json::from_str(json)?;
    let host = HostArch::new(arch);
    let caps: Vec<String> = caps.iter().map(|c| normalize_cap(c)).collect();

    let mut out = LinuxSeccomp::default();
    out.set_default_action(profile.default_action);
    out.set_default_errno_ret(profile.default_errno_ret);
    out.set_flags(profile.flags);
    out.set_listener_path(profile.listener_path);
    out.set_listener_metadata(profile.listener_metadata);

    let has_map = profile.arch_map.as_ref().is_some_and(|m| !m.is_empty());
    let has_list = profile.architectures.as_ref().is_some_and(|a| !a.is_empty());
    if has_map && has_list {
        return Err(Error::Profile("'architectures' and 'archMap' cannot both be set".into()));
    }
    let mut archs = Vec::new();
    for name in profile.architectures.iter().flatten() {
        archs.push(parse_arch(name)?);
    }
    if let Some(native) = host.scmp {
        for entry in profile.arch_map.iter().flatten() {
            if entry.architecture == native {
                archs.push(parse_arch(&entry.architecture)?);
                for sub in entry.sub_architectures.iter().flatten() {
                    archs.push(parse_arch(sub)?);
                }
            }
        }
    }
    if !archs.is_empty() {
        out.set_architectures(Some(archs));
    }

    let mut syscalls = Vec::new();
    for (i, call) in profile.syscalls.into_iter().flatten().enumerate() {
        let mut names = call.names.unwrap_or_default();
        if let Some(name) = call.name {
            if !names.is_empty() {
                return Err(Error::Profile(format!("syscalls[{i}]: 'name' and 'names' cannot both be set")));
            }
            names.push(name);
        }
        let excludes = call.excludes.unwrap_or_default();
        let includes = call.includes.unwrap_or_default();
        if excludes.arches.iter().flatten().any(|a| host.matches(a))
            || excludes.caps.iter().flatten().any(|c| caps.contains(&normalize_cap(c)))
        {
            continue;
        }
        if let Some(min) = &excludes.min_kernel {
            if kernel >= parse_kernel(min).ok_or_else(|| bad_kernel(i, min))? {
                continue;
            }
        }
        if let Some(arches) = &includes.arches {
            if !arches.is_empty() && !arches.iter().any(|a| host.matches(a)) {
                continue;
            }
        }
        if !includes.caps.iter().flatten().all(|c| caps.contains(&normalize_cap(c))) {
            continue;
        }
        if let Some(min) = &includes.min_kernel {
            if kernel < parse_kernel(min).ok_or_else(|| bad_kernel(i, min))? {
                continue;
            }
        }
        let mut sc = LinuxSyscall::default();
        sc.set_names(names);
        sc.set_action(call.action);
        sc.set_errno_ret(call.errno_ret);
        sc.set_args(call.args.filter(|a| !a.is_empty()));
        syscalls.push(sc);
    }
    out.set_syscalls(Some(syscalls));
    Ok(out)
}

fn bad_kernel(i: usize, min: &str) -> Error {
    Error::Profile(format!("syscalls[{i}]: invalid minKernel {min:?} (want e.g. \"4.8\")"))
}

fn parse_arch(name: &str) -> Result<Arch> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| Error::Profile(format!("unknown architecture {name:?}")))
}

/// `cap_sys_admin`, `SYS_ADMIN` and `CAP_SYS_ADMIN` all name the same cap.
fn normalize_cap(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Parses `"X.Y"` or `"X.Y.Z"` (anything after the numbers, as in
/// `6.1.0-13-amd64`, is ignored).
pub(super) fn parse_kernel(s: &str) -> Option<KernelVersion> {
    let mut parts = s.trim().splitn(3, '.');
    let num = |p: Option<&str>| -> Option<u32> {
        let p = p?;
        let end = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
        p.get(..end)?.parse().ok()
    };
    let major = num(parts.next())?;
    let minor = num(parts.next())?;
    let patch = num(parts.next()).unwrap_or(0);
    Some((major, minor, patch))
}

fn host_kernel() -> Result<KernelVersion> {
    let uts = rustix::system::uname();
    let release = uts.release().to_string_lossy();
    parse_kernel(&release).ok_or_else(|| Error::Profile(format!("cannot parse the kernel version {release:?}")))
}

/// The host architecture: its libseccomp token (for `archMap`) and the
/// names `includes`/`excludes` may use for it.
struct HostArch {
    scmp: Option<&'static str>,
    names: Vec<String>,
}

impl HostArch {
    fn new(arch: &str) -> Self {
        let a = arch.trim().to_ascii_lowercase();
        let (scmp, names): (Option<&'static str>, &[&str]) = match a.as_str() {
            "x86_64" | "amd64" => (Some("SCMP_ARCH_X86_64"), &["amd64", "x86_64"]),
            "x86" | "386" | "i386" | "i686" => (Some("SCMP_ARCH_X86"), &["386", "x86", "i386"]),
            "aarch64" | "arm64" => (Some("SCMP_ARCH_AARCH64"), &["arm64", "aarch64"]),
            "arm" | "armv7l" | "armhf" => (Some("SCMP_ARCH_ARM"), &["arm"]),
            "ppc64le" | "powerpc64le" => (Some("SCMP_ARCH_PPC64LE"), &["ppc64le"]),
            // Rust spells both endiannesses "powerpc64"; take the build's.
            "powerpc64" if cfg!(target_endian = "little") => (Some("SCMP_ARCH_PPC64LE"), &["ppc64le"]),
            "powerpc64" | "ppc64" => (Some("SCMP_ARCH_PPC64"), &["ppc64"]),
            "s390x" => (Some("SCMP_ARCH_S390X"), &["s390x"]),
            "s390" => (Some("SCMP_ARCH_S390"), &["s390"]),
            "riscv64" | "riscv64gc" => (Some("SCMP_ARCH_RISCV64"), &["riscv64"]),
            "loongarch64" | "loong64" => (Some("SCMP_ARCH_LOONGARCH64"), &["loong64", "loongarch64"]),
            "mips64" => (Some("SCMP_ARCH_MIPS64"), &["mips64"]),
            "mips64el" | "mips64le" => (Some("SCMP_ARCH_MIPSEL64"), &["mips64le", "mips64el"]),
            "mips" => (Some("SCMP_ARCH_MIPS"), &["mips"]),
            "mipsel" | "mipsle" => (Some("SCMP_ARCH_MIPSEL"), &["mipsle", "mipsel"]),
            _ => (None, &[]),
        };
        let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        if !names.contains(&a) {
            names.push(a);
        }
        HostArch { scmp, names }
    }

    fn matches(&self, name: &str) -> bool {
        let n = name.trim().to_ascii_lowercase();
        self.names.contains(&n)
    }
}
