//! `berth`: one multi-call binary.
//!
//! - `berth runtime …` (or the binary invoked as `berth-runtime`): the OCI
//!   runtime CLI, runc-compatible, for podman/containerd/CRI-O.
//! - `berth serve`: the daemon (Docker Engine API); `berth monitor` is its
//!   per-container helper.
//! - `berth run`, `ps`, `logs`, `exec`, `volume …` and the other container
//!   verbs: docker-compatible client of a daemon ([`client`]), which starts
//!   one in the background when none answers at the default socket.
//! - `berth pull`, `images`, `image …`, `tag`, `rmi`, …: the image store,
//!   directly when no daemon holds it.

// The C `main` is in [`sys`]: Rust's runtime setup is skipped (see
// `berth_runtime::sys::process_start`). Tests keep the usual harness.
#![cfg_attr(not(test), no_main)]

mod archive_cmd;
mod client;
mod history_cmd;
mod image_cmd;
mod import_cmd;
mod monitor_cmd;
mod registry_cmd;
mod runtime_cmd;
mod serve_cmd;
mod sys;
mod system_cmd;
mod table;

use clap::{Parser, Subcommand};

/// berth: a container engine.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "berth: a container engine", propagate_version = true)]
struct Cli {
    #[command(flatten)]
    store: image_cmd::StoreArgs,
    #[command(flatten)]
    daemon: client::DaemonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// OCI runtime (runc-compatible): run bundles directly.
    Runtime(Box<runtime_cmd::RuntimeCli>),
    /// Create and run a new container from an image.
    Run(Box<client::run_cmd::RunArgs>),
    /// Create a new container.
    Create(Box<client::run_cmd::CreateOnlyArgs>),
    /// Execute a command in a running container.
    Exec(client::exec_cmd::ExecArgs),
    #[command(flatten)]
    Verb(client::container_cmd::Verb),
    /// Manage containers.
    #[command(subcommand)]
    Container(client::container_cmd::ContainerCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(client::volume_cmd::VolumeCommand),
    /// Display system-wide information.
    Info(client::extra_cmd::InfoArgs),
    /// Show the berth version information.
    Version(client::extra_cmd::InfoArgs),
    /// Download an image from a registry.
    Pull(image_cmd::PullArgs),
    /// List images.
    Images(image_cmd::ListArgs),
    /// Remove one or more images.
    Rmi(image_cmd::RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(image_cmd::TagArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// Upload an image to a registry.
    Push(registry_cmd::PushArgs),
    /// Log in to a registry.
    Login(registry_cmd::LoginArgs),
    /// Log out from a registry.
    Logout(registry_cmd::LogoutArgs),
    /// Show the history of an image.
    History(history_cmd::HistoryArgs),
    /// Import the contents from a tarball to create a filesystem image.
    Import(import_cmd::ImportArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default).
    Save(archive_cmd::SaveArgs),
    /// Load an image from a tar archive or STDIN.
    Load(archive_cmd::LoadArgs),
    /// Manage berth.
    #[command(subcommand)]
    System(system_cmd::SystemCommand),
    /// Run the daemon: the Docker Engine API on a unix socket.
    Serve(serve_cmd::ServeArgs),
    /// Per-container monitor (spawned by the daemon).
    #[command(hide = true)]
    Monitor(monitor_cmd::MonitorArgs),
}

/// Re-executes from the sealed view of the binary (see
/// `berth_runtime::sys::sealed_exe`) before any argument parsing when the
/// command line looks like a runtime `create`, `run` or `exec`: parsing it
/// twice, before and after the re-exec, would cost ~0.3 ms per container.
/// Only a shortcut: `runtime_cmd::main` checks again after parsing (a
/// cached answer by then), and reports a failure to seal; an argument that
/// merely looks like such a verb costs a needless re-exec, nothing else.
fn seal_early() {
    let mut args = std::env::args_os().skip(1).peekable();
    if !invoked_as_runtime() {
        if args.peek().is_none_or(|a| a != "runtime") {
            return;
        }
        args.next();
    }
    if args.any(|a| a == "create" || a == "run" || a == "exec") {
        let _ = berth_runtime::sys::sealed_exe::ensure_sealed();
    }
}

/// True when argv[0] asks for the runtime personality.
fn invoked_as_runtime() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n == "berth-runtime")
}

/// The image verbs: through the daemon that holds the store (or the one
/// `-H` names), else on the store directly.
fn image_verb(store: &image_cmd::StoreArgs, daemon: &client::DaemonArgs, cmd: Command) -> i32 {
    use client::image_api as api;
    let conn = match client::image_api::image_daemon(daemon, &store.root) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if let Some(conn) = conn {
        return match cmd {
            Command::Pull(a) | Command::Image(image_cmd::ImageCommand::Pull(a)) => api::run(api::pull(conn, a)),
            Command::Images(a) | Command::Image(image_cmd::ImageCommand::Ls(a)) => api::run(api::images(conn, a)),
            Command::Rmi(a) | Command::Image(image_cmd::ImageCommand::Rm(a)) => api::run(api::rmi(conn, a)),
            Command::Tag(a) | Command::Image(image_cmd::ImageCommand::Tag(a)) => api::run(api::tag(conn, a)),
            Command::Image(image_cmd::ImageCommand::Inspect(a)) => api::run(api::inspect(conn, a.images)),
            Command::Push(a) | Command::Image(image_cmd::ImageCommand::Push(a)) => api::run(api::push(conn, a)),
            Command::Import(a) | Command::Image(image_cmd::ImageCommand::Import(a)) => api::run(api::import(conn, a)),
            Command::Save(a) | Command::Image(image_cmd::ImageCommand::Save(a)) => api::run(api::save(conn, a)),
            Command::Load(a) | Command::Image(image_cmd::ImageCommand::Load(a)) => api::run(api::load(conn, a)),
            Command::History(a) | Command::Image(image_cmd::ImageCommand::History(a)) => {
                api::run(api::history(conn, a))
            }
            Command::System(c) => system_cmd::system(store, daemon, Some(conn), c),
            Command::Image(image_cmd::ImageCommand::Prune(a)) => api::prune(&store.root, daemon, Some(conn), a),
            _ => 1,
        };
    }
    match cmd {
        Command::Pull(a) => image_cmd::pull(store, a),
        Command::Images(a) => image_cmd::images(store, a),
        Command::Rmi(a) => image_cmd::rmi(store, a),
        Command::Tag(a) => image_cmd::tag(store, a),
        Command::Image(image_cmd::ImageCommand::Prune(a)) => api::prune(&store.root, daemon, None, a),
        Command::Image(c) => image_cmd::image(store, c),
        Command::Push(a) => registry_cmd::push(store, a),
        Command::History(a) => history_cmd::history(store, a),
        Command::Import(a) => import_cmd::import(store, a),
        Command::Save(a) => archive_cmd::save(store, a),
        Command::Load(a) => archive_cmd::load(store, a),
        Command::System(c) => system_cmd::system(store, daemon, None, c),
        _ => 1,
    }
}

/// `berth monitor`'s arguments alone, for [`hot_path`].
#[derive(Debug, Parser)]
#[command(name = "berth monitor")]
struct MonitorCli {
    #[command(flatten)]
    args: monitor_cmd::MonitorArgs,
}

/// `berth [global flags] run …` alone, for [`hot_path`]: the same global
/// flags and `run` arguments as [`Cli`], without the other verbs.
#[derive(Debug, Parser)]
#[command(name = "berth", version)]
struct RunCli {
    #[command(flatten)]
    store: image_cmd::StoreArgs,
    #[command(flatten)]
    daemon: client::DaemonArgs,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Debug, Subcommand)]
enum RunOnly {
    Run(Box<client::run_cmd::RunArgs>),
}

/// `berth run`, the client's start path, through [`RunCli`] when `run` is
/// among the arguments. Anything it does not accept as a run (another
/// verb, `--help`, a bad flag) goes to the full [`Cli`], which parses it
/// again and speaks for itself.
fn run_hot_path() -> Option<i32> {
    if !std::env::args_os().skip(1).any(|a| a == "run") {
        return None;
    }
    let cli = RunCli::try_parse().ok()?;
    let RunOnly::Run(a) = cli.command;
    Some(client::run_verb(&cli.daemon, &cli.store, 125, |c| client::run_cmd::run_cmd(c, *a)))
}

/// The two commands on the container start path, `berth runtime …` (which
/// runs twice per container: once more from the sealed view) and `berth
/// monitor …`, parsed without building the whole docker-verb command tree:
/// clap's tree for every verb costs ~0.5 ms of each process start. Only
/// when the verb is the very first argument; `berth --root X runtime …`
/// takes the ordinary path.
fn hot_path() -> Option<i32> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    let verb = args.next()?;
    let bin = |name: &str| {
        let mut b = argv0.clone();
        b.push(" ");
        b.push(name);
        b
    };
    match verb.to_str()? {
        "runtime" => Some(runtime_cmd::main(runtime_cmd::RuntimeCli::parse_args(bin("runtime"), args.collect()))),
        "monitor" => {
            let args: Vec<_> = args.collect();
            let a = match monitor_cmd::MonitorArgs::fast_parse(args.iter().cloned()) {
                Some(a) => a,
                None => MonitorCli::parse_from(std::iter::once(bin("monitor")).chain(args)).args,
            };
            Some(monitor_cmd::main(a))
        }
        _ => None,
    }
}

/// The program: parses the command line, runs the command, exits with its
/// code. Called from the C `main` in [`sys`].
#[cfg_attr(test, allow(dead_code))]
fn berth_main() -> ! {
    seal_early();
    let code = if invoked_as_runtime() {
        let mut args = std::env::args_os();
        let bin = args.next().unwrap_or_default();
        runtime_cmd::main(runtime_cmd::RuntimeCli::parse_args(bin, args.collect()))
    } else if let Some(code) = hot_path().or_else(run_hot_path) {
        code
    } else {
        let cli = Cli::parse();
        match cli.command {
            Command::Runtime(r) => runtime_cmd::main(*r),
            Command::Run(a) => client::run_verb(&cli.daemon, &cli.store, 125, |c| client::run_cmd::run_cmd(c, *a)),
            Command::Create(a) => {
                client::run_verb(&cli.daemon, &cli.store, 125, |c| client::run_cmd::create_cmd(c, *a))
            }
            Command::Exec(a) => client::run_verb(&cli.daemon, &cli.store, 1, |c| client::exec_cmd::exec(c, a)),
            Command::Verb(v) => client::run_verb(&cli.daemon, &cli.store, 1, |c| client::container_cmd::run(c, v)),
            Command::Container(v) => {
                client::run_verb(&cli.daemon, &cli.store, 1, |c| client::container_cmd::run_container(c, v))
            }
            Command::Info(a) => client::run_verb(&cli.daemon, &cli.store, 1, |c| client::extra_cmd::info(c, a)),
            Command::Version(a) => client::run_verb(&cli.daemon, &cli.store, 1, |c| client::extra_cmd::version(c, a)),
            Command::Volume(v) => client::run_verb(&cli.daemon, &cli.store, 1, |c| client::volume_cmd::run(c, v)),
            Command::Pull(_)
            | Command::Images(_)
            | Command::Rmi(_)
            | Command::Tag(_)
            | Command::Image(_)
            | Command::Push(_)
            | Command::History(_)
            | Command::Import(_)
            | Command::Save(_)
            | Command::Load(_)
            | Command::System(_) => image_verb(&cli.store, &cli.daemon, cli.command),
            Command::Logout(a) => registry_cmd::logout(a),
            Command::Login(a) => registry_cmd::login(&cli.store, a),
            Command::Monitor(a) => monitor_cmd::main(a),
            Command::Serve(a) => serve_cmd::main(a),
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_hot_path_parses_as_the_full_cli() {
        let argv = [
            "berth",
            "-H",
            "unix:///x.sock",
            "--root",
            "/r",
            "run",
            "--rm",
            "-e",
            "A=1",
            "--name",
            "n",
            "-v",
            "/a:/b:ro",
            "busybox",
            "sh",
            "-c",
            "true",
        ];
        let full = Cli::try_parse_from(argv).expect("full parser");
        let Command::Run(a) = full.command else { panic!("not a run: {full:?}") };
        let hot = RunCli::try_parse_from(argv).expect("run parser");
        let RunOnly::Run(b) = hot.command;
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(format!("{:?}", full.daemon), format!("{:?}", hot.daemon));
        assert_eq!(format!("{:?}", full.store), format!("{:?}", hot.store));
        // Another verb (even with "run" among its arguments) is not a run.
        assert!(RunCli::try_parse_from(["berth", "ps", "--filter", "name=run"]).is_err());
    }
}
