//! Device access rules: parsing of the OCI `linux.resources.devices` list,
//! the cgroup v1 `devices.allow`/`devices.deny` strings, and a generator of
//! `BPF_PROG_TYPE_CGROUP_DEVICE` programs for cgroup v2.
//!
//! Why hand-written: cgroup v2 has no `devices.*` files; access is decided by
//! an eBPF program attached to the cgroup. No maintained Rust crate builds
//! such programs (the BPF crates target compiled C/Rust objects, tracing or
//! XDP), and the program needed here is a short, straight-line sequence of
//! compares, so it is assembled directly from `struct bpf_insn` encodings.
//!
//! Semantics (same as the v1 controller as emulated by runc): rules are
//! evaluated last-match-wins, an access nothing matches is denied, type
//! `a` matches block and character devices, a missing or `-1` major/minor
//! matches any number, and a rule matches an access only if every requested
//! access bit (read/write/mknod) is among the rule's.
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32
//! major; u32 minor; }` where `access_type = (access << 16) | type`, and
//! returns 1 (allow) or 0 (deny).

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::{Error, Result};

/// `BPF_DEVCG_ACC_MKNOD`.
pub const ACC_MKNOD: u8 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const ACC_READ: u8 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const ACC_WRITE: u8 = 4;
/// All three access bits.
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// `BPF_DEVCG_DEV_BLOCK`.
pub const DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
pub const DEV_CHAR: u32 = 2;

/// One device rule, normalised from the OCI form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny (false) matching accesses.
    pub allow: bool,
    /// `Some(DEV_BLOCK)`/`Some(DEV_CHAR)`, or `None` for every type (`a`).
    pub kind: Option<u32>,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// Access bits (`ACC_*`).
    pub access: u8,
}

impl DeviceRule {
    /// Normalises an OCI rule. Returns `Ok(None)` for rules the device
    /// controller cannot express (type `p`: FIFOs are not device-checked).
    /// A missing or empty access string means `rwm`; type `u` is `c`.
    pub fn from_oci(r: &LinuxDeviceCgroup) -> Result<Option<DeviceRule>> {
        let kind = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => return Ok(None),
        };
        let num = |v: Option<i64>, what: &str| -> Result<Option<u32>> {
            match v {
                None | Some(-1) => Ok(None),
                Some(n) => u32::try_from(n).map(Some).map_err(|_| Error::Invalid {
                    what: "device rule".into(),
                    msg: format!("{what} number {n} is out of range"),
                }),
            }
        };
        let access = match r.access().as_deref() {
            None | Some("") => ACC_ALL,
            Some(s) => parse_access(s)?,
        };
        Ok(Some(DeviceRule {
            allow: r.allow(),
            kind,
            major: num(r.major(), "major")?,
            minor: num(r.minor(), "minor")?,
            access,
        }))
    }

    /// Whether this rule matches every device and every access.
    pub fn matches_everything(&self) -> bool {
        self.kind.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }

    /// Whether this rule matches an access (for reference evaluation).
    pub fn matches(&self, kind: u32, major: u32, minor: u32, access: u8) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access & !self.access == 0
    }

    /// The cgroup v1 `devices.allow`/`devices.deny` lines for this rule.
    ///
    /// The v1 kernel reads a line starting with `a` as "everything" and
    /// ignores the rest of it, so an `a` rule that is narrower than that is
    /// written as a `b` and a `c` line instead.
    pub fn v1_lines(&self) -> Vec<String> {
        if self.matches_everything() {
            return vec!["a".to_string()];
        }
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let tail = format!("{}:{} {}", num(self.major), num(self.minor), access_string(self.access));
        match self.kind {
            Some(DEV_BLOCK) => vec![format!("b {tail}")],
            Some(_) => vec![format!("c {tail}")],
            None => vec![format!("b {tail}"), format!("c {tail}")],
        }
    }
}

/// Parses an access string made of `r`, `w` and `m`.
pub fn parse_access(s: &str) -> Result<u8> {
    let mut bits = 0;
    for c in s.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(Error::Invalid {
                    what: "device rule".into(),
                    msg: format!("access {s:?} may only contain 'r', 'w' and 'm'"),
                })
            }
        };
    }
    Ok(bits)
}

/// The `rwm`-style string for access bits.
pub fn access_string(bits: u8) -> String {
    let mut s = String::new();
    if bits & ACC_READ != 0 {
        s.push('r');
    }
    if bits & ACC_WRITE != 0 {
        s.push('w');
    }
    if bits & ACC_MKNOD != 0 {
        s.push('m');
    }
    s
}

/// Normalises a whole OCI rule list (dropping inexpressible `p` rules).
pub fn rules_from_oci(list: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    let mut out = Vec::with_capacity(list.len());
    for r in list {
        if let Some(r) = DeviceRule::from_oci(r)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Reference evaluation of a rule list: last match wins, default deny.
pub fn evaluate(rules: &[DeviceRule], kind: u32, major: u32, minor: u32, access: u8) -> bool {
    rules.iter().rev().find(|r| r.matches(kind, major, minor, access)).is_some_and(|r| r.allow)
}

// --- instruction encoding -------------------------------------------------

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_JMP32: u8 = 0x06;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

/// `w_dst = *(u32 *)(r_src + off)`.
pub const OP_LDXW: u8 = BPF_LDX | BPF_MEM | BPF_W;
/// `w_dst = w_src`.
pub const OP_MOV32_X: u8 = BPF_ALU | BPF_MOV | BPF_X;
/// `r_dst = imm`.
pub const OP_MOV64_K: u8 = BPF_ALU64 | BPF_MOV | BPF_K;
/// `w_dst &= imm`.
pub const OP_AND32_K: u8 = BPF_ALU | BPF_AND | BPF_K;
/// `w_dst >>= imm`.
pub const OP_RSH32_K: u8 = BPF_ALU | BPF_RSH | BPF_K;
/// `if w_dst != imm goto +off`.
pub const OP_JNE32_K: u8 = BPF_JMP32 | BPF_JNE | BPF_K;
/// `if w_dst != w_src goto +off`.
pub const OP_JNE32_X: u8 = BPF_JMP32 | BPF_JNE | BPF_X;
/// `return r0`.
pub const OP_EXIT: u8 = BPF_JMP | BPF_EXIT;

/// Encodes one `struct bpf_insn { u8 code; u8 dst:4, src:4; s16 off; s32
/// imm; }` as the `u64` with the same memory image on this host.
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    // The register nibbles are C bitfields: the first one (dst) takes the
    // low bits on little-endian targets and the high bits on big-endian.
    #[cfg(target_endian = "little")]
    let regs = (src << 4) | (dst & 0x0f);
    #[cfg(target_endian = "big")]
    let regs = (dst << 4) | (src & 0x0f);
    let o = off.to_ne_bytes();
    let i = imm.to_ne_bytes();
    u64::from_ne_bytes([code, regs, o[0], o[1], i[0], i[1], i[2], i[3]])
}

/// Splits an encoded instruction back into `(code, dst, src, off, imm)`.
pub fn decode(raw: u64) -> (u8, u8, u8, i16, i32) {
    let b = raw.to_ne_bytes();
    #[cfg(target_endian = "little")]
    let (dst, src) = (b[1] & 0x0f, b[1] >> 4);
    #[cfg(target_endian = "big")]
    let (dst, src) = (b[1] >> 4, b[1] & 0x0f);
    (b[0], dst, src, i16::from_ne_bytes([b[2], b[3]]), i32::from_ne_bytes([b[4], b[5], b[6], b[7]]))
}

/// Builds the device-filter program for a rule list.
///
/// Layout: a prologue loads type into w2, access into w3, major into w4 and
/// minor into w5; then one block per rule, last rule first, each a chain of
/// "skip to the next block unless this field matches" jumps followed by
/// `r0 = allow; exit`; finally `r0 = 0; exit`. A rule matching everything
/// ends the program early, since nothing evaluated after it can matter.
pub fn program(rules: &[DeviceRule]) -> Vec<u64> {
    let mut p = vec![
        insn(OP_LDXW, 2, 1, 0, 0),         // w2 = ctx->access_type
        insn(OP_MOV32_X, 3, 2, 0, 0),      // w3 = w2
        insn(OP_AND32_K, 2, 0, 0, 0xffff), // w2 = type
        insn(OP_RSH32_K, 3, 0, 0, 16),     // w3 = access
        insn(OP_LDXW, 4, 1, 4, 0),         // w4 = ctx->major
        insn(OP_LDXW, 5, 1, 8, 0),         // w5 = ctx->minor
    ];
    for r in rules.iter().rev() {
        if r.matches_everything() {
            p.push(insn(OP_MOV64_K, 0, 0, 0, i32::from(r.allow)));
            p.push(insn(OP_EXIT, 0, 0, 0, 0));
            return p;
        }
        p.extend(rule_block(r));
    }
    p.push(insn(OP_MOV64_K, 0, 0, 0, 0));
    p.push(insn(OP_EXIT, 0, 0, 0, 0));
    p
}

/// One step of a rule block: a plain instruction, or a "go to the next
/// block unless equal" jump whose offset is filled in once the block's
/// length is known.
enum Step {
    Plain(u64),
    SkipUnless { code: u8, dst: u8, src: u8, imm: i32 },
}

/// The instructions testing one rule: `return allow` when it matches,
/// fall through to the next block otherwise.
fn rule_block(r: &DeviceRule) -> Vec<u64> {
    let mut steps = Vec::new();
    if let Some(k) = r.kind {
        steps.push(Step::SkipUnless { code: OP_JNE32_K, dst: 2, src: 0, imm: k as i32 });
    }
    if r.access != ACC_ALL {
        // Matches when every requested bit is allowed: (w3 & acc) == w3.
        steps.push(Step::Plain(insn(OP_MOV32_X, 1, 3, 0, 0)));
        steps.push(Step::Plain(insn(OP_AND32_K, 1, 0, 0, i32::from(r.access))));
        steps.push(Step::SkipUnless { code: OP_JNE32_X, dst: 1, src: 3, imm: 0 });
    }
    if let Some(m) = r.major {
        steps.push(Step::SkipUnless { code: OP_JNE32_K, dst: 4, src: 0, imm: m as i32 });
    }
    if let Some(m) = r.minor {
        steps.push(Step::SkipUnless { code: OP_JNE32_K, dst: 5, src: 0, imm: m as i32 });
    }
    steps.push(Step::Plain(insn(OP_MOV64_K, 0, 0, 0, i32::from(r.allow))));
    steps.push(Step::Plain(insn(OP_EXIT, 0, 0, 0, 0)));
    let len = steps.len();
    steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| match s {
            Step::Plain(raw) => raw,
            // Offsets count from the next instruction; the target is the
            // first instruction after this block. Blocks are at most 8
            // instructions long, so the offset always fits.
            Step::SkipUnless { code, dst, src, imm } => insn(code, dst, src, (len - i - 1) as i16, imm),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program of the subset of opcodes [`program`] emits, on a
    /// device context, like the kernel would.
    fn run(prog: &[u64], kind: u32, major: u32, minor: u32, access: u8) -> u64 {
        let ctx = [(u32::from(access) << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 100_000, "program does not terminate");
            let (code, dst, src, off, imm) = decode(prog[pc]);
            let (d, s) = (dst as usize, src as usize);
            pc += 1;
            match code {
                OP_LDXW => {
                    assert_eq!(s, 1, "loads only from the context");
                    r[d] = u64::from(ctx[off as usize / 4]);
                }
                OP_MOV32_X => r[d] = r[s] & 0xffff_ffff,
                OP_MOV64_K => r[d] = imm as i64 as u64,
                OP_AND32_K => r[d] = (r[d] & imm as u32 as u64) & 0xffff_ffff,
                OP_RSH32_K => r[d] = ((r[d] as u32) >> imm) as u64,
                OP_JNE32_K => {
                    if r[d] as u32 != imm as u32 {
                        pc = (pc as i64 + i64::from(off)) as usize;
                    }
                }
                OP_JNE32_X => {
                    if r[d] as u32 != r[s] as u32 {
                        pc = (pc as i64 + i64::from(off)) as usize;
                    }
                }
                OP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
            assert!(pc < prog.len(), "jump out of program");
        }
    }

    fn rule(allow: bool, t: &str, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
        let v = serde_json::json!({"allow": allow, "type": t, "major": major, "minor": minor, "access": access});
        serde_json::from_value(v).expect("valid rule")
    }

    fn default_rules() -> Vec<LinuxDeviceCgroup> {
        vec![
            rule(false, "a", None, None, "rwm"),
            rule(true, "c", Some(1), Some(3), "rwm"),
            rule(true, "c", Some(1), Some(5), "rwm"),
            rule(true, "c", Some(136), None, "rwm"),
            rule(true, "c", Some(5), Some(1), "rw"),
            rule(false, "c", Some(1), Some(5), "w"),
            rule(true, "b", Some(8), Some(0), "r"),
            rule(true, "a", Some(10), Some(200), "rwm"),
            rule(false, "p", None, None, "rwm"),
        ]
    }

    #[test]
    fn instruction_encoding_round_trips() {
        let raw = insn(OP_JNE32_K, 4, 0, 7, -5);
        assert_eq!(decode(raw), (OP_JNE32_K, 4, 0, 7, -5));
        #[cfg(target_endian = "little")]
        assert_eq!(insn(OP_LDXW, 2, 1, 4, 0), 0x0004_1261);
        assert_eq!(insn(OP_EXIT, 0, 0, 0, 0).to_ne_bytes()[0], 0x95);
    }

    #[test]
    fn simple_program_shape() {
        let rules = rules_from_oci(&[rule(false, "a", None, None, "rwm"), rule(true, "c", Some(1), Some(3), "rwm")])
            .expect("rules");
        let p = program(&rules);
        // 6 prologue + (type, major, minor, mov, exit) + catch-all (mov, exit)
        assert_eq!(p.len(), 13);
        assert_eq!(decode(p[6]), (OP_JNE32_K, 2, 0, 4, DEV_CHAR as i32));
        assert_eq!(decode(p[7]), (OP_JNE32_K, 4, 0, 3, 1));
        assert_eq!(decode(p[8]), (OP_JNE32_K, 5, 0, 2, 3));
        assert_eq!(decode(p[9]), (OP_MOV64_K, 0, 0, 0, 1));
        assert_eq!(decode(p[10]).0, OP_EXIT);
        assert_eq!(decode(p[11]), (OP_MOV64_K, 0, 0, 0, 0));
        assert_eq!(decode(p[12]).0, OP_EXIT);
    }

    #[test]
    fn empty_list_denies_everything() {
        let p = program(&[]);
        assert_eq!(p.len(), 8);
        assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_READ), 0);
    }

    #[test]
    fn allow_all_last_short_circuits() {
        let rules = rules_from_oci(&[rule(true, "c", Some(1), Some(3), "r"), rule(true, "a", None, None, "rwm")])
            .expect("rules");
        let p = program(&rules);
        assert_eq!(p.len(), 8);
        assert_eq!(run(&p, DEV_BLOCK, 8, 1, ACC_ALL), 1);
    }

    #[test]
    fn program_is_deterministic() {
        let rules = rules_from_oci(&default_rules()).expect("rules");
        assert_eq!(program(&rules), program(&rules));
        assert_eq!(rules.len(), 8, "the 'p' rule is dropped");
    }

    #[test]
    fn program_matches_reference_semantics() {
        let rules = rules_from_oci(&default_rules()).expect("rules");
        let p = program(&rules);
        let mut allowed = 0;
        for kind in [DEV_BLOCK, DEV_CHAR] {
            for major in [0, 1, 5, 8, 10, 136, 4095] {
                for minor in [0, 1, 3, 5, 200, 7, 0xfffff] {
                    for access in 1..=ACC_ALL {
                        let want = evaluate(&rules, kind, major, minor, access);
                        let got = run(&p, kind, major, minor, access);
                        assert_eq!(got, u64::from(want), "kind {kind} {major}:{minor} access {access}");
                        allowed += usize::from(want);
                    }
                }
            }
        }
        assert!(allowed > 0);
        // Spot checks of the intended meaning.
        assert!(evaluate(&rules, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(evaluate(&rules, DEV_CHAR, 1, 5, ACC_READ));
        assert!(!evaluate(&rules, DEV_CHAR, 1, 5, ACC_WRITE), "later deny wins");
        assert!(!evaluate(&rules, DEV_CHAR, 5, 1, ACC_MKNOD), "access not in rule");
        assert!(evaluate(&rules, DEV_BLOCK, 10, 200, ACC_MKNOD), "'a' covers block");
        assert!(!evaluate(&rules, DEV_BLOCK, 8, 0, ACC_WRITE));
        assert!(!evaluate(&rules, DEV_CHAR, 1, 9, ACC_READ), "default deny");
    }

    #[test]
    fn large_numbers_compare_as_u32() {
        let rules =
            vec![DeviceRule { allow: true, kind: Some(DEV_CHAR), major: Some(u32::MAX), minor: None, access: ACC_ALL }];
        let p = program(&rules);
        assert_eq!(run(&p, DEV_CHAR, u32::MAX, 0, ACC_READ), 1);
        assert_eq!(run(&p, DEV_CHAR, 1, 0, ACC_READ), 0);
    }

    #[test]
    fn v1_lines() {
        let r = |t, ma, mi, a| DeviceRule::from_oci(&rule(true, t, ma, mi, a)).expect("rule").expect("expressible");
        assert_eq!(r("a", None, None, "rwm").v1_lines(), ["a"]);
        assert_eq!(r("c", Some(1), Some(3), "rwm").v1_lines(), ["c 1:3 rwm"]);
        assert_eq!(r("c", Some(136), None, "rw").v1_lines(), ["c 136:* rw"]);
        assert_eq!(r("b", None, Some(-1), "mr").v1_lines(), ["b *:* rm"]);
        assert_eq!(r("u", Some(4), Some(1), "w").v1_lines(), ["c 4:1 w"]);
        assert_eq!(r("a", Some(10), None, "r").v1_lines(), ["b 10:* r", "c 10:* r"]);
        assert_eq!(r("c", Some(1), Some(3), "").v1_lines(), ["c 1:3 rwm"]);
        assert!(DeviceRule::from_oci(&rule(true, "p", None, None, "rwm")).expect("ok").is_none());
        assert!(DeviceRule::from_oci(&rule(true, "c", Some(1), Some(3), "rx")).is_err());
        assert!(DeviceRule::from_oci(&rule(true, "c", Some(-7), Some(3), "r")).is_err());
    }
}
