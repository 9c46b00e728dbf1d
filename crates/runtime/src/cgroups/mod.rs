//! Container cgroups, on cgroup v1 (including "hybrid" hosts) and v2,
//! driven directly through cgroupfs (berth never talks to systemd).
//!
//! [`Manager`] owns one container's cgroup: it creates it and moves
//! processes in ([`Manager::apply`]), writes resource limits from the OCI
//! config ([`Manager::set`]), lists, freezes and thaws the processes, and
//! removes the cgroup. Device rules become `devices.allow`/`devices.deny`
//! writes on v1 and an eBPF program (see [`devices_bpf`]) on v2.
//!
//! # Paths
//!
//! `cgroupsPath` is resolved once, in [`Manager::new`], to an absolute
//! cgroup path that [`Manager::path`] returns for the state file:
//!
//! * absolute paths (`/berth/abc`) are used as they are, below the root of
//!   every hierarchy;
//! * relative paths follow runc: they are placed under the calling
//!   process's cgroup. On v2 that is the *parent* of the caller's cgroup
//!   (the caller's own cgroup holds processes, so it may not enable
//!   controllers for children); on v1, where each hierarchy can place the
//!   caller differently but berth keeps a single path, it is the caller's
//!   cgroup in the memory hierarchy (or the first hierarchy listed in
//!   `/proc/self/cgroup` when memory is not mounted);
//! * with `systemd`, `slice:prefix:name` becomes the path systemd would use
//!   (`/system.slice/prefix-name.scope`); an absolute path is still taken
//!   as a cgroupfs path, so a saved [`Manager::path`] round-trips.
//!
//! [`Manager::with_root`] roots the manager in any directory (a fake
//! cgroupfs in tests); there, relative paths are relative to that root.
//!
//! # Unsupported settings
//!
//! A setting the host cannot honour (swap limits without swap accounting,
//! kernel memory limits on v2 or on kernels that ignore them, blkio
//! weights without a weight file, hugetlb or net_cls when the controller is
//! missing, …) fails with [`Error::Unsupported`] instead of being dropped.
//! Zero values of `memory.limit`, `memory.swap`, `memory.kernel*`,
//! `cpu.shares`, `cpu.quota`, `cpu.period` and `blockIO.weight` mean
//! "not set", as in runc.

pub mod devices_bpf;
pub mod mountinfo;
pub mod paths;
mod v1;
mod v2;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

/// The standard cgroupfs mountpoint.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `CGROUP2_SUPER_MAGIC` from statfs(2).
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// How long freezing may take before it is reported as failed.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// A cgroup operation failed; messages are lowercase and name the file or
/// setting and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a value into a cgroup file failed.
    #[error("cgroup: setting {file}={value} in {}: {}", dir.display(), describe(source))]
    Write {
        /// The cgroup file (`memory.max`).
        file: String,
        /// The value written.
        value: String,
        /// The cgroup directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading a cgroup file failed.
    #[error("cgroup: reading {file} in {}: {}", dir.display(), describe(source))]
    Read {
        /// The cgroup file.
        file: String,
        /// The cgroup directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating, opening or scanning a cgroup directory failed.
    #[error("cgroup: {op} {}: {}", path.display(), describe(source))]
    Io {
        /// What was being done ("creating", "opening", …).
        op: &'static str,
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Removing one or more cgroup directories failed.
    #[error("cgroup: {}", removal_failures(.0))]
    Remove(Vec<(PathBuf, io::Error)>),
    /// A requested setting this host cannot honour.
    #[error("cgroup: {0}")]
    Unsupported(String),
    /// A malformed path or resource value.
    #[error("cgroup: invalid {what}: {msg}")]
    Invalid {
        /// What is invalid.
        what: String,
        /// Why.
        msg: String,
    },
    /// The cgroup layout of the host could not be determined.
    #[error("cgroup: {0}")]
    Detect(String),
    /// Loading or attaching the v2 device filter failed.
    #[error("cgroup: device filter for {}: {msg}", dir.display())]
    DeviceFilter {
        /// The cgroup directory.
        dir: PathBuf,
        /// What failed.
        msg: String,
    },
    /// Freezing did not complete in time.
    #[error("cgroup: timed out waiting for {} to freeze", dir.display())]
    FreezeTimeout {
        /// The cgroup directory.
        dir: PathBuf,
    },
}

/// Shorthand result type of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// An OS error as lowercase text ("permission denied").
fn describe(e: &io::Error) -> String {
    let s = match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    };
    let mut c = s.chars();
    match c.next() {
        Some(first) if !s.starts_with("I/O") => first.to_lowercase().chain(c).collect(),
        _ => s,
    }
}

fn removal_failures(list: &[(PathBuf, io::Error)]) -> String {
    list.iter().map(|(p, e)| format!("removing {}: {}", p.display(), describe(e))).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// The errno behind an I/O-type error, if any.
    fn errno(&self) -> Option<i32> {
        match self {
            Error::Write { source, .. } | Error::Read { source, .. } | Error::Io { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// Which hierarchy layout the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One hierarchy per controller (also "hybrid" hosts, which add an
    /// empty cgroup2 hierarchy at `/sys/fs/cgroup/unified`).
    V1,
    /// The unified hierarchy.
    V2,
}

/// One mounted hierarchy and this cgroup's directory in it.
#[derive(Debug, Clone)]
struct Hierarchy {
    /// v1 controller names (`name=` hierarchies by their bare name, like
    /// "systemd"); empty for cgroup2.
    names: Vec<String>,
    /// Where the hierarchy is mounted.
    mount: PathBuf,
    /// This cgroup's directory.
    dir: PathBuf,
}

/// A container's cgroup, on the real host or rooted in a fake directory
/// for tests.
#[derive(Debug, Clone)]
pub struct Manager {
    mode: Mode,
    path: String,
    /// v1: every mounted hierarchy; v2: exactly one.
    hierarchies: Vec<Hierarchy>,
    /// v1 on a hybrid host: the cgroup2 hierarchy joined best-effort.
    unified: Option<Hierarchy>,
}

impl Manager {
    /// Detects the host's layout from `/proc/self/mountinfo` (falling back
    /// to statfs of `/sys/fs/cgroup`) and builds a manager for `path`, a
    /// `cgroupsPath` from config.json or a saved [`Manager::path`]. See the
    /// module docs for how relative and systemd paths are resolved.
    pub fn new(path: &str, systemd: bool) -> Result<Manager> {
        let (abs, rel) = classify(path, systemd)?;
        let Some(mountinfo) = mountinfo::read() else {
            let mode = match rustix::fs::statfs(CGROUP_ROOT) {
                Ok(s) if s.f_type as u64 == CGROUP2_SUPER_MAGIC => Mode::V2,
                Ok(_) => Mode::V1,
                Err(e) => {
                    return Err(Error::Detect(format!("cannot read /proc/self/mountinfo or statfs {CGROUP_ROOT}: {e}")))
                }
            };
            return Manager::with_root(mode, Path::new(CGROUP_ROOT), &abs.unwrap_or(rel));
        };
        let mounts = paths::parse_mountinfo(&mountinfo);
        let own = fs::read_to_string("/proc/self/cgroup").map(|t| paths::parse_proc_cgroup(&t)).unwrap_or_default();
        let v2_default = mounts.iter().find(|m| m.v2 && m.mountpoint == Path::new(CGROUP_ROOT));
        let mut v1: Vec<&paths::CgroupMount> = Vec::new();
        for m in mounts.iter().filter(|m| !m.v2 && !m.controllers.is_empty()) {
            if !v1.iter().any(|o| o.controllers.iter().any(|c| m.controllers.contains(c))) {
                v1.push(m);
            }
        }
        let first_v2 = mounts
            .iter()
            .find(|m| m.v2 && m.mountpoint == Path::new(CGROUP_ROOT).join("unified"))
            .or_else(|| mounts.iter().find(|m| m.v2));
        if let (Some(m), _) | (None, Some(m)) = (v2_default, first_v2.filter(|_| v1.is_empty())) {
            let path = match abs {
                Some(p) => p,
                None => {
                    let mine = own.iter().find(|(c, _)| c.is_empty()).map_or("/", |(_, p)| p.as_str());
                    let mine = paths::below_mount_root(mine, &m.root);
                    paths::normalize(&paths::join(paths::parent(&mine), &rel))?
                }
            };
            let dir = paths::dir_in(&m.mountpoint, &path);
            return Ok(Manager {
                mode: Mode::V2,
                path,
                hierarchies: vec![Hierarchy { names: Vec::new(), mount: m.mountpoint.clone(), dir }],
                unified: None,
            });
        }
        if v1.is_empty() {
            return Err(Error::Detect("no cgroup filesystem is mounted (see /proc/self/mountinfo)".into()));
        }
        let path = match abs {
            Some(p) => p,
            None => {
                let (ctls, mine) = own
                    .iter()
                    .find(|(c, _)| c.iter().any(|c| c == "memory"))
                    .or_else(|| own.iter().find(|(c, _)| !c.is_empty()))
                    .map_or((Vec::new(), "/"), |(c, p)| (c.clone(), p.as_str()));
                let root =
                    v1.iter().find(|m| ctls.iter().any(|c| m.controllers.contains(c))).map_or("/", |m| m.root.as_str());
                paths::normalize(&paths::join(&paths::below_mount_root(mine, root), &rel))?
            }
        };
        let hierarchies = v1
            .iter()
            .map(|m| Hierarchy {
                names: m.controllers.clone(),
                mount: m.mountpoint.clone(),
                dir: paths::dir_in(&m.mountpoint, &path),
            })
            .collect();
        let unified = first_v2.map(|m| Hierarchy {
            names: Vec::new(),
            mount: m.mountpoint.clone(),
            dir: paths::dir_in(&m.mountpoint, &path),
        });
        Ok(Manager { mode: Mode::V1, path, hierarchies, unified })
    }

    /// Like [`Manager::new`] with an explicit mode and `root` standing in
    /// for `/sys/fs/cgroup`. For v1, every subdirectory of `root` is a
    /// hierarchy named after its controllers (`memory`, `cpu,cpuacct`,
    /// `systemd`), except `unified`, which is the hybrid cgroup2 hierarchy.
    /// Relative paths are taken relative to the root; the systemd form is
    /// not recognised.
    pub fn with_root(mode: Mode, root: &Path, path: &str) -> Result<Manager> {
        let path = paths::normalize(path)?;
        match mode {
            Mode::V2 => Ok(Manager {
                mode,
                hierarchies: vec![Hierarchy {
                    names: Vec::new(),
                    mount: root.to_path_buf(),
                    dir: paths::dir_in(root, &path),
                }],
                path,
                unified: None,
            }),
            Mode::V1 => {
                let entries = fs::read_dir(root).map_err(|e| Error::Io {
                    op: "scanning",
                    path: root.to_path_buf(),
                    source: e,
                })?;
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect();
                names.sort();
                let mut hierarchies: Vec<(PathBuf, Hierarchy)> = Vec::new();
                let mut unified = None;
                for name in names {
                    let mount = root.join(&name);
                    if name == "unified" {
                        unified = Some(Hierarchy { names: Vec::new(), dir: paths::dir_in(&mount, &path), mount });
                        continue;
                    }
                    let real = fs::canonicalize(&mount).unwrap_or_else(|_| mount.clone());
                    let ctls: Vec<String> = name.split(',').map(str::to_string).collect();
                    if let Some((_, h)) = hierarchies.iter_mut().find(|(r, _)| *r == real) {
                        // A symlink such as cpu -> cpu,cpuacct.
                        for c in ctls {
                            if !h.names.contains(&c) {
                                h.names.push(c);
                            }
                        }
                        if name.contains(',') {
                            h.dir = paths::dir_in(&mount, &path);
                            h.mount = mount;
                        }
                        continue;
                    }
                    hierarchies.push((real, Hierarchy { names: ctls, dir: paths::dir_in(&mount, &path), mount }));
                }
                if hierarchies.is_empty() {
                    return Err(Error::Detect(format!("no cgroup v1 hierarchies under {}", root.display())));
                }
                Ok(Manager { mode, path, hierarchies: hierarchies.into_iter().map(|(_, h)| h).collect(), unified })
            }
        }
    }

    /// The host's layout.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The resolved absolute cgroup path, to persist in state
    /// (`Manager::new(saved, _)` rebuilds the same manager).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// This cgroup's directory in the hierarchy holding `controller`.
    fn controller(&self, controller: &str) -> Option<&Path> {
        self.hierarchies.iter().find(|h| h.names.iter().any(|n| n == controller)).map(|h| h.dir.as_path())
    }

    /// Like [`Manager::controller`], failing with a clear error when the
    /// controller is not mounted.
    fn need(&self, controller: &str, what: &str) -> Result<&Path> {
        self.controller(controller).ok_or_else(|| {
            Error::Unsupported(format!("{what} requested but the {controller} controller is not mounted"))
        })
    }

    /// The v2 cgroup directory.
    fn v2_dir(&self) -> &Path {
        self.hierarchies.first().map_or(Path::new(CGROUP_ROOT), |h| h.dir.as_path())
    }

    /// Creates the cgroup and moves `pid` into it: [`Manager::create`],
    /// then `cgroup.procs` in every hierarchy.
    pub fn apply(&self, pid: i32) -> Result<()> {
        self.create()?;
        let value = pid.to_string();
        for h in &self.hierarchies {
            write(&h.dir, "cgroup.procs", &value)?;
        }
        self.join_unified(pid);
        Ok(())
    }

    /// Creates the cgroup's directories, without moving anything into it.
    ///
    /// v1: the directory is created in every mounted hierarchy; in cpuset,
    /// empty `cpuset.cpus`/`cpuset.mems` are copied from the parent down the
    /// tree (tasks cannot join a cpuset without them); on a hybrid host the
    /// cgroup2 hierarchy gets one too, best-effort. v2: every ancestor
    /// enables the controllers it has for its children.
    pub fn create(&self) -> Result<()> {
        match self.mode {
            Mode::V1 => {
                for h in &self.hierarchies {
                    if h.names.iter().any(|n| n == "cpuset") {
                        v1::ensure_cpuset(&h.mount, &h.dir)?;
                    } else {
                        create_dir(&h.dir)?;
                    }
                }
                if let Some(u) = &self.unified {
                    let _ = create_dir(&u.dir);
                }
            }
            Mode::V2 => {
                let h = self.hierarchies.first().ok_or_else(|| Error::Detect("no cgroup2 hierarchy".into()))?;
                create_dir(&h.dir)?;
                v2::enable_controllers(&h.mount, &h.dir);
            }
        }
        Ok(())
    }

    /// The cgroup2 directory a new process can be cloned straight into
    /// (`CLONE_INTO_CGROUP`): the cgroup itself on v2, the hybrid unified
    /// hierarchy's directory on v1 (when it was created).
    pub fn clone_into_dir(&self) -> Option<&Path> {
        match self.mode {
            Mode::V2 => self.hierarchies.first().map(|h| h.dir.as_path()),
            Mode::V1 => self.unified.as_ref().map(|u| u.dir.as_path()).filter(|d| d.is_dir()),
        }
    }

    /// Moves the calling process into the cgroup's v1 hierarchies, by
    /// writing "0" to each `tasks` file. Only for a single-threaded caller
    /// (it moves the calling thread): the kernel then skips the global
    /// threadgroup lock that a `cgroup.procs` write takes, which costs an
    /// RCU grace period (~10 ms). No-op on v2.
    pub fn join_self_v1(&self) -> Result<()> {
        if self.mode == Mode::V1 {
            for h in &self.hierarchies {
                write(&h.dir, "tasks", "0")?;
            }
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup2 side ([`Manager::clone_into_dir`]) by
    /// `cgroup.procs`, for when the process could not be cloned into it:
    /// required on v2, best-effort on a hybrid host (as runc does).
    pub fn join_v2(&self, pid: i32) -> Result<()> {
        match self.mode {
            Mode::V2 => {
                let h = self.hierarchies.first().ok_or_else(|| Error::Detect("no cgroup2 hierarchy".into()))?;
                write(&h.dir, "cgroup.procs", &pid.to_string())
            }
            Mode::V1 => {
                self.join_unified(pid);
                Ok(())
            }
        }
    }

    fn join_unified(&self, pid: i32) {
        if let Some(u) = &self.unified {
            if create_dir(&u.dir).is_ok() {
                let _ = write(&u.dir, "cgroup.procs", &pid.to_string());
            }
        }
    }

    /// Writes the resource limits of `resources` (only the settings that
    /// are present).
    pub fn set(&self, resources: &LinuxResources) -> Result<()> {
        match self.mode {
            Mode::V1 => v1::set(self, resources),
            Mode::V2 => v2::set(self.v2_dir(), resources),
        }
    }

    /// Pids of all processes in the cgroup and its descendants (v1: read
    /// from the pids, freezer or memory hierarchy), sorted. A cgroup that
    /// does not exist has none.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = match self.mode {
            Mode::V2 => self.v2_dir(),
            Mode::V1 => match ["pids", "freezer", "memory"].iter().find_map(|c| self.controller(c)) {
                Some(d) => d,
                None => match self.hierarchies.first() {
                    Some(h) => &h.dir,
                    None => return Ok(Vec::new()),
                },
            },
        };
        let mut out = Vec::new();
        collect_pids(dir, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Freezes every process of the cgroup and waits until the kernel
    /// reports the cgroup frozen (v1 `freezer.state`, v2 `cgroup.events`).
    /// On timeout the cgroup is thawed again and an error returned.
    pub fn freeze(&self) -> Result<()> {
        match self.mode {
            Mode::V1 => {
                let dir = self.need("freezer", "freezing")?;
                let deadline = Instant::now() + FREEZE_TIMEOUT;
                let mut round = 0u32;
                loop {
                    // Writing FROZEN again nudges tasks that were busy
                    // (e.g. in vfork) during the previous attempt.
                    if round % 32 == 0 {
                        write(dir, "freezer.state", "FROZEN")?;
                    }
                    if read(dir, "freezer.state")? == "FROZEN" {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        let _ = write(dir, "freezer.state", "THAWED");
                        return Err(Error::FreezeTimeout { dir: dir.to_path_buf() });
                    }
                    round += 1;
                    std::thread::sleep(Duration::from_millis(u64::from(round.min(10))));
                }
            }
            Mode::V2 => {
                let dir = self.v2_dir();
                write(dir, "cgroup.freeze", "1")?;
                let deadline = Instant::now() + FREEZE_TIMEOUT;
                let mut round = 0u64;
                loop {
                    if v2::events_frozen(dir)? == Some(true) {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        let _ = write(dir, "cgroup.freeze", "0");
                        return Err(Error::FreezeTimeout { dir: dir.to_path_buf() });
                    }
                    round += 1;
                    std::thread::sleep(Duration::from_millis(round.min(10)));
                }
            }
        }
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<()> {
        match self.mode {
            Mode::V1 => write(self.need("freezer", "thawing")?, "freezer.state", "THAWED"),
            Mode::V2 => write(self.v2_dir(), "cgroup.freeze", "0"),
        }
    }

    /// Whether the cgroup is frozen. A missing cgroup or freezer is not
    /// frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        match self.mode {
            Mode::V1 => match self.controller("freezer") {
                None => Ok(false),
                Some(dir) => Ok(read_opt(dir, "freezer.state")?.is_some_and(|s| s == "FROZEN")),
            },
            Mode::V2 => {
                let dir = self.v2_dir();
                match v2::events_frozen(dir)? {
                    Some(f) => Ok(f),
                    None => Ok(read_opt(dir, "cgroup.freeze")?.is_some_and(|s| s == "1")),
                }
            }
        }
    }

    /// Host directories of this cgroup, per v1 controller name (a combined
    /// mount such as `cpu,cpuacct` is listed under each name and under the
    /// combined one; named hierarchies by their bare name, e.g. "systemd"),
    /// for bind-mounting into the container. v2: a single `("", dir)`.
    pub fn host_dirs(&self) -> Vec<(String, PathBuf)> {
        match self.mode {
            Mode::V2 => vec![(String::new(), self.v2_dir().to_path_buf())],
            Mode::V1 => {
                let mut out = Vec::new();
                for h in &self.hierarchies {
                    for n in &h.names {
                        out.push((n.clone(), h.dir.clone()));
                    }
                    if h.names.len() > 1 {
                        if let Some(base) = h.mount.file_name().and_then(|b| b.to_str()) {
                            if !h.names.iter().any(|n| n == base) {
                                out.push((base.to_string(), h.dir.clone()));
                            }
                        }
                    }
                }
                out
            }
        }
    }

    /// Removes the cgroup directories, child cgroups first, retrying for up
    /// to two seconds in all while the kernel reports them busy (processes
    /// still exiting). Missing directories are fine; every failure is
    /// reported, not just the first.
    ///
    /// A frozen cgroup is thawed first (best-effort): on v1, killed tasks
    /// stay frozen and keep the cgroup busy until thawed.
    pub fn destroy(&self) -> Result<()> {
        self.destroy_within(Duration::from_secs(2))
    }

    /// [`Self::destroy`] with another retry budget (`patience`, for the
    /// whole call, not per directory).
    pub fn destroy_within(&self, patience: Duration) -> Result<()> {
        if self.is_frozen().unwrap_or(false) {
            let _ = self.thaw();
        }
        let mut failures = Vec::new();
        let mut seen = HashSet::new();
        let deadline = Instant::now() + patience;
        for h in self.hierarchies.iter().chain(self.unified.iter()) {
            if seen.insert(h.dir.clone()) {
                remove_tree(&h.dir, deadline, &mut failures);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Remove(failures))
        }
    }
}

/// Splits `cgroupsPath` into an absolute cgroup path, or a relative one to
/// resolve against the caller's cgroup.
fn classify(path: &str, systemd: bool) -> Result<(Option<String>, String)> {
    if path.starts_with('/') {
        return Ok((Some(paths::normalize(path)?), String::new()));
    }
    if systemd {
        return Ok((Some(paths::systemd_to_cgroupfs(path)?), String::new()));
    }
    // Validate the relative part now; it is joined to a base later.
    let rel = paths::normalize(path)?;
    Ok((None, rel.trim_start_matches('/').to_string()))
}

// --- file helpers ----------------------------------------------------------

/// Writes `value` into `dir/file` with a single write(2), as cgroupfs
/// expects. The file is never created.
fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let r = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join(file))
        .and_then(|mut f| f.write_all(value.as_bytes()));
    r.map_err(|e| Error::Write { file: file.to_string(), value: value.to_string(), dir: dir.to_path_buf(), source: e })
}

/// Writes `dir/file`, or reports the setting `what` as unsupported when
/// the (existing) cgroup directory has no such file.
fn write_supported(dir: &Path, file: &str, value: &str, what: &str) -> Result<()> {
    if dir.is_dir() && !dir.join(file).exists() {
        return Err(Error::Unsupported(format!("{what} requested but this kernel has no {file} file")));
    }
    write(dir, file, value)
}

/// Reads `dir/file`, trailing whitespace removed.
fn read(dir: &Path, file: &str) -> Result<String> {
    fs::read_to_string(dir.join(file)).map(|s| s.trim_end().to_string()).map_err(|e| Error::Read {
        file: file.to_string(),
        dir: dir.to_path_buf(),
        source: e,
    })
}

/// Like [`read`], but a missing file (or directory) gives `None`.
fn read_opt(dir: &Path, file: &str) -> Result<Option<String>> {
    match read(dir, file) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn has(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::Io { op: "creating", path: dir.to_path_buf(), source: e })
}

/// Appends the pids in `dir/cgroup.procs` and in every child cgroup.
fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let Some(procs) = read_opt(dir, "cgroup.procs")? else { return Ok(()) };
    out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Io { op: "scanning", path: dir.to_path_buf(), source: e }),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), out)?;
        }
    }
    Ok(())
}

/// Removes `dir` after its subdirectories (child cgroups). The rmdir is
/// tried first: a container's cgroup rarely has children, and listing a
/// cgroupfs directory (dozens of control files in each of a dozen v1
/// hierarchies) costs more than the removal itself. A cgroup that still
/// has tasks (exiting after SIGKILL) answers EBUSY: retried until
/// `deadline`.
fn remove_tree(dir: &Path, deadline: Instant, failures: &mut Vec<(PathBuf, io::Error)>) {
    let mut delay = Duration::from_millis(1);
    loop {
        let e = match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => e,
        };
        let busy = matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY));
        if busy && remove_children(dir, deadline, failures) {
            continue;
        }
        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline {
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
            continue;
        }
        failures.push((dir.to_path_buf(), e));
        return;
    }
}

/// Removes the subdirectories of `dir`; true if there were any (and all
/// of them went).
fn remove_children(dir: &Path, deadline: Instant, failures: &mut Vec<(PathBuf, io::Error)>) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    let before = failures.len();
    let mut any = false;
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            any = true;
            remove_tree(&e.path(), deadline, failures);
        }
    }
    any && failures.len() == before
}

// --- pure conversions ------------------------------------------------------

/// Converts v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000);
/// 0 (unset) stays 0.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// Converts v2 `cpu.weight` back to v1 `cpu.shares`; 0 stays 0.
pub fn weight_to_shares(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = weight.clamp(1, 10_000);
    2 + ((w - 1) * 262_142) / 9999
}

/// Converts a v1 blkio weight (10..=1000) to a v2 `io.weight`
/// (1..=10000); 0 (unset) stays 0.
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = weight.clamp(10, 1000);
    1 + ((w - 10) * 9999) / 990
}

/// The v2 `memory.swap.max` value for OCI `memory.swap` (memory+swap, as
/// on v1) and `memory.limit`; `None` when nothing is to be written.
///
/// `-1` is unlimited; an unlimited memory limit with no swap setting also
/// makes swap unlimited (what v1 does); a swap limit needs a memory limit
/// no larger than it.
pub fn swap_to_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<String>> {
    let swap = swap.filter(|&s| s != 0);
    let limit = limit.filter(|&l| l != 0);
    let bad = |msg: &str| Error::Invalid { what: "memory.swap".into(), msg: msg.to_string() };
    match (swap, limit) {
        (None, Some(-1)) => Ok(Some("max".into())),
        (None, _) => Ok(None),
        (Some(-1), _) => Ok(Some("max".into())),
        (Some(s), _) if s < 0 => Err(bad(&format!("{s} is negative"))),
        (Some(_), None | Some(-1)) => Err(bad("a swap limit needs a memory limit")),
        (Some(_), Some(l)) if l < 0 => Err(bad(&format!("memory limit {l} is negative"))),
        (Some(s), Some(l)) if s < l => Err(bad(&format!("memory+swap {s} is below the memory limit {l}"))),
        (Some(s), Some(l)) => Ok(Some((s - l).to_string())),
    }
}

/// The v2 `cpu.max` line for OCI quota/period, or `None` when neither is
/// set (0 counts as unset). A negative quota is "max". With only a period,
/// the quota of `current` (the existing `cpu.max`) is kept.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>, current: Option<&str>) -> Option<String> {
    let quota = quota.filter(|&q| q != 0);
    let period = period.filter(|&p| p != 0);
    let q = |q: i64| if q < 0 { "max".to_string() } else { q.to_string() };
    match (quota, period) {
        (None, None) => None,
        (Some(x), None) => Some(q(x)),
        (Some(x), Some(p)) => Some(format!("{} {p}", q(x))),
        (None, Some(p)) => {
            let cur = current.and_then(|c| c.split_whitespace().next()).unwrap_or("max");
            Some(format!("{cur} {p}"))
        }
    }
}
