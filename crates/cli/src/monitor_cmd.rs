//! `berth monitor` (hidden): the per-container monitor the daemon spawns;
//! see `berth_engine::monitor`.

use std::path::PathBuf;

use berth_engine::paths::Paths;
use clap::Args;

/// `berth monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The engine's persistent root.
    #[arg(long)]
    pub root: PathBuf,
    /// The engine's runtime root.
    #[arg(long)]
    pub run_root: PathBuf,
    /// Attach clients to wait for before starting.
    #[arg(long, default_value_t = 0)]
    pub wait_attach: usize,
    /// The monitor socket, already bound and listening, is stdin (only 0).
    #[arg(long, hide = true)]
    pub listen_fd: Option<i32>,
    /// Container id.
    pub id: String,
}

/// Runs the monitor; returns the exit code.
pub fn main(a: MonitorArgs) -> i32 {
    // The monitor forks the container: it must run from a sealed copy of
    // the binary, like every runtime entry point.
    if let Err(e) = berth_runtime::sys::sealed_exe::ensure_sealed() {
        eprintln!("berth monitor: re-executing from a sealed copy of the binary: {e}");
        return 1;
    }
    // Executed through the sealed view (/proc/self/fd/N), the process
    // would be named "N" in ps and top; name it for what it is.
    let _ = nix::sys::prctl::set_name(c"berth-monitor");
    let listener = match a.listen_fd.map(berth_engine::sys::inherited_listener).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth monitor: --listen-fd: {e}");
            return 1;
        }
    };
    berth_engine::monitor::run(&Paths { root: a.root, run_root: a.run_root }, &a.id, a.wait_attach, listener)
}
