//! `berth`: one multi-call binary.
//!
//! - `berth runtime …` (or the binary invoked as `berth-runtime`): the OCI
//!   runtime CLI, runc-compatible, for podman/containerd/CRI-O.
//! - further verbs (daemon, docker-style client) arrive with later issues.

mod runtime_cmd;

use clap::{Parser, Subcommand};

/// berth: a container engine.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "berth: a container engine", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// OCI runtime (runc-compatible): run bundles directly.
    Runtime(runtime_cmd::RuntimeCli),
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
        match Cli::parse().command {
            Command::Runtime(r) => runtime_cmd::main(r),
        }
    };
    std::process::exit(code);
}
