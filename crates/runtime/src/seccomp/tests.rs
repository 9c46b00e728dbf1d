//! Unit tests: mappings, rule generation (checked through libseccomp's PFC
//! export) and the Docker profile conversion. Loading into the kernel is
//! covered by tests/seccomp_kernel.rs.

use std::str::FromStr;

use super::docker::{convert, parse_kernel};
use super::*;
use oci_spec::runtime::LinuxSyscall;
use serde_json::json;

fn spec(v: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(v).expect("valid OCI seccomp json")
}

fn pfc(v: serde_json::Value) -> String {
    compile(&spec(v)).expect("compile").pfc().expect("pfc")
}

fn version_at_least(major: u32, minor: u32) -> bool {
    let v = libseccomp::ScmpVersion::current().expect("libseccomp version");
    (v.major, v.minor) >= (major, minor)
}

fn arg(index: usize, value: u64, value_two: Option<u64>, op: &str) -> LinuxSeccompArg {
    let mut v = json!({"index": index, "value": value, "op": op});
    if let Some(two) = value_two {
        v["valueTwo"] = json!(two);
    }
    serde_json::from_value(v).expect("valid arg json")
}

// ---- actions ----

#[test]
fn actions_map_to_libseccomp() {
    use LinuxSeccompAction::*;
    let m = |a, e| map_action(a, e, "test").expect("maps");
    assert_eq!(m(ScmpActKill, None), ScmpAction::KillThread);
    assert_eq!(m(ScmpActKillThread, None), ScmpAction::KillThread);
    assert_eq!(m(ScmpActKillProcess, None), ScmpAction::KillProcess);
    assert_eq!(m(ScmpActTrap, None), ScmpAction::Trap);
    assert_eq!(m(ScmpActLog, None), ScmpAction::Log);
    assert_eq!(m(ScmpActAllow, None), ScmpAction::Allow);
    assert_eq!(m(ScmpActNotify, None), ScmpAction::Notify);
    // ERRNO and TRACE default to EPERM and take errnoRet.
    assert_eq!(m(ScmpActErrno, None), ScmpAction::Errno(libc::EPERM));
    assert_eq!(m(ScmpActErrno, Some(38)), ScmpAction::Errno(libc::ENOSYS));
    assert_eq!(m(ScmpActErrno, Some(0)), ScmpAction::Errno(0));
    assert_eq!(m(ScmpActTrace, None), ScmpAction::Trace(1));
    assert_eq!(m(ScmpActTrace, Some(1234)), ScmpAction::Trace(1234));
    // errnoRet is meaningless for the other actions and ignored.
    assert_eq!(m(ScmpActAllow, Some(5)), ScmpAction::Allow);
}

#[test]
fn errno_ret_out_of_range_is_an_error() {
    let e = map_action(LinuxSeccompAction::ScmpActErrno, Some(70000), "syscall mkdir").expect_err("too big");
    let msg = e.to_string();
    assert!(msg.contains("syscall mkdir") && msg.contains("70000") && msg.contains("SCMP_ACT_ERRNO"), "{msg}");

    let e = compile(&spec(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 65536}))).expect_err("too big");
    assert!(e.to_string().contains("defaultAction"), "{e}");
}

#[test]
fn default_errno_ret_is_used() {
    let out = pfc(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}));
    assert!(out.contains("action ERRNO(38);"), "{out}");
    let out = pfc(json!({"defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}));
    assert!(out.contains("action ERRNO(1);"), "{out}");
}

#[test]
fn every_action_compiles_into_the_filter() {
    let out = pfc(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "syscalls": [
            {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["getpgrp"], "action": "SCMP_ACT_KILL"},
            {"names": ["getsid"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["chroot"], "action": "SCMP_ACT_TRAP"},
            {"names": ["acct"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["uname"], "action": "SCMP_ACT_LOG"},
            {"names": ["sethostname"], "action": "SCMP_ACT_NOTIFY"}
        ]
    }));
    for (name, action) in [
        ("mkdirat", "action ERRNO(38);"),
        ("getppid", "action KILL_PROCESS;"),
        ("getpgrp", "action KILL;"),
        ("getsid", "action KILL;"),
        ("chroot", "action TRAP;"),
        ("acct", "action TRACE(7);"),
        ("uname", "action LOG;"),
        // libseccomp 2.5 prints the raw value of NOTIFY.
        ("sethostname", "action 0x7fc00000;"),
    ] {
        let block = syscall_block(&out, name);
        let alt = action.replace("0x7fc00000", "NOTIFY");
        assert!(
            block.contains(action) || block.contains(&alt),
            "{name}: expected {action} in\n{block}\n--- full:\n{out}"
        );
    }
}

/// The lines of a PFC dump of the native arch between `filter for syscall
/// "name"` and the next syscall (or the default action).
fn syscall_block(pfc: &str, name: &str) -> String {
    let start = format!("# filter for syscall \"{name}\"");
    let mut lines = pfc.lines().skip_while(|l| !l.trim_start().starts_with(&start));
    let mut out = String::new();
    if let Some(first) = lines.next() {
        out.push_str(first);
        out.push('\n');
    }
    for l in lines {
        let t = l.trim_start();
        if t.starts_with("# filter for syscall") || t.starts_with("# default action") {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[test]
fn notify_needs_a_listener_path_and_cannot_be_the_default() {
    let e = compile(&spec(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}]})))
    .expect_err("no listenerPath");
    assert!(matches!(e, Error::NoListenerPath { ref syscall } if syscall == "mkdirat"), "{e}");
    assert!(e.to_string().contains("listenerPath"), "{e}");

    let e =
        compile(&spec(json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}))).expect_err("notify default");
    assert!(e.to_string().contains("SCMP_ACT_NOTIFY cannot be used as defaultAction"), "{e}");

    let f = compile(&spec(json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}]})))
    .expect("compile");
    assert!(f.uses_notify());
    let f = compile(&spec(json!({"defaultAction": "SCMP_ACT_ALLOW"}))).expect("compile");
    assert!(!f.uses_notify());
    // Every name unknown: no notify rule, no listener to wait for.
    let f = compile(&spec(json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
        "syscalls": [{"names": ["no_such_syscall_xyz"], "action": "SCMP_ACT_NOTIFY"}]})))
    .expect("compile");
    assert!(!f.uses_notify());
}

// ---- rules skipped ----

#[test]
fn rules_with_the_default_action_are_skipped() {
    // libseccomp refuses a rule whose action is the default one; without the
    // skip these would fail to compile.
    let f = compile(&spec(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["umount2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    })))
    .expect("compile");
    let out = f.pfc().expect("pfc");
    assert!(out.contains("\"getpid\""), "{out}");
    assert!(!out.contains("\"mount\""), "same action and errno as the default: skipped\n{out}");
    assert!(!out.contains("\"umount2\""), "{out}");
    // Same action, different errno: a different action, kept.
    assert!(syscall_block(&out, "unshare").contains("ERRNO(38)"), "{out}");

    // KILL and KILL_THREAD are the same action.
    let out = pfc(json!({"defaultAction": "SCMP_ACT_KILL",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_KILL_THREAD"}, {"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}));
    assert!(!out.contains("\"getpid\""), "{out}");
    assert!(out.contains("\"read\""), "{out}");
}

#[test]
fn unknown_syscall_names_are_skipped() {
    let f = compile(&spec(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["no_such_syscall_xyz", "mkdirat", "another_fake_one"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["x".repeat(200)], "action": "SCMP_ACT_ERRNO"}
        ]
    })))
    .expect("unknown names must not fail the profile");
    assert_eq!(f.unknown_syscalls(), ["no_such_syscall_xyz", "another_fake_one", &"x".repeat(200)]);
    let out = f.pfc().expect("pfc");
    assert!(syscall_block(&out, "mkdirat").contains("ERRNO(1)"), "{out}");
    assert!(format!("{f:?}").contains("no_such_syscall_xyz"));
}

#[test]
fn syscalls_of_other_arches_are_accepted() {
    // Known to libseccomp, but not x86_64 syscalls on an x86_64 host (and
    // vice versa elsewhere): added where they exist, not an error.
    let f = compile(&spec(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["socketcall", "arm_fadvise64_64", "arch_prctl", "sync_file_range2", "read"], "action": "SCMP_ACT_ALLOW"}]
    })))
    .expect("compile");
    assert!(f.unknown_syscalls().is_empty(), "{:?}", f.unknown_syscalls());
}

// ---- architectures ----

const ALL_ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

#[test]
fn arches_map_to_the_libseccomp_token_of_the_same_name() {
    for name in ALL_ARCHES {
        let oci: Arch = serde_json::from_value(json!(name)).expect("oci-spec knows the arch");
        let expected = ScmpArch::from_str(name).expect("libseccomp crate knows the arch");
        assert_eq!(map_arch(oci), expected, "{name}");
        assert_eq!(arch_name(oci), *name);
    }
}

#[test]
fn listed_arches_are_added_and_native_stays() {
    let out = pfc(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_NATIVE"],
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert!(out.contains("# filter for arch x86 ("), "{out}");
    assert!(out.contains("# filter for arch x32 ("), "{out}");
    let native = ScmpArch::native();
    let native_name = match native {
        ScmpArch::X8664 => "x86_64",
        ScmpArch::Aarch64 => "aarch64",
        _ => return, // only the arch names checked above are spelled out here
    };
    assert!(out.contains(&format!("# filter for arch {native_name} (")), "{out}");
}

#[test]
fn arch_unknown_to_libseccomp_is_a_clear_error() {
    // LoongArch, m68k and SuperH came with libseccomp 2.6.
    let spec = spec(json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_M68K"]}));
    match compile(&spec) {
        Ok(_) => assert!(version_at_least(2, 6), "libseccomp < 2.6 cannot know m68k"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("architecture SCMP_ARCH_M68K is not supported by libseccomp"), "{msg}");
        }
    }
}

// ---- flags ----

#[test]
fn flags_map_to_filter_attributes() {
    let f = compile(&spec(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]})))
    .expect("compile");
    assert!(f.ctx.as_ref().expect("ctx").get_ctl_log().expect("log attr"));
    assert!(f.ctx.as_ref().expect("ctx").get_ctl_ssb().expect("ssb attr"));
    assert!(f.ctx.as_ref().expect("ctx").get_ctl_tsync().expect("tsync attr"));
    // NNP is left to the runtime.
    assert!(!f.ctx.as_ref().expect("ctx").get_ctl_nnp().expect("nnp attr"));

    let f = compile(&spec(json!({"defaultAction": "SCMP_ACT_ALLOW"}))).expect("compile");
    assert!(!f.ctx.as_ref().expect("ctx").get_ctl_log().expect("log attr"));
    assert!(!f.ctx.as_ref().expect("ctx").get_ctl_nnp().expect("nnp attr"));
}

#[test]
fn wait_killable_recv_needs_libseccomp_2_6() {
    let spec = spec(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}));
    match compile(&spec) {
        Ok(f) => {
            assert!(version_at_least(2, 6));
            assert!(f.ctx.as_ref().expect("ctx").get_ctl_waitkill().expect("waitkill attr"));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is not supported"), "{msg}");
        }
    }
}

// ---- arguments ----

#[test]
fn operators_map_to_libseccomp() {
    use LinuxSeccompOperator::*;
    let cases = [
        (ScmpCmpNe, ScmpCompareOp::NotEqual),
        (ScmpCmpLt, ScmpCompareOp::Less),
        (ScmpCmpLe, ScmpCompareOp::LessOrEqual),
        (ScmpCmpEq, ScmpCompareOp::Equal),
        (ScmpCmpGe, ScmpCompareOp::GreaterEqual),
        (ScmpCmpGt, ScmpCompareOp::Greater),
        (ScmpCmpMaskedEq, ScmpCompareOp::MaskedEqual(0xf0)),
    ];
    for (oci, scmp) in cases {
        assert_eq!(map_op(oci, 0xf0), scmp, "{oci}");
    }
    let a = arg(2, 42, Some(7), "SCMP_CMP_GE");
    assert_eq!(map_arg(&a, "x").expect("maps"), ScmpArgCompare::new(2, ScmpCompareOp::GreaterEqual, 42));
}

#[test]
fn masked_eq_takes_value_as_mask_and_value_two_as_datum() {
    // (arg0 & 0xf0000) == 0x40000
    let a = arg(0, 0xf0000, Some(0x40000), "SCMP_CMP_MASKED_EQ");
    assert_eq!(
        map_arg(&a, "personality").expect("maps"),
        ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(0xf0000), 0x40000)
    );
    let out = pfc(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["personality"],
        "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0xf0000u64, "valueTwo": 0x40000u64, "op": "SCMP_CMP_MASKED_EQ"}]}]}));
    let block = syscall_block(&out, "personality");
    assert!(block.contains("$a0.lo32 & 0x000f0000 == 262144"), "{block}");

    // Docker's clone rule: no valueTwo means datum 0: (flags & CLONE_NEW*) == 0.
    let a = arg(0, 2114060288, None, "SCMP_CMP_MASKED_EQ");
    assert_eq!(map_arg(&a, "clone").expect("maps"), ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(2114060288), 0));
}

#[test]
fn arg_index_out_of_range_is_an_error() {
    let e = compile(&spec(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
        "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]})))
    .expect_err("index 6");
    let msg = e.to_string();
    assert!(msg.contains("syscall read") && msg.contains("argument index 6"), "{msg}");
}

#[test]
fn distinct_arg_indexes_are_and_ed_in_one_rule() {
    let args = [arg(0, 1, None, "SCMP_CMP_EQ"), arg(1, 2, None, "SCMP_CMP_NE")];
    let sets = conditions(&args, "x").expect("conditions");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].len(), 2);
    let out =
        pfc(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}]}));
    let block = syscall_block(&out, "kill");
    // Both conditions in one nested chain: ERRNO appears once.
    assert_eq!(block.matches("action ERRNO(1);").count(), 1, "{block}");
    assert!(block.contains("$a0") && block.contains("$a1"), "{block}");
}

#[test]
fn repeated_arg_index_becomes_one_rule_per_condition() {
    let args = [arg(0, 8, None, "SCMP_CMP_EQ"), arg(0, 0, None, "SCMP_CMP_EQ"), arg(1, 3, None, "SCMP_CMP_EQ")];
    let sets = conditions(&args, "x").expect("conditions");
    assert_eq!(sets.len(), 3);
    assert!(sets.iter().all(|s| s.len() == 1));
    // libseccomp would refuse both conditions on arg 0 in a single rule.
    let out = pfc(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                 {"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]}]}),
    );
    let block = syscall_block(&out, "personality");
    assert_eq!(block.matches("action ALLOW;").count(), 3, "{block}");
}

#[test]
fn no_args_means_an_unconditional_rule() {
    assert_eq!(conditions(&[], "x").expect("conditions"), vec![Vec::<ScmpArgCompare>::new()]);
}

// ---- errors ----

#[test]
fn error_messages_are_lowercase_and_name_the_culprit() {
    let errs = [
        compile(&spec(json!({"defaultAction": "SCMP_ACT_NOTIFY"}))).expect_err("notify default"),
        compile(&spec(
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
            "errnoRet": 100000}]}),
        ))
        .expect_err("errno"),
        from_docker_profile("{", &[], "x86_64").expect_err("json"),
    ];
    for e in errs {
        let msg = e.to_string();
        assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
    }
}

// ---- Docker profile ----

fn docker_default() -> String {
    super::DOCKER_DEFAULT_PROFILE.to_string()
}

/// Docker's default capability set.
fn docker_caps() -> Vec<String> {
    super::DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
}

fn rules_for<'a>(s: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
    s.syscalls().iter().flatten().filter(|c| c.names().iter().any(|n| n == name)).collect()
}

/// Allowed without conditions.
fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
    rules_for(s, name)
        .iter()
        .any(|c| c.action() == LinuxSeccompAction::ScmpActAllow && c.args().as_ref().is_none_or(|a| a.is_empty()))
}

const KERNEL: (u32, u32, u32) = (6, 1, 0);

#[test]
fn docker_profile_without_sys_admin() {
    let s = convert(&docker_default(), &docker_caps(), "x86_64", KERNEL).expect("convert");
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(s.default_errno_ret(), Some(1));
    assert_eq!(s.architectures().as_deref(), Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..]));
    assert!(allowed(&s, "read") && allowed(&s, "openat") && allowed(&s, "chroot"));
    assert!(!allowed(&s, "mount") && rules_for(&s, "mount").is_empty());
    assert!(rules_for(&s, "unshare").is_empty());
    assert!(allowed(&s, "arch_prctl") && allowed(&s, "modify_ldt"));
    assert!(rules_for(&s, "s390_runtime_instr").is_empty());
    assert!(rules_for(&s, "arm_fadvise64_64").is_empty());
    assert!(rules_for(&s, "riscv_flush_icache").is_empty());
    // minKernel 4.8 holds on 6.1.
    assert!(allowed(&s, "ptrace"));
    // clone only without namespace flags (arg 0 on x86), clone3 → ENOSYS.
    let clone = rules_for(&s, "clone");
    assert_eq!(clone.len(), 1, "{clone:?}");
    let args = clone[0].args().as_ref().expect("clone args");
    assert_eq!(args.len(), 1);
    assert_eq!(
        (args[0].index(), args[0].value(), args[0].op()),
        (0, 2114060288, LinuxSeccompOperator::ScmpCmpMaskedEq)
    );
    let clone3 = rules_for(&s, "clone3");
    assert_eq!(clone3.len(), 1);
    assert_eq!((clone3[0].action(), clone3[0].errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));
    // And it compiles.
    let f = compile(&s).expect("compile docker profile");
    assert!(!f.uses_notify());
}

#[test]
fn docker_profile_with_sys_admin() {
    let mut caps = docker_caps();
    caps.push("CAP_SYS_ADMIN".into());
    let s = convert(&docker_default(), &caps, "x86_64", KERNEL).expect("convert");
    assert!(allowed(&s, "mount") && allowed(&s, "unshare") && allowed(&s, "setns") && allowed(&s, "clone"));
    assert!(allowed(&s, "clone3"));
    // The CAP_SYS_ADMIN-less variants are excluded.
    assert!(rules_for(&s, "clone").iter().all(|c| c.args().is_none()));
    assert!(rules_for(&s, "clone3").iter().all(|c| c.action() == LinuxSeccompAction::ScmpActAllow));
    compile(&s).expect("compile docker profile with CAP_SYS_ADMIN");

    // Capability names are matched loosely.
    let s = convert(&docker_default(), &["sys_admin".to_string()], "amd64", KERNEL).expect("convert");
    assert!(allowed(&s, "mount"));
}

#[test]
fn docker_profile_arch_families() {
    let json = docker_default();
    let s = convert(&json, &docker_caps(), "aarch64", KERNEL).expect("convert");
    assert_eq!(s.architectures().as_deref(), Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..]));
    assert!(allowed(&s, "arm_fadvise64_64"));
    assert!(rules_for(&s, "arch_prctl").is_empty());
    // Go's spelling works too.
    let s2 = convert(&json, &docker_caps(), "arm64", KERNEL).expect("convert");
    assert_eq!(s, s2);

    let s = convert(&json, &docker_caps(), "s390x", KERNEL).expect("convert");
    assert_eq!(s.architectures().as_deref(), Some(&[Arch::ScmpArchS390x, Arch::ScmpArchS390][..]));
    let clone = rules_for(&s, "clone");
    assert_eq!(clone.len(), 1);
    assert_eq!(clone[0].args().as_ref().expect("args")[0].index(), 1, "s390 clone flags are arg 1");

    let s = convert(&json, &docker_caps(), "riscv64", KERNEL).expect("convert");
    assert_eq!(s.architectures().as_deref(), Some(&[Arch::ScmpArchRiscv64][..]));
    assert!(allowed(&s, "riscv_flush_icache"));

    // An arch without archMap entry: native only, no error.
    let s = convert(&json, &docker_caps(), "sparc64", KERNEL).expect("convert");
    assert!(s.architectures().is_none());
    compile(&s).expect("compile");
}

#[test]
fn docker_profile_min_kernel() {
    let s = convert(&docker_default(), &docker_caps(), "x86_64", (4, 4, 0)).expect("convert");
    assert!(!allowed(&s, "ptrace"), "minKernel 4.8 does not hold on 4.4");
    let mut caps = docker_caps();
    caps.push("CAP_SYS_PTRACE".into());
    let s = convert(&docker_default(), &caps, "x86_64", (4, 4, 0)).expect("convert");
    assert!(allowed(&s, "ptrace"));

    let excl = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "excludes": {"minKernel": "5.10"}}]}"#;
    assert_eq!(convert(excl, &[], "x86_64", (5, 4, 0)).expect("convert").syscalls().as_ref().map(Vec::len), Some(1));
    assert_eq!(convert(excl, &[], "x86_64", (5, 10, 0)).expect("convert").syscalls().as_ref().map(Vec::len), Some(0));

    let bad = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "five"}}]}"#;
    let e = convert(bad, &[], "x86_64", KERNEL).expect_err("bad minKernel");
    assert!(e.to_string().contains("minKernel \"five\""), "{e}");
}

#[test]
fn docker_format_details() {
    // A single "name", listener fields, flags and the top-level architectures.
    let json = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/run/agent.sock",
        "listenerMetadata": "meta",
        "syscalls": [
            {"name": "read", "action": "SCMP_ACT_ALLOW", "comment": "ignored"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}}
        ]
    }"#;
    let s = convert(json, &[], "x86_64", KERNEL).expect("convert");
    assert_eq!(s.architectures().as_deref(), Some(&[Arch::ScmpArchX86_64][..]));
    assert_eq!(s.flags().as_deref(), Some(&[LinuxSeccompFilterFlag::SeccompFilterFlagLog][..]));
    assert_eq!(s.listener_path().as_deref(), Some(std::path::Path::new("/run/agent.sock")));
    assert_eq!(s.listener_metadata().as_deref(), Some("meta"));
    assert!(allowed(&s, "read"));
    assert!(allowed(&s, "personality"), "empty args list is no condition");

    let both = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ERRNO"}]}"#;
    assert!(convert(both, &[], "x86_64", KERNEL).expect_err("name+names").to_string().contains("'name' and 'names'"));

    let both = r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": null}]}"#;
    assert!(convert(both, &[], "x86_64", KERNEL).expect_err("both").to_string().contains("archMap"));

    let unknown = r#"{"defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_VAX"]}]}"#;
    assert!(convert(unknown, &[], "x86_64", KERNEL).expect_err("vax").to_string().contains("SCMP_ARCH_VAX"));
    // …but only the host's family is looked at.
    assert!(convert(unknown, &[], "aarch64", KERNEL).is_ok());

    let e = convert(r#"{"defaultAction": "SCMP_ACT_NOPE"}"#, &[], "x86_64", KERNEL).expect_err("bad action");
    assert!(e.to_string().starts_with("seccomp profile: invalid json"), "{e}");
}

#[test]
fn docker_profile_on_this_host_converts_and_compiles() {
    let s = from_docker_profile(&docker_default(), &docker_caps(), std::env::consts::ARCH).expect("convert");
    let f = compile(&s).expect("compile");
    // The file lists syscalls newer than this libseccomp may know: skipped.
    let _ = f.unknown_syscalls();
    assert!(f.pfc().expect("pfc").contains("\"read\""));
}

#[test]
fn kernel_versions_parse() {
    assert_eq!(parse_kernel("6.18.44-fc-v782"), Some((6, 18, 44)));
    assert_eq!(parse_kernel("6.1.0-13-amd64"), Some((6, 1, 0)));
    assert_eq!(parse_kernel("4.8"), Some((4, 8, 0)));
    assert_eq!(parse_kernel("5.15+"), Some((5, 15, 0)));
    assert_eq!(parse_kernel("5"), None);
    assert_eq!(parse_kernel("x.y"), None);
    assert_eq!(parse_kernel(""), None);
}
