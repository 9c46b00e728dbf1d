//! Forks the processes that become a container (or join one for `exec`).
//!
//! ```text
//! runtime (parent) ──fork──▶ stage 1 ── setns/unshare ──fork──▶ stage 2
//!   writes id maps,            (exits once it reported          = container init
//!   joins cgroups,              stage 2's pid)                  or exec'd process
//!   runs hooks
//! ```
//!
//! Stage 1 exists because a new (or joined) pid namespace only applies to
//! children of the process that unshared it. The parent and both stages
//! talk over a [`Channel`]; every failure in a child is sent back as text
//! so the runtime reports it as its own error.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Process, Spec};

use crate::cgroups;
use crate::error::{Context, Error, Result};
use crate::process::{self, CapSets, ExecArgs};
use crate::rootfs::{self, RootfsContext};
use crate::seccomp;
use crate::sync::{Channel, Msg};
use crate::{console, hooks, sys};

/// `CLONE_NEWTIME` (not in nix's CloneFlags).
const CLONE_NEWTIME: i32 = 0x80;

/// Maps a spec namespace type to its clone flag and /proc/pid/ns name.
pub fn ns_flag(t: LinuxNamespaceType) -> (CloneFlags, &'static str) {
    match t {
        LinuxNamespaceType::Mount => (CloneFlags::CLONE_NEWNS, "mnt"),
        LinuxNamespaceType::Cgroup => (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
        LinuxNamespaceType::Uts => (CloneFlags::CLONE_NEWUTS, "uts"),
        LinuxNamespaceType::Ipc => (CloneFlags::CLONE_NEWIPC, "ipc"),
        LinuxNamespaceType::User => (CloneFlags::CLONE_NEWUSER, "user"),
        LinuxNamespaceType::Pid => (CloneFlags::CLONE_NEWPID, "pid"),
        LinuxNamespaceType::Network => (CloneFlags::CLONE_NEWNET, "net"),
        LinuxNamespaceType::Time => (CloneFlags::from_bits_retain(CLONE_NEWTIME), "time"),
    }
}

/// Which namespaces stage 1 creates and which it joins.
#[derive(Debug)]
pub struct NsPlan {
    /// Namespaces to create.
    pub new: CloneFlags,
    /// Namespaces to join (opened before fork so errors surface early),
    /// user namespace first.
    pub join: Vec<(CloneFlags, OwnedFd, PathBuf)>,
}

impl NsPlan {
    /// The plan for a new container from its spec.
    pub fn for_spec(spec: &Spec) -> Result<NsPlan> {
        let mut plan = NsPlan { new: CloneFlags::empty(), join: Vec::new() };
        let nss = spec.linux().as_ref().and_then(|l| l.namespaces().as_deref()).unwrap_or_default();
        for ns in nss {
            let (flag, _) = ns_flag(ns.typ());
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => {
                    let fd = File::open(p).ctx(|| format!("opening {} namespace {}", ns.typ(), p.display()))?;
                    plan.join.push((flag, fd.into(), p.clone()));
                }
                _ => plan.new |= flag,
            }
        }
        plan.sort();
        Ok(plan)
    }

    /// The plan for `exec`: join every namespace of `pid` that differs
    /// from ours.
    pub fn for_exec(pid: i32) -> Result<NsPlan> {
        let mut plan = NsPlan { new: CloneFlags::empty(), join: Vec::new() };
        for (flag, name) in [
            (CloneFlags::CLONE_NEWUSER, "user"),
            (CloneFlags::CLONE_NEWIPC, "ipc"),
            (CloneFlags::CLONE_NEWUTS, "uts"),
            (CloneFlags::CLONE_NEWNET, "net"),
            (CloneFlags::CLONE_NEWPID, "pid"),
            (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
            (CloneFlags::from_bits_retain(CLONE_NEWTIME), "time"),
            (CloneFlags::CLONE_NEWNS, "mnt"),
        ] {
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let ours = format!("/proc/self/ns/{name}");
            let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else { continue };
            use std::os::unix::fs::MetadataExt;
            if a.ino() == b.ino() && a.dev() == b.dev() {
                continue;
            }
            let fd = File::open(&theirs).ctx(|| format!("opening {}", theirs.display()))?;
            plan.join.push((flag, fd.into(), theirs));
        }
        Ok(plan)
    }

    fn sort(&mut self) {
        // The user namespace must be joined first (it grants the rights to
        // join the others), the mount namespace last.
        self.join.sort_by_key(|(f, _, _)| {
            if f.contains(CloneFlags::CLONE_NEWUSER) {
                0
            } else if f.contains(CloneFlags::CLONE_NEWNS) {
                2
            } else {
                1
            }
        });
    }

    /// True if stage 2 runs in a user namespace (new or joined).
    pub fn in_userns(&self) -> bool {
        self.new.contains(CloneFlags::CLONE_NEWUSER)
            || self.join.iter().any(|(f, _, _)| f.contains(CloneFlags::CLONE_NEWUSER))
    }
}

/// What stage 2 does once namespaces are in place.
pub enum Stage2<'a> {
    /// Build a new container and wait for `start` on the fifo in `state_dir`.
    Init {
        /// The container's spec.
        spec: &'a Spec,
        /// Absolute bundle path.
        bundle: &'a Path,
        /// Absolute rootfs path.
        rootfs: &'a Path,
        /// The state dir (holds exec.fifo), opened O_PATH.
        state_dir: File,
        /// cgroup dirs for "cgroup" mounts.
        cgroup_dirs: Vec<(String, PathBuf)>,
        /// Use MS_MOVE + chroot instead of pivot_root.
        no_pivot: bool,
        /// Whether the parent runs prestart/createRuntime hooks.
        parent_hooks: bool,
    },
    /// Run a process in an existing container.
    Exec {
        /// The process to run.
        process: &'a Process,
    },
}

/// Everything a launch needs.
pub struct Launch<'a> {
    /// Namespaces to create or join.
    pub ns: NsPlan,
    /// uid/gid maps for a new user namespace.
    pub uid_maps: Vec<LinuxIdMapping>,
    /// gid maps for a new user namespace.
    pub gid_maps: Vec<LinuxIdMapping>,
    /// The process to run (for Init: spec.process).
    pub process: &'a Process,
    /// The compiled seccomp filter, if any.
    pub seccomp: Option<seccomp::Filter>,
    /// Connected console socket when process.terminal is set.
    pub console: Option<OwnedFd>,
    /// Extra fds (3..3+n) passed into the container.
    pub preserve_fds: u32,
    /// cgroup to place stage 1 in (and to set resources for, on create).
    pub cgroup: &'a cgroups::Manager,
    /// Resources to write into the cgroup (create only).
    pub resources: Option<&'a oci_spec::runtime::LinuxResources>,
    /// Stage 2's job.
    pub stage2: Stage2<'a>,
}

/// The forked stage 2, seen from the parent.
#[derive(Debug)]
pub struct Launched {
    /// Host pid of the container process.
    pub pid: i32,
    /// Channel to it (EOF once it exec'd).
    pub channel: Channel,
}

/// Forks stage 1 (which forks stage 2) and takes it up to the point where
/// stage 2's pid is known. The caller then drives the rest of the protocol.
pub fn launch(l: Launch<'_>) -> Result<Launched> {
    let (parent, child) = Channel::pair().ctx(|| "creating setup socketpair".into())?;
    // The cgroup exists before stage 1 does: stage 1 is cloned straight
    // into its cgroup2 side and joins the v1 hierarchies itself (see
    // `Manager::join_self_v1`), the two ways that avoid the ~10 ms a
    // `cgroup.procs` write from here would cost.
    l.cgroup.create()?;
    let into = l.cgroup.clone_into_dir().and_then(|d| {
        rustix::fs::open(
            d,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()
    });
    let forked = match &into {
        Some(fd) => sys::fork_into_cgroup(fd.as_fd()).map(|f| (f, true)),
        None => Err(std::io::Error::from_raw_os_error(libc::ENOSYS)),
    };
    let (forked, in_v2) = match forked {
        Ok(f) => f,
        Err(_) => (sys::fork().ctx(|| "fork".into())?, false),
    };
    drop(into);
    let stage1 = match forked {
        sys::Fork::Child => {
            drop(parent);
            let code = match stage1(&l, &child) {
                Ok(never) => match never {},
                Err(e) => {
                    let _ = child.send(&Msg::Error(e.to_string()));
                    1
                }
            };
            sys::exit_now(code);
        }
        sys::Fork::Parent(pid) => pid,
    };
    drop(child);
    let pid = match parent_stage1(&l, &parent, stage1, in_v2) {
        Ok(pid) => pid,
        Err(e) => {
            // Stage 1 may still wait for our Go (the id maps or the cgroup
            // failed): it must not outlive the error. Dropping the channel
            // gives it (and a stage 2, if one was forked) EOF; SIGKILL makes
            // sure of stage 1 before we reap it.
            drop(parent);
            let _ = nix::sys::signal::kill(stage1, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(stage1, None);
            return Err(e);
        }
    };
    // Stage 1 exits right after reporting stage 2's pid.
    let _ = waitpid(stage1, None);
    Ok(Launched { pid, channel: parent })
}

fn parent_stage1(l: &Launch<'_>, ch: &Channel, stage1: Pid, in_v2: bool) -> Result<i32> {
    // The limits go in while stage 1 joins its v1 hierarchies (a dozen
    // cgroup.procs writes on a hybrid host): both take ~1 ms, and nothing
    // of the container's runs before our Go.
    if let Some(r) = l.resources {
        l.cgroup.set(r)?;
    }
    match ch.recv().ctx(|| "reading from container setup".into())? {
        Some(Msg::Stage1Ready { userns }) => {
            if userns {
                write_id_map(stage1, "uid_map", &l.uid_maps)?;
                write_id_map(stage1, "gid_map", &l.gid_maps)?;
            }
        }
        Some(Msg::Error(e)) => return Err(Error::Init(e)),
        other => return Err(Error::Init(format!("unexpected setup message {other:?}"))),
    }
    if !in_v2 {
        l.cgroup.join_v2(stage1.as_raw())?;
    }
    ch.send(&Msg::Go).ctx(|| "signalling container setup".into())?;
    match ch.recv().ctx(|| "reading from container setup".into())? {
        Some(Msg::Pid(pid)) => Ok(pid),
        Some(Msg::Error(e)) => Err(Error::Init(e)),
        None => Err(Error::Init("setup process exited unexpectedly".into())),
        other => Err(Error::Init(format!("unexpected setup message {other:?}"))),
    }
}

fn write_id_map(pid: Pid, file: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    if maps.is_empty() {
        return Err(Error::Other(format!(
            "a new user namespace needs linux.{}",
            if file == "uid_map" { "uidMappings" } else { "gidMappings" }
        )));
    }
    let data: String = maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect();
    std::fs::write(format!("/proc/{pid}/{file}"), data).ctx(|| format!("writing {file} for the user namespace"))
}

fn stage1(l: &Launch<'_>, ch: &Channel) -> Result<std::convert::Infallible> {
    // First, before any namespace changes: our v1 cgroups (the cgroup
    // namespace made below is rooted where we are then).
    l.cgroup.join_self_v1()?;
    let mut joined_user = false;
    for (flag, fd, path) in &l.ns.join {
        if flag.contains(CloneFlags::CLONE_NEWUSER) {
            nix::sched::setns(fd, *flag).ctx(|| format!("joining user namespace {}", path.display()))?;
            joined_user = true;
        }
    }
    let new_user = l.ns.new.contains(CloneFlags::CLONE_NEWUSER);
    if new_user {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER).ctx(|| "creating user namespace".into())?;
    }
    ch.request(&Msg::Stage1Ready { userns: new_user }).ctx(|| "waiting for id maps and cgroup".into())?;
    if new_user || joined_user {
        let root_u = nix::unistd::Uid::from_raw(0);
        let root_g = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(root_g, root_g, root_g)
            .ctx(|| "becoming root in the user namespace (gid 0 unmapped?)".into())?;
        nix::unistd::setresuid(root_u, root_u, root_u)
            .ctx(|| "becoming root in the user namespace (uid 0 unmapped?)".into())?;
    }
    for (flag, fd, path) in &l.ns.join {
        if !flag.contains(CloneFlags::CLONE_NEWUSER) {
            nix::sched::setns(fd, *flag).ctx(|| format!("joining namespace {}", path.display()))?;
        }
    }
    let rest = l.ns.new - CloneFlags::CLONE_NEWUSER;
    if !rest.is_empty() {
        nix::sched::unshare(rest).ctx(|| format!("creating namespaces {rest:?}"))?;
    }
    // Stage 2 waits for this pipe's EOF (our exit) before it starts: the
    // parent must read our Pid before anything stage 2 sends on the same
    // channel, and under load stage 2 could otherwise get its whole setup
    // done and send Ready first.
    let (pid_sent_r, pid_sent_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())?;
    match sys::fork().ctx(|| "fork".into())? {
        sys::Fork::Parent(pid) => {
            drop(pid_sent_r);
            ch.send(&Msg::Pid(pid.as_raw())).ctx(|| "reporting container pid".into())?;
            drop(pid_sent_w);
            sys::exit_now(0);
        }
        sys::Fork::Child => {}
    }
    drop(pid_sent_w);
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(&pid_sent_r, &mut b) {
            Ok(0) => break,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    drop(pid_sent_r);
    let err = match stage2(l, ch) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let msg = err.to_string();
    if ch.send(&Msg::Error(msg.clone())).is_err() {
        // Nobody listens any more (create returned already): say it on
        // the container's stderr, like other runtimes do.
        eprintln!("berth: {msg}");
    }
    sys::exit_now(127);
}

fn stage2(l: &Launch<'_>, ch: &Channel) -> Result<std::convert::Infallible> {
    sys::reset_signals();
    let terminal = l.process.terminal().unwrap_or(false);
    let userns = l.ns.in_userns();
    let cwd = l.process.cwd().clone();
    let env = l.process.env().clone().unwrap_or_default();
    let args = l.process.args().as_deref().unwrap_or_default();
    let arg0 = args.first().ok_or_else(|| Error::Other("process.args must not be empty".into()))?;

    match &l.stage2 {
        Stage2::Init { spec, bundle, rootfs, state_dir, cgroup_dirs, no_pivot, parent_hooks } => {
            nix::unistd::setsid().ctx(|| "setsid".into())?;
            if l.ns.new.contains(CloneFlags::CLONE_NEWNET) {
                // A network namespace made here has only `lo`, and down;
                // runc brings it up too (joined namespaces are left alone).
                sys::set_link_up("lo").ctx(|| "bringing up lo in the new network namespace".into())?;
            }
            // Device nodes get exactly the modes the spec asks for.
            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            let new_mnt = l.ns.new.contains(CloneFlags::CLONE_NEWNS);
            let ctx = RootfsContext {
                spec,
                bundle,
                rootfs,
                userns,
                cgroup_dirs: cgroup_dirs.clone(),
                cgroupns: l.ns.new.contains(CloneFlags::CLONE_NEWCGROUP),
            };
            if new_mnt {
                rootfs::prepare(&ctx)?;
                let root = rootfs::open_root(rootfs)?;
                rootfs::mount_all(&ctx, &root)?;
                rootfs::setup_dev(&ctx, &root)?;
            }
            if *parent_hooks {
                ch.request(&Msg::RunHooks).ctx(|| "waiting for prestart hooks".into())?;
            }
            if let Some(h) = spec.hooks().as_ref().and_then(|h| h.create_container().as_deref()) {
                hooks::run("createContainer", h, &init_state(spec, bundle))?;
            }
            if new_mnt {
                if *no_pivot {
                    move_root(rootfs)?;
                } else {
                    rootfs::pivot(rootfs)?;
                }
            } else {
                nix::unistd::chroot(*rootfs).ctx(|| format!("chroot {}", rootfs.display()))?;
                nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
            }
            if terminal {
                let sock = l
                    .console
                    .as_ref()
                    .ok_or_else(|| Error::Other("terminal requested without a console socket".into()))?;
                console::setup(sock, console_size(l.process))?;
            }
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
            // sysctls go in before readonlyPaths turns /proc/sys read-only.
            apply_sysctl(spec)?;
            if new_mnt {
                rootfs::finish(spec, userns)?;
            }
            if let Some(h) = spec.hostname().as_deref() {
                if !h.is_empty() {
                    nix::unistd::sethostname(h).ctx(|| format!("setting hostname {h:?}"))?;
                }
            }
            if let Some(d) = spec.domainname().as_deref() {
                if !d.is_empty() {
                    sys::set_domainname(d).ctx(|| format!("setting domainname {d:?}"))?;
                }
            }
            common_pre_exec(l)?;
            let exe = chdir_and_find(&cwd, arg0, &env)?;
            let exec = ExecArgs::new(&exe, l.process)?;
            ch.send(&Msg::Ready).ctx(|| "reporting readiness".into())?;
            // Held (close-on-exec) until exec: `start` waits for its EOF.
            let _fifo = wait_for_start(state_dir)?;
            if let Some(h) = spec.hooks().as_ref().and_then(|h| h.start_container().as_deref()) {
                hooks::run("startContainer", h, &init_state(spec, bundle))?;
            }
            finish_and_exec(l, &cwd, exec)
        }
        Stage2::Exec { .. } => {
            if terminal {
                nix::unistd::setsid().ctx(|| "setsid".into())?;
                let sock = l
                    .console
                    .as_ref()
                    .ok_or_else(|| Error::Other("terminal requested without a console socket".into()))?;
                console::setup(sock, console_size(l.process))?;
            }
            common_pre_exec(l)?;
            let exe = chdir_and_find(&cwd, arg0, &env)?;
            let exec = ExecArgs::new(&exe, l.process)?;
            finish_and_exec(l, &cwd, exec)
        }
    }
}

fn console_size(p: &Process) -> Option<(u16, u16)> {
    p.console_size().as_ref().map(|b| (b.height() as u16, b.width() as u16))
}

fn init_state(spec: &Spec, bundle: &Path) -> crate::state::OciState {
    crate::state::OciState {
        oci_version: spec.version().clone(),
        id: String::new(),
        status: crate::state::Status::Creating,
        pid: Some(std::process::id() as i32),
        bundle: bundle.to_path_buf(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        rootfs: None,
        created: None,
        owner: None,
    }
}

/// AppArmor, rlimits and OOM score: process attributes that survive exec.
fn common_pre_exec(l: &Launch<'_>) -> Result<()> {
    process::apply_apparmor(l.process)?;
    process::apply_rlimits(l.process)?;
    process::apply_oom_score_adj(l.process)
}

fn chdir_and_find(cwd: &Path, arg0: &str, env: &[String]) -> Result<PathBuf> {
    chdir_checked(cwd)?;
    process::find_executable(arg0, env, cwd)
}

/// chdir into the process cwd and make sure we really are inside the
/// container's root: a cwd like `/proc/self/fd/N` naming a descriptor to a
/// host directory would otherwise let the process start outside it (the
/// CVE-2024-21626 class). getcwd fails or reports "(unreachable)" then.
fn chdir_checked(cwd: &Path) -> Result<()> {
    nix::unistd::chdir(cwd).ctx(|| format!("chdir to cwd {}", cwd.display()))?;
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => Ok(()),
        _ => Err(Error::Other(format!("cwd {} is outside the container's root", cwd.display()))),
    }
}

/// Blocks until `start` opens the fifo for reading, then tells it we go.
/// The returned write end must stay open until exec.
fn wait_for_start(state_dir: &File) -> Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        state_dir,
        "exec.fifo",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| "opening exec fifo".into())?;
    nix::unistd::write(&fd, b"0").ctx(|| "writing exec fifo".into())?;
    Ok(fd)
}

/// User switch, capabilities, no_new_privs, seccomp, fd hygiene, exec.
fn finish_and_exec(l: &Launch<'_>, cwd: &Path, exec: ExecArgs) -> Result<std::convert::Infallible> {
    let caps = CapSets::from_spec(l.process.capabilities().as_ref());
    caps.apply_bounding()?;
    process::switch_user(l.process, false)?;
    let listener = process::finalize_privileges(l.process, &caps, l.seccomp.as_ref())?;
    if let Some(fd) = listener {
        // The notify listener fd goes to the agent the spec names.
        send_seccomp_listener(l, fd)?;
    }
    // Back into cwd as the final user: permission checks now apply.
    if nix::unistd::chdir(cwd).is_ok() {
        chdir_checked(cwd)?;
    }
    sys::cloexec_from(3 + l.preserve_fds).ctx(|| "marking descriptors close-on-exec".into())?;
    if let Stage2::Init { spec, .. } = &l.stage2 {
        if crate::init::wanted(spec) {
            return crate::init::run(exec);
        }
    }
    Err(exec.exec())
}

fn send_seccomp_listener(l: &Launch<'_>, fd: OwnedFd) -> Result<()> {
    let Stage2::Init { spec, .. } = &l.stage2 else { return Ok(()) };
    let Some(path) = spec.linux().as_ref().and_then(|x| x.seccomp().as_ref()).and_then(|s| s.listener_path().clone())
    else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixStream::connect(&path)
        .ctx(|| format!("connecting to seccomp listener {}", path.display()))?;
    sys::send_fd(sock.as_fd(), fd.as_fd(), b"{}").ctx(|| "sending seccomp listener fd".into())
}

fn move_root(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    nix::mount::mount(Some("."), "/", None::<&str>, nix::mount::MsFlags::MS_MOVE, None::<&str>)
        .ctx(|| "moving rootfs to /".into())?;
    nix::unistd::chroot(".").ctx(|| "chroot".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())
}

/// Writes linux.sysctl entries through /proc/sys.
fn apply_sysctl(spec: &Spec) -> Result<()> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else { return Ok(()) };
    for (k, v) in map {
        if k.contains("..") || k.contains('/') && k.contains('.') {
            return Err(Error::Other(format!("invalid sysctl key {k:?}")));
        }
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&path, v).ctx(|| format!("setting sysctl {k}={v}"))?;
    }
    Ok(())
}

/// Waits for `pid` (a child of ours) and returns its exit code the way a
/// shell reports it (128+signal when killed).
pub fn wait_exit_code(pid: i32) -> Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| format!("waiting for pid {pid}")),
        }
    }
}
