//! Hostile layers: every case either fails with an error naming the entry,
//! or (symlink-follow cases) lands inside the destination. In all cases
//! nothing outside the destination appears or changes.
//!
//! Layout of each case: `sentinel/` (a temp dir) holds `dest/` (unpacked
//! into) plus files the layer aims at (`outside`, `dir/inner`). A listing of
//! `sentinel/` minus `dest/` is taken before and after and must be equal.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_image::unpack::{unpack_layer, UnpackOptions, UnpackStats};
use berth_image::Error;

const LAYER: &str = "sha256:hostile";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tar written header by header, bypassing the `tar` crate's path
/// checks (it refuses `..`): names are copied into the header as bytes.
struct Raw(Vec<u8>);

impl Raw {
    fn new() -> Raw {
        Raw(Vec::new())
    }

    fn header(kind: u8, name: &[u8], link: &[u8], size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        h
    }

    fn push(&mut self, h: &tar::Header, data: &[u8]) -> &mut Raw {
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// An entry; names over 100 bytes get a GNU long-name record.
    fn entry(&mut self, kind: u8, name: &[u8], link: &[u8], data: &[u8]) -> &mut Raw {
        let mut short_name = name;
        let mut short_link = link;
        if name.len() > 100 {
            let h = Raw::header(b'L', b"././@LongLink", b"", name.len() as u64 + 1, 0o644);
            let mut n = name.to_vec();
            n.push(0);
            self.push(&h, &n);
            short_name = &name[..100];
        }
        if link.len() > 100 {
            let h = Raw::header(b'K', b"././@LongLink", b"", link.len() as u64 + 1, 0o644);
            let mut n = link.to_vec();
            n.push(0);
            self.push(&h, &n);
            short_link = &link[..100];
        }
        let h = Raw::header(kind, short_name, short_link, data.len() as u64, 0o644);
        self.push(&h, data)
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Raw {
        self.entry(b'0', name.as_bytes(), b"", data)
    }

    fn dir(&mut self, name: &str) -> &mut Raw {
        self.entry(b'5', name.as_bytes(), b"", b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Raw {
        self.entry(b'2', name.as_bytes(), target.as_bytes(), b"")
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Raw {
        self.entry(b'1', name.as_bytes(), target.as_bytes(), b"")
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, key: &str, value: &[u8]) -> &mut Raw {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        let mut rec = format!("{len} {key}=").into_bytes();
        rec.extend_from_slice(value);
        rec.push(b'\n');
        let mut h = Raw::header(b'x', b"PaxHeader", b"", rec.len() as u64, 0o644);
        // PAX headers must be recognised as ustar or gnu: they are (gnu).
        h.set_cksum();
        self.push(&h, &rec)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut v = self.0.clone();
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

/// One test case's directories.
struct Case {
    sentinel: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let sentinel = tempfile::tempdir().unwrap();
        std::fs::create_dir(sentinel.path().join("dest")).unwrap();
        std::fs::write(sentinel.path().join("outside"), b"outside").unwrap();
        std::fs::create_dir(sentinel.path().join("dir")).unwrap();
        std::fs::write(sentinel.path().join("dir/inner"), b"inner").unwrap();
        Case { sentinel }
    }

    fn root(&self) -> &Path {
        self.sentinel.path()
    }

    fn dest(&self) -> PathBuf {
        self.root().join("dest")
    }

    /// Absolute path of the sentinel as a string (for absolute links).
    fn abs(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root().display())
    }

    /// Runs the unpack and checks nothing outside `dest` changed.
    fn unpack(&self, tar: &[u8], privileged: bool) -> Result<UnpackStats, Error> {
        let before = listing(self.root());
        let etc_passwd = snapshot_file(Path::new("/etc/passwd"));
        let r = unpack_layer(tar, &self.dest(), &UnpackOptions { layer: LAYER.into(), privileged });
        assert_eq!(before, listing(self.root()), "something outside dest changed");
        assert_eq!(etc_passwd, snapshot_file(Path::new("/etc/passwd")), "host /etc/passwd changed");
        r
    }
}

/// (type, mode, size, mtime, content or link target, xattr names) of
/// every path under `root` except `root/dest`.
fn listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p == root.join("dest") {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let what = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("link {:?}", std::fs::read_link(&p).unwrap())
        } else if ft.is_file() {
            format!("file {:?}", std::fs::read(&p).unwrap())
        } else {
            format!("special {}", m.rdev())
        };
        let mut xattrs = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(&p, &mut xattrs[..]).unwrap_or(0);
        out.insert(
            p.clone(),
            format!(
                "{what} mode={:o} size={} mtime={}.{} ino={} xattrs={:?}",
                m.mode(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino(),
                &xattrs[..n]
            ),
        );
    }
    out
}

fn snapshot_file(p: &Path) -> Option<(Vec<u8>, i64, i64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((std::fs::read(p).ok()?, m.mtime(), m.mtime_nsec()))
}

/// Asserts `r` is an `UnsafeEntry` for `entry`.
fn assert_refused(r: Result<UnpackStats, Error>, entry: &str) {
    match r {
        Err(Error::UnsafeEntry { layer, entry: e, reason }) => {
            assert_eq!(layer, LAYER);
            assert_eq!(e, entry, "reason: {reason}");
        }
        other => panic!("expected UnsafeEntry for {entry:?}, got {other:?}"),
    }
}

fn assert_bad_layer(r: Result<UnpackStats, Error>) {
    match r {
        Err(Error::BadLayer { layer, .. }) => assert_eq!(layer, LAYER),
        other => panic!("expected BadLayer, got {other:?}"),
    }
}

#[test]
fn dotdot_traversal_is_refused() {
    for name in ["../escape", "a/../../escape", "./../outside", "a/b/../../../outside", "/../outside"] {
        let c = Case::new();
        let tar = Raw::new().file("a/ok", b"ok").file(name, b"pwned").finish();
        assert_refused(c.unpack(&tar, false), name);
        assert!(!c.root().join("escape").exists());
    }
}

#[test]
fn dotdot_inside_the_root_is_fine() {
    let c = Case::new();
    let tar = Raw::new().file("a/../b", b"b").file("/abs", b"abs").file("./c/./d", b"d").finish();
    c.unpack(&tar, false).unwrap();
    assert_eq!(std::fs::read(c.dest().join("b")).unwrap(), b"b");
    assert_eq!(std::fs::read(c.dest().join("abs")).unwrap(), b"abs");
    assert_eq!(std::fs::read(c.dest().join("c/d")).unwrap(), b"d");
}

#[test]
fn absolute_path_entry_lands_inside_dest() {
    let c = Case::new();
    let abs = c.abs("outside");
    let tar = Raw::new().file(&abs, b"pwned").finish();
    c.unpack(&tar, false).unwrap();
    assert_eq!(std::fs::read(c.root().join("outside")).unwrap(), b"outside");
    let inside = c.dest().join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"pwned");
}

#[test]
fn absolute_symlink_then_write_through_it_stays_inside() {
    let c = Case::new();
    let tar =
        Raw::new().symlink("evil", &c.abs("dir")).file("evil/inner", b"pwned").file("evil/new", b"pwned").finish();
    c.unpack(&tar, false).unwrap();
    // Followed as if dest were `/`.
    let inside = c.dest().join(c.abs("dir").trim_start_matches('/'));
    assert_eq!(std::fs::read(inside.join("inner")).unwrap(), b"pwned");
    assert_eq!(std::fs::read(inside.join("new")).unwrap(), b"pwned");
    assert_eq!(std::fs::read(c.root().join("dir/inner")).unwrap(), b"inner");
    assert!(!c.root().join("dir/new").exists());
}

#[test]
fn symlink_to_host_etc_then_passwd_lands_in_dest_etc() {
    let c = Case::new();
    let tar = Raw::new().symlink("evil", "/etc").file("evil/passwd", b"root::0:0::/:/bin/sh\n").finish();
    c.unpack(&tar, false).unwrap();
    assert_eq!(std::fs::read(c.dest().join("etc/passwd")).unwrap(), b"root::0:0::/:/bin/sh\n");
    assert!(std::fs::read(c.dest().join("evil/passwd")).is_ok());
}

#[test]
fn relative_symlink_climbing_out_then_write_through_it_stays_inside() {
    let c = Case::new();
    let tar = Raw::new()
        .symlink("up", "../../..")
        .file("up/outside", b"pwned")
        .dir("a/b/")
        .symlink("a/b/up", "../../../../../dir")
        .file("a/b/up/inner", b"pwned")
        .finish();
    c.unpack(&tar, false).unwrap();
    assert_eq!(std::fs::read(c.dest().join("outside")).unwrap(), b"pwned");
    assert_eq!(std::fs::read(c.dest().join("dir/inner")).unwrap(), b"pwned");
    assert_eq!(std::fs::read(c.root().join("outside")).unwrap(), b"outside");
}

#[test]
fn hardlinks_out_of_dest_are_refused() {
    let c = Case::new();
    let outside = c.abs("outside");
    let cases: Vec<(String, String)> = vec![
        ("h1".into(), "/etc/passwd".into()),
        ("h2".into(), "../../outside".into()),
        ("h3".into(), "../outside".into()),
        ("h4".into(), outside.clone()),
        ("h5".into(), "a/../../outside".into()),
        ("h6".into(), "missing".into()),
    ];
    for (name, target) in &cases {
        let tar = Raw::new().hardlink(name, target).finish();
        assert_refused(c.unpack(&tar, false), name);
        assert!(!c.dest().join(name).exists());
    }
    // Through a symlink to the sentinel: resolved inside dest, where the
    // target does not exist.
    let tar = Raw::new().symlink("l", &c.abs("")).hardlink("h7", "l/outside").finish();
    assert_refused(c.unpack(&tar, false), "h7");
    // To a directory.
    let tar = Raw::new().dir("d/").hardlink("h8", "d").finish();
    assert_refused(c.unpack(&tar, false), "h8");
    assert_eq!(std::fs::metadata(c.root().join("outside")).unwrap().nlink(), 1);
}

#[test]
fn file_replacing_a_symlink_replaces_the_link() {
    let c = Case::new();
    let tar = Raw::new()
        .symlink("s", &c.abs("outside"))
        .file("s", b"pwned")
        .symlink("rel", "../outside")
        .file("rel", b"pwned")
        .symlink("d", &c.abs("dir"))
        .dir("d/")
        .file("d/inner", b"pwned")
        .finish();
    c.unpack(&tar, false).unwrap();
    assert!(std::fs::symlink_metadata(c.dest().join("s")).unwrap().is_file());
    assert_eq!(std::fs::read(c.dest().join("s")).unwrap(), b"pwned");
    assert!(std::fs::symlink_metadata(c.dest().join("rel")).unwrap().is_file());
    assert!(std::fs::symlink_metadata(c.dest().join("d")).unwrap().is_dir());
    assert_eq!(std::fs::read(c.root().join("outside")).unwrap(), b"outside");
    assert_eq!(std::fs::read(c.root().join("dir/inner")).unwrap(), b"inner");
}

#[test]
fn huge_names_are_refused() {
    let c = Case::new();
    let long = "a/".repeat(2100) + "f"; // 4201 bytes, each component short
    let tar = Raw::new().file(&long, b"").finish();
    assert_refused(c.unpack(&tar, false), &long);

    let component = "x".repeat(300);
    let tar = Raw::new().file(&component, b"").finish();
    assert_refused(c.unpack(&tar, false), &component);

    let target = "t/".repeat(2100);
    let tar = Raw::new().symlink("s", &target).finish();
    assert_refused(c.unpack(&tar, false), "s");

    let big = "y".repeat(70_000);
    let tar = Raw::new().pax("path", big.as_bytes()).file("short", b"").finish();
    assert_refused(c.unpack(&tar, false), &big);
}

#[test]
fn nul_in_names_is_refused() {
    let c = Case::new();
    let tar = Raw::new().pax("path", b"a\0/../../outside").file("placeholder", b"pwned").finish();
    assert_refused(c.unpack(&tar, false), "a\0/../../outside");
    let tar = Raw::new().entry(b'L', b"././@LongLink", b"", b"evil\0name\0").file("placeholder", b"").finish();
    assert!(matches!(c.unpack(&tar, false), Err(Error::UnsafeEntry { .. }) | Err(Error::BadLayer { .. })));
    let tar = Raw::new().pax("linkpath", b"x\0y").symlink("s", "placeholder").finish();
    assert_refused(c.unpack(&tar, false), "s");
}

#[test]
fn truncated_and_garbage_streams_are_bad_layers() {
    let c = Case::new();
    let good = Raw::new().file("f", &[7u8; 2000]).file("g", b"g").finish();
    // Cut inside the first file's data, and inside the second header.
    for cut in [512 + 100, 512 + 2048 + 100] {
        assert_bad_layer(c.unpack(&good[..cut], false));
    }
    // A header block of garbage (bad checksum).
    let garbage: Vec<u8> = (0..1536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert_bad_layer(c.unpack(&garbage, false));
    // A header whose size field is not a number.
    let mut h = Raw::header(b'0', b"f", b"", 0, 0o644);
    h.as_old_mut().size = *b"zzzzzzzzzzz\0";
    h.set_cksum();
    let mut bad = h.as_bytes().to_vec();
    bad.extend(std::iter::repeat_n(0u8, 1024));
    assert_bad_layer(c.unpack(&bad, false));
    // A PAX header with no member after it.
    let mut t = Raw::new();
    t.pax("path", b"x");
    let mut v = t.0.clone();
    v.extend(std::iter::repeat_n(0u8, 1024));
    assert_bad_layer(c.unpack(&v, false));
    // Malformed PAX record.
    let mut h = Raw::header(b'x', b"PaxHeader", b"", 9, 0o644);
    h.set_cksum();
    let mut t = Raw::new();
    t.push(&h, b"99 path=x");
    t.file("f", b"");
    assert!(c.unpack(&t.finish(), false).is_err());
}

#[test]
fn unknown_entry_types_are_refused() {
    let c = Case::new();
    for kind in [b'7', b'V', b'M', b'Z'] {
        let tar = Raw::new().entry(kind, b"odd", b"", b"").finish();
        assert_refused(c.unpack(&tar, false), "odd");
    }
}

#[test]
fn device_nodes_are_skipped_without_privileges() {
    let c = Case::new();
    let tar = Raw::new().entry(b'3', b"dev/sda", b"", b"").entry(b'4', b"dev/blk", b"", b"").finish();
    c.unpack(&tar, false).unwrap();
    assert!(std::fs::symlink_metadata(c.dest().join("dev/sda")).is_err());
    assert!(std::fs::symlink_metadata(c.dest().join("dev/blk")).is_err());
    // Through a symlink pointing out: still inside.
    if is_root() {
        let tar = Raw::new().symlink("ln", &c.abs("")).entry(b'3', b"ln/node", b"", b"").finish();
        c.unpack(&tar, true).unwrap();
        let inside = c.dest().join(c.abs("node").trim_start_matches('/'));
        assert!(std::fs::symlink_metadata(inside).unwrap().file_type().is_char_device());
    }
}

#[test]
fn whiteouts_cannot_escape() {
    let c = Case::new();
    for name in ["../.wh.outside", ".wh...", "a/.wh..", ".wh."] {
        let tar = Raw::new().file(name, b"").finish();
        assert_refused(c.unpack(&tar, true), name);
    }
    if is_root() {
        let c = Case::new();
        let tar = Raw::new()
            .symlink("s", &c.abs(""))
            .file("s/.wh.outside", b"")
            .symlink("t", "../../dir")
            .file("t/.wh..wh..opq", b"")
            .finish();
        c.unpack(&tar, true).unwrap();
        let inside = c.dest().join(c.abs("outside").trim_start_matches('/'));
        assert!(std::fs::symlink_metadata(inside).unwrap().file_type().is_char_device());
        let mut buf = [0u8; 4];
        let n = rustix::fs::getxattr(c.dest().join("dir"), "trusted.overlay.opaque", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"y");
    }
}

#[test]
fn symlink_loops_fail_cleanly() {
    let c = Case::new();
    let tar = Raw::new().symlink("a", "b").symlink("b", "a").file("a/x", b"").finish();
    match c.unpack(&tar, false) {
        Err(Error::Io { context, .. }) => assert!(context.contains("a/x"), "{context}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // `etc -> /etc` inside the root is a link to itself.
    let tar = Raw::new().symlink("etc", "/etc").file("etc/passwd", b"root::0:0::/:/bin/sh\n").finish();
    assert!(c.unpack(&tar, false).is_err());
    // A chain of dangling links longer than the limit.
    let mut t = Raw::new();
    for i in 0..50 {
        t.symlink(&format!("l{i}"), &format!("l{}", i + 1));
    }
    t.file("l0/x", b"");
    assert!(c.unpack(&t.finish(), false).is_err());
}

#[test]
fn hostile_xattrs_are_dropped() {
    let c = Case::new();
    let tar = Raw::new()
        .pax("SCHILY.xattr.trusted.overlay.redirect", b"/etc")
        .dir("d/")
        .pax(
            "SCHILY.xattr.security.capability",
            b"\x01\x00\x00\x02\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00",
        )
        .file("f", b"")
        .finish();
    c.unpack(&tar, false).unwrap();
    let mut buf = [0u8; 64];
    assert!(rustix::fs::getxattr(c.dest().join("d"), "trusted.overlay.redirect", &mut buf).is_err());
    assert!(rustix::fs::getxattr(c.dest().join("f"), "security.capability", &mut buf).is_err(), "unprivileged");
}
