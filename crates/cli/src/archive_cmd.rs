//! `berth save` and `berth load` (also `image save` / `image load`): images
//! to and from docker-archive and OCI archives, as `docker save` /
//! `docker load`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use berth_image::archive::ArchiveFormat;
use berth_image::registry::ImageRef;
use clap::Args;

use crate::image_cmd::{fail, open, StoreArgs};

/// `berth save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images to save (name[:tag] or id); a name without a tag saves every
    /// tag of that repository.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to a file (a directory for oci-dir), instead of STDOUT.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// docker-archive (Docker 25's layout, also an OCI layout; layers
    /// uncompressed), oci-archive or oci-dir (stored blobs as they are).
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
}

/// `berth load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from a tar archive file (or an OCI layout directory), instead
    /// of STDIN.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output (accepted; berth shows no progress).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `berth save`: writes the images to `-o` or to stdout (never to a
/// terminal).
pub fn save(args: &StoreArgs, a: SaveArgs) -> i32 {
    let format: ArchiveFormat = match a.format.parse() {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let result = match &a.output {
        Some(path) => store.save_to_path(&a.images, format, path),
        None if format == ArchiveFormat::OciDir => return fail("--format oci-dir needs -o DIRECTORY"),
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                eprintln!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
                return 1;
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            store.save(&a.images, format, &mut out).and_then(|()| {
                out.flush().map_err(|e| berth_image::Error::Io { context: "writing to stdout".into(), source: e })
            })
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// `berth load`: prints `Loaded image: NAME` per tag, or `Loaded image ID:
/// ID` for an image without one.
pub fn load(args: &StoreArgs, a: LoadArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let result = match &a.input {
        Some(path) => store.load_path(path),
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("requested load from stdin, but stdin is empty");
                return 1;
            }
            store.load(stdin.lock())
        }
    };
    let loaded = match result {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    for l in loaded {
        if l.tags.is_empty() {
            let _ = writeln!(out, "Loaded image ID: {}", l.image.id);
        }
        for t in &l.tags {
            let shown = ImageRef::parse(t).map(|r| r.familiar()).unwrap_or_else(|_| t.clone());
            let _ = writeln!(out, "Loaded image: {shown}");
        }
    }
    0
}
