//! Verbs that talk to a registry besides `pull`: `push`, `login`, `logout`,
//! with Docker's flags, output and exit codes.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use berth_image::docker_config;
use berth_image::push::{NoPushProgress, PushEvent, PushProgress};
use berth_image::registry::{Credentials, ImageRef, Registry, RegistryOptions};
use clap::Args;

use crate::image_cmd::{async_runtime, bar, fail, open, registry_client, PullPrinter, StoreArgs};

/// `berth push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// NAME[:TAG]
    pub name: String,
    /// Push all tags of the repository.
    #[arg(short, long)]
    pub all_tags: bool,
    /// Suppress verbose output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `berth login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
    /// Username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (insecure: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `berth logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
}

impl PushProgress for PullPrinter {
    fn event(&self, e: PushEvent) {
        match e {
            PushEvent::Preparing { id } => self.set(&id, "Preparing".into(), false),
            PushEvent::Pushing { id, current, total } => {
                if self.tty {
                    self.set(&id, format!("Pushing {}", bar(current, total)), true);
                }
            }
            PushEvent::Pushed { id } => self.set(&id, "Pushed".into(), false),
            PushEvent::LayerExists { id } => self.set(&id, "Layer already exists".into(), false),
            PushEvent::SkippedForeign { id } => self.set(&id, "Skipped foreign layer".into(), false),
            PushEvent::Mounted { id, from } => self.set(&id, format!("Mounted from {from}"), false),
        }
    }
}

/// `berth push`: uploads the image named NAME[:TAG] (every tag of NAME with
/// `-a`) to the registry the name points at.
pub fn push(args: &StoreArgs, a: PushArgs) -> i32 {
    let store = match open(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let reference = match ImageRef::parse(&a.name) {
        Ok(r) if r.digest().is_some() => return fail("cannot push a digest reference"),
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let explicit_tag = a.name.rsplit('/').next().is_some_and(|last| last.contains(':'));
    let repo = format!("{}/{}", reference.registry(), reference.repository());
    let targets: Vec<ImageRef> = if a.all_tags {
        if explicit_tag {
            return fail("tag can't be used with --all-tags/-a");
        }
        let list = match store.db().list() {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        let mut tags: Vec<ImageRef> = list
            .iter()
            .flat_map(|(_, tags)| tags.iter())
            .filter_map(|t| ImageRef::parse(t).ok())
            .filter(|r| format!("{}/{}", r.registry(), r.repository()) == repo)
            .collect();
        tags.sort_by_key(|r| r.to_string());
        if tags.is_empty() {
            return fail(format!("An image does not exist locally with the tag: {}", reference.familiar_name()));
        }
        tags
    } else {
        if !explicit_tag && !a.quiet {
            println!("Using default tag: latest");
        }
        vec![reference.clone()]
    };
    let registry = registry_client(args);
    let rt = match async_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if !a.quiet {
        println!("The push refers to repository [{repo}]");
    }
    for target in targets {
        let image = match store.resolve(&target.to_string()) {
            Ok(i) => i,
            Err(_) => return fail(format!("An image does not exist locally with the tag: {}", target.familiar())),
        };
        let printer: Arc<dyn PushProgress> = if a.quiet {
            Arc::new(NoPushProgress)
        } else {
            Arc::new(PullPrinter { tty: std::io::stdout().is_terminal(), state: Mutex::new(Vec::new()) })
        };
        match rt.block_on(store.push(registry.clone(), &image, &target, printer)) {
            Ok(out) => {
                if a.quiet {
                    println!("{}", target.familiar());
                } else {
                    let tag = out.tag.unwrap_or_else(|| "latest".into());
                    println!("{tag}: digest: {} size: {}", out.digest, out.size);
                }
            }
            Err(e) => return fail(e),
        }
    }
    0
}

/// The registry host a `login`/`logout` argument names (Docker Hub when absent).
fn server_host(server: Option<&str>) -> String {
    match server {
        None => "docker.io".into(),
        Some(s) => {
            let s = s.trim();
            let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
            s.split('/').next().unwrap_or_default().to_string()
        }
    }
}

fn prompt(label: &str, hide: bool) -> Result<String, String> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{label}");
    let _ = err.flush();
    let stdin = std::io::stdin();
    // Echo off for the password, restored however the read ends.
    let saved = if hide { nix::sys::termios::tcgetattr(&stdin).ok() } else { None };
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(nix::sys::termios::LocalFlags::ECHO);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, t);
        let _ = writeln!(err);
    }
    res.map_err(|e| format!("reading {}: {e}", label.trim_end_matches(": ")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `berth login`: checks the credentials against the registry, then saves
/// them in docker's config.json.
pub fn login(args: &StoreArgs, a: LoginArgs) -> i32 {
    let host = server_host(a.server.as_deref());
    if a.password.is_some() && a.password_stdin {
        return fail("--password and --password-stdin are mutually exclusive");
    }
    let interactive = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if interactive && !a.password_stdin => match prompt("Username: ", false) {
            Ok(u) => u,
            Err(e) => return fail(e),
        },
        None if a.password_stdin => return fail("Must provide --username with --password-stdin"),
        None => return fail("Cannot perform an interactive login from a non TTY device"),
    };
    let password = if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if a.password_stdin {
        let mut p = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut p) {
            return fail(format!("reading the password from stdin: {e}"));
        }
        p.trim_end_matches(['\n', '\r']).to_string()
    } else if interactive {
        match prompt("Password: ", true) {
            Ok(p) => p,
            Err(e) => return fail(e),
        }
    } else {
        return fail("Cannot perform an interactive login from a non TTY device");
    };
    if username.is_empty() {
        return fail("Username is required");
    }
    if password.is_empty() {
        return fail("Password is required");
    }
    let registry = Registry::new(RegistryOptions { insecure: args.insecure_registry.clone(), ..Default::default() });
    let rt = match async_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let creds = Credentials::Basic { username: username.clone(), password: password.clone() };
    if let Err(e) = rt.block_on(registry.login(&host, &creds)) {
        return fail(e);
    }
    match docker_config::store_login(None, &host, &username, &password) {
        Ok(path) => {
            eprintln!("WARNING! Your credentials are stored unencrypted in '{}'.", path.display());
            println!("Login Succeeded");
            0
        }
        Err(e) => fail(e),
    }
}

/// `berth logout`: removes saved credentials for a registry.
pub fn logout(a: LogoutArgs) -> i32 {
    let host = server_host(a.server.as_deref());
    let shown = docker_config::auth_key(&host);
    match docker_config::erase_login(None, &host) {
        Ok(true) => {
            println!("Removing login credentials for {shown}");
            0
        }
        Ok(false) => {
            println!("Not logged in to {shown}");
            0
        }
        Err(e) => fail(e),
    }
}
