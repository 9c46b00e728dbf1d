//! An image's history (`docker history`): its config's `history` entries,
//! newest first, each with the size of the layer it made.

use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::images::ImageRecord;
use crate::store::ImageStore;

/// One history entry, as the Engine API's `/images/{name}/history` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The image id for the newest entry; None (`<missing>`) for the others,
    /// as with any pulled image in Docker.
    pub id: Option<Digest>,
    /// When, RFC 3339, if recorded.
    pub created: Option<String>,
    /// The instruction that made it.
    pub created_by: String,
    /// Unpacked size of the layer it made (0 for empty layers).
    pub size: u64,
    /// Commit message.
    pub comment: String,
}

impl ImageStore {
    /// The image's history, newest first.
    pub fn history(&self, image: &ImageRecord) -> Result<Vec<HistoryEntry>> {
        let config: Value = serde_json::from_slice(&self.content().read(&image.id)?)
            .map_err(|e| Error::InvalidManifest { what: "image config", reason: format!("not JSON: {e}") })?;
        let recorded = config.get("history").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut layers = image.layers.iter();
        let mut out = Vec::new();
        for h in &recorded {
            let text = |k: &str| h.get(k).and_then(Value::as_str).map(str::to_string);
            let empty = h.get("empty_layer").and_then(Value::as_bool).unwrap_or(false);
            let size = if empty { 0 } else { layers.next().map_or(0, |l| self.layer_size(&l.chain_id)) };
            out.push(HistoryEntry {
                id: None,
                created: text("created"),
                created_by: text("created_by").unwrap_or_default(),
                size,
                comment: text("comment").unwrap_or_default(),
            });
        }
        // Layers the history does not account for (images built without it).
        for l in layers {
            out.push(HistoryEntry {
                id: None,
                created: None,
                created_by: String::new(),
                size: self.layer_size(&l.chain_id),
                comment: String::new(),
            });
        }
        out.reverse();
        if let Some(first) = out.first_mut() {
            first.id = Some(image.id.clone());
        }
        Ok(out)
    }
}
