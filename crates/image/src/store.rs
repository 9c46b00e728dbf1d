//! The image store: content store + snapshots + metadata, and the
//! operations users run on them (pull, list, inspect, tag, remove, gc).
//!
//! Pull: resolve the reference to a manifest (through an index for this
//! platform), fetch the config, then download the missing layers
//! concurrently (each resumable, verified against its digest before it
//! becomes a blob) and unpack each into its own snapshot (verified against
//! the config's diff ID before the snapshot becomes visible). Layers unpack
//! independently: overlayfs stacks them at mount time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageManifest};

use crate::content::ContentStore;
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::images::{now_rfc3339_nanos, ImageDb, ImageRecord, LayerRecord};
use crate::manifest::{self, Parsed, Platform};
use crate::registry::{ImageRef, Registry};
use crate::snapshot::Snapshots;
use crate::unpack::{self, UnpackOptions};

/// How many layers download at once (Docker's default is 3).
const CONCURRENT_LAYERS: usize = 3;

/// Progress of a pull, reported per layer (ids are the 12-hex short
/// digests Docker shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The reference resolved to this manifest digest.
    Resolved {
        /// Tag or digest being pulled.
        reference: String,
    },
    /// A layer will be fetched.
    Waiting {
        /// Short layer id.
        id: String,
    },
    /// Already unpacked locally.
    AlreadyExists {
        /// Short layer id.
        id: String,
    },
    /// Bytes received so far.
    Downloading {
        /// Short layer id.
        id: String,
        /// Bytes so far.
        current: u64,
        /// Blob size.
        total: u64,
    },
    /// Download finished and verified.
    DownloadComplete {
        /// Short layer id.
        id: String,
    },
    /// Unpacking started.
    Extracting {
        /// Short layer id.
        id: String,
    },
    /// The layer is unpacked.
    PullComplete {
        /// Short layer id.
        id: String,
    },
}

/// Receives pull progress (called from several tasks).
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, e: PullEvent);
}

/// Discards progress.
#[derive(Debug)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: PullEvent) {}
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The image.
    pub image: ImageRecord,
    /// The digest users see (`Digest:` line): the index's when pulled
    /// through one, else the manifest's.
    pub digest: Digest,
    /// Whether anything new was stored.
    pub downloaded: bool,
    /// The name it was tagged as (full form), if pulled by tag.
    pub tagged: Option<String>,
}

/// The image store under one root directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    snapshots: Snapshots,
    db: Arc<ImageDb>,
}

impl ImageStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<ImageStore> {
        std::fs::create_dir_all(root).ctx(|| format!("creating {}", root.display()))?;
        Ok(ImageStore {
            root: root.to_path_buf(),
            content: ContentStore::open(root)?,
            snapshots: Snapshots::open(root)?,
            db: Arc::new(ImageDb::open(root)?),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The metadata database.
    pub fn db(&self) -> &ImageDb {
        &self.db
    }

    /// Pulls `reference` for `platform` from its registry.
    pub async fn pull(
        &self,
        registry: Arc<Registry>,
        reference: &ImageRef,
        platform: &Platform,
        progress: Arc<dyn Progress>,
    ) -> Result<PullOutcome> {
        let (bytes, media_type, top) = registry.fetch_manifest(reference).await?;
        let mut downloaded = false;
        let (index, manifest_bytes, manifest_mt, manifest_digest) = match manifest::parse(&bytes, Some(&media_type))? {
            Parsed::Index(idx) => {
                let d = manifest::select(&idx, platform, &reference.familiar())?;
                let digest: Digest = d.digest().to_string().parse()?;
                let (mb, mmt, md) = registry.fetch_manifest(&reference.with_digest(&digest)).await?;
                if md != digest {
                    return Err(Error::DigestMismatch { expected: digest.to_string(), actual: md.to_string() });
                }
                if !self.content.contains(&top) {
                    self.content.write_blob(&top, &bytes)?;
                }
                (Some(top.clone()), mb, mmt, md)
            }
            Parsed::Manifest(_) => (None, bytes, media_type, top.clone()),
        };
        progress.event(PullEvent::Resolved { reference: reference.tag().unwrap_or("latest").to_string() });
        let Parsed::Manifest(m) = manifest::parse(&manifest_bytes, Some(&manifest_mt))? else {
            return Err(Error::InvalidManifest {
                what: "manifest",
                reason: "an index where a manifest was expected".into(),
            });
        };
        if !self.content.contains(&manifest_digest) {
            self.content.write_blob(&manifest_digest, &manifest_bytes)?;
            downloaded = true;
        }
        let config_desc = m.config();
        let config_digest: Digest = config_desc.digest().to_string().parse()?;
        if !self.content.contains(&config_digest) {
            let data = fetch_all(&registry, reference, &config_digest).await?;
            self.content.write_blob(&config_digest, &data)?;
            downloaded = true;
        }
        let config = self.content.read(&config_digest)?;
        let layers = plan_layers(&m, &config)?;

        // Download + unpack, a few layers at a time.
        let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LAYERS));
        let mut tasks = tokio::task::JoinSet::new();
        for l in &layers {
            let id = short(&l.digest);
            if self.snapshots.exists(&l.chain_id) {
                progress.event(PullEvent::AlreadyExists { id });
                continue;
            }
            downloaded = true;
            progress.event(PullEvent::Waiting { id: id.clone() });
            let (store, reg, r, l, progress, sem) =
                (self.clone(), registry.clone(), reference.clone(), l.clone(), progress.clone(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(|e| Error::Registry {
                    registry: r.registry().to_string(),
                    reason: format!("download queue closed: {e}"),
                })?;
                if store.content.contains(&l.digest) {
                    // Downloaded earlier (its snapshot was lost or refused): unpack the blob.
                    progress.event(PullEvent::DownloadComplete { id: short(&l.digest) });
                    progress.event(PullEvent::Extracting { id: short(&l.digest) });
                    let (s2, l2) = (store.clone(), l.clone());
                    tokio::task::spawn_blocking(move || s2.unpack_layer(&l2, None)).await.map_err(|e| {
                        Error::BadLayer { layer: l.digest.to_string(), reason: format!("unpack task: {e}") }
                    })??;
                } else {
                    store.fetch_and_unpack(&reg, &r, &l, &*progress).await?;
                }
                progress.event(PullEvent::PullComplete { id: short(&l.digest) });
                Ok::<(), Error>(())
            });
        }
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            let r = r
                .map_err(|e| Error::BadLayer { layer: "?".into(), reason: format!("layer task: {e}") })
                .and_then(|r| r);
            if let Err(e) = r {
                if first_err.is_none() {
                    first_err = Some(e);
                    tasks.abort_all();
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }

        let repo = format!("{}/{}", reference.registry(), reference.repository());
        let shown = index.clone().unwrap_or_else(|| manifest_digest.clone());
        let mut record = self.db.get(&config_digest)?.unwrap_or_else(|| ImageRecord {
            id: config_digest.clone(),
            manifest: manifest_digest.clone(),
            manifest_media_type: manifest_mt.clone(),
            index: index.clone(),
            repo_digests: Vec::new(),
            config_size: config.len() as u64,
            layers: layers.clone(),
            size: layers.iter().map(|l| l.size).sum(),
            added: now_rfc3339_nanos(),
        });
        let rd = format!("{repo}@{shown}");
        if !record.repo_digests.contains(&rd) {
            record.repo_digests.push(rd);
        }
        let tagged = reference.tag().filter(|_| reference.digest().is_none()).map(|t| format!("{repo}:{t}"));
        self.db.put(&record, tagged.as_slice())?;
        Ok(PullOutcome { image: record, digest: shown, downloaded, tagged })
    }

    /// Downloads a layer blob into the content store and unpacks it at the
    /// same time: the bytes go both to the ingest file (resuming a partial
    /// download) and, through a bounded channel, to an unpacker thread that
    /// decompresses, hashes (diff ID) and extracts them. The snapshot
    /// becomes visible only once the blob has verified against its digest
    /// and the tar against its diff ID; the blob only once its digest
    /// matches. A refused layer stops the download.
    async fn fetch_and_unpack(
        &self,
        registry: &Registry,
        r: &ImageRef,
        l: &LayerRecord,
        progress: &dyn Progress,
    ) -> Result<()> {
        let id = short(&l.digest);
        let (data_tx, data_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
        let (verified_tx, verified_rx) = tokio::sync::oneshot::channel::<()>();
        let (store, layer) = (self.clone(), l.clone());
        let unpacker = tokio::task::spawn_blocking(move || {
            store.unpack_layer(&layer, Some((ChannelReader::new(data_rx), verified_rx)))
        });
        let download = self.download_layer(registry, r, l, progress, data_tx, verified_tx).await;
        let unpacked = unpacker
            .await
            .map_err(|e| Error::BadLayer { layer: l.digest.to_string(), reason: format!("unpack task: {e}") })
            .and_then(|r| r);
        match (download, unpacked) {
            (Ok(()), Ok(())) => Ok(()),
            // The unpacker's refusal is the cause when it stopped the download.
            (Err(Error::LayerRefused), Err(e)) | (Ok(()), Err(e)) => Err(e),
            (Err(e), _) => Err(e),
        }
        .inspect(|_| progress.event(PullEvent::Extracting { id }))
    }

    /// The download half of [`Self::fetch_and_unpack`]: feeds `data` and
    /// signals `verified` once the blob is committed.
    async fn download_layer(
        &self,
        registry: &Registry,
        r: &ImageRef,
        l: &LayerRecord,
        progress: &dyn Progress,
        data: tokio::sync::mpsc::Sender<bytes::Bytes>,
        verified: tokio::sync::oneshot::Sender<()>,
    ) -> Result<()> {
        let id = short(&l.digest);
        let mut ingest = self.content.ingest(&l.digest, Some(l.size))?;
        // What an earlier, interrupted pull left: the unpacker needs it too.
        if ingest.offset() > 0 {
            let mut partial = std::fs::File::open(ingest.path()).ctx(|| format!("reading partial {}", l.digest))?;
            let mut left = ingest.offset();
            while left > 0 {
                let mut buf = vec![0u8; (1 << 20).min(left) as usize];
                std::io::Read::read_exact(&mut partial, &mut buf).ctx(|| format!("reading partial {}", l.digest))?;
                left -= buf.len() as u64;
                data.send(buf.into()).await.map_err(|_| Error::LayerRefused)?;
            }
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut stream = registry.fetch_blob(r, &l.digest, ingest.offset()).await?;
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => {
                        use std::io::Write;
                        ingest.write_all(&b).ctx(|| format!("writing layer {}", l.digest))?;
                        let current = ingest.offset();
                        if data.send(b).await.is_err() {
                            // A refused layer is not worth resuming.
                            ingest.discard();
                            return Err(Error::LayerRefused);
                        }
                        progress.event(PullEvent::Downloading { id: id.clone(), current, total: l.size });
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                // Wrong bytes: what we have is worthless, and asking again
                // for the same bytes will not help.
                Some(e @ Error::DigestMismatch { .. }) => {
                    ingest.discard();
                    return Err(e);
                }
                // A broken connection: resume from what we have.
                Some(_) if attempts < 4 => continue,
                Some(e) => return Err(e),
                None => {
                    drop(data);
                    ingest.commit()?;
                    progress.event(PullEvent::DownloadComplete { id });
                    let _ = verified.send(());
                    return Ok(());
                }
            }
        }
    }

    /// Unpacks a stored layer blob into its snapshot, checking the
    /// uncompressed stream against the layer's diff ID.
    /// With `stream`, reads the layer from the download instead of the
    /// stored blob, and keeps the snapshot only once the download signals
    /// that the blob verified.
    fn unpack_layer(
        &self,
        l: &LayerRecord,
        stream: Option<(ChannelReader, tokio::sync::oneshot::Receiver<()>)>,
    ) -> Result<()> {
        let mut unpacked = 0u64;
        let compression = manifest::layer_compression(&l.media_type)?;
        let (source, verified): (Box<dyn std::io::Read>, _) = match stream {
            Some((reader, verified)) => (Box::new(reader), Some(verified)),
            None => (Box::new(self.content.open_blob(&l.digest)?), None),
        };
        let privileged = rustix::process::geteuid().is_root();
        self.snapshots.create(&l.chain_id, |dir| {
            let reader = unpack::decompress(compression, std::io::BufReader::with_capacity(1 << 20, source))?;
            let mut hashing = HashingReader::new(reader, l.diff_id.algorithm());
            let stats =
                unpack::unpack_layer(&mut hashing, dir, &UnpackOptions { layer: l.digest.to_string(), privileged })?;
            unpacked = stats.bytes;
            // The tar may end before the stream does (padding): hash it all.
            std::io::copy(&mut hashing, &mut std::io::sink()).ctx(|| format!("reading layer {}", l.digest))?;
            let (actual, _) = hashing.finish();
            if actual != l.diff_id {
                return Err(Error::DigestMismatch { expected: l.diff_id.to_string(), actual: actual.to_string() });
            }
            if let Some(v) = verified {
                v.blocking_recv().map_err(|_| Error::BadLayer {
                    layer: l.digest.to_string(),
                    reason: "download did not complete".into(),
                })?;
            }
            Ok(())
        })?;
        // Unpacked bytes, for the SIZE column of `images` (as Docker).
        let sizes = self.root.join("layer-sizes");
        std::fs::create_dir_all(&sizes).ctx(|| format!("creating {}", sizes.display()))?;
        std::fs::write(sizes.join(l.chain_id.hex()), unpacked.to_string()).ctx(|| "recording layer size".into())
    }

    /// Records an image whose manifest, config and layer blobs are already
    /// in the content store (what `load` and `import` produce): checks the
    /// manifest against the config, unpacks each layer not yet a snapshot
    /// (verifying its diff ID) and records the image under `tags` (full
    /// references). `repo_digests` are added to those already known.
    /// Nothing is recorded unless every layer is in place.
    pub fn commit_local(
        &self,
        manifest_bytes: &[u8],
        media_type: &str,
        repo_digests: &[String],
        tags: &[String],
    ) -> Result<ImageRecord> {
        let Parsed::Manifest(m) = manifest::parse(manifest_bytes, Some(media_type))? else {
            return Err(Error::InvalidManifest {
                what: "manifest",
                reason: "an index where a manifest was expected".into(),
            });
        };
        let manifest_digest = Digest::sha256_of(manifest_bytes);
        if !self.content.contains(&manifest_digest) {
            self.content.write_blob(&manifest_digest, manifest_bytes)?;
        }
        let config_digest: Digest = m.config().digest().to_string().parse()?;
        let config = self.content.read(&config_digest)?;
        let layers = plan_layers(&m, &config)?;
        for l in &layers {
            if !self.snapshots.exists(&l.chain_id) {
                if !self.content.contains(&l.digest) {
                    return Err(Error::BlobNotFound(l.digest.to_string()));
                }
                self.unpack_layer(l, None)?;
            }
        }
        let mut record = self.db.get(&config_digest)?.unwrap_or_else(|| ImageRecord {
            id: config_digest.clone(),
            manifest: manifest_digest.clone(),
            manifest_media_type: media_type.to_string(),
            index: None,
            repo_digests: Vec::new(),
            config_size: config.len() as u64,
            layers: layers.clone(),
            size: layers.iter().map(|l| l.size).sum(),
            added: now_rfc3339_nanos(),
        });
        for rd in repo_digests {
            if !record.repo_digests.contains(rd) {
                record.repo_digests.push(rd.clone());
            }
        }
        self.db.put(&record, tags)?;
        Ok(record)
    }

    /// Unpacked size of an image: the sum of its layers' unpacked sizes.
    pub fn unpacked_size(&self, image: &ImageRecord) -> u64 {
        image.layers.iter().map(|l| self.layer_size(&l.chain_id)).sum()
    }

    /// Unpacked size of one layer snapshot (0 if unknown).
    pub fn layer_size(&self, chain_id: &Digest) -> u64 {
        std::fs::read_to_string(self.root.join("layer-sizes").join(chain_id.hex()))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// Finds an image by full or short reference, or by (short) id.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord> {
        let images = self.db.list()?;
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&ImageRecord> =
                images.iter().map(|(r, _)| r).filter(|r| r.id.hex().starts_with(hex)).collect();
            match hits.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                _ => return Err(Error::ImageNotFound(format!("{name} (ambiguous short id)"))),
            }
        }
        let r = ImageRef::parse(name)?;
        let full = r.to_string();
        if let Some(id) = self.db.tag_target(&full)? {
            if let Some(rec) = self.db.get(&id)? {
                return Ok(rec);
            }
        }
        if let Some(d) = r.digest() {
            let repo = format!("{}/{}", r.registry(), r.repository());
            let want = format!("{repo}@{d}");
            if let Some((rec, _)) = images.iter().find(|(rec, _)| rec.repo_digests.contains(&want)) {
                return Ok(rec.clone());
            }
        }
        Err(Error::ImageNotFound(name.to_string()))
    }

    /// Removes unreferenced blobs and snapshots (mark and sweep): kept are
    /// every image's manifest, index, config and layer blobs and its layer
    /// snapshots.
    pub fn gc(&self) -> Result<GcReport> {
        let images = self.db.list()?;
        let mut keep_blobs = std::collections::HashSet::new();
        let mut keep_snaps = std::collections::HashSet::new();
        for (r, _) in &images {
            keep_blobs.insert(r.id.clone());
            keep_blobs.insert(r.manifest.clone());
            if let Some(i) = &r.index {
                keep_blobs.insert(i.clone());
            }
            for l in &r.layers {
                keep_blobs.insert(l.digest.clone());
                keep_snaps.insert(l.chain_id.clone());
            }
        }
        let mut report = GcReport::default();
        for d in self.content.list()? {
            if !keep_blobs.contains(&d) {
                report.bytes += self.content.size(&d).unwrap_or(0);
                self.content.delete(&d)?;
                report.blobs += 1;
            }
        }
        let sizes = self.root.join("layer-sizes");
        for c in self.snapshots.list()? {
            if !keep_snaps.contains(&c) {
                let size_file = sizes.join(c.hex());
                report.bytes +=
                    std::fs::read_to_string(&size_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                self.snapshots.remove(&c)?;
                let _ = std::fs::remove_file(size_file);
                report.snapshots += 1;
            }
        }
        self.content.clear_ingests()?;
        Ok(report)
    }
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Snapshots removed.
    pub snapshots: usize,
    /// Bytes freed (blob sizes plus unpacked snapshot sizes).
    pub bytes: u64,
}

/// The 12-hex short form Docker shows for layers and image ids.
pub fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}

/// Pairs the manifest's layers with the config's diff IDs and chain IDs.
fn plan_layers(m: &ImageManifest, config: &[u8]) -> Result<Vec<LayerRecord>> {
    let v: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| Error::InvalidManifest { what: "image config", reason: format!("not JSON: {e}") })?;
    let diff_ids: Vec<Digest> = v
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .ok_or_else(|| Error::InvalidManifest { what: "image config", reason: "no rootfs.diff_ids".into() })?
        .iter()
        .map(|d| d.as_str().unwrap_or_default().parse())
        .collect::<Result<_>>()?;
    if diff_ids.len() != m.layers().len() {
        return Err(Error::InvalidManifest {
            what: "image config",
            reason: format!("{} diff_ids for {} layers", diff_ids.len(), m.layers().len()),
        });
    }
    let mut out = Vec::new();
    let mut chain: Option<Digest> = None;
    for (desc, diff_id) in m.layers().iter().zip(diff_ids) {
        let c = Snapshots::chain_id(chain.as_ref(), &diff_id);
        out.push(layer_record(desc, diff_id, c.clone())?);
        chain = Some(c);
    }
    Ok(out)
}

fn layer_record(desc: &Descriptor, diff_id: Digest, chain_id: Digest) -> Result<LayerRecord> {
    let media_type = desc.media_type().to_string();
    manifest::layer_compression(&media_type)?;
    Ok(LayerRecord { digest: desc.digest().to_string().parse()?, media_type, size: desc.size(), diff_id, chain_id })
}

/// Fetches a small blob whole and verifies it.
async fn fetch_all(registry: &Registry, r: &ImageRef, d: &Digest) -> Result<Vec<u8>> {
    let mut stream = registry.fetch_blob(r, d, 0).await?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
        if data.len() > 64 << 20 {
            return Err(Error::InvalidManifest { what: "image config", reason: format!("{d} is larger than 64 MiB") });
        }
    }
    d.verify(&data)?;
    Ok(data)
}

/// A blocking reader over the chunks a download task sends: the unpacker
/// thread reads the layer as it arrives. Dropping it tells the sender the
/// layer was refused.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> ChannelReader {
        ChannelReader { rx, current: bytes::Bytes::new() }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                // Sender gone: end of the blob (or a failed download, which
                // the verified signal reports).
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
