//! The OCI lifecycle operations (create, start, state, kill, delete, exec,
//! pause, resume, ps, list) over the per-container state directory.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use crate::cgroups::Manager;
use crate::error::{Context, Error, Result};
use crate::launcher::{self, Launch, Launched, NsPlan, Stage2};
use crate::state::{self, ContainerState, OciState, StateDir, Status};
use crate::sync::Msg;
use crate::{foreground, hooks, process, seccomp, sys};

/// The runtime: a state root plus global options.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Where per-container state dirs live (`--root`).
    pub root: PathBuf,
    /// Interpret cgroupsPath as `slice:prefix:name` (`--systemd-cgroup`).
    pub systemd_cgroup: bool,
}

/// Options of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Bundle directory (holds config.json).
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master (terminal: true).
    pub console_socket: Option<PathBuf>,
    /// File to write the init pid to.
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (ramdisk roots).
    pub no_pivot: bool,
    /// Pass fds 3..3+n into the container.
    pub preserve_fds: u32,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The process to run (from `--process` or built from flags).
    pub process: Option<Process>,
    /// Command line (used when `process` is None).
    pub args: Vec<String>,
    /// Extra environment (KEY=VALUE).
    pub env: Vec<String>,
    /// Working directory override.
    pub cwd: Option<PathBuf>,
    /// `uid[:gid]` override.
    pub user: Option<(u32, Option<u32>)>,
    /// Additional gids.
    pub additional_gids: Vec<u32>,
    /// Extra capabilities to add.
    pub caps: Vec<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Unix socket that receives the pty master.
    pub console_socket: Option<PathBuf>,
    /// File to write the process pid to.
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs.
    pub detach: bool,
    /// Pass fds 3..3+n into the process.
    pub preserve_fds: u32,
    /// Allow exec into a paused container.
    pub ignore_paused: bool,
}

/// A created container whose setup channel is still open (for `run`).
struct Created {
    state: ContainerState,
    launched: Launched,
    pty_master: Option<OwnedFd>,
}

/// Loads and checks config.json from a bundle.
pub fn load_bundle(bundle: &Path) -> Result<(PathBuf, Spec, PathBuf)> {
    let bundle = std::fs::canonicalize(bundle).ctx(|| format!("bundle {}", bundle.display()))?;
    let path = bundle.join("config.json");
    if !path.exists() {
        return Err(Error::Config { path, msg: "no such file".into() });
    }
    let data = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
    let spec: Spec =
        serde_json::from_slice(&data).map_err(|e| Error::Config { path: path.clone(), msg: json_error(&e) })?;
    let bad = |msg: &str| Error::Config { path: path.clone(), msg: msg.to_string() };
    let process = spec.process().as_ref().ok_or_else(|| bad("process is required"))?;
    if process.args().as_deref().unwrap_or_default().is_empty() {
        return Err(bad("process.args must not be empty"));
    }
    if !process.cwd().is_absolute() {
        return Err(bad("process.cwd must be an absolute path"));
    }
    let root = spec.root().as_ref().ok_or_else(|| bad("root is required"))?;
    let rootfs = bundle.join(root.path());
    let rootfs = std::fs::canonicalize(&rootfs).map_err(|e| bad(&format!("root.path {}: {e}", rootfs.display())))?;
    if !rootfs.is_dir() {
        return Err(bad(&format!("root.path {} is not a directory", rootfs.display())));
    }
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if !m.destination().is_absolute() {
            return Err(bad(&format!("mount destination {} must be absolute", m.destination().display())));
        }
    }
    let hugepages =
        spec.linux().as_ref().and_then(|l| l.resources().as_ref()).and_then(|r| r.hugepage_limits().as_deref());
    for h in hugepages.unwrap_or_default() {
        if !valid_page_size(h.page_size()) {
            return Err(bad(&format!("hugepageLimits pageSize {:?} must look like 2MB or 1GB", h.page_size())));
        }
    }
    let ns = spec.linux().as_ref().and_then(|l| l.namespaces().as_deref()).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for n in ns {
        if !seen.insert(n.typ()) {
            return Err(bad(&format!("namespace {} listed twice", n.typ())));
        }
    }
    // A hostname or domainname needs a uts namespace of the container's own,
    // new or joined by path: never the host's.
    let has_uts = ns.iter().any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Uts);
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !has_uts {
        return Err(bad("hostname requires a uts namespace in linux.namespaces"));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !has_uts {
        return Err(bad("domainname requires a uts namespace in linux.namespaces"));
    }
    Ok((bundle, spec, rootfs))
}

/// serde_json's message for a bad config.json, without the (long) list of
/// every accepted variant: "unknown variant `CAP_TEST` at line 1 column 80".
fn json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.find(", expected one of") {
        Some(i) => format!("{} at line {} column {}", &msg[..i], e.line(), e.column()),
        None => msg,
    }
}

/// Page sizes as the spec's schema has them: digits then KB, MB, GB, ….
fn valid_page_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB" | "TB" | "PB")
}

/// The spec's resources with the device rules every container needs
/// appended (last match wins): mknod of any node, and rw on the default
/// devices, /dev/console and the pty devices. Without them a "deny all"
/// rule list would stop the runtime itself from creating /dev.
fn with_default_devices(r: &oci_spec::runtime::LinuxResources) -> oci_spec::runtime::LinuxResources {
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
    let mut r = r.clone();
    let Some(rules) = r.devices().clone() else { return r };
    if rules.is_empty() {
        return r;
    }
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(typ));
        d.set_major(major);
        d.set_minor(minor);
        d.set_access(Some(access.to_string()));
        d
    };
    let mut all = rules;
    all.push(rule(LinuxDeviceType::C, None, None, "m"));
    all.push(rule(LinuxDeviceType::B, None, None, "m"));
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)] {
        all.push(rule(LinuxDeviceType::C, Some(major), Some(minor), "rwm"));
    }
    all.push(rule(LinuxDeviceType::C, Some(136), None, "rwm"));
    r.set_devices(Some(all));
    r
}

/// Host uid/gid that container root maps to, for a new user namespace.
fn root_host_ids(spec: &Spec) -> Option<(u32, u32)> {
    let linux = spec.linux().as_ref()?;
    let userns = linux
        .namespaces()
        .as_deref()?
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User && n.path().is_none());
    if !userns {
        return None;
    }
    let find = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.as_deref()?.iter().find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
    };
    Some((find(linux.uid_mappings())?, find(linux.gid_mappings())?))
}

fn connect_console(path: &Path) -> Result<OwnedFd> {
    let s = UnixStream::connect(path).ctx(|| format!("connecting to console socket {}", path.display()))?;
    Ok(s.into())
}

fn oci_state(st: &ContainerState, status: Status) -> OciState {
    OciState {
        oci_version: st.oci_version.clone(),
        id: st.id.clone(),
        status,
        pid: Some(if status == Status::Stopped { 0 } else { st.pid }),
        bundle: st.bundle.clone(),
        annotations: st.annotations.clone(),
        rootfs: Some(st.rootfs.clone()),
        created: Some(st.created.clone()),
        owner: Some(
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(st.owner))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| st.owner.to_string()),
        ),
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let abs =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().ctx(|| "cwd".into())?.join(path) };
    state::write_atomic(&abs, pid.to_string().as_bytes(), 0o644)
}

impl Runtime {
    fn dir(&self, id: &str) -> Result<StateDir> {
        StateDir::new(&self.root, id)
    }

    /// Compiles a seccomp profile through the cache in the state root
    /// (`.seccomp-cache`: never a valid container id).
    fn compile_seccomp(&self, s: &oci_spec::runtime::LinuxSeccomp) -> seccomp::Result<seccomp::Filter> {
        seccomp::compile_cached(s, &self.root.join(".seccomp-cache"))
    }

    fn cgroup(&self, st: &ContainerState) -> Result<Manager> {
        Ok(Manager::new(&st.cgroup_path, st.systemd_cgroup)?)
    }

    /// Current status of a container from its recorded state.
    pub fn status_of(&self, st: &ContainerState) -> Status {
        if st.pid <= 0 {
            return Status::Creating;
        }
        if !state::init_alive(st) {
            return Status::Stopped;
        }
        if self.cgroup(st).and_then(|m| Ok(m.is_frozen()?)).unwrap_or(false) {
            return Status::Paused;
        }
        if self.dir(&st.id).map(|d| d.fifo().exists()).unwrap_or(false) {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// `create`: sets the container up and leaves its init waiting for `start`.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<i32> {
        let c = self.create_inner(id, opts, None)?;
        Ok(c.state.pid)
    }

    fn create_inner(
        &self,
        id: &str,
        opts: &CreateOptions,
        internal_console: Option<(OwnedFd, OwnedFd)>,
    ) -> Result<Created> {
        let sd = self.dir(id)?;
        let (bundle, spec, rootfs) = load_bundle(&opts.bundle)?;
        if sd.state_file().exists() || sd.dir.exists() {
            return Err(Error::Exists(id.to_string()));
        }
        let process = spec.process().as_ref().ok_or_else(|| Error::Other("process is required".into()))?;
        process::check_apparmor(process)?;
        let linux = spec.linux().as_ref();
        let filter = linux.and_then(|l| l.seccomp().as_ref()).map(|s| self.compile_seccomp(s)).transpose()?;
        let terminal = process.terminal().unwrap_or(false);
        let (console, master_end) = match (terminal, &opts.console_socket, internal_console) {
            (true, Some(p), _) => (Some(connect_console(p)?), None),
            (true, None, Some((ours, theirs))) => (Some(theirs), Some(ours)),
            (true, None, None) => {
                return Err(Error::Other("cannot allocate a terminal without --console-socket when detached".into()));
            }
            (false, _, _) => (None, None),
        };
        let ns = NsPlan::for_spec(&spec)?;
        if !ns.in_userns() {
            // Fail `create`, not the container after `start`, when the
            // process asks for a capability this runtime does not hold.
            process::CapSets::from_spec(process.capabilities().as_ref()).check_available()?;
        }
        let cgroup_path = linux
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| {
                if self.systemd_cgroup {
                    format!("system.slice:berth:{id}")
                } else {
                    format!("/berth/{id}")
                }
            });
        let cgroup = Manager::new(&cgroup_path, self.systemd_cgroup)?;

        let resources = linux.and_then(|l| l.resources().as_ref()).map(with_default_devices);
        sd.create(id)?;
        let mut st = ContainerState {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            pid: 0,
            pid_start_time: 0,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            created: state::now_rfc3339(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup_path: cgroup.path().to_string(),
            systemd_cgroup: self.systemd_cgroup,
            own_pid_ns: ns.new.contains(nix::sched::CloneFlags::CLONE_NEWPID),
            owner: nix::unistd::geteuid().as_raw(),
        };
        let mut launched_pid = 0;
        let result = (|| -> Result<Created> {
            let config = serde_json::to_vec(&spec).map_err(|e| Error::Other(format!("encoding config: {e}")))?;
            state::write_atomic(&sd.config_file(), &config, 0o600)?;
            nix::unistd::mkfifo(&sd.fifo(), nix::sys::stat::Mode::from_bits_truncate(0o600))
                .ctx(|| "creating exec fifo".into())?;
            // In a user namespace the init is the host uid mapped to
            // container root: it must own the fifo to open it.
            if let Some((uid, gid)) = root_host_ids(&spec) {
                nix::unistd::chown(
                    &sd.fifo(),
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                )
                .ctx(|| "chown exec fifo".into())?;
            }
            sd.save_creating(&st)?;
            let state_dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&sd.dir)
                .ctx(|| format!("opening {}", sd.dir.display()))?;
            let hooks = spec.hooks().as_ref();
            let prestart = hooks.and_then(|h| h.prestart().clone()).unwrap_or_default();
            let create_runtime = hooks.and_then(|h| h.create_runtime().clone()).unwrap_or_default();
            let parent_hooks = !prestart.is_empty() || !create_runtime.is_empty();
            let launched = launcher::launch(Launch {
                ns,
                uid_maps: linux.and_then(|l| l.uid_mappings().clone()).unwrap_or_default(),
                gid_maps: linux.and_then(|l| l.gid_mappings().clone()).unwrap_or_default(),
                process,
                seccomp: filter,
                console,
                preserve_fds: opts.preserve_fds,
                cgroup: &cgroup,
                resources: resources.as_ref(),
                stage2: Stage2::Init {
                    spec: &spec,
                    bundle: &bundle,
                    rootfs: &rootfs,
                    state_dir,
                    cgroup_dirs: cgroup.host_dirs(),
                    no_pivot: opts.no_pivot,
                    parent_hooks,
                },
            })?;
            launched_pid = launched.pid;
            st.pid = launched.pid;
            st.pid_start_time = state::pid_start_time(launched.pid).unwrap_or(0);
            loop {
                match launched.channel.recv().ctx(|| "reading from container init".into())? {
                    Some(Msg::RunHooks) => {
                        let s = oci_state(&st, Status::Creating);
                        hooks::run("prestart", &prestart, &s)?;
                        hooks::run("createRuntime", &create_runtime, &s)?;
                        launched.channel.send(&Msg::Go).ctx(|| "signalling container init".into())?;
                    }
                    Some(Msg::Ready) => break,
                    Some(Msg::Error(e)) => return Err(Error::Init(e)),
                    None => return Err(Error::Init("container init exited during setup".into())),
                    Some(other) => return Err(Error::Init(format!("unexpected message {other:?}"))),
                }
            }
            let pty_master = match master_end {
                Some(sock) => {
                    Some(sys::recv_fd(std::os::fd::AsFd::as_fd(&sock)).ctx(|| "receiving the pty master".into())?)
                }
                None => None,
            };
            sd.save(&st)?;
            if let Some(p) = &opts.pid_file {
                write_pid_file(p, st.pid)?;
            }
            Ok(Created { state: st.clone(), launched, pty_master })
        })();
        if result.is_err() {
            if launched_pid > 0 {
                let _ = nix::sys::signal::kill(Pid::from_raw(launched_pid), Signal::SIGKILL);
                let _ =
                    nix::sys::wait::waitpid(Pid::from_raw(launched_pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            }
            let _ = kill_all(&cgroup, Signal::SIGKILL);
            let _ = cgroup.destroy();
            let _ = sd.remove();
        }
        result
    }

    /// `start`: lets a created container's init exec the user process.
    pub fn start(&self, id: &str) -> Result<()> {
        let sd = self.dir(id)?;
        let st = sd.load(id)?;
        // Created = init alive and the exec fifo still there. Whether it is
        // also frozen (then it is "paused") is only asked if init does not
        // answer at once: reading the freezer costs a cgroup lookup on
        // every start.
        if st.pid <= 0 || !state::init_alive(&st) || !sd.fifo().exists() {
            return Err(Error::BadState {
                id: id.into(),
                status: self.status_of(&st).to_string(),
                action: "start (it must be created)",
            });
        }
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(sd.fifo())
            .ctx(|| "opening exec fifo".into())?;
        // Wait until init writes its byte, then until its end of the fifo
        // closes: it is close-on-exec, so EOF means the user process runs
        // (or init died trying). Returning earlier would let a signal sent
        // right after `start` reach init before the program could set up
        // its handlers. Notice if init died meanwhile.
        let mut got_byte = false;
        loop {
            let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&fifo), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(n) if n > 0 => {
                    let mut b = [0u8; 1];
                    match nix::unistd::read(&fifo, &mut b) {
                        Ok(1) => got_byte = true,
                        Ok(0) if got_byte => break,
                        Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
                        Err(e) => return Err(e).ctx(|| "reading exec fifo".into()),
                    }
                }
                Ok(0) if !got_byte && self.status_of(&st) == Status::Paused => {
                    return Err(Error::BadState {
                        id: id.into(),
                        status: Status::Paused.to_string(),
                        action: "start (it must be created)",
                    });
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).ctx(|| "polling exec fifo".into()),
            }
            if !state::init_alive(&st) {
                if got_byte {
                    break;
                }
                let _ = std::fs::remove_file(sd.fifo());
                return Err(Error::Other(format!("container {id}: init process exited before start")));
            }
        }
        std::fs::remove_file(sd.fifo()).ctx(|| "removing exec fifo".into())?;
        if let Ok(Some(hooks)) = sd.load_hooks() {
            if let Some(h) = hooks.poststart().as_deref() {
                hooks::run_warn("poststart", h, &oci_state(&st, Status::Running));
            }
        }
        Ok(())
    }

    /// `run`: create + start; in the foreground also wait, forward signals,
    /// proxy the terminal, and delete the container when it exits.
    pub fn run(&self, id: &str, opts: &CreateOptions, detach: bool) -> Result<i32> {
        if detach {
            self.create(id, opts)?;
            if let Err(e) = self.start(id) {
                let _ = self.delete(id, true);
                return Err(e);
            }
            return Ok(0);
        }
        nix::sys::prctl::set_child_subreaper(true).ctx(|| "prctl(PR_SET_CHILD_SUBREAPER)".into())?;
        let sigs = foreground::block_signals()?;
        let internal = if opts.console_socket.is_none() {
            let (a, b) = UnixStream::pair().ctx(|| "socketpair".into())?;
            Some((OwnedFd::from(a), OwnedFd::from(b)))
        } else {
            None
        };
        let created = self.create_inner(id, opts, internal)?;
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            return Err(e);
        }
        // The channel reaches EOF at exec; an error here means exec failed.
        let exec_err = match created.launched.channel.recv() {
            Ok(Some(Msg::Error(e))) => Some(e),
            _ => None,
        };
        let code = foreground::supervise(created.state.pid, sigs, created.pty_master);
        let _ = self.delete(id, true);
        if let Some(e) = exec_err {
            return Err(Error::Init(e));
        }
        code
    }

    /// `state`: the OCI state document.
    pub fn state(&self, id: &str) -> Result<OciState> {
        let st = self.dir(id)?.load(id)?;
        let status = self.status_of(&st);
        Ok(oci_state(&st, status))
    }

    /// `kill`: sends `sig` to the init (or with `all` to every process).
    pub fn kill(&self, id: &str, sig: Signal, all: bool) -> Result<()> {
        let st = self.dir(id)?.load(id)?;
        let status = self.status_of(&st);
        if status == Status::Stopped && !all {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                action: "kill (it is not running)",
            });
        }
        let cg = self.cgroup(&st)?;
        if all {
            kill_all(&cg, sig)?;
        } else {
            nix::sys::signal::kill(Pid::from_raw(st.pid), sig).ctx(|| format!("kill {} {sig}", st.pid))?;
        }
        // Frozen tasks cannot act on a signal until thawed.
        if status == Status::Paused && matches!(sig, Signal::SIGKILL | Signal::SIGTERM) {
            cg.thaw()?;
        }
        Ok(())
    }

    /// `delete`: removes a stopped container (or with `force` kills it first).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let sd = self.dir(id)?;
        let st = match sd.load(id) {
            Ok(st) => st,
            Err(Error::NotFound(_)) if force && sd.dir.exists() => {
                // Half-created leftovers: nothing to kill, just remove.
                return sd.remove();
            }
            Err(e) => return Err(e),
        };
        let _lock = sd.lock()?;
        let status = self.status_of(&st);
        let cg = self.cgroup(&st)?;
        match status {
            Status::Stopped => {}
            Status::Created | Status::Creating => self.kill_and_wait(&st, &cg)?,
            Status::Running | Status::Paused if force => self.kill_and_wait(&st, &cg)?,
            _ => {
                return Err(Error::BadState {
                    id: id.into(),
                    status: status.to_string(),
                    action: "delete (stop it or use --force)",
                });
            }
        }
        // Processes that outlived init (no pid namespace) go too.
        if !st.own_pid_ns {
            let _ = kill_all(&cg, Signal::SIGKILL);
        }
        let mut errors = Vec::new();
        if let Err(e) = destroy_cgroup(&cg) {
            errors.push(e.to_string());
        }
        if let Ok(Some(hooks)) = sd.load_hooks() {
            if let Some(h) = hooks.poststop().as_deref() {
                hooks::run_warn("poststop", h, &oci_state(&st, Status::Stopped));
            }
        }
        if let Err(e) = sd.remove() {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Other(format!("deleting {id}: {}", errors.join("; "))))
        }
    }

    fn kill_and_wait(&self, st: &ContainerState, cg: &Manager) -> Result<()> {
        let _ = nix::sys::signal::kill(Pid::from_raw(st.pid), Signal::SIGKILL);
        let _ = kill_all(cg, Signal::SIGKILL);
        let _ = cg.thaw();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state::init_alive(st) {
            // Reap it if it is our child (run mode); ignore otherwise.
            let _ = nix::sys::wait::waitpid(Pid::from_raw(st.pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            if Instant::now() > deadline {
                return Err(Error::Other(format!("container {}: init {} did not die after SIGKILL", st.id, st.pid)));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// `pause`: freezes every process of the container.
    pub fn pause(&self, id: &str) -> Result<()> {
        let st = self.dir(id)?.load(id)?;
        let status = self.status_of(&st);
        if status != Status::Running && status != Status::Created {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                action: "pause (it is not running)",
            });
        }
        Ok(self.cgroup(&st)?.freeze()?)
    }

    /// `resume`: thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let st = self.dir(id)?.load(id)?;
        let status = self.status_of(&st);
        if status != Status::Paused {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                action: "resume (it is not paused)",
            });
        }
        Ok(self.cgroup(&st)?.thaw()?)
    }

    /// `ps`: host pids of the container's processes.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let st = self.dir(id)?.load(id)?;
        let mut pids = self.cgroup(&st)?.pids()?;
        pids.sort_unstable();
        Ok(pids)
    }

    /// `list`: every container under the root, sorted by id.
    pub fn list(&self) -> Result<Vec<OciState>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).ctx(|| format!("reading {}", self.root.display())),
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(s) = self.state(&name) {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// `exec`: runs a new process inside a running container. Returns the
    /// process's exit code (0 when detached).
    pub fn exec(&self, id: &str, opts: &ExecOptions) -> Result<i32> {
        let sd = self.dir(id)?;
        let st = sd.load(id)?;
        let status = self.status_of(&st);
        let ok =
            status == Status::Running || (status == Status::Paused && opts.ignore_paused) || status == Status::Created;
        if !ok {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                action: "exec (it is not running)",
            });
        }
        let spec = sd.load_spec()?;
        let process = build_exec_process(&spec, opts)?;
        let linux = spec.linux().as_ref();
        let filter = linux.and_then(|l| l.seccomp().as_ref()).map(|s| self.compile_seccomp(s)).transpose()?;
        let terminal = process.terminal().unwrap_or(false);
        let mut internal_master = None;
        let console = match (terminal, &opts.console_socket) {
            (true, Some(p)) => Some(connect_console(p)?),
            (true, None) if !opts.detach => {
                let (a, b) = UnixStream::pair().ctx(|| "socketpair".into())?;
                internal_master = Some(OwnedFd::from(a));
                Some(OwnedFd::from(b))
            }
            (true, None) => {
                return Err(Error::Other("cannot allocate a terminal without --console-socket when detached".into()))
            }
            (false, _) => None,
        };
        let cgroup = self.cgroup(&st)?;
        let sigs = if opts.detach {
            None
        } else {
            nix::sys::prctl::set_child_subreaper(true).ctx(|| "prctl(PR_SET_CHILD_SUBREAPER)".into())?;
            Some(foreground::block_signals()?)
        };
        let launched = launcher::launch(Launch {
            ns: NsPlan::for_exec(st.pid)?,
            uid_maps: Vec::new(),
            gid_maps: Vec::new(),
            process: &process,
            seccomp: filter,
            console,
            preserve_fds: opts.preserve_fds,
            cgroup: &cgroup,
            resources: None,
            stage2: Stage2::Exec { process: &process },
        })?;
        // EOF on the channel means the exec succeeded.
        match launched.channel.recv() {
            Ok(Some(Msg::Error(e))) => {
                let _ = launcher::wait_exit_code(launched.pid);
                return Err(Error::Init(e));
            }
            Ok(None) => {}
            Ok(Some(m)) => return Err(Error::Init(format!("unexpected message {m:?}"))),
            Err(e) => return Err(e).ctx(|| "reading from exec setup".into()),
        }
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, launched.pid)?;
        }
        let pty_master = match internal_master {
            Some(sock) => {
                Some(sys::recv_fd(std::os::fd::AsFd::as_fd(&sock)).ctx(|| "receiving the pty master".into())?)
            }
            None => None,
        };
        match sigs {
            None => Ok(0),
            Some(sigs) => foreground::supervise(launched.pid, sigs, pty_master),
        }
    }
}

/// Builds the exec'd process: `--process` as given, or the container's
/// process with args/env/cwd/user/caps from the flags.
fn build_exec_process(spec: &Spec, opts: &ExecOptions) -> Result<Process> {
    if let Some(p) = &opts.process {
        if p.args().as_deref().unwrap_or_default().is_empty() {
            return Err(Error::Other("process.args must not be empty".into()));
        }
        return Ok(p.clone());
    }
    if opts.args.is_empty() {
        return Err(Error::Other("exec needs a command (or --process)".into()));
    }
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(opts.args.clone()));
    p.set_terminal(Some(opts.tty));
    p.set_console_size(None);
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &opts.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &opts.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some((uid, gid)) = opts.user {
        let mut u = p.user().clone();
        u.set_uid(uid);
        if let Some(g) = gid {
            u.set_gid(g);
        }
        p.set_user(u);
    }
    if !opts.additional_gids.is_empty() {
        let mut u = p.user().clone();
        u.set_additional_gids(Some(opts.additional_gids.clone()));
        p.set_user(u);
    }
    if opts.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !opts.caps.is_empty() {
        let mut c = p.capabilities().clone().unwrap_or_default();
        for name in &opts.caps {
            let cap: oci_spec::runtime::Capability = serde_json::from_value(serde_json::Value::String(name.clone()))
                .map_err(|_| Error::Other(format!("unknown capability {name:?}")))?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            c.set_bounding(add(c.bounding()));
            c.set_effective(add(c.effective()));
            c.set_permitted(add(c.permitted()));
        }
        p.set_capabilities(Some(c));
    }
    Ok(p)
}

/// Signals every process in the cgroup.
fn kill_all(cg: &Manager, sig: Signal) -> Result<()> {
    for pid in cg.pids()? {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
    Ok(())
}

/// Removes the cgroup once its processes are gone (they may take a moment
/// to exit after SIGKILL: the removal retries while the cgroup is busy).
fn destroy_cgroup(cg: &Manager) -> Result<()> {
    Ok(cg.destroy_within(Duration::from_secs(5))?)
}
