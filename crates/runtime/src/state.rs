//! On-disk state of one container under the runtime's `--root`:
//! `<root>/<id>/state.json` (what `state` reports plus what later commands
//! need), `config.json` (the spec as it was at create time) and `exec.fifo`
//! (present while the container is created but not yet started).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// The OCI lifecycle status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The runtime is still setting the container up.
    Creating,
    /// Set up and waiting for `start`.
    Created,
    /// The user process runs.
    Running,
    /// All processes are frozen.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl Status {
    /// The lowercase name used in `state` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime records about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// OCI runtime-spec version of the config.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Host pid of the container's init (0 while creating).
    pub pid: i32,
    /// Start time of that pid (field 22 of /proc/pid/stat), to detect reuse.
    #[serde(default)]
    pub pid_start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Annotations from config.json.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// cgroup path the container lives in (as understood by `cgroups::Manager::new`).
    #[serde(default)]
    pub cgroup_path: String,
    /// Whether the cgroup path used the systemd `slice:prefix:name` form.
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// Whether the container has a pid namespace of its own (then killing
    /// init kills everything).
    #[serde(default)]
    pub own_pid_ns: bool,
    /// Uid of the user that created the container.
    #[serde(default)]
    pub owner: u32,
}

/// The OCI `state` document (runtime-spec "State").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// OCI version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Lifecycle status.
    pub status: Status,
    /// Init pid (omitted once stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Bundle path.
    pub bundle: PathBuf,
    /// Annotations.
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
    /// Rootfs path (runc extension, used by podman).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
    /// Creation time (runc extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Owner name (runc extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Checks that a container id is safe to use as a directory name.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// The per-container state directory and the files in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    /// `<root>/<id>`.
    pub dir: PathBuf,
}

impl StateDir {
    /// The state dir of `id` under `root` (id must be validated).
    pub fn new(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        Ok(StateDir { dir: root.join(id) })
    }

    /// Creates the directory, failing if the container already exists.
    pub fn create(&self, id: &str) -> Result<()> {
        if let Some(parent) = self.dir.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .ctx(|| format!("creating state root {}", parent.display()))?;
        }
        match fs::DirBuilder::new().mode(0o711).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists(id.to_string())),
            Err(e) => Err(e).ctx(|| format!("creating state dir {}", self.dir.display())),
        }
    }

    /// Path of state.json.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// Path of the saved config.json.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// Path of the exec fifo that `start` opens.
    pub fn fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }

    /// Path of creating.json: the record of a container whose init is
    /// still being set up (no pid yet).
    pub fn creating_file(&self) -> PathBuf {
        self.dir.join("creating.json")
    }

    /// Loads the container's record: state.json, or creating.json while
    /// `create` has not finished. Neither means the container does not
    /// exist.
    pub fn load(&self, id: &str) -> Result<ContainerState> {
        // `create` writes state.json before it removes creating.json: a
        // reader that misses both raced with that switch, and finds
        // state.json on a second look.
        let data = match read_opt(&self.state_file())? {
            Some(d) => d,
            None => match read_opt(&self.creating_file())? {
                Some(d) => d,
                None => read_opt(&self.state_file())?.ok_or_else(|| Error::NotFound(id.to_string()))?,
            },
        };
        serde_json::from_slice(&data)
            .map_err(|e| Error::Other(format!("corrupt state file in {}: {e}", self.dir.display())))
    }

    /// Records a container that is being created (creating.json).
    pub fn save_creating(&self, state: &ContainerState) -> Result<()> {
        let data = serde_json::to_vec(state).map_err(|e| Error::Other(format!("encoding state: {e}")))?;
        write_atomic(&self.creating_file(), &data, 0o600)
    }

    /// Writes state.json crash-safely (temp file and rename), and drops
    /// creating.json. The create path writes each file once instead of
    /// renaming over a first version: on ext4 a rename that replaces a
    /// file starts writeback of the new one (`auto_da_alloc`), which a
    /// later unlink must wait for, ~0.5 ms per container on a disk-backed
    /// `--root`.
    pub fn save(&self, state: &ContainerState) -> Result<()> {
        let data = serde_json::to_vec(state).map_err(|e| Error::Other(format!("encoding state: {e}")))?;
        write_atomic(&self.state_file(), &data, 0o600)?;
        match fs::remove_file(self.creating_file()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing {}", self.creating_file().display())),
        }
    }

    /// Loads the spec saved at create time.
    pub fn load_spec(&self) -> Result<oci_spec::runtime::Spec> {
        let path = self.config_file();
        oci_spec::runtime::Spec::load(&path).map_err(|e| Error::Config { path, msg: e.to_string() })
    }

    /// Only the hooks of the stored config: `start` and `delete` need
    /// nothing else, and skipping the rest (a seccomp profile is most of
    /// a Docker-style config) is several times cheaper than
    /// [`Self::load_spec`] on the start path.
    pub fn load_hooks(&self) -> Result<Option<oci_spec::runtime::Hooks>> {
        #[derive(serde::Deserialize)]
        struct HooksOnly {
            #[serde(default)]
            hooks: Option<oci_spec::runtime::Hooks>,
        }
        let path = self.config_file();
        let data = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        let h: HooksOnly = serde_json::from_slice(&data).map_err(|e| Error::Config { path, msg: e.to_string() })?;
        Ok(h.hooks)
    }

    /// Removes the state directory and everything in it.
    pub fn remove(&self) -> Result<()> {
        // The files the runtime writes, then the directory: cheaper than a
        // listing. Anything else in it (a temp file left by a crash) sends
        // us to the full recursive removal.
        for f in [self.state_file(), self.creating_file(), self.config_file(), self.fifo()] {
            let _ = fs::remove_file(f);
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => {}
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing {}", self.dir.display())),
        }
    }

    /// Takes an exclusive lock on the container dir for the duration of a
    /// mutating command (two concurrent `delete`s must not race).
    pub fn lock(&self) -> Result<Lock> {
        let f = File::open(&self.dir).ctx(|| format!("opening {}", self.dir.display()))?;
        let f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .ctx(|| format!("locking {}", self.dir.display()))?;
        Ok(Lock { _f: f })
    }
}

/// An exclusive lock on a container's state dir, released on drop.
#[derive(Debug)]
pub struct Lock {
    _f: nix::fcntl::Flock<File>,
}

/// Writes `data` to `path` through a temp file and rename, so a crashed
/// runtime leaves either the old or the new content, never a torn file.
/// No fsync: runtime state lives under `--root` on a tmpfs (/run) and does
/// not outlive a reboot; the rename alone gives the atomicity we need, and
/// the fsyncs cost ~2 ms per container start on disk-backed roots.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    f.write_all(data).ctx(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).ctx(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The content of `path`, or None if it does not exist.
fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
    }
}

/// Start time of `pid` in clock ticks since boot, or None if it is gone.
pub fn pid_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parens: parse after
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Process state letter of `pid` (R, S, Z, …), or None if it is gone.
pub fn pid_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// True when the recorded init process still exists (and is not a zombie).
pub fn init_alive(state: &ContainerState) -> bool {
    if state.pid <= 0 {
        return false;
    }
    match (pid_start_time(state.pid), pid_state(state.pid)) {
        (Some(t), Some(s)) => s != 'Z' && s != 'X' && (state.pid_start_time == 0 || t == state.pid_start_time),
        _ => false,
    }
}

/// Current time as RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

/// Formats a unix time as RFC 3339 UTC (hand-written: a date crate for one
/// format call is not worth the dependency).
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", tod / 3600, (tod % 3600) / 60, tod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b", "a\0b"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rfc3339_formats_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn own_process_is_alive() {
        let pid = std::process::id() as i32;
        let st = ContainerState {
            oci_version: "1.0.2".into(),
            id: "x".into(),
            pid,
            pid_start_time: pid_start_time(pid).unwrap_or(0),
            bundle: "/".into(),
            rootfs: "/".into(),
            created: now_rfc3339(),
            annotations: HashMap::new(),
            cgroup_path: String::new(),
            systemd_cgroup: false,
            own_pid_ns: false,
            owner: 0,
        };
        assert!(init_alive(&st));
        let reused = ContainerState { pid_start_time: st.pid_start_time + 1, ..st };
        assert!(!init_alive(&reused));
    }

    #[test]
    fn the_record_moves_from_creating_to_state_and_goes_with_the_dir() {
        let root = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(root.path(), "c1").expect("state dir");
        assert!(matches!(sd.load("c1"), Err(Error::NotFound(_))));
        sd.create("c1").expect("create");
        let mut st = ContainerState {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            pid: 0,
            pid_start_time: 0,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            annotations: HashMap::new(),
            cgroup_path: "/berth/c1".into(),
            systemd_cgroup: false,
            own_pid_ns: true,
            owner: 0,
        };
        sd.save_creating(&st).expect("save creating");
        assert_eq!(sd.load("c1").expect("load while creating").pid, 0);
        st.pid = 42;
        sd.save(&st).expect("save");
        assert!(!sd.creating_file().exists(), "creating.json goes once state.json is in");
        assert_eq!(sd.load("c1").expect("load").pid, 42);
        sd.remove().expect("remove");
        assert!(!sd.dir.exists());

        // Something unexpected in the dir: the full recursive removal.
        sd.create("c1").expect("create again");
        sd.save(&st).expect("save");
        fs::create_dir(sd.dir.join("leftover")).expect("mkdir");
        fs::write(sd.dir.join("leftover/f"), "x").expect("write");
        sd.remove().expect("remove with leftovers");
        assert!(!sd.dir.exists());
    }
}
