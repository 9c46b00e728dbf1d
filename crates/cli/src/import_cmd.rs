//! `berth import` (`image import`): a root filesystem tarball becomes an
//! image, with `--change` instructions for its config.

use berth_image::import::ImportOptions;
use berth_image::manifest::Platform;
use berth_image::registry::ImageRef;
use clap::Args;

use crate::image_cmd::{fail, open, StoreArgs};

/// `berth import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Tarball to import (plain, gzip or zstd), or `-` for stdin.
    pub file: String,
    /// REPOSITORY[:TAG] to tag the image as.
    pub reference: Option<String>,
    /// Apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV,
    /// EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR); repeatable.
    #[arg(short, long = "change")]
    pub change: Vec<String>,
    /// Commit message for the imported image.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Platform of the image (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
}

/// `berth import`: prints the new image's id.
pub fn import(args: &StoreArgs, a: ImportArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if a.file.starts_with("http://") || a.file.starts_with("https://") {
        return fail("importing from a URL is not supported: download the tarball and import the file");
    }
    let tags = match a.reference.as_deref().map(ImageRef::parse).transpose() {
        Ok(Some(r)) if r.digest().is_some() => return fail("import does not take a digest reference"),
        Ok(r) => r.map(|r| vec![r.to_string()]).unwrap_or_default(),
        Err(e) => return fail(e),
    };
    let platform = match a.platform.as_deref().map(Platform::parse).transpose() {
        Ok(p) => p.unwrap_or_else(Platform::host),
        Err(e) => return fail(e),
    };
    let opts = ImportOptions { changes: a.change, message: a.message, source: a.file.clone(), platform };
    let result = if a.file == "-" {
        store.import_rootfs(std::io::stdin().lock(), &opts, &tags)
    } else {
        match std::fs::File::open(&a.file) {
            Ok(f) => store.import_rootfs(f, &opts, &tags),
            Err(e) => return fail(format!("open {}: {e}", a.file)),
        }
    };
    match result {
        Ok(image) => {
            println!("{}", image.id);
            0
        }
        Err(e) => fail(e),
    }
}
