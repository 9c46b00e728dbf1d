//! Feeds arbitrary bytes to `unpack_layer` as a tar stream: it must never
//! panic, and never write outside its destination (the destination sits in
//! a sentinel directory that must hold nothing else afterwards).
#![no_main]

use berth_image::unpack::{unpack_layer, UnpackOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sentinel) = tempfile::tempdir() else { return };
    let dest = sentinel.path().join("dest");
    if std::fs::create_dir(&dest).is_err() {
        return;
    }
    let opts = UnpackOptions { layer: "fuzz".into(), privileged: false };
    let _ = unpack_layer(data, &dest, &opts);
    let names: Vec<_> = match std::fs::read_dir(sentinel.path()) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
        Err(_) => return,
    };
    assert_eq!(names, vec![std::ffi::OsString::from("dest")], "wrote outside dest");
    // Layers may leave read-only directories: make them removable.
    make_writable(&dest);
    drop(sentinel);
});

fn make_writable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&e.path());
        }
    }
}
