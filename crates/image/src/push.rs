//! Push: upload a stored image to a registry.
//!
//! Blobs go first (config and layers, a few at a time), each skipped when
//! the registry already has it and mounted from another repository of the
//! same registry when this image was pulled from there; the manifest goes
//! last so the registry never names an image with missing blobs. The
//! manifest bytes pushed are the stored ones, so the digest users see
//! after a push is the one they pulled.

use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::images::ImageRecord;
use crate::registry::{ImageRef, Registry};
use crate::store::{short, ImageStore};

/// How many blobs upload at once (Docker's default is 5; 3 keeps a small
/// machine responsive and is what pull uses).
const CONCURRENT_UPLOADS: usize = 3;

/// Progress of a push, per blob (ids are 12-hex short digests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// The blob is queued.
    Preparing {
        /// Short blob id.
        id: String,
    },
    /// Bytes sent so far.
    Pushing {
        /// Short blob id.
        id: String,
        /// Bytes sent.
        current: u64,
        /// Blob size.
        total: u64,
    },
    /// Uploaded.
    Pushed {
        /// Short blob id.
        id: String,
    },
    /// The registry had it already.
    LayerExists {
        /// Short blob id.
        id: String,
    },
    /// A non-distributable layer, not uploaded.
    SkippedForeign {
        /// Short blob id.
        id: String,
    },
    /// Mounted from another repository of the same registry.
    Mounted {
        /// Short blob id.
        id: String,
        /// The repository it came from.
        from: String,
    },
}

/// Receives push progress (called from several tasks).
pub trait PushProgress: Send + Sync {
    /// One event.
    fn event(&self, e: PushEvent);
}

/// Discards push progress.
#[derive(Debug)]
pub struct NoPushProgress;

impl PushProgress for NoPushProgress {
    fn event(&self, _: PushEvent) {}
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// The digest of the manifest as the registry now holds it.
    pub digest: Digest,
    /// The manifest's size in bytes (Docker prints it).
    pub size: usize,
    /// The tag pushed, if any.
    pub tag: Option<String>,
}

impl ImageStore {
    /// Pushes the stored `image` as `target` (a tag or digest reference).
    /// Records `target`'s repository@digest in the image's repo digests.
    pub async fn push(
        &self,
        registry: Arc<Registry>,
        image: &ImageRecord,
        target: &ImageRef,
        progress: Arc<dyn PushProgress>,
    ) -> Result<PushOutcome> {
        let manifest = self.content().read(&image.manifest)?;
        // Blobs: layers base first (as Docker lists them), config last.
        // Non-distributable ("foreign") layers are never uploaded: their
        // licence keeps them off registries, and pullers fetch them from the
        // URLs in the manifest.
        let (foreign, layers): (Vec<_>, Vec<_>) = image.layers.iter().partition(|l| is_foreign(&l.media_type));
        for l in foreign {
            progress.event(PushEvent::SkippedForeign { id: short(&l.digest) });
        }
        let mut blobs: Vec<(Digest, u64)> = layers.iter().map(|l| (l.digest.clone(), l.size)).collect();
        blobs.push((image.id.clone(), image.config_size));
        for (d, _) in &blobs {
            if !self.content().contains(d) {
                return Err(Error::BlobNotFound(format!(
                    "{d} (the image's layers were unpacked but the blob is gone; pull the image again to push it)"
                )));
            }
        }
        // Repositories of the same registry this image came from: mount sources.
        let mount_from: Vec<String> = image
            .repo_digests
            .iter()
            .filter_map(|rd| rd.split_once('@').map(|(repo, _)| repo))
            .filter_map(|repo| repo.split_once('/'))
            .filter(|(host, repo)| *host == target.registry() && *repo != target.repository())
            .map(|(_, repo)| repo.to_string())
            .collect();

        let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_UPLOADS));
        let mut tasks = tokio::task::JoinSet::new();
        for (d, size) in blobs {
            if d != image.id {
                progress.event(PushEvent::Preparing { id: short(&d) });
            }
            let (store, reg, target, progress, sem, from) =
                (self.clone(), registry.clone(), target.clone(), progress.clone(), sem.clone(), mount_from.clone());
            let is_config = d == image.id;
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(|e| Error::Registry {
                    registry: target.registry().to_string(),
                    reason: format!("upload queue closed: {e}"),
                })?;
                let id = short(&d);
                let report = |e: PushEvent| {
                    if !is_config {
                        progress.event(e);
                    }
                };
                if reg.blob_exists(&target, &d).await? {
                    report(PushEvent::LayerExists { id });
                    return Ok::<(), Error>(());
                }
                for repo in &from {
                    if reg.mount_blob(&target, repo, &d).await? {
                        report(PushEvent::Mounted { id, from: repo.clone() });
                        return Ok(());
                    }
                }
                let path = store.content().path(&d);
                let sent = |current: u64| report(PushEvent::Pushing { id: id.clone(), current, total: size });
                sent(0);
                reg.push_blob_file(&target, &d, &path, size, &sent).await?;
                report(PushEvent::Pushed { id });
                Ok(())
            });
        }
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            let r = r
                .map_err(|e| Error::Registry {
                    registry: target.registry().into(),
                    reason: format!("upload task: {e}"),
                })
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
        let size = manifest.len();
        let digest = registry.push_manifest(target, manifest, &image.manifest_media_type).await?;
        // Docker records the pushed repo@digest on the image.
        if let Some(mut rec) = self.db().get(&image.id)? {
            let rd = format!("{}/{}@{digest}", target.registry(), target.repository());
            if !rec.repo_digests.contains(&rd) {
                rec.repo_digests.push(rd);
                self.db().put(&rec, &[])?;
            }
        }
        Ok(PushOutcome { digest, size, tag: target.tag().filter(|_| target.digest().is_none()).map(str::to_string) })
    }
}

/// Whether a layer media type is non-distributable (Docker's "foreign"
/// layers, OCI's deprecated `nondistributable` ones).
fn is_foreign(media_type: &str) -> bool {
    media_type.contains(".foreign.") || media_type.contains(".nondistributable.")
}

#[cfg(test)]
mod tests {
    #[test]
    fn foreign_layers_are_recognised() {
        assert!(super::is_foreign("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"));
        assert!(super::is_foreign("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"));
        assert!(!super::is_foreign("application/vnd.oci.image.layer.v1.tar+gzip"));
    }
}
