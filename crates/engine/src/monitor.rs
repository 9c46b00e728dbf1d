//! The container monitor: one single-threaded `berth monitor` process per
//! container, the conmon and the runtime in one.
//!
//! The daemon spawns it and reads one JSON line from its stdout (the
//! container started, or why not); from then on the monitor lives on its
//! own, in its own session, and a container never depends on the daemon:
//! - it creates and starts the container through `berth-runtime` (as the
//!   container's parent: it is a child subreaper, so the init is its
//!   child and it reaps it);
//! - it holds the container's stdio (pipes, or the pty master with `-t`),
//!   writes every byte to the json-file log and to attached clients;
//! - it records the run state (`state.json`), the exit status, and applies
//!   the restart policy with Docker's backoff;
//! - it serves a unix socket (`<run-root>/mon/<id>.sock`) where the daemon
//!   (any daemon: a restarted one too) attaches, waits, stops, kills and
//!   resizes. Requests are one JSON line ([`Request`]).
//!
//! When the container is done for good, the monitor deletes the runtime
//! state, unmounts the rootfs and exits.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use berth_runtime::container::{CreateOptions, Runtime};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::logs::LogWriter;
use crate::paths::{ContainerPaths, Paths};
use crate::record::{ContainerRecord, RunState, Status};

/// How many health changes the monitor keeps for a daemon that asks late.
const HEALTH_CHANGES_KEPT: usize = 8;

/// How long after a start the monitor trims its heap (see `trim_at`).
const TRIM_DELAY: Duration = Duration::from_millis(100);

/// A request on the monitor socket (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Stream output to this connection (Docker's multiplexed frames
    /// without a tty, raw bytes with one); with `stdin`, what the client
    /// sends goes to the container's stdin.
    Attach {
        /// Forward the client's bytes to stdin.
        stdin: bool,
        /// Send stdout.
        stdout: bool,
        /// Send stderr.
        stderr: bool,
    },
    /// Answer `{"StatusCode":N}` at the next exit.
    Wait,
    /// Stop: send `signal`, then SIGKILL after `timeout` seconds (-1:
    /// never). The restart policy will not bring it back.
    Stop {
        /// Signal number.
        signal: i32,
        /// Seconds before SIGKILL.
        timeout: i64,
    },
    /// Send a signal to the container's init.
    Kill {
        /// Signal number.
        signal: i32,
    },
    /// Freeze the container (`docker pause`).
    Pause,
    /// Thaw it (`docker unpause`).
    Unpause,
    /// Resize the pty.
    Resize {
        /// Rows.
        h: u16,
        /// Columns.
        w: u16,
    },
    /// Answer `{"Changes":[[seq,"healthy"],…]}` with the health changes
    /// numbered above `after` ([`RunState::health_changes`]) once there
    /// are any: at once if some happened already. The daemon publishes
    /// each as a `health_status` event, so the events follow the checks
    /// without polling. The connection closes when the monitor ends.
    Health {
        /// The last change the daemon has published.
        after: u64,
    },
}

/// The monitor's one-line answer to the daemon that spawned it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ready {
    /// Whether the container started.
    pub ok: bool,
    /// Its init's pid.
    #[serde(default)]
    pub pid: i32,
    /// Why not.
    #[serde(default)]
    pub error: String,
    /// Exit code `docker run` reports for this failure (125 engine error,
    /// 126 not executable, 127 not found).
    #[serde(default)]
    pub code: i32,
}

/// Reads the record the daemon wrote for the monitor.
pub fn load_record(paths: &ContainerPaths) -> Result<ContainerRecord> {
    let data = std::fs::read(paths.config()).ctx(|| format!("reading {}", paths.config().display()))?;
    serde_json::from_slice(&data).map_err(|e| Error::BadRequest(format!("{}: {e}", paths.config().display())))
}

/// Reads a container's run state (a missing file reads as "created").
pub fn load_state(paths: &ContainerPaths) -> RunState {
    std::fs::read(paths.state()).ok().and_then(|d| serde_json::from_slice(&d).ok()).unwrap_or_else(RunState::created)
}

/// Writes a container's run state atomically.
pub fn save_state(paths: &ContainerPaths, st: &RunState) -> Result<()> {
    let data = serde_json::to_vec(st).map_err(|e| Error::BadRequest(e.to_string()))?;
    berth_runtime::state::write_atomic(&paths.state(), &data, 0o600)?;
    Ok(())
}

/// The exit code `docker run` uses when a start fails with `msg`.
pub fn start_failure_code(msg: &str) -> i32 {
    let m = msg.to_ascii_lowercase();
    if m.contains("not found") || m.contains("no such file") {
        127
    } else if m.contains("permission denied") || m.contains("is a directory") {
        126
    } else {
        125
    }
}

/// Docker's restart backoff: 100 ms doubling up to a minute, reset after
/// a run of at least 10 s.
fn next_backoff(prev: Duration, ran: Duration) -> Duration {
    if ran >= Duration::from_secs(10) || prev.is_zero() {
        Duration::from_millis(100)
    } else {
        (prev * 2).min(Duration::from_secs(60))
    }
}

struct Client {
    /// Stable identity within this monitor: a step's indexes go stale
    /// as soon as a failed write drops a client.
    serial: u64,
    sock: UnixStream,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

/// The running monitor.
struct Monitor {
    paths: ContainerPaths,
    rec: ContainerRecord,
    rt: Runtime,
    state: RunState,
    log: LogWriter,
    mlog: Option<std::fs::File>,
    listener: UnixListener,
    sigfd: SignalFd,
    /// (stream, fd): stdout/stderr pipes, or the pty master as stdout.
    outputs: Vec<(u8, OwnedFd)>,
    /// Where client input goes (pipe write end or pty master), non-blocking.
    stdin: Option<OwnedFd>,
    pending_stdin: Vec<u8>,
    /// Close stdin once `pending_stdin` is delivered (StdinOnce client left).
    close_stdin: bool,
    /// The pty master, for resizes.
    pty: Option<OwnedFd>,
    clients: Vec<Client>,
    /// The next [`Client::serial`].
    next_client: u64,
    waiters: Vec<UnixStream>,
    /// Daemons waiting for a health change: (connection, last change it has).
    health_waiters: Vec<(UnixStream, u64)>,
    /// The latest health changes, (number, status), oldest first.
    health_changes: std::collections::VecDeque<(u64, String)>,
    pid: i32,
    exit: Option<i32>,
    kill_at: Option<Instant>,
    /// When to give the setup's freed heap back to the kernel: a moment
    /// after the start rather than at once, so that a container that exits
    /// right away is reaped first (and then the monitor exits anyway).
    trim_at: Option<Instant>,
    /// The health check, if the container has one.
    check: Option<crate::health::Check>,
    /// Its process.json.
    check_process: std::path::PathBuf,
    /// A check in flight.
    check_run: Option<crate::health::Running>,
    next_check: Option<Instant>,
    started: Instant,
    /// The monitor's end is on record ([`Monitor::finish_for_removal`]:
    /// socket gone, no monitor pid): nothing more may be written to the
    /// container's directory, which the daemon may be removing.
    released: bool,
}

/// Sends the one answer to the daemon and closes the pipe.
fn answer(ready: &mut Option<OwnedFd>, r: &Ready) {
    if let Some(fd) = ready.take() {
        let mut f = std::fs::File::from(fd);
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        let _ = f.write_all(&line);
    }
}

/// Points fds 0-2 at /dev/null.
fn detach_stdio() -> Result<()> {
    let null =
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").ctx(|| "opening /dev/null".into())?;
    nix::unistd::dup2_stdin(&null).ctx(|| "redirecting stdin".into())?;
    nix::unistd::dup2_stdout(&null).ctx(|| "redirecting stdout".into())?;
    nix::unistd::dup2_stderr(&null).ctx(|| "redirecting stderr".into())?;
    Ok(())
}

/// Runs the monitor for container `id` (the `berth monitor` verb). The
/// caller has already re-executed from a sealed copy of the binary.
/// Returns the process exit code.
///
/// `wait_attach` clients are about to attach (`docker run` attaches before
/// it starts): the container starts once they have (or after 10 s), so
/// none of its output is missed.
///
/// `listener`: the monitor socket, when the daemon bound it ahead of the
/// start (attaches may have queued there already).
pub fn run(paths: &Paths, id: &str, wait_attach: usize, listener: Option<UnixListener>) -> i32 {
    // Our stdout is the pipe to the daemon: keep it aside for the one
    // answer, and give fds 0-2 to /dev/null (they are scratch from now on).
    let mut ready = match rustix::io::fcntl_dupfd_cloexec(std::io::stdout(), 3) {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!("berth monitor: {e}");
            return 1;
        }
    };
    if let Err(e) = detach_stdio() {
        answer(&mut ready, &Ready { ok: false, pid: 0, error: e.to_string(), code: 125 });
        return 1;
    }
    // Out of the daemon's session: its death or its terminal's must not reach us.
    let _ = nix::unistd::setsid();
    let mut m = match Monitor::new(paths, id, listener) {
        Ok(m) => m,
        Err(e) => {
            answer(&mut ready, &Ready { ok: false, pid: 0, error: e.to_string(), code: 125 });
            return 1;
        }
    };
    // Attaches that connected to a prebound socket before we ran are not
    // counted in `wait_attach`: take them first.
    m.accept();
    let until = Instant::now() + Duration::from_secs(10);
    while m.clients.len() < wait_attach && Instant::now() < until {
        m.step(Some(until));
    }
    let mut backoff = Duration::ZERO;
    loop {
        let started = Instant::now();
        match m.start() {
            Ok(pid) => {
                answer(&mut ready, &Ready { ok: true, pid, error: String::new(), code: 0 });
                m.trim_at = Some(Instant::now() + TRIM_DELAY);
            }
            Err(e) => {
                let msg = e.to_string();
                m.note(&format!("start failed: {msg}"));
                let code = start_failure_code(&msg);
                let first = ready.is_some();
                m.state.status = if first { Status::Created } else { Status::Exited };
                m.state.error = msg.clone();
                m.state.exit_code = code;
                m.state.pid = 0;
                answer(&mut ready, &Ready { ok: false, pid: 0, error: msg, code });
                // A first start that fails leaves the rootfs for the daemon to reuse.
                m.finish(!first);
                return i32::from(first);
            }
        }
        let code = m.run_until_exit();
        let restart = m.should_restart(code);
        // `run --rm` waits for the removal, which waits for this monitor to
        // be done: with no restart to come, record that before answering
        // the waiters instead of after, so the daemon removes at once.
        m.on_exit(code, !restart && m.rec.host_config.auto_remove.unwrap_or(false));
        if !restart {
            break;
        }
        backoff = next_backoff(backoff, started.elapsed());
        m.state.status = Status::Restarting;
        m.save();
        if !m.wait_backoff(backoff) {
            m.state.status = Status::Exited;
            break;
        }
        m.state.restart_count += 1;
    }
    if m.rec.host_config.auto_remove.unwrap_or(false) {
        // --rm: the daemon removes the container as soon as we are gone and
        // releases the runtime state, cgroups and rootfs itself, off the
        // path `run --rm` waits on (Engine::remove_exited_auto).
        m.finish_for_removal();
    } else {
        m.finish(true);
    }
    0
}

impl Monitor {
    fn new(paths: &Paths, id: &str, listener: Option<UnixListener>) -> Result<Monitor> {
        let cp = paths.container(id);
        let rec = load_record(&cp)?;
        let mlog = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(cp.monitor_log())
            .ok();
        let opts = rec.host_config.log_config.as_ref().and_then(|l| l.config.clone()).unwrap_or_default();
        let max_size = opts.get("max-size").and_then(|s| crate::logs::parse_size(s)).unwrap_or(0);
        let max_files = opts.get("max-file").and_then(|s| s.parse().ok()).unwrap_or(1);
        let log = LogWriter::open(std::path::Path::new(&rec.log_path), max_size, max_files)
            .ctx(|| format!("opening log {}", rec.log_path))?;
        nix::sys::prctl::set_child_subreaper(true).ctx(|| "becoming a child subreaper".into())?;
        let mut mask = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block().ctx(|| "blocking signals".into())?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .ctx(|| "creating a signalfd".into())?;
        if let Some(dir) = cp.socket.parent() {
            std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        let listener = match listener {
            Some(l) => l,
            None => {
                let _ = std::fs::remove_file(&cp.socket);
                let l = UnixListener::bind(&cp.socket).ctx(|| format!("listening on {}", cp.socket.display()))?;
                std::fs::set_permissions(&cp.socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .ctx(|| "securing the monitor socket".into())?;
                l
            }
        };
        listener.set_nonblocking(true).ctx(|| "monitor socket".into())?;
        let mut state = load_state(&cp);
        state.monitor_pid = std::process::id() as i32;
        let rec_health = rec.config.healthcheck.clone();
        Ok(Monitor {
            paths: cp,
            rec,
            rt: Runtime { root: paths.runtime_root(), systemd_cgroup: false },
            state,
            log,
            mlog,
            listener,
            sigfd,
            outputs: Vec::new(),
            stdin: None,
            pending_stdin: Vec::new(),
            close_stdin: false,
            pty: None,
            clients: Vec::new(),
            next_client: 0,
            waiters: Vec::new(),
            health_waiters: Vec::new(),
            health_changes: std::collections::VecDeque::new(),
            pid: 0,
            exit: None,
            kill_at: None,
            trim_at: None,
            check: crate::health::check(rec_health.as_ref()),
            check_process: paths.run_root.join("exec").join(format!("{id}-health.json")),
            check_run: None,
            next_check: None,
            started: Instant::now(),
            released: false,
        })
    }

    /// A line in the monitor's own log.
    fn note(&mut self, msg: &str) {
        if let Some(f) = &mut self.mlog {
            let _ = f.write_all(format!("{} {msg}\n", berth_runtime::state::now_rfc3339()).as_bytes());
        }
    }

    fn save(&mut self) {
        if let Err(e) = save_state(&self.paths, &self.state) {
            let msg = format!("saving state: {e}");
            self.note(&msg);
        }
    }

    /// Creates and starts the container; its stdio become ours to pump.
    fn start(&mut self) -> Result<i32> {
        let id = self.rec.id.clone();
        // Leftovers of a previous run (restart, or a crash) go first.
        let _ = self.rt.delete(&id, true);
        let tty = self.rec.config.tty.unwrap_or(false);
        let open_stdin = self.rec.config.open_stdin.unwrap_or(false);
        let mut opts = CreateOptions { bundle: self.paths.bundle(), ..Default::default() };
        let null =
            std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").ctx(|| "opening /dev/null".into())?;
        let mut console = None;
        let mut ours: Vec<(u8, OwnedFd)> = Vec::new();
        let mut stdin_w = None;
        if tty {
            let path = self.paths.console_socket();
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).ctx(|| format!("listening on {}", path.display()))?;
            opts.console_socket = Some(path);
            console = Some(l);
            nix::unistd::dup2_stdin(&null).ctx(|| "stdin".into())?;
            nix::unistd::dup2_stdout(&null).ctx(|| "stdout".into())?;
            nix::unistd::dup2_stderr(&null).ctx(|| "stderr".into())?;
        } else {
            let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())?;
            let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())?;
            if open_stdin {
                let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())?;
                nix::unistd::dup2_stdin(&in_r).ctx(|| "stdin".into())?;
                stdin_w = Some(in_w);
            } else {
                nix::unistd::dup2_stdin(&null).ctx(|| "stdin".into())?;
            }
            nix::unistd::dup2_stdout(&out_w).ctx(|| "stdout".into())?;
            nix::unistd::dup2_stderr(&err_w).ctx(|| "stderr".into())?;
            ours.push((1, out_r));
            ours.push((2, err_r));
        }
        // (The runtime brings up the loopback of the container's own
        // network namespace, as runc does: Docker's none network.)
        let created = self.rt.create(&id, &opts).and_then(|pid| self.rt.start(&id).map(|()| pid));
        // The container holds its ends now; ours go back to /dev/null so
        // EOF on the pipes means every container process is gone.
        let _ = detach_stdio();
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                let _ = self.rt.delete(&id, true);
                return Err(Error::Runtime(e));
            }
        };
        if let Some(l) = console {
            let (sock, _) = l.accept().ctx(|| "receiving the pty master".into())?;
            let master = berth_runtime::sys::recv_fd(sock.as_fd()).ctx(|| "receiving the pty master".into())?;
            let _ = std::fs::remove_file(self.paths.console_socket());
            set_nonblocking(master.as_fd())?;
            self.stdin = Some(master.try_clone().ctx(|| "dup pty".into())?);
            self.pty = Some(master.try_clone().ctx(|| "dup pty".into())?);
            ours.push((1, master));
        } else if let Some(w) = stdin_w {
            set_nonblocking(w.as_fd())?;
            self.stdin = Some(w);
        }
        self.outputs = ours;
        // Input that attached clients sent before the start.
        self.flush_stdin();
        self.pid = pid;
        self.exit = None;
        self.kill_at = None;
        self.state.status = Status::Running;
        self.state.pid = pid;
        self.state.error.clear();
        self.state.started_at = berth_runtime::state::now_rfc3339();
        self.state.oom_killed = false;
        self.started = Instant::now();
        if let Some(c) = self.check.clone() {
            if let Err(e) = self.write_check_process(&c) {
                self.note(&format!("health check disabled: {e}"));
                self.check = None;
            } else {
                self.state.health =
                    Some(crate::health::Health { status: "starting".into(), failing_streak: 0, log: Vec::new() });
                self.next_check = Some(Instant::now() + c.interval);
            }
        }
        self.save();
        self.note(&format!("started pid {pid}"));
        Ok(pid)
    }

    /// Serves until the container has exited and its output is drained;
    /// returns the exit code.
    fn run_until_exit(&mut self) -> i32 {
        loop {
            if let Some(code) = self.exit {
                if self.outputs.is_empty() {
                    return code;
                }
            }
            self.step(None);
        }
    }

    /// Serves requests for `d` (the restart backoff); false if a stop
    /// arrived meanwhile.
    fn wait_backoff(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.state.manually_stopped {
                return false;
            }
            self.step(Some(until));
        }
        !self.state.manually_stopped
    }

    /// One round of the event loop.
    fn step(&mut self, deadline: Option<Instant>) {
        let now = Instant::now();
        let check_deadline = match (&self.check_run, &self.check) {
            (Some(r), Some(c)) => Some(Instant::now() + c.timeout.saturating_sub(r.elapsed())),
            _ => self.next_check,
        };
        let wake = [deadline, self.kill_at, check_deadline, self.trim_at].into_iter().flatten().min();
        let timeout = match wake {
            Some(t) => PollTimeout::try_from(t.saturating_duration_since(now).as_millis().min(60_000) as u32 + 1)
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        // Index layout: 0 signalfd, 1 listener, outputs, stdin (when
        // data is pending), then clients forwarding stdin.
        let (n_out, has_stdin) = (self.outputs.len(), self.stdin.is_some() && !self.pending_stdin.is_empty());
        let readers: Vec<usize> = (0..self.clients.len()).filter(|&i| self.clients[i].stdin).collect();
        let mut ready_out = vec![false; n_out];
        let mut stdin_writable = false;
        let mut ready_clients = Vec::new();
        let (sig_ready, accept_ready) = {
            let mut fds = vec![
                PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            ];
            for (_, fd) in &self.outputs {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
            if has_stdin {
                if let Some(fd) = &self.stdin {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                }
            }
            for &i in &readers {
                fds.push(PollFd::new(self.clients[i].sock.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    return;
                }
            }
            let hit = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            for (k, r) in ready_out.iter_mut().enumerate() {
                *r = hit(&fds[2 + k]);
            }
            let mut next = 2 + n_out;
            if has_stdin {
                stdin_writable = hit(&fds[next]);
                next += 1;
            }
            for (k, &i) in readers.iter().enumerate() {
                if hit(&fds[next + k]) {
                    ready_clients.push(self.clients[i].serial);
                }
            }
            (hit(&fds[0]), hit(&fds[1]))
        };
        if sig_ready {
            self.reap();
        }
        for k in (0..n_out).rev() {
            if ready_out[k] {
                self.pump(k);
            }
        }
        if stdin_writable {
            self.flush_stdin();
        }
        // By serial, not index: pump() above drops a client whose socket
        // fails (one that just detached, say), which shifts the indexes;
        // a stale one read the wrong client's input or, past the end,
        // panicked and took the monitor down with its container running.
        for serial in ready_clients {
            if let Some(i) = self.clients.iter().position(|c| c.serial == serial) {
                self.client_input(i);
            }
        }
        if accept_ready {
            self.accept();
        }
        self.health_tick();
        if self.trim_at.is_some_and(|t| Instant::now() >= t) {
            self.trim_at = None;
            crate::sys::release_free_memory();
        }
        if let Some(t) = self.kill_at {
            if Instant::now() >= t && self.exit.is_none() {
                self.kill_at = None;
                let _ = self.rt.kill(&self.rec.id, Signal::SIGKILL, true);
            }
        }
    }

    /// Reaps children; records the init's exit.
    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p.as_raw() == self.pid => self.exit = Some(code),
                Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == self.pid => self.exit = Some(128 + sig as i32),
                Ok(WaitStatus::Exited(p, code)) if self.is_check(p) => self.check_done(Some(code)),
                Ok(WaitStatus::Signaled(p, _, _)) if self.is_check(p) => self.check_done(None),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Moves a chunk of output to the log and the attached clients.
    fn pump(&mut self, k: usize) {
        let mut buf = [0u8; 32 * 1024];
        let (stream, fd) = (&self.outputs[k].0, &self.outputs[k].1);
        let stream = *stream;
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                // EOF (EIO: the pty's last slave closed).
                self.outputs.remove(k);
            }
            Ok(n) => {
                let data = &buf[..n];
                if let Err(e) = self.log.write(stream, data) {
                    let msg = format!("writing log: {e}");
                    self.note(&msg);
                }
                let tty = self.pty.is_some();
                let mut frame = Vec::with_capacity(n + 8);
                if !tty {
                    frame.extend_from_slice(&[stream, 0, 0, 0]);
                    frame.extend_from_slice(&(n as u32).to_be_bytes());
                }
                frame.extend_from_slice(data);
                self.clients.retain_mut(|c| {
                    let wanted = if stream == 2 { c.stderr } else { c.stdout };
                    !wanted || c.sock.write_all(&frame).is_ok()
                });
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(_) => {
                self.outputs.remove(k);
            }
        }
    }

    fn flush_stdin(&mut self) {
        let Some(fd) = &self.stdin else { return };
        if self.pending_stdin.is_empty() {
            if self.close_stdin {
                self.stdin = None;
            }
            return;
        }
        match nix::unistd::write(fd, &self.pending_stdin) {
            Ok(n) => {
                self.pending_stdin.drain(..n);
                if self.pending_stdin.is_empty() && self.close_stdin {
                    self.stdin = None;
                }
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(_) => {
                self.pending_stdin.clear();
                self.stdin = None;
            }
        }
    }

    /// Bytes (or EOF) from an attached client's stdin.
    fn client_input(&mut self, i: usize) {
        let mut buf = [0u8; 32 * 1024];
        match self.clients[i].sock.read(&mut buf) {
            Err(_) => {
                self.clients.remove(i);
            }
            Ok(0) => {
                // The client closed its input side only (`echo x | docker
                // run -i`): it still reads output.
                self.clients[i].stdin = false;
                if self.rec.config.stdin_once.unwrap_or(false) && self.pty.is_none() {
                    // The attached client is done with stdin: close it once
                    // what it sent is delivered, so the program sees EOF.
                    self.close_stdin = true;
                    self.flush_stdin();
                }
            }
            Ok(n) => {
                // Bounded: a container that never reads stdin must not
                // grow the monitor without limit.
                if self.pending_stdin.len() + n <= 1 << 20 {
                    self.pending_stdin.extend_from_slice(&buf[..n]);
                }
                self.flush_stdin();
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((sock, _)) = self.listener.accept() {
            let _ = sock.set_nonblocking(false);
            let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = sock.set_write_timeout(Some(Duration::from_secs(10)));
            let line = read_request_line(&sock);
            let _ = sock.set_read_timeout(None);
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => self.handle(req, sock),
                Err(e) => {
                    let mut s = sock;
                    let _ =
                        s.write_all(json_line(&serde_json::json!({"error": format!("bad request: {e}")})).as_bytes());
                }
            }
        }
    }

    fn handle(&mut self, req: Request, mut sock: UnixStream) {
        let reply = |s: &mut UnixStream, v: serde_json::Value| {
            let _ = s.write_all(json_line(&v).as_bytes());
        };
        match req {
            Request::Attach { stdin, stdout, stderr } => {
                // Honoured only when the container was created with stdin open.
                let stdin = stdin && self.rec.config.open_stdin.unwrap_or(false);
                self.clients.push(Client { serial: self.next_client, sock, stdin, stdout, stderr });
                self.next_client += 1;
            }
            Request::Wait => {
                if let (Some(code), true) = (self.exit, self.outputs.is_empty()) {
                    reply(&mut sock, serde_json::json!({"StatusCode": code}));
                } else {
                    self.waiters.push(sock);
                }
            }
            Request::Stop { signal, timeout } => {
                self.state.manually_stopped = true;
                self.save();
                if self.exit.is_none() && self.pid > 0 {
                    if self.state.status == Status::Paused {
                        // A frozen process cannot act on the signal.
                        let _ = self.rt.resume(&self.rec.id);
                        self.state.status = Status::Running;
                    }
                    let sig = Signal::try_from(signal).unwrap_or(Signal::SIGTERM);
                    let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), sig);
                    self.kill_at = match timeout {
                        t if t < 0 => None,
                        t => Some(Instant::now() + Duration::from_secs(t as u64)),
                    };
                }
                reply(&mut sock, serde_json::json!({"ok": true}));
            }
            Request::Kill { signal } => {
                if self.exit.is_some() || self.pid <= 0 {
                    reply(&mut sock, serde_json::json!({"error": format!("container {} is not running", self.rec.id)}));
                    return;
                }
                let Ok(sig) = Signal::try_from(signal) else {
                    reply(&mut sock, serde_json::json!({"error": format!("invalid signal {signal}")}));
                    return;
                };
                if matches!(sig, Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT) {
                    self.state.manually_stopped = true;
                    self.save();
                }
                match nix::sys::signal::kill(Pid::from_raw(self.pid), sig) {
                    Ok(()) => reply(&mut sock, serde_json::json!({"ok": true})),
                    Err(e) => reply(&mut sock, serde_json::json!({"error": e.to_string()})),
                }
            }
            Request::Pause | Request::Unpause => {
                let pause = req == Request::Pause;
                let res = if self.exit.is_some() || self.pid <= 0 {
                    Err(format!("container {} is not running", self.rec.id))
                } else if pause && self.state.status == Status::Paused {
                    Err(format!("container {} is already paused", self.rec.id))
                } else if !pause && self.state.status != Status::Paused {
                    Err(format!("container {} is not paused", self.rec.id))
                } else if pause {
                    self.rt.pause(&self.rec.id).map_err(|e| e.to_string())
                } else {
                    self.rt.resume(&self.rec.id).map_err(|e| e.to_string())
                };
                match res {
                    Ok(()) => {
                        self.state.status = if pause { Status::Paused } else { Status::Running };
                        self.save();
                        reply(&mut sock, serde_json::json!({"ok": true}));
                    }
                    Err(e) => reply(&mut sock, serde_json::json!({"error": e})),
                }
            }
            Request::Health { after } => {
                self.health_waiters.push((sock, after));
                self.answer_health_waiters();
            }
            Request::Resize { h, w } => {
                let r = match &self.pty {
                    Some(p) => rustix::termios::tcsetwinsize(
                        p,
                        rustix::termios::Winsize { ws_row: h, ws_col: w, ws_xpixel: 0, ws_ypixel: 0 },
                    )
                    .map_err(|e| e.to_string()),
                    None => Err("the container has no tty".to_string()),
                };
                match r {
                    Ok(()) => reply(&mut sock, serde_json::json!({"ok": true})),
                    Err(e) => reply(&mut sock, serde_json::json!({"error": e})),
                }
            }
        }
    }

    fn is_check(&self, p: Pid) -> bool {
        self.check_run.as_ref().is_some_and(|r| r.child.id() as i32 == p.as_raw())
    }

    /// The check's process: the container's own, with the check's command.
    fn write_check_process(&self, c: &crate::health::Check) -> Result<()> {
        let bundle: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.paths.bundle().join("config.json")).ctx(|| "reading config.json".into())?,
        )
        .map_err(|e| Error::BadRequest(e.to_string()))?;
        let mut process = bundle.get("process").cloned().unwrap_or_else(|| serde_json::json!({}));
        process["args"] = serde_json::json!(c.argv);
        process["terminal"] = serde_json::json!(false);
        if let Some(p) = process.as_object_mut() {
            p.remove("oomScoreAdj");
        }
        if let Some(dir) = self.check_process.parent() {
            std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        let data = serde_json::to_vec(&process).map_err(|e| Error::BadRequest(e.to_string()))?;
        berth_runtime::state::write_atomic(&self.check_process, &data, 0o600)?;
        Ok(())
    }

    /// Starts a due check; kills one past its timeout.
    fn health_tick(&mut self) {
        let Some(c) = self.check.clone() else { return };
        if self.exit.is_some() {
            return;
        }
        if let Some(r) = &mut self.check_run {
            if r.overdue(c.timeout) {
                let _ = r.child.kill();
            }
            return;
        }
        if self.next_check.is_some_and(|t| Instant::now() >= t) {
            self.next_check = None;
            let exe = std::path::Path::new("/proc/self/exe");
            match crate::health::spawn(exe, &self.rt.root, &self.check_process, &self.rec.id) {
                Ok(r) => self.check_run = Some(r),
                Err(e) => {
                    let msg = format!("starting health check: {e}");
                    self.note(&msg);
                    self.next_check = Some(Instant::now() + c.interval);
                }
            }
        }
    }

    /// A check finished (`code` None: killed by its timeout).
    fn check_done(&mut self, code: Option<i32>) {
        let (Some(run), Some(c)) = (self.check_run.take(), self.check.clone()) else { return };
        let timed_out = code.is_none() || run.overdue(c.timeout);
        let result = run.result(if timed_out { None } else { code });
        let since = self.started.elapsed();
        let mut changed = None;
        if let Some(h) = &mut self.state.health {
            let before = h.status.clone();
            crate::health::record(h, result, &c, since);
            if h.status != before && h.status != "starting" {
                changed = Some(h.status.clone());
            }
        }
        if let Some(status) = &changed {
            self.state.health_changes += 1;
            self.health_changes.push_back((self.state.health_changes, status.clone()));
            if self.health_changes.len() > HEALTH_CHANGES_KEPT {
                self.health_changes.pop_front();
            }
        }
        self.save();
        if changed.is_some() {
            self.answer_health_waiters();
        }
        self.next_check = Some(Instant::now() + c.interval);
    }

    /// Records an exit; answers waiters; ends attach streams. With
    /// `release`, the monitor is done as well ([`Self::finish_for_removal`]),
    /// on record before the waiters hear of the exit.
    fn on_exit(&mut self, code: i32, release: bool) {
        let _ = self.log.flush_partial();
        if let Some(mut r) = self.check_run.take() {
            let _ = r.child.kill();
        }
        self.next_check = None;
        self.note(&format!("exited with {code}"));
        self.state.status = Status::Exited;
        self.state.exit_code = code;
        self.state.pid = 0;
        self.state.finished_at = berth_runtime::state::now_rfc3339();
        if release {
            self.finish_for_removal();
        } else {
            self.save();
            self.answer_waiters();
        }
        for c in self.clients.drain(..) {
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        self.stdin = None;
        self.pty = None;
        self.pending_stdin.clear();
        self.close_stdin = false;
    }

    /// Docker's restart policies.
    fn should_restart(&self, code: i32) -> bool {
        if self.state.manually_stopped {
            return false;
        }
        let policy = self.rec.host_config.restart_policy.as_ref();
        let name = policy.and_then(|p| p.name).map(|n| n.to_string()).unwrap_or_default();
        match name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                let max = policy.and_then(|p| p.maximum_retry_count).unwrap_or(0);
                code != 0 && (max <= 0 || i64::from(self.state.restart_count) < max)
            }
            _ => false,
        }
    }

    /// Tears down: runtime state, rootfs mount (when `unmount`), socket;
    /// records that no monitor watches any more.
    fn finish(&mut self, unmount: bool) {
        let _ = self.rt.delete(&self.rec.id, true);
        if unmount {
            let _ = nix::mount::umount2(&self.paths.rootfs(), nix::mount::MntFlags::MNT_DETACH);
        }
        self.finish_for_removal();
    }

    /// The end of [`Self::finish`] without the teardown, for a container the
    /// daemon removes (and releases) next: records that no monitor watches
    /// any more, removes the socket, answers waiters. Once only. The state
    /// is saved before the socket goes: a client that finds no socket reads
    /// the state instead, and must find the exit there.
    fn finish_for_removal(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        self.state.monitor_pid = 0;
        self.state.pid = 0;
        self.save();
        let _ = std::fs::remove_file(&self.paths.socket);
        self.answer_waiters();
        // Their connections close: the daemon's health watch ends.
        self.health_waiters.clear();
    }

    /// Answers the health waiters that have not seen every change.
    fn answer_health_waiters(&mut self) {
        let latest = self.state.health_changes;
        let (due, keep): (Vec<_>, Vec<_>) = self.health_waiters.drain(..).partition(|(_, after)| *after < latest);
        self.health_waiters = keep;
        for (mut w, after) in due {
            let changes: Vec<_> = self.health_changes.iter().filter(|(n, _)| *n > after).collect();
            let _ = w.write_all(json_line(&serde_json::json!({"Changes": changes})).as_bytes());
        }
    }

    /// Tells every waiter the recorded exit code.
    fn answer_waiters(&mut self) {
        let line = json_line(&serde_json::json!({"StatusCode": self.state.exit_code}));
        for mut w in self.waiters.drain(..) {
            let _ = w.write_all(line.as_bytes());
        }
    }
}

/// `v` as one JSON line, to go out in one write: `writeln!` on an unbuffered
/// socket sends every formatting piece separately (eight sends for
/// `{"StatusCode":0}`, each waking the reader).
fn json_line(v: &serde_json::Value) -> String {
    format!("{v}\n")
}

/// The request line a client opens with (at most 4 KiB), and not a byte
/// more: what follows (an attach's stdin) stays in the socket. When the
/// whole line has arrived, one peek finds its end and one read takes it;
/// otherwise it is read a byte at a time.
fn read_request_line(sock: &UnixStream) -> Vec<u8> {
    let mut peek = [0u8; 4096];
    if let Ok((n, _)) = rustix::net::recv(sock, &mut peek, rustix::net::RecvFlags::PEEK) {
        if let Some(end) = peek[..n].iter().position(|&b| b == b'\n') {
            let mut line = vec![0u8; end + 1];
            if (&*sock).read_exact(&mut line).is_ok() {
                line.pop();
                return line;
            }
            return Vec::new();
        }
    }
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 4096 {
        match (&*sock).read(&mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => line.push(b[0]),
            _ => break,
        }
    }
    line
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).ctx(|| "fcntl".into())?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).ctx(|| "fcntl".into())?;
    let _ = fd.as_raw_fd();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_resets() {
        let mut b = next_backoff(Duration::ZERO, Duration::ZERO);
        assert_eq!(b, Duration::from_millis(100));
        b = next_backoff(b, Duration::from_secs(1));
        assert_eq!(b, Duration::from_millis(200));
        assert_eq!(next_backoff(Duration::from_secs(50), Duration::ZERO), Duration::from_secs(60));
        assert_eq!(next_backoff(b, Duration::from_secs(11)), Duration::from_millis(100));
    }

    #[test]
    fn requests_are_json_lines() {
        let r: Request = serde_json::from_str(r#"{"op":"stop","signal":15,"timeout":10}"#).expect("parse");
        assert_eq!(r, Request::Stop { signal: 15, timeout: 10 });
        assert_eq!(start_failure_code("exec \"x\": executable file not found in $PATH"), 127);
        assert_eq!(start_failure_code("permission denied"), 126);
    }
}
