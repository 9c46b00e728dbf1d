//! `berth`: one multi-call binary.
//!
//! - `berth runtime …` (or the binary invoked as `berth-runtime`): the OCI
//!   runtime CLI, runc-compatible, for podman/containerd/CRI-O.
//! - `berth pull`, `images`, `image …`, `tag`, `rmi`: the image store.
//! - further verbs (daemon, docker-style client) arrive with later issues.

mod archive_cmd;
mod history_cmd;
mod image_cmd;
mod import_cmd;
mod monitor_cmd;
mod registry_cmd;
mod runtime_cmd;
mod serve_cmd;
mod system_cmd;

use clap::{Parser, Subcommand};

/// berth: a container engine.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "berth: a container engine", propagate_version = true)]
struct Cli {
    #[command(flatten)]
    store: image_cmd::StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// OCI runtime (runc-compatible): run bundles directly.
    Runtime(Box<runtime_cmd::RuntimeCli>),
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

/// True when argv[0] asks for the runtime personality.
fn invoked_as_runtime() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n == "berth-runtime")
}

fn main() {
    let code = if invoked_as_runtime() {
        runtime_cmd::main(runtime_cmd::RuntimeCli::parse_from(std::env::args_os()))
    } else {
        let cli = Cli::parse();
        match cli.command {
            Command::Runtime(r) => runtime_cmd::main(*r),
            Command::Pull(a) => image_cmd::pull(&cli.store, a),
            Command::Images(a) => image_cmd::images(&cli.store, a),
            Command::Rmi(a) => image_cmd::rmi(&cli.store, a),
            Command::Tag(a) => image_cmd::tag(&cli.store, a),
            Command::Image(c) => image_cmd::image(&cli.store, c),
            Command::Push(a) => registry_cmd::push(&cli.store, a),
            Command::Login(a) => registry_cmd::login(&cli.store, a),
            Command::Logout(a) => registry_cmd::logout(a),
            Command::History(a) => history_cmd::history(&cli.store, a),
            Command::Import(a) => import_cmd::import(&cli.store, a),
            Command::Save(a) => archive_cmd::save(&cli.store, a),
            Command::Load(a) => archive_cmd::load(&cli.store, a),
            Command::System(c) => system_cmd::system(&cli.store, c),
            Command::Monitor(a) => monitor_cmd::main(a),
            Command::Serve(a) => serve_cmd::main(a),
        }
    };
    std::process::exit(code);
}
