//! The content store: blobs addressed by digest under
//! `<root>/blobs/<algorithm>/<hex>`.
//!
//! A blob becomes visible only complete and verified: data goes to
//! `<root>/ingest/<algorithm>-<hex>` first, is hashed as it is written,
//! fsynced, checked against the expected digest and size, then renamed
//! into place (and the directory fsynced). A wrong byte leaves nothing
//! behind; a crash leaves at most a partial ingest file, from which a later
//! write resumes (its bytes are re-hashed, never trusted blindly).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

/// The blob store of one berth root.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<ContentStore> {
        for d in ["blobs/sha256", "blobs/sha512", "ingest"] {
            fs::create_dir_all(root.join(d)).ctx(|| format!("creating {}", root.join(d).display()))?;
        }
        Ok(ContentStore { root: root.to_path_buf() })
    }

    /// Where the blob `d` lives (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algorithm().name()).join(d.hex())
    }

    fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.root.join("ingest").join(format!("{}-{}", d.algorithm().name(), d.hex()))
    }

    /// Whether the blob is present.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// The blob's size, if present.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.path(d)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::BlobNotFound(d.to_string()),
            _ => Error::Io { context: format!("opening blob {d}"), source: e },
        })
    }

    /// Reads a (small) blob whole, re-verifying its digest: manifests and
    /// configs are parsed from what this returns.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(d)?.read_to_end(&mut data).ctx(|| format!("reading blob {d}"))?;
        d.verify(&data)?;
        Ok(data)
    }

    /// Stores `data` under `expected` after checking it hashes to it.
    pub fn write_blob(&self, expected: &Digest, data: &[u8]) -> Result<()> {
        if self.contains(expected) {
            return Ok(());
        }
        expected.verify(data)?;
        let mut w = self.ingest(expected, Some(data.len() as u64))?;
        if w.offset() > 0 {
            // A leftover partial of the same blob: start over.
            w = w.restart()?;
        }
        w.write_all(data).ctx(|| format!("writing blob {expected}"))?;
        w.commit()
    }

    /// Starts (or resumes) writing the blob `expected`. The returned
    /// writer's [`Ingest::offset`] says how many bytes a previous attempt
    /// left; write the rest, then [`Ingest::commit`].
    pub fn ingest(&self, expected: &Digest, size: Option<u64>) -> Result<Ingest> {
        let path = self.ingest_path(expected);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        // Re-hash what a previous attempt wrote.
        let mut hasher = Hasher::new(expected.algorithm());
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).ctx(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        let mut ing = Ingest { store: self.clone(), path, file, hasher, offset, expected: expected.clone(), size };
        if size.is_some_and(|s| offset > s) {
            ing = ing.restart()?;
        }
        Ok(ing)
    }

    /// Stores a blob whose digest is known only once it is all read
    /// (imports, legacy archives): streams `r` into an ingest file while
    /// hashing it (sha256), fsyncs, and renames it into place under the
    /// computed digest. Returns the digest and size.
    pub fn write_stream(&self, mut r: impl Read) -> Result<(Digest, u64)> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.root.join("ingest").join(format!("stream-{}-{n}", std::process::id()));
        let res = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
                .ctx(|| format!("creating {}", path.display()))?;
            let mut hasher = Hasher::new(crate::digest::Algorithm::Sha256);
            let mut size = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let got = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(got) => got,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::Io { context: "reading blob data".into(), source: e }),
                };
                file.write_all(&buf[..got]).ctx(|| format!("writing {}", path.display()))?;
                hasher.update(&buf[..got]);
                size += got as u64;
            }
            file.sync_all().ctx(|| format!("syncing {}", path.display()))?;
            let digest = hasher.finish();
            if self.contains(&digest) {
                let _ = fs::remove_file(&path);
                return Ok((digest, size));
            }
            let dest = self.path(&digest);
            fs::rename(&path, &dest).ctx(|| format!("storing blob {digest}"))?;
            if let Some(dir) = dest.parent() {
                File::open(dir).and_then(|d| d.sync_all()).ctx(|| format!("syncing {}", dir.display()))?;
            }
            Ok((digest, size))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&path);
        }
        res
    }

    /// Removes a blob (no-op when absent).
    pub fn delete(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { context: format!("removing blob {d}"), source: e }),
        }
    }

    /// Every blob present.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(alg);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io { context: format!("listing {}", dir.display()), source: e }),
            };
            for e in entries.flatten() {
                if let Some(name) = e.file_name().to_str() {
                    if let Ok(d) = format!("{alg}:{name}").parse() {
                        out.push(d);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes leftover partial downloads.
    pub fn clear_ingests(&self) -> Result<()> {
        let dir = self.root.join("ingest");
        for e in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        Ok(())
    }
}

/// A blob being written; see [`ContentStore::ingest`].
#[derive(Debug)]
pub struct Ingest {
    store: ContentStore,
    path: PathBuf,
    file: File,
    hasher: Hasher,
    offset: u64,
    expected: Digest,
    size: Option<u64>,
}

impl Ingest {
    /// Bytes already written (by this or an earlier attempt).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The partial file (to re-read what an earlier attempt wrote).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The digest being written.
    pub fn digest(&self) -> &Digest {
        &self.expected
    }

    /// Drops what was written so far and starts from byte 0.
    pub fn restart(mut self) -> Result<Ingest> {
        self.file.set_len(0).ctx(|| format!("truncating {}", self.path.display()))?;
        self.file.seek(SeekFrom::Start(0)).ctx(|| format!("seeking {}", self.path.display()))?;
        self.hasher = Hasher::new(self.expected.algorithm());
        self.offset = 0;
        Ok(self)
    }

    /// Abandons the write and removes what was written (the data is known
    /// to be bad, so a later write must not resume from it).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Verifies digest and size, fsyncs, and makes the blob visible. On a
    /// mismatch the partial data is removed and nothing becomes visible.
    pub fn commit(self) -> Result<()> {
        let Ingest { store, path, file, hasher, offset, expected, size } = self;
        let actual = hasher.finish();
        let fail = |e: Error| {
            let _ = fs::remove_file(&path);
            Err(e)
        };
        if let Some(s) = size {
            if s != offset {
                return fail(Error::SizeMismatch { digest: expected.to_string(), expected: s, actual: offset });
            }
        }
        if actual != expected {
            return fail(Error::DigestMismatch { expected: expected.to_string(), actual: actual.to_string() });
        }
        file.sync_all().ctx(|| format!("syncing {}", path.display()))?;
        drop(file);
        let dest = store.path(&expected);
        fs::rename(&path, &dest).ctx(|| format!("storing blob {expected}"))?;
        if let Some(dir) = dest.parent() {
            File::open(dir).and_then(|d| d.sync_all()).ctx(|| format!("syncing {}", dir.display()))?;
        }
        Ok(())
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verify_and_refuse_bad_bytes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cs = ContentStore::open(tmp.path()).expect("open");
        let d = Digest::sha256_of(b"hello");
        cs.write_blob(&d, b"hello").expect("write");
        assert_eq!(cs.read(&d).expect("read"), b"hello");
        let wrong = Digest::sha256_of(b"other");
        assert!(matches!(cs.write_blob(&wrong, b"hello"), Err(Error::DigestMismatch { .. })));
        assert!(!cs.contains(&wrong));
        // A streamed write with a bad byte leaves nothing behind.
        let mut w = cs.ingest(&wrong, None).expect("ingest");
        w.write_all(b"not it").expect("write");
        assert!(w.commit().is_err());
        assert!(!cs.contains(&wrong));
        assert_eq!(fs::read_dir(tmp.path().join("ingest")).expect("ls").count(), 0);
    }

    #[test]
    fn write_stream_stores_under_the_computed_digest() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cs = ContentStore::open(tmp.path()).expect("open");
        let data = vec![3u8; 2_500_000];
        let (d, n) = cs.write_stream(&data[..]).expect("stream");
        assert_eq!((d.clone(), n), (Digest::sha256_of(&data), data.len() as u64));
        assert_eq!(cs.read(&d).expect("read").len(), data.len());
        // Again: same blob, no leftovers.
        assert_eq!(cs.write_stream(&data[..]).expect("again").0, d);
        assert_eq!(fs::read_dir(tmp.path().join("ingest")).expect("ls").count(), 0);
    }

    #[test]
    fn resumes_a_partial_write() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cs = ContentStore::open(tmp.path()).expect("open");
        let data = vec![7u8; 300_000];
        let d = Digest::sha256_of(&data);
        let mut w = cs.ingest(&d, Some(data.len() as u64)).expect("ingest");
        w.write_all(&data[..100_000]).expect("write");
        drop(w); // crash
        let mut w = cs.ingest(&d, Some(data.len() as u64)).expect("resume");
        assert_eq!(w.offset(), 100_000);
        w.write_all(&data[100_000..]).expect("write rest");
        w.commit().expect("commit");
        assert_eq!(cs.size(&d), Some(300_000));
        assert_eq!(cs.list().expect("list"), vec![d]);
    }
}
