//! Container records in an embedded database (redb,
//! `<root>/containers.redb`): atomic, durable commits, so a daemon killed
//! mid-operation finds either the old or the new record.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::record::ContainerRecord;

/// id → JSON [`ContainerRecord`].
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

/// The container database (cheap to clone: one shared handle).
#[derive(Debug, Clone)]
pub struct ContainerDb {
    db: std::sync::Arc<Database>,
    path: PathBuf,
}

impl ContainerDb {
    /// Opens (creating) `<root>/containers.redb`.
    pub fn open(root: &Path) -> Result<ContainerDb> {
        let path = root.join("containers.redb");
        let db = Database::create(&path).map_err(|e| Error::Db(format!("{}: {e}", path.display())))?;
        let me = ContainerDb { db: std::sync::Arc::new(db), path };
        let tx = me.db.begin_write().map_err(|e| me.err(e))?;
        tx.open_table(CONTAINERS).map_err(|e| me.err(e))?;
        tx.commit().map_err(|e| me.err(e))?;
        Ok(me)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Db(format!("{}: {e}", self.path.display()))
    }

    /// Inserts a new record; fails with a conflict if its name is taken.
    pub fn insert(&self, rec: &ContainerRecord) -> Result<()> {
        let json = serde_json::to_vec(rec).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(CONTAINERS).map_err(|e| self.err(e))?;
            for row in t.iter().map_err(|e| self.err(e))? {
                let (_, v) = row.map_err(|e| self.err(e))?;
                let other: ContainerRecord = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
                if other.name == rec.name {
                    return Err(Error::Conflict(format!(
                        "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                        rec.name, other.id
                    )));
                }
            }
            t.insert(rec.id.as_str(), json.as_slice()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Replaces an existing record.
    pub fn update(&self, rec: &ContainerRecord) -> Result<()> {
        let json = serde_json::to_vec(rec).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(CONTAINERS).map_err(|e| self.err(e))?;
            t.insert(rec.id.as_str(), json.as_slice()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The record of `id` (a full id), if there is one.
    pub fn get(&self, id: &str) -> Result<Option<ContainerRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CONTAINERS).map_err(|e| self.err(e))?;
        let Some(v) = t.get(id).map_err(|e| self.err(e))? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(|e| self.err(format!("record {id}: {e}")))
    }

    /// Every record.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CONTAINERS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| self.err(format!("record {}: {e}", k.value())))?);
        }
        Ok(out)
    }

    /// Removes a record.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.remove_with(id, redb::Durability::Immediate)
    }

    /// Removes the record at once for every reader of this database, but
    /// without waiting for the disk: the removal becomes durable with the
    /// next durable commit (any other write, or [`Self::flush`]). A crash
    /// before that brings the record back, which is safe only where the
    /// caller can finish the removal again (an exited `--rm` container:
    /// the next daemon's recover() removes it).
    pub fn remove_lazily(&self, id: &str) -> Result<()> {
        self.remove_with(id, redb::Durability::None)
    }

    /// Makes every earlier commit durable (an empty durable commit).
    pub fn flush(&self) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn remove_with(&self, id: &str, durability: redb::Durability) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(durability).map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(CONTAINERS).map_err(|e| self.err(e))?;
            t.remove(id).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }
}
