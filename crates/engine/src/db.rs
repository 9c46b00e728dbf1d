//! Container records in an embedded database (redb,
//! `<root>/containers.redb`): atomic, durable commits, so a daemon killed
//! mid-operation finds either the old or the new record.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::error::{Error, Result};
use crate::record::ContainerRecord;

/// id → JSON [`ContainerRecord`].
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

/// name → id: keeps names unique and finds a container by name without
/// reading every record (a create, a rename and each name lookup would
/// otherwise parse all of them).
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");

/// The container database (cheap to clone: one shared handle).
#[derive(Debug, Clone)]
pub struct ContainerDb {
    db: std::sync::Arc<Database>,
    path: PathBuf,
    /// Lazy commits waiting for their durable commit ([`Self::flush_soon`]).
    lazy: std::sync::Arc<Lazy>,
}

/// Lazy commits and the background durable commit that covers them.
#[derive(Debug, Default)]
struct Lazy {
    state: Mutex<LazyState>,
    done: Condvar,
}

/// Counters of [`Lazy`]: a waiter for commit N is done once `durable >= N`.
#[derive(Debug, Default)]
struct LazyState {
    /// Lazy commits made so far.
    made: u64,
    /// How many of them are durable.
    durable: u64,
    /// A background flusher is at work.
    flushing: bool,
}

impl ContainerDb {
    /// Opens (creating) `<root>/containers.redb`.
    pub fn open(root: &Path) -> Result<ContainerDb> {
        let path = root.join("containers.redb");
        let db = Database::create(&path).map_err(|e| Error::Db(format!("{}: {e}", path.display())))?;
        let me = ContainerDb { db: std::sync::Arc::new(db), path, lazy: Default::default() };
        let tx = me.db.begin_write().map_err(|e| me.err(e))?;
        {
            let containers = tx.open_table(CONTAINERS).map_err(|e| me.err(e))?;
            let mut names = tx.open_table(NAMES).map_err(|e| me.err(e))?;
            // A database from before the names table: index it once.
            if names.is_empty().map_err(|e| me.err(e))? {
                for row in containers.iter().map_err(|e| me.err(e))? {
                    let (k, v) = row.map_err(|e| me.err(e))?;
                    let rec: ContainerRecord =
                        serde_json::from_slice(v.value()).map_err(|e| me.err(format!("record {}: {e}", k.value())))?;
                    names.insert(rec.name.as_str(), k.value()).map_err(|e| me.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| me.err(e))?;
        Ok(me)
    }

    /// The conflict error Docker gives for a name in use by `id`.
    pub fn name_conflict(name: &str, id: &str) -> Error {
        Error::Conflict(format!(
            "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
        ))
    }

    /// The id of the container called `name`, if any.
    pub fn id_by_name(&self, name: &str) -> Result<Option<String>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(NAMES).map_err(|e| self.err(e))?;
        Ok(t.get(name).map_err(|e| self.err(e))?.map(|v| v.value().to_string()))
    }

    /// Up to `limit` ids that start with `prefix`, in order.
    pub fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CONTAINERS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.range(prefix..).map_err(|e| self.err(e))? {
            let (k, _) = row.map_err(|e| self.err(e))?;
            if !k.value().starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Db(format!("{}: {e}", self.path.display()))
    }

    /// Inserts a new record; fails with a conflict if its name is taken.
    pub fn insert(&self, rec: &ContainerRecord) -> Result<()> {
        self.insert_with(rec, redb::Durability::Immediate)
    }

    /// [`Self::insert`], visible at once but durable a moment later, in
    /// the background: the caller must [`Self::wait_durable`] before
    /// anything that must not outlive a lost record (a container's start).
    /// For `--rm` containers, whose create is on `docker run`'s path: a
    /// crash before the durable commit loses a container that never ran,
    /// which a restarting daemon would remove anyway, as Docker does with
    /// AutoRemove containers that are not running.
    pub fn insert_lazily(&self, rec: &ContainerRecord) -> Result<()> {
        self.insert_with(rec, redb::Durability::None)?;
        self.flush_soon();
        Ok(())
    }

    /// Starts a background durable commit covering the lazy commits so
    /// far, unless one is running (it then makes another when done).
    fn flush_soon(&self) {
        let mut st = self.lazy.state.lock().unwrap_or_else(|e| e.into_inner());
        st.made += 1;
        if st.flushing {
            return;
        }
        st.flushing = true;
        drop(st);
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("db-flush".into()).spawn(move || loop {
            let target = me.lazy.state.lock().unwrap_or_else(|e| e.into_inner()).made;
            let ok = me.flush().is_ok();
            let mut st = me.lazy.state.lock().unwrap_or_else(|e| e.into_inner());
            if ok {
                st.durable = st.durable.max(target);
            }
            if !ok || st.durable >= st.made {
                // On failure, the waiters flush themselves and see the error.
                st.flushing = false;
                me.lazy.done.notify_all();
                return;
            }
        });
        if spawned.is_err() {
            self.lazy.state.lock().unwrap_or_else(|e| e.into_inner()).flushing = false;
        }
    }

    /// Waits until every lazy commit made before this call is durable.
    pub fn wait_durable(&self) -> Result<()> {
        let mut st = self.lazy.state.lock().unwrap_or_else(|e| e.into_inner());
        let target = st.made;
        while st.durable < target && st.flushing {
            st = self.lazy.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.durable >= target {
            return Ok(());
        }
        drop(st);
        // No flusher at work (it failed, or could not be started).
        self.flush()?;
        let mut st = self.lazy.state.lock().unwrap_or_else(|e| e.into_inner());
        st.durable = st.durable.max(target);
        Ok(())
    }

    fn insert_with(&self, rec: &ContainerRecord, durability: redb::Durability) -> Result<()> {
        let json = serde_json::to_vec(rec).map_err(|e| self.err(e))?;
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(durability).map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(CONTAINERS).map_err(|e| self.err(e))?;
            let mut names = tx.open_table(NAMES).map_err(|e| self.err(e))?;
            if let Some(other) = names.get(rec.name.as_str()).map_err(|e| self.err(e))? {
                return Err(Self::name_conflict(&rec.name, other.value()));
            }
            names.insert(rec.name.as_str(), rec.id.as_str()).map_err(|e| self.err(e))?;
            t.insert(rec.id.as_str(), json.as_slice()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Replaces an existing record (a new name must be free).
    pub fn update(&self, rec: &ContainerRecord) -> Result<()> {
        let json = serde_json::to_vec(rec).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(CONTAINERS).map_err(|e| self.err(e))?;
            let mut names = tx.open_table(NAMES).map_err(|e| self.err(e))?;
            let old_name = match t.get(rec.id.as_str()).map_err(|e| self.err(e))? {
                Some(v) => serde_json::from_slice::<ContainerRecord>(v.value()).map_err(|e| self.err(e))?.name,
                None => String::new(),
            };
            if old_name != rec.name {
                if let Some(other) = names.get(rec.name.as_str()).map_err(|e| self.err(e))? {
                    return Err(Self::name_conflict(&rec.name, other.value()));
                }
                names.remove(old_name.as_str()).map_err(|e| self.err(e))?;
                names.insert(rec.name.as_str(), rec.id.as_str()).map_err(|e| self.err(e))?;
            }
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
            let mut names = tx.open_table(NAMES).map_err(|e| self.err(e))?;
            let old = t.remove(id).map_err(|e| self.err(e))?.map(|v| v.value().to_vec());
            if let Some(old) = old {
                if let Ok(rec) = serde_json::from_slice::<ContainerRecord>(&old) {
                    let ours = names.get(rec.name.as_str()).map_err(|e| self.err(e))?.is_some_and(|v| v.value() == id);
                    if ours {
                        names.remove(rec.name.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            created: String::new(),
            image_name: "busybox".into(),
            image_id: "sha256:x".into(),
            config: Default::default(),
            host_config: Default::default(),
            log_path: String::new(),
            layers: Vec::new(),
            anon_volumes: Default::default(),
        }
    }

    #[test]
    fn names_stay_unique_through_insert_rename_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = ContainerDb::open(dir.path()).expect("open");
        db.insert(&rec("aa11", "web")).expect("insert");
        let e = db.insert(&rec("bb22", "web")).expect_err("name taken");
        assert!(e.to_string().contains("\"/web\" is already in use by container \"aa11\""), "{e}");
        db.insert(&rec("bb22", "db")).expect("insert");
        assert_eq!(db.id_by_name("web").expect("lookup").as_deref(), Some("aa11"));

        // Rename: the old name is free, the new one taken; a rename onto a
        // taken name is refused and changes nothing.
        db.update(&rec("aa11", "front")).expect("rename");
        assert_eq!(db.id_by_name("web").expect("lookup"), None);
        assert_eq!(db.id_by_name("front").expect("lookup").as_deref(), Some("aa11"));
        db.update(&rec("bb22", "front")).expect_err("taken");
        assert_eq!(db.get("bb22").expect("get").expect("there").name, "db");
        db.insert(&rec("cc33", "web")).expect("the old name is free");

        db.remove("aa11").expect("remove");
        assert_eq!(db.id_by_name("front").expect("lookup"), None);
        db.remove_lazily("cc33").expect("remove");
        assert_eq!(db.id_by_name("web").expect("lookup"), None);
        assert_eq!(db.list().expect("list").len(), 1);
    }

    /// In a child process (see the test below): lazy inserts, waits for
    /// them to be durable, and dies without closing the database.
    #[test]
    fn lazy_insert_child() {
        let Some(dir) = std::env::var_os("BERTH_DB_LAZY_CHILD") else { return };
        let db = ContainerDb::open(Path::new(&dir)).expect("open");
        for i in 0..20 {
            db.insert_lazily(&rec(&format!("id{i:02}"), &format!("n{i}"))).expect("insert");
        }
        db.wait_durable().expect("durable");
        // SAFETY: ends the process at once, like a crash: no destructor runs.
        unsafe { libc::_exit(0) };
    }

    #[test]
    fn lazy_inserts_are_durable_once_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("exe");
        let st = std::process::Command::new(exe)
            .args(["--exact", "db::tests::lazy_insert_child", "--nocapture"])
            .env("BERTH_DB_LAZY_CHILD", dir.path())
            .status()
            .expect("child");
        assert!(st.success(), "{st:?}");
        let db = ContainerDb::open(dir.path()).expect("open");
        assert_eq!(db.list().expect("list").len(), 20, "lazy inserts lost after wait_durable");
        assert_eq!(db.id_by_name("n19").expect("lookup").as_deref(), Some("id19"));
        // And with nothing pending, waiting returns at once.
        db.wait_durable().expect("durable");
    }

    #[test]
    fn prefixes_find_ids_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = ContainerDb::open(dir.path()).expect("open");
        for (id, name) in [("abc1", "a"), ("abc2", "b"), ("abd3", "c"), ("b000", "d")] {
            db.insert(&rec(id, name)).expect("insert");
        }
        assert_eq!(db.ids_with_prefix("ab", 10).expect("prefix"), ["abc1", "abc2", "abd3"]);
        assert_eq!(db.ids_with_prefix("abc", 1).expect("prefix"), ["abc1"]);
        assert_eq!(db.ids_with_prefix("abd", 2).expect("prefix"), ["abd3"]);
        assert!(db.ids_with_prefix("c", 2).expect("prefix").is_empty());
    }

    #[test]
    fn a_database_without_the_names_table_is_indexed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // As an older berth left it: records only.
            let db = Database::create(dir.path().join("containers.redb")).expect("create");
            let tx = db.begin_write().expect("tx");
            {
                let mut t = tx.open_table(CONTAINERS).expect("table");
                let json = serde_json::to_vec(&rec("aa11", "web")).expect("json");
                t.insert("aa11", json.as_slice()).expect("insert");
            }
            tx.commit().expect("commit");
        }
        let db = ContainerDb::open(dir.path()).expect("open");
        assert_eq!(db.id_by_name("web").expect("lookup").as_deref(), Some("aa11"));
        db.insert(&rec("bb22", "web")).expect_err("indexed name is taken");
    }
}
