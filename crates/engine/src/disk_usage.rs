//! `docker system df`: the space images, containers and volumes take, with
//! what is shared and what is in use, computed once for the API and the CLI.

use std::collections::HashMap;
use std::path::Path;

use berth_image::images::ImageRecord;

use crate::engine::{Container, Engine};
use crate::error::Result;
use crate::volumes::Volume;

/// One image's usage.
#[derive(Debug)]
pub struct ImageUsage {
    /// The image.
    pub record: ImageRecord,
    /// Its names.
    pub tags: Vec<String>,
    /// Bytes of all its layers.
    pub size: u64,
    /// Bytes of its layers that other images use too.
    pub shared_size: u64,
    /// Containers made from it.
    pub containers: usize,
}

/// Everything `system df` reports.
#[derive(Debug)]
pub struct DiskUsage {
    /// Bytes of all layer snapshots, each counted once.
    pub layers_size: u64,
    /// Per image.
    pub images: Vec<ImageUsage>,
    /// Per container, with the bytes of its writable layer.
    pub containers: Vec<(Container, u64)>,
    /// Per volume, with its bytes and the number of containers using it.
    pub volumes: Vec<(Volume, u64, usize)>,
}

/// Bytes of regular files under `dir` (links not followed).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

impl Engine {
    /// Computes the disk usage of everything under this engine's root.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let store = self.images();
        let list = store.db().list()?;
        let mut users: HashMap<String, usize> = HashMap::new();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        for (rec, _) in &list {
            for l in &rec.layers {
                *users.entry(l.chain_id.to_string()).or_default() += 1;
                sizes.entry(l.chain_id.to_string()).or_insert_with(|| store.layer_size(&l.chain_id));
            }
        }
        let containers = self.list()?;
        let images = list
            .into_iter()
            .map(|(record, tags)| {
                let (mut size, mut shared) = (0, 0);
                for l in &record.layers {
                    let key = l.chain_id.to_string();
                    let s = sizes.get(&key).copied().unwrap_or(0);
                    size += s;
                    if users.get(&key).copied().unwrap_or(0) > 1 {
                        shared += s;
                    }
                }
                let id = record.id.to_string();
                let n = containers.iter().filter(|c| c.record.image_id == id).count();
                ImageUsage { record, tags, size, shared_size: shared, containers: n }
            })
            .collect();
        let volumes = self
            .volume_list()?
            .into_iter()
            .map(|v| {
                let size = dir_size(Path::new(&v.mountpoint));
                let refs = self.volume_users(&v.name).map(|u| u.len()).unwrap_or(0);
                (v, size, refs)
            })
            .collect();
        let containers = containers
            .into_iter()
            .map(|c| {
                let s = dir_size(&self.container_paths(&c.record.id).upper());
                (c, s)
            })
            .collect();
        Ok(DiskUsage { layers_size: sizes.values().sum(), images, containers, volumes })
    }
}
