//! `berth save` / `berth load` (and `image save` / `image load`) through
//! the binary, as users run them: files and pipes, Docker's output lines,
//! the terminal refusals, formats, and a refused archive's exit code.

#[path = "../../image/tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn berth(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.arg("--root").arg(root).stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(mut c: Command) -> String {
    let o = c.output().expect("spawn berth");
    assert!(o.status.success(), "berth failed ({}): {}{}", o.status, text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

fn failed(mut c: Command) -> Output {
    let o = c.output().expect("spawn berth");
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {}{}", text(&o.stdout), text(&o.stderr));
    o
}

/// A store with the test busybox image tagged busybox:latest; its id.
fn seeded(root: &Path) -> String {
    let mut c = berth(root);
    c.args(["load", "-i"]).arg(common::test_images().join("busybox"));
    // The layout names it only "latest" (a bare tag): loaded by id.
    let out = ok(c);
    let id = out.trim().strip_prefix("Loaded image ID: ").unwrap_or_else(|| panic!("load said {out:?}")).to_string();
    let mut c = berth(root);
    c.args(["tag", &id, "busybox:latest"]);
    ok(c);
    id
}

#[test]
fn save_and_load_through_files_and_pipes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = tmp.path().join("a");
    let id = seeded(&a);

    // -o FILE, then load -i FILE into another store.
    let file = tmp.path().join("busybox.tar");
    let mut c = berth(&a);
    c.args(["save", "-o"]).arg(&file).arg("busybox");
    assert_eq!(ok(c), "");
    let b = tmp.path().join("b");
    let mut c = berth(&b);
    c.args(["load", "-i"]).arg(&file);
    assert_eq!(ok(c), "Loaded image: busybox:latest\n");
    let mut c = berth(&b);
    c.args(["images", "--no-trunc", "-q"]);
    assert_eq!(ok(c).trim(), id);

    // save to a pipe | load -q from stdin, via `image save` / `image load`.
    let mut saver =
        berth(&a).args(["image", "save", "busybox:latest"]).stdout(Stdio::piped()).spawn().expect("spawn save");
    let c2 = tmp.path().join("c");
    let loader = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(&c2)
        .args(["image", "load", "-q"])
        .stdin(saver.stdout.take().expect("save stdout"))
        .output()
        .expect("run load");
    assert!(saver.wait().expect("wait save").success());
    assert!(loader.status.success(), "{}", text(&loader.stderr));
    assert_eq!(text(&loader.stdout), "Loaded image: busybox:latest\n");

    // By id: no name travels; load reports the id.
    let mut c = berth(&a);
    c.args(["save", "--format", "oci-archive", "-o"]).arg(tmp.path().join("byid.tar")).arg(&id[7..19]);
    ok(c);
    let mut c = berth(&tmp.path().join("d"));
    c.args(["load", "--input"]).arg(tmp.path().join("byid.tar"));
    assert_eq!(ok(c), format!("Loaded image ID: {id}\n"));

    // oci-dir needs -o; unknown formats and missing images are refused.
    let mut c = berth(&a);
    c.args(["save", "--format", "oci-dir", "busybox"]).stdout(Stdio::piped());
    assert!(text(&failed(c).stderr).contains("needs -o"));
    let mut c = berth(&a);
    c.args(["save", "--format", "zip", "-o"]).arg(tmp.path().join("x")).arg("busybox");
    assert!(text(&failed(c).stderr).contains("unknown format"));
    let mut c = berth(&a);
    c.args(["save", "-o"]).arg(tmp.path().join("none.tar")).arg("nosuch:image");
    assert!(text(&failed(c).stderr).contains("no such image"));
    assert!(!tmp.path().join("none.tar").exists());
    let mut c = berth(&a);
    c.args(["save", "--format", "oci-dir", "-o"]).arg(tmp.path().join("layout")).arg("busybox");
    ok(c);
    assert!(tmp.path().join("layout/index.json").is_file());
    let mut c = berth(&tmp.path().join("e"));
    c.args(["load", "-i"]).arg(tmp.path().join("layout"));
    assert_eq!(ok(c), "Loaded image: busybox:latest\n");
}

#[test]
fn refuses_terminals_and_bad_archives() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = tmp.path().join("a");
    seeded(&a);

    // stdout a terminal (script(1) gives the command a pty).
    let have_script = Command::new("sh").args(["-c", "command -v script"]).output().is_ok_and(|o| o.status.success());
    if have_script {
        let cmdline = format!("{} --root {} save busybox; echo rc=$?", env!("CARGO_BIN_EXE_berth"), a.display());
        let o = Command::new("script")
            .args(["-qec", &cmdline, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        let out = text(&o.stdout);
        assert!(out.contains("cowardly refusing to save to a terminal. Use the -o flag or redirect"), "{out}");
        assert!(out.contains("rc=1"), "{out}");
        let cmdline = format!("{} --root {} load; echo rc=$?", env!("CARGO_BIN_EXE_berth"), a.display());
        let o = Command::new("script").args(["-qec", &cmdline, "/dev/null"]).output().expect("run script");
        let out = text(&o.stdout);
        assert!(out.contains("requested load from stdin, but stdin is empty") && out.contains("rc=1"), "{out}");
    } else {
        eprintln!("SKIPPED (terminal part): script(1) is not installed (apt-get install bsdutils)");
    }

    // A hostile archive: exit 1, a clear error, nothing recorded.
    // (The header is filled by hand: the tar crate refuses such names.)
    let mut h = [0u8; 512];
    h[..9].copy_from_slice(b"../escape");
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(b"00000000001");
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut archive = h.to_vec();
    archive.extend_from_slice(&[b'x'; 512]);
    archive.extend_from_slice(&[0; 1024]);
    let b = tmp.path().join("b");
    let mut c = berth(&b);
    c.args(["load"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn load");
    child.stdin.take().expect("stdin").write_all(&archive).expect("write archive");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("invalid image archive: entry \"../escape\" contains \"..\""),
        "{}",
        text(&o.stderr)
    );
    let mut c = berth(&b);
    c.args(["images", "-q"]);
    assert_eq!(ok(c), "");
}
