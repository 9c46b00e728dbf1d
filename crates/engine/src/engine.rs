//! The engine: containers from images, with Docker's semantics.
//!
//! `create` records what was asked (the image's config merged in, as
//! Docker does) and prepares the container's directory; `start` mounts the
//! rootfs (overlay of the image's snapshots + the container's upper dir),
//! writes the OCI bundle and spawns the container's monitor, which runs it
//! from then on. Everything after start goes through the monitor's socket,
//! so it works the same for a daemon restarted after `kill -9`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use berth_image::store::ImageStore;
use berth_image::Digest;
use bollard_stubs::models::{ContainerConfig, HostConfig};

use crate::db::ContainerDb;
use crate::error::{Error, IoContext, Result};
use crate::monitor::{self, Ready, Request};
use crate::paths::{ContainerPaths, Paths};
use crate::record::{ContainerRecord, RunState, Status};
use crate::volumes::{Volume, Volumes};
use crate::{client, mounts, spec, user};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The two roots.
    pub paths: Paths,
    /// The berth binary the monitors run from (`berth monitor`).
    pub exe: PathBuf,
}

/// The engine over one `--root`/`--run-root` pair.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    images: ImageStore,
    db: ContainerDb,
    volumes: Volumes,
    /// Serializes operations that change a container's lifecycle (start,
    /// remove), so two requests cannot mount or spawn twice.
    lifecycle: Mutex<()>,
    /// Attach requests waiting for a container to start, by id.
    pending_attach: Mutex<HashMap<String, usize>>,
    /// `cfg.exe` through a detached read-only overlay view, made once:
    /// monitors and `runtime exec` run from it, so they start sealed and
    /// skip their own re-exec (see `berth_runtime::sys::sealed_exe`).
    sealed_exe: Option<std::os::fd::OwnedFd>,
    /// Monitor sockets bound ahead of a start, for attaches that wait for
    /// it: they connect at once instead of polling for the monitor, which
    /// inherits the listener (see [`Engine::attach_pending`]).
    prebound: Mutex<HashMap<String, std::os::unix::net::UnixListener>>,
    /// The monitor started ahead for the next start (from the first
    /// start on: a daemon that never starts a container keeps none).
    zygotes: std::sync::Arc<crate::zygote::Pool>,
}

/// A container as listed: its record and its state.
#[derive(Debug, Clone)]
pub struct Container {
    /// What was asked.
    pub record: ContainerRecord,
    /// What happened.
    pub state: RunState,
}

/// A new 64-hex random id (containers, exec instances, anonymous volumes).
pub fn random_id() -> Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).ctx(|| "reading /dev/urandom".into())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "eager", "fervent", "gifted", "happy", "jolly", "keen", "lucid", "modest", "nifty",
    "pensive", "quirky", "serene", "sharp", "stoic", "tender", "vibrant", "wizardly", "zealous", "bold", "crisp",
    "dazzling", "elated", "focused", "gallant", "hopeful", "intrepid", "kind",
];
const NOUNS: &[&str] = &[
    "turing",
    "hopper",
    "lovelace",
    "knuth",
    "ritchie",
    "thompson",
    "torvalds",
    "liskov",
    "dijkstra",
    "hamilton",
    "shannon",
    "babbage",
    "noether",
    "curie",
    "darwin",
    "euler",
    "gauss",
    "kepler",
    "newton",
    "pascal",
    "tesla",
    "lamport",
    "hoare",
    "backus",
    "mccarthy",
    "perlman",
    "wozniak",
    "cerf",
    "kahn",
    "engelbart",
];

/// Docker's name rule.
fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Merges the image's config under the user's, as Docker's create does.
pub fn merge_config(user: &mut ContainerConfig, image: &ContainerConfig) {
    if user.user.as_deref().unwrap_or("").is_empty() {
        user.user = image.user.clone();
    }
    if let Some(img_ports) = &image.exposed_ports {
        let ports = user.exposed_ports.get_or_insert_with(Vec::new);
        for p in img_ports {
            if !ports.contains(p) {
                ports.push(p.clone());
            }
        }
    }
    let mut env: Vec<String> = image.env.clone().unwrap_or_default();
    for e in user.env.iter().flatten() {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    user.env = Some(env);
    if let Some(img_labels) = &image.labels {
        let labels = user.labels.get_or_insert_with(HashMap::new);
        for (k, v) in img_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    match &user.entrypoint {
        None => {
            user.entrypoint = image.entrypoint.clone();
            if user.cmd.as_ref().is_none_or(|c| c.is_empty()) {
                user.cmd = image.cmd.clone();
            }
        }
        // `--entrypoint ""` resets it.
        Some(e) if e.len() == 1 && e[0].is_empty() => user.entrypoint = Some(Vec::new()),
        Some(_) => {}
    }
    if user.working_dir.as_deref().unwrap_or("").is_empty() {
        user.working_dir = image.working_dir.clone();
    }
    if let Some(v) = &image.volumes {
        let vols = user.volumes.get_or_insert_with(Vec::new);
        for p in v {
            if !vols.contains(p) {
                vols.push(p.clone());
            }
        }
    }
    if user.stop_signal.as_deref().unwrap_or("").is_empty() {
        user.stop_signal = image.stop_signal.clone();
    }
    if user.healthcheck.is_none() {
        user.healthcheck = image.healthcheck.clone();
    }
}

/// Parses a signal given by name (`SIGTERM`, `TERM`, `term`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| Error::BadRequest(format!("Invalid signal: {s}")));
    }
    let up = t.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| Error::BadRequest(format!("Invalid signal: {s}")))
}

/// Whether `p` is a mount point (its device differs from its parent's).
pub(crate) fn is_mountpoint(p: &Path) -> bool {
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

impl Engine {
    /// Opens the engine (creating its directories and databases).
    pub fn open(cfg: EngineConfig) -> Result<Engine> {
        for d in [cfg.paths.containers(), cfg.paths.run_root.join("mon"), cfg.paths.runtime_root()] {
            std::fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
        }
        let images = ImageStore::open(&cfg.paths.root)?;
        let db = ContainerDb::open(&cfg.paths.root)?;
        let volumes = Volumes::open(&cfg.paths.root)?;
        let sealed_exe = berth_runtime::sys::sealed_exe::sealed_view(&cfg.exe).ok();
        Ok(Engine {
            cfg,
            images,
            db,
            volumes,
            lifecycle: Mutex::new(()),
            pending_attach: Mutex::new(HashMap::new()),
            sealed_exe,
            prebound: Mutex::new(HashMap::new()),
            zygotes: Default::default(),
        })
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// A command that runs the berth binary (`berth monitor`, `berth
    /// runtime exec`): through the sealed view when there is one (argv[0]
    /// is still the binary's path), else the binary itself, which then
    /// re-executes sealed on its own.
    pub fn berth_command(&self) -> Command {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        match &self.sealed_exe {
            Some(fd) => {
                // The child resolves this before exec closes the
                // (close-on-exec) fd: the program is the view's file.
                let mut c = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                c.arg0(&self.cfg.exe);
                c
            }
            None => Command::new(&self.cfg.exe),
        }
    }

    /// The engine's roots.
    pub fn paths(&self) -> &Paths {
        &self.cfg.paths
    }

    /// A container's files.
    pub fn container_paths(&self, id: &str) -> ContainerPaths {
        self.cfg.paths.container(id)
    }

    /// Every container.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out: Vec<Container> = self
            .db
            .list()?
            .into_iter()
            .map(|record| {
                let state = self.current_state(&record.id);
                Container { record, state }
            })
            .collect();
        out.sort_by(|a, b| b.record.created.cmp(&a.record.created));
        Ok(out)
    }

    /// A container's state as it is now: the monitor's record, corrected
    /// when the monitor died without saying so.
    pub fn current_state(&self, id: &str) -> RunState {
        let paths = self.container_paths(id);
        let mut st = monitor::load_state(&paths);
        let monitor_alive = st.monitor_pid > 0 && Path::new(&format!("/proc/{}", st.monitor_pid)).exists();
        if !monitor_alive && matches!(st.status, Status::Running | Status::Restarting | Status::Paused) {
            // The monitor is gone: was the container's init still alive, it
            // would be unsupervised. Docker calls such a container dead.
            st.status = if st.pid > 0 && Path::new(&format!("/proc/{}", st.pid)).exists() {
                Status::Dead
            } else {
                Status::Exited
            };
            st.pid = 0;
        }
        st
    }

    /// Finds a container by full id, name (with or without `/`) or a
    /// unique id prefix.
    pub fn resolve(&self, name: &str) -> Result<Container> {
        let n = name.strip_prefix('/').unwrap_or(name);
        // Docker's order: a full id, a name, a unique id prefix; each one
        // index lookup.
        let found = |id: &str| -> Result<Option<Container>> {
            Ok(self.db.get(id)?.map(|record| {
                let state = self.current_state(&record.id);
                Container { record, state }
            }))
        };
        if n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Some(c) = found(n)? {
                return Ok(c);
            }
        }
        if let Some(id) = self.db.id_by_name(n)? {
            if let Some(c) = found(&id)? {
                return Ok(c);
            }
        }
        let hits = if n.is_empty() { Vec::new() } else { self.db.ids_with_prefix(n, 2)? };
        match hits.as_slice() {
            [one] => found(one)?.ok_or_else(|| Error::NoSuchContainer(name.to_string())),
            [] => Err(Error::NoSuchContainer(name.to_string())),
            _ => Err(Error::BadRequest(format!("multiple IDs found with provided prefix: {name}"))),
        }
    }

    /// The image's container config (`config` of its image config).
    pub fn image_config(&self, image_id: &Digest) -> Result<ContainerConfig> {
        let data = self.images.content().read(image_id)?;
        let v: serde_json::Value =
            serde_json::from_slice(&data).map_err(|e| Error::BadRequest(format!("image config {image_id}: {e}")))?;
        Ok(v.get("config").cloned().and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default())
    }

    /// `docker create`: records the container and prepares its files.
    pub fn create(&self, name: Option<&str>, mut config: ContainerConfig, host: HostConfig) -> Result<ContainerRecord> {
        let image_name = config
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Error::BadRequest("config.Image is required".into()))?;
        let image = self.images.resolve(&image_name).map_err(|e| match e {
            berth_image::Error::ImageNotFound(_) => Error::NoSuchImage(image_name.clone()),
            other => Error::Image(other),
        })?;
        merge_config(&mut config, &self.image_config(&image.id)?);
        if spec::argv(&config).is_empty() {
            return Err(Error::BadRequest("No command specified".into()));
        }
        if let Some(p) = &host.restart_policy {
            let n = p.name.map(|n| n.to_string()).unwrap_or_default();
            if !matches!(n.as_str(), "" | "no" | "always" | "unless-stopped" | "on-failure") {
                return Err(Error::BadRequest(format!("invalid restart policy: {n}")));
            }
            if host.auto_remove.unwrap_or(false) && !matches!(n.as_str(), "" | "no") {
                return Err(Error::BadRequest("can't create 'AutoRemove' container with restart policy".into()));
            }
        }
        let publishes =
            host.port_bindings.as_ref().is_some_and(|p| p.values().any(|b| b.as_ref().is_some_and(|v| !v.is_empty())))
                || (host.publish_all_ports.unwrap_or(false)
                    && config.exposed_ports.as_ref().is_some_and(|e| !e.is_empty()));
        if publishes {
            return Err(Error::BadRequest(
                "publishing ports (-p/-P) needs bridge networking, which berth does not have yet; use --network host"
                    .into(),
            ));
        }
        let id = random_id()?;
        let name = match name.map(|n| n.strip_prefix('/').unwrap_or(n)).filter(|n| !n.is_empty()) {
            Some(n) if valid_name(n) => n.to_string(),
            Some(n) => {
                return Err(Error::BadRequest(format!(
                    "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )))
            }
            None => {
                let b = id.as_bytes();
                let pick = |i: usize, n: usize| usize::from(b[i]) * 7 % n;
                format!("{}_{}", ADJECTIVES[pick(0, ADJECTIVES.len())], NOUNS[pick(1, NOUNS.len())]) + &id[..4]
            }
        };
        let paths = self.container_paths(&id);
        let mut record = ContainerRecord {
            id: id.clone(),
            name,
            created: berth_runtime::state::now_rfc3339(),
            image_name,
            image_id: image.id.to_string(),
            config,
            host_config: host,
            log_path: paths.log().to_string_lossy().into_owned(),
            layers: image.layers.iter().map(|l| l.chain_id.to_string()).collect(),
            anon_volumes: HashMap::new(),
        };
        for target in mounts::anonymous_targets(&record) {
            record.anon_volumes.insert(target, random_id()?);
        }
        for m in record.host_config.mounts.iter().flatten() {
            let is_volume = m.typ.map(|t| t.to_string()).as_deref() == Some("volume");
            if let (true, Some(t), None | Some("")) = (is_volume, m.target.clone(), m.source.as_deref()) {
                record.anon_volumes.insert(t, random_id()?);
            }
        }
        // Named volumes are created on demand, anonymous ones now; the
        // mount list is checked before anything is stored.
        for name in mounts::volume_names(&record) {
            let anonymous = record.anon_volumes.values().any(|v| *v == name);
            self.volumes.create(&name, HashMap::new(), anonymous)?;
        }
        mounts::mount_points(&record, &self.volumes)?;
        let result = (|| {
            for d in [paths.rootfs(), paths.upper(), paths.work()] {
                std::fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
            }
            self.write_etc_files(&record, &paths)?;
            let json = serde_json::to_vec(&record).map_err(|e| Error::BadRequest(e.to_string()))?;
            berth_runtime::state::write_atomic(&paths.config(), &json, 0o600)?;
            monitor::save_state(&paths, &RunState::created())?;
            if record.host_config.auto_remove.unwrap_or(false) {
                // Off `docker run`'s path: durable before the start (below).
                self.db.insert_lazily(&record)
            } else {
                self.db.insert(&record)
            }
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&paths.dir);
        }
        result.map(|()| record)
    }

    fn write_etc_files(&self, rec: &ContainerRecord, paths: &ContainerPaths) -> Result<()> {
        let host = spec::hostname(&rec.id, &rec.config);
        let mut hosts = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        );
        for h in rec.host_config.extra_hosts.iter().flatten() {
            if let Some((name, ip)) = h.split_once(':').or_else(|| h.split_once('=')) {
                hosts.push_str(&format!("{ip}\t{name}\n"));
            }
        }
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        if spec::host_network(&rec.host_config) {
            // The host's network: its names too (as Docker).
            hosts = std::fs::read_to_string("/etc/hosts").unwrap_or(hosts);
        }
        for (name, body) in [("hosts", hosts), ("hostname", format!("{host}\n")), ("resolv.conf", resolv)] {
            berth_runtime::state::write_atomic(&paths.etc_file(name), body.as_bytes(), 0o644)?;
        }
        Ok(())
    }

    /// `docker start`: Err(Conflict) when already running.
    pub fn start(&self, id: &str) -> Result<i32> {
        let _guard = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.resolve(id)?;
        let rec = c.record;
        if matches!(c.state.status, Status::Running | Status::Restarting | Status::Paused) {
            return Err(Error::Conflict(format!("container {} is already running", rec.id)));
        }
        let paths = self.container_paths(&rec.id);
        let rootfs = paths.rootfs();
        if !is_mountpoint(&rootfs) {
            let lowers: Vec<Digest> = rec.layers.iter().map(|l| l.parse()).collect::<berth_image::Result<_>>()?;
            self.images.snapshots().mount_overlay(&lowers, Some(&paths.upper()), Some(&paths.work()), &rootfs)?;
        }
        let unmount = || {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        };
        let prepared = (|| {
            let group_add = rec.host_config.group_add.clone().unwrap_or_default();
            let user = user::resolve(&rootfs, rec.config.user.as_deref().unwrap_or(""), &group_add)?;
            if let Some(wd) = rec.config.working_dir.as_deref().filter(|w| !w.is_empty()) {
                let root =
                    berth_runtime::inroot::RootDir::open(&rootfs).ctx(|| format!("opening {}", rootfs.display()))?;
                root.mkdir_all(Path::new(wd)).ctx(|| format!("creating working directory {wd}"))?;
            }
            let points = mounts::mount_points(&rec, &self.volumes)?;
            for m in &points {
                if m.typ == "bind" && !Path::new(&m.source).exists() {
                    // Docker creates a missing `-v` source as a directory.
                    std::fs::create_dir_all(&m.source).ctx(|| format!("creating bind source {}", m.source))?;
                }
                if m.typ == "volume" && m.copy_up {
                    crate::volumes::copy_up(&rootfs, &m.destination, Path::new(&m.source))?;
                }
            }
            let oci = spec::build(&spec::SpecInput {
                id: &rec.id,
                config: &rec.config,
                host: &rec.host_config,
                paths: &paths,
                user: &user,
                mounts: &points,
            })?;
            let json = serde_json::to_vec(&oci).map_err(|e| Error::BadRequest(e.to_string()))?;
            berth_runtime::state::write_atomic(&paths.bundle().join("config.json"), &json, 0o600)?;
            // A fresh run: the user's earlier stop no longer holds.
            let mut st = monitor::load_state(&paths);
            st.manually_stopped = false;
            st.error.clear();
            st.start_attempts += 1;
            monitor::save_state(&paths, &st)?;
            // A container runs only once its record is durable (a --rm
            // container's create commits lazily): a crash must not leave a
            // container running that no restarted daemon knows of.
            self.db.wait_durable()
        })();
        if let Err(e) = prepared {
            unmount();
            return Err(e);
        }
        match self.spawn_monitor(&rec.id) {
            Ok(pid) => Ok(pid),
            Err(e) => {
                unmount();
                Err(e)
            }
        }
    }

    /// Notes that a client will attach to `id` once it starts (the monitor
    /// then waits for it before starting the container); undo with
    /// [`Engine::attach_done`].
    pub fn attach_pending(&self, id: &str) {
        *self.pending_attach.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_string()).or_default() += 1;
        self.prebind(id);
    }

    /// Binds the monitor socket of `id` ahead of its start, so that a
    /// pending attach connects at once; the monitor then inherits the
    /// listener and accepts what queued there before it starts the
    /// container. Skipped (the monitor binds it itself, as without an
    /// attach) while a start or removal runs, or while an earlier monitor
    /// of the container is still alive and owns the socket path.
    fn prebind(&self, id: &str) {
        let Ok(_guard) = self.lifecycle.try_lock() else { return };
        let mut prebound = self.prebound.lock().unwrap_or_else(|e| e.into_inner());
        let paths = self.container_paths(id);
        if prebound.contains_key(id) || !paths.dir.is_dir() {
            return;
        }
        let st = monitor::load_state(&paths);
        if st.monitor_pid > 0 && Path::new(&format!("/proc/{}", st.monitor_pid)).exists() {
            return;
        }
        let _ = std::fs::remove_file(&paths.socket);
        let Ok(l) = std::os::unix::net::UnixListener::bind(&paths.socket) else { return };
        if std::fs::set_permissions(&paths.socket, std::os::unix::fs::PermissionsExt::from_mode(0o600)).is_err() {
            let _ = std::fs::remove_file(&paths.socket);
            return;
        }
        prebound.insert(id.to_string(), l);
    }

    /// The pending attach of [`Engine::attach_pending`] connected or gave up.
    pub fn attach_done(&self, id: &str) {
        let mut p = self.pending_attach.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.remove(id);
            }
        }
    }

    /// `berth monitor --root R --run-root RR`, for the caller to finish.
    fn monitor_command(&self) -> Command {
        let p = &self.cfg.paths;
        let mut cmd = self.berth_command();
        cmd.arg("monitor").arg("--root").arg(&p.root).arg("--run-root").arg(&p.run_root);
        cmd
    }

    /// `berth monitor … --zygote ROOM` (see [`crate::zygote`]).
    fn zygote_command(&self) -> Command {
        let mut cmd = self.monitor_command();
        cmd.arg("--zygote").arg(crate::zygote::CMDLINE_ROOM);
        cmd
    }

    /// Starts the monitor of `id` (the idle zygote, else a new process)
    /// and reads its answer.
    fn spawn_monitor(&self, id: &str) -> Result<i32> {
        let waiting = self.pending_attach.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied().unwrap_or(0);
        let prebound = self.prebound.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let activation = crate::zygote::Activation { id: id.to_string(), wait_attach: waiting };
        let from_zygote = self
            .zygotes
            .take()
            .and_then(|z| z.activate(&activation, prebound.as_ref().map(std::os::fd::AsFd::as_fd)).ok());
        let (mut child, out) = match from_zygote {
            // The zygote has its own copy of the listener; ours closes.
            Some(pair) => pair,
            None => {
                let mut cmd = self.monitor_command();
                cmd.arg("--wait-attach").arg(waiting.to_string());
                // The prebound listener goes in as the monitor's stdin: with no
                // descriptor to move in the child, std spawns it with posix_spawn
                // (vfork) instead of forking this multi-threaded daemon's whole
                // address space. Ours closes with `cmd`, right after the spawn.
                let stdin = match prebound {
                    Some(l) => {
                        cmd.arg("--listen-fd").arg("0");
                        Stdio::from(std::os::fd::OwnedFd::from(l))
                    }
                    None => Stdio::null(),
                };
                let mut child = cmd
                    .arg(id)
                    .stdin(stdin)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .ctx(|| format!("spawning the monitor ({})", self.cfg.exe.display()))?;
                let out = child.stdout.take();
                (child, out.ok_or_else(|| Error::Start("the monitor has no stdout".into()))?)
            }
        };
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        // The monitor stays; reap it in the background when it exits, so
        // it never lingers as our zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        // The next start's monitor, now that this container runs.
        self.zygotes.refill(self.zygote_command());
        let ready: Ready = serde_json::from_str(line.trim()).map_err(|_| {
            Error::Start(format!(
                "the monitor exited without an answer (see {})",
                self.container_paths(id).monitor_log().display()
            ))
        })?;
        if ready.ok {
            Ok(ready.pid)
        } else {
            Err(Error::Start(ready.error))
        }
    }

    /// `docker stop`: the stop signal, then SIGKILL after `timeout`
    /// seconds (None: the container's StopTimeout, else 10). Returns false
    /// if it was not running.
    pub fn stop(&self, id: &str, signal: Option<&str>, timeout: Option<i64>) -> Result<bool> {
        let c = self.resolve(id)?;
        let paths = self.container_paths(&c.record.id);
        let sig = match signal.or(c.record.config.stop_signal.as_deref()).filter(|s| !s.is_empty()) {
            Some(s) => parse_signal(s)?,
            None => libc::SIGTERM,
        };
        let timeout = timeout.or(c.record.config.stop_timeout).unwrap_or(10);
        if !matches!(c.state.status, Status::Running | Status::Restarting | Status::Paused) {
            return Ok(false);
        }
        // Wait first, so the exit cannot slip by between the two requests.
        let waiter = client::send(&paths, &Request::Wait);
        if client::call(&paths, &Request::Stop { signal: sig, timeout }, Some(Duration::from_secs(10)))?.is_none() {
            return Ok(false);
        }
        if let Some(w) = waiter {
            let mut line = String::new();
            let _ = BufReader::new(w).read_line(&mut line);
        }
        self.wait_monitor_gone(&paths);
        Ok(true)
    }

    /// Waits (briefly) for the monitor to finish its teardown.
    fn wait_monitor_gone(&self, paths: &ContainerPaths) {
        for _ in 0..200 {
            let st = monitor::load_state(paths);
            if st.monitor_pid == 0 || !Path::new(&format!("/proc/{}", st.monitor_pid)).exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `docker kill`.
    pub fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let c = self.resolve(id)?;
        let sig = parse_signal(signal)?;
        let paths = self.container_paths(&c.record.id);
        if c.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "Cannot kill container: {}: container {} is not running",
                id, c.record.id
            )));
        }
        match client::call(&paths, &Request::Kill { signal: sig }, Some(Duration::from_secs(10)))? {
            Some(_) => Ok(()),
            None => {
                Err(Error::Conflict(format!("Cannot kill container: {}: container {} is not running", id, c.record.id)))
            }
        }
    }

    /// `docker pause` / `docker unpause` (cgroup freezer, through the monitor).
    pub fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let c = self.resolve(id)?;
        let paths = self.container_paths(&c.record.id);
        let req = if pause { Request::Pause } else { Request::Unpause };
        match client::call(&paths, &req, Some(Duration::from_secs(10)))? {
            Some(_) => Ok(()),
            None => Err(Error::Conflict(format!("container {} is not running", c.record.id))),
        }
    }

    /// `docker rename`.
    pub fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        let _guard = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.resolve(id)?;
        let n = new_name.strip_prefix('/').unwrap_or(new_name);
        if !valid_name(n) {
            return Err(Error::BadRequest(format!(
                "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        // The database refuses a name in use (before the record file is
        // written: the check runs here, the commit below repeats it).
        if let Some(other) = self.db.id_by_name(n)?.filter(|other| *other != c.record.id) {
            return Err(ContainerDb::name_conflict(n, &other));
        }
        let mut rec = c.record;
        rec.name = n.to_string();
        let paths = self.container_paths(&rec.id);
        let json = serde_json::to_vec(&rec).map_err(|e| Error::BadRequest(e.to_string()))?;
        berth_runtime::state::write_atomic(&paths.config(), &json, 0o600)?;
        self.db.update(&rec)
    }

    /// Host pids of the container's processes (`docker top`).
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let c = self.resolve(id)?;
        if !matches!(c.state.status, Status::Running | Status::Paused) {
            return Err(Error::Conflict(format!("container {} is not running", c.record.id)));
        }
        let rt = berth_runtime::container::Runtime { root: self.cfg.paths.runtime_root(), systemd_cgroup: false };
        Ok(rt.ps(&c.record.id)?)
    }

    /// `docker wait`: blocks until the container's next exit (at once when
    /// it is not running) and returns the exit code.
    pub fn wait(&self, id: &str) -> Result<i32> {
        let c = self.resolve(id)?;
        let paths = self.container_paths(&c.record.id);
        if matches!(c.state.status, Status::Running | Status::Restarting | Status::Paused) {
            if let Some(v) = client::call(&paths, &Request::Wait, None)? {
                return Ok(v.get("StatusCode").and_then(|c| c.as_i64()).unwrap_or(0) as i32);
            }
        }
        Ok(self.current_state(&c.record.id).exit_code)
    }

    /// `docker rm`: refuses a running container unless `force` (which
    /// kills it); with `volumes`, also its anonymous volumes.
    pub fn remove_with_volumes(&self, id: &str, force: bool, volumes: bool) -> Result<()> {
        let c = self.resolve(id)?;
        self.remove(&c.record.id, force)?;
        if volumes {
            for name in c.record.anon_volumes.values() {
                if self.volume_users(name)?.is_empty() {
                    let _ = self.volumes.remove(name);
                }
            }
        }
        Ok(())
    }

    /// `docker rm` without `-v`.
    pub fn remove(&self, id: &str, force: bool) -> Result<()> {
        self.remove_inner(id, force, false)
    }

    /// `--rm` after the container exited: the container is gone (from the
    /// database, listings and name lookups) when this returns, but its
    /// rootfs unmount, cgroups and directory are released by a background
    /// thread. Those are ~6 ms of a short container's life (unmounting
    /// overlayfs syncs the upper filesystem) that `docker run --rm` would
    /// otherwise wait for. A daemon that dies before the thread is done
    /// finishes the job at its next start ([`Self::recover`]).
    pub fn remove_exited_auto(&self, id: &str) -> Result<()> {
        self.remove_inner(id, true, true)
    }

    fn remove_inner(&self, id: &str, force: bool, defer_cleanup: bool) -> Result<()> {
        let c = self.resolve(id)?;
        let rid = c.record.id.clone();
        let paths = self.container_paths(&rid);
        let running = matches!(c.state.status, Status::Running | Status::Restarting | Status::Paused);
        if running && !force {
            return Err(Error::Conflict(format!(
                "cannot remove container \"/{}\": container is {}: stop the container before removing or force remove",
                c.record.name,
                c.state.status.as_str()
            )));
        }
        if running {
            self.stop(&rid, Some("SIGKILL"), Some(0))?;
        }
        // An exited container's monitor may still be tearing down (runtime
        // state, rootfs, last state write): let it finish first.
        self.wait_monitor_gone(&paths);
        let _guard = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        // A dead container's init runs unsupervised: end it now, whatever
        // else is deferred.
        if c.state.status == Status::Dead {
            let _ = self.runtime().delete(&rid, true);
        }
        self.prebound.lock().unwrap_or_else(|e| e.into_inner()).remove(&rid);
        let _ = std::fs::remove_file(&paths.socket);
        if !defer_cleanup {
            self.db.remove(&rid)?;
            return release_container(&self.runtime(), &rid, &paths);
        }
        // Gone for every reader now, and released in the background. The
        // removal is not waited for on disk (it becomes durable with the
        // next durable commit, such as the next create's): a crash before
        // that brings back the record of an exited --rm container, with or
        // without its directory, and recover() removes it again. An fsync
        // here would compete with the next container's start for the disk.
        self.db.remove_lazily(&rid)?;
        let rt = self.runtime();
        let spawned = std::thread::Builder::new().name("rm-cleanup".into()).spawn(move || {
            let _ = release_container(&rt, &rid, &paths);
        });
        if spawned.is_err() {
            return release_container(&self.runtime(), &c.record.id, &self.container_paths(&c.record.id));
        }
        Ok(())
    }

    /// The runtime that runs this engine's containers (its state root).
    fn runtime(&self) -> berth_runtime::container::Runtime {
        berth_runtime::container::Runtime { root: self.cfg.paths.runtime_root(), systemd_cgroup: false }
    }

    /// Containers using the volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .db
            .list()?
            .into_iter()
            .filter(|r| mounts::volume_names(r).iter().any(|v| v == name))
            .map(|r| r.id)
            .collect())
    }

    /// `docker volume create`.
    pub fn volume_create(&self, name: Option<&str>, labels: HashMap<String, String>) -> Result<Volume> {
        match name.filter(|n| !n.is_empty()) {
            Some(n) => self.volumes.create(n, labels, false),
            None => self.volumes.create(&random_id()?, labels, true),
        }
    }

    /// `docker volume ls`.
    pub fn volume_list(&self) -> Result<Vec<Volume>> {
        self.volumes.list()
    }

    /// `docker volume inspect`.
    pub fn volume_get(&self, name: &str) -> Result<Volume> {
        self.volumes.get(name)?.ok_or_else(|| Error::NoSuchVolume(name.to_string()))
    }

    /// `docker volume rm`: refused while a container uses it (even with
    /// `force`, as Docker: force only ignores a missing volume).
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        if self.volumes.get(name)?.is_none() {
            return if force { Ok(()) } else { Err(Error::NoSuchVolume(name.to_string())) };
        }
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(Error::Conflict(format!("remove {name}: volume is in use - [{}]", users.join(", "))));
        }
        self.volumes.remove(name)
    }

    /// `docker volume prune`: removes unused anonymous volumes (all unused
    /// ones with `all`); returns the names removed.
    pub fn volume_prune(&self, all: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for v in self.volumes.list()? {
            if (all || v.anonymous) && self.volume_users(&v.name)?.is_empty() {
                self.volumes.remove(&v.name)?;
                out.push(v.name);
            }
        }
        Ok(out)
    }

    /// A container's mounts (for inspect).
    pub fn mount_points(&self, rec: &ContainerRecord) -> Vec<mounts::MountPoint> {
        mounts::mount_points(rec, &self.volumes).unwrap_or_default()
    }

    /// `docker commit`: the container's changes become a new image on top
    /// of its image; returns the image id. A running container is paused
    /// meanwhile (as Docker's default `--pause`).
    pub fn commit(
        &self,
        id: &str,
        reference: Option<&str>,
        changes: &[String],
        comment: &str,
        author: &str,
        pause: bool,
    ) -> Result<String> {
        let c = self.resolve(id)?;
        let parent =
            self.images.resolve(&c.record.image_id).map_err(|_| Error::NoSuchImage(c.record.image_id.clone()))?;
        let tags = match reference {
            Some(r) => vec![berth_image::registry::ImageRef::parse(r)?.to_string()],
            None => Vec::new(),
        };
        let paused = pause && c.state.status == Status::Running && self.pause(&c.record.id, true).is_ok();
        let mut config = serde_json::to_value(&c.record.config).map_err(|e| Error::BadRequest(e.to_string()))?;
        if let Some(o) = config.as_object_mut() {
            // Per-container settings are not the image's.
            for k in [
                "Hostname",
                "Domainname",
                "AttachStdin",
                "AttachStdout",
                "AttachStderr",
                "Tty",
                "OpenStdin",
                "StdinOnce",
                "Image",
            ] {
                o.remove(k);
            }
        }
        let opts = berth_image::commit::CommitOptions {
            container_config: config,
            changes: changes.to_vec(),
            comment: comment.to_string(),
            author: author.to_string(),
            created_by: spec::argv(&c.record.config).join(" "),
            container: c.record.id.clone(),
        };
        let res = self.images.commit_upper(&parent, &self.container_paths(&c.record.id).upper(), &opts, &tags);
        if paused {
            let _ = self.pause(&c.record.id, false);
        }
        Ok(res?.id.to_string())
    }

    /// Whether an image is used by any container (for `rmi`).
    pub fn image_in_use(&self, image_id: &str) -> Result<Vec<String>> {
        Ok(self.db.list()?.into_iter().filter(|r| r.image_id == image_id).map(|r| r.id).collect())
    }

    /// `docker image prune`: removes the images no container uses that
    /// are dangling (neither a tag nor a repository digest), or with `all`
    /// every unused one; then collects their data. Returns what went
    /// (untagged names, deleted ids) and the bytes freed.
    pub fn prune_images(&self, all: bool) -> Result<(Vec<berth_image::docker_view::Removed>, u64)> {
        use berth_image::docker_view::{familiar, Removed};
        let used: std::collections::HashSet<String> = self.db.list()?.into_iter().map(|r| r.image_id).collect();
        let mut out = Vec::new();
        for (rec, tags) in self.images.db().list()? {
            let id = rec.id.to_string();
            let dangling = tags.is_empty() && rec.repo_digests.is_empty();
            if used.contains(&id) || !(all || dangling) {
                continue;
            }
            out.extend(tags.iter().map(|t| Removed::Untagged(familiar(t))));
            self.images.db().delete(&rec.id)?;
            out.push(Removed::Deleted(id));
        }
        let report = self.images.gc()?;
        Ok((out, report.bytes))
    }

    /// After a daemon (re)start: containers whose monitor died while the
    /// container was running are marked; AutoRemove containers that exited
    /// while no daemon watched are removed; what a removal left behind (a
    /// deferred cleanup cut short by the daemon's death) is released.
    pub fn recover(&self) -> Result<()> {
        let known: std::collections::HashSet<String> = self.db.list()?.into_iter().map(|r| r.id).collect();
        if let Ok(dirs) = std::fs::read_dir(self.cfg.paths.containers()) {
            for d in dirs.flatten() {
                let id = d.file_name().to_string_lossy().into_owned();
                // Only container ids (64 hex digits); anything else is not ours to remove.
                let is_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
                if is_id && !known.contains(&id) && d.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = release_container(&self.runtime(), &id, &self.container_paths(&id));
                }
            }
        }
        for c in self.list()? {
            let paths = self.container_paths(&c.record.id);
            let auto_remove = c.record.host_config.auto_remove.unwrap_or(false);
            if auto_remove && !paths.dir.exists() {
                // A --rm container released before a crash undid the
                // removal of its record (see `remove`): finish it.
                self.db.remove(&c.record.id)?;
                continue;
            }
            let saved = monitor::load_state(&paths);
            if saved.status != c.state.status {
                let mut st = saved;
                st.status = c.state.status;
                st.pid = 0;
                st.monitor_pid = 0;
                monitor::save_state(&paths, &st)?;
            }
            let exited = matches!(c.state.status, Status::Exited) && c.state.started_at != crate::record::ZERO_TIME;
            if exited && auto_remove {
                let _ = self.remove(&c.record.id, true);
            }
        }
        Ok(())
    }
}

/// Releases what a removed container held: its runtime state and cgroups
/// (killing anything left in them), its rootfs mount and its directory.
/// A monitor that outlived its wait may still drop a file in; one retry
/// covers that race.
fn release_container(rt: &berth_runtime::container::Runtime, id: &str, paths: &ContainerPaths) -> Result<()> {
    let _ = rt.delete(id, true);
    let _ = nix::mount::umount2(&paths.rootfs(), nix::mount::MntFlags::MNT_DETACH);
    if std::fs::remove_dir_all(&paths.dir).is_err() && paths.dir.exists() {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::remove_dir_all(&paths.dir).ctx(|| format!("removing {}", paths.dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_like_docker() {
        let image = ContainerConfig {
            env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
            cmd: Some(vec!["sh".into()]),
            entrypoint: None,
            working_dir: Some("/app".into()),
            user: Some("app".into()),
            ..Default::default()
        };
        let mut c = ContainerConfig { env: Some(vec!["A=user".into()]), ..Default::default() };
        merge_config(&mut c, &image);
        assert_eq!(c.env, Some(vec!["PATH=/bin".into(), "A=user".into()]));
        assert_eq!(c.cmd, Some(vec!["sh".into()]));
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.user.as_deref(), Some("app"));
        // An entrypoint from the user drops the image's cmd.
        let mut c = ContainerConfig { entrypoint: Some(vec!["/bin/echo".into()]), ..Default::default() };
        merge_config(&mut c, &image);
        assert_eq!(c.cmd, None);
        // `--entrypoint ""` resets.
        let mut c =
            ContainerConfig { entrypoint: Some(vec!["".into()]), cmd: Some(vec!["ls".into()]), ..Default::default() };
        merge_config(&mut c, &image);
        assert_eq!(c.entrypoint, Some(vec![]));
        assert_eq!(spec::argv(&c), vec!["ls"]);
    }

    #[test]
    fn names_and_signals() {
        assert!(
            valid_name("web-1") && valid_name("a.b_c") && !valid_name("-x") && !valid_name("a b") && !valid_name("x")
        );
        assert_eq!(parse_signal("SIGTERM").expect("sig"), libc::SIGTERM);
        assert_eq!(parse_signal("kill").expect("sig"), libc::SIGKILL);
        assert_eq!(parse_signal("9").expect("sig"), 9);
        assert!(parse_signal("NOPE").is_err());
    }
}
