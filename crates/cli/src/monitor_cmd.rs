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
    /// Start idle, as a zygote (`berth_engine::zygote`): stdin is the
    /// socket on which the container to monitor comes. The value is room
    /// for the command line the monitor shows once it knows the container.
    #[arg(long, hide = true, allow_hyphen_values = true)]
    pub zygote: Option<String>,
    /// Container id (none for a zygote).
    #[arg(required_unless_present = "zygote", conflicts_with = "zygote")]
    pub id: Option<String>,
}

impl MonitorArgs {
    /// Reads the arguments the daemon passes (`--root R --run-root R
    /// [--wait-attach N] [--listen-fd N] ID`) with `lexopt`, or `None` for
    /// anything else, which clap then parses and reports. Why not clap
    /// alone: building its command tree costs ~0.2 ms of every monitor
    /// start, which is on every container start (see `runtime_cmd`'s
    /// `fast_args` for the same on `berth runtime`).
    pub fn fast_parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<MonitorArgs> {
        use lexopt::Arg;
        let mut p = lexopt::Parser::from_args(args);
        let (mut root, mut run_root, mut wait_attach, mut listen_fd, mut id) = (None, None, 0, None, None);
        let mut zygote = None;
        while let Some(arg) = p.next().ok()? {
            match arg {
                Arg::Long("root") => root = Some(PathBuf::from(p.value().ok()?)),
                Arg::Long("run-root") => run_root = Some(PathBuf::from(p.value().ok()?)),
                Arg::Long("wait-attach") => wait_attach = p.value().ok()?.to_str()?.parse().ok()?,
                Arg::Long("listen-fd") => listen_fd = Some(p.value().ok()?.to_str()?.parse().ok()?),
                Arg::Long("zygote") => zygote = Some(p.value().ok()?.into_string().ok()?),
                Arg::Value(v) if id.is_none() => id = Some(v.into_string().ok()?),
                _ => return None,
            }
        }
        if id.is_none() == zygote.is_none() {
            return None;
        }
        Some(MonitorArgs { root: root?, run_root: run_root?, wait_attach, listen_fd, zygote, id })
    }
}

/// Runs the monitor; returns the exit code.
pub fn main(a: MonitorArgs) -> i32 {
    // The monitor forks the container: it must run from a sealed copy of
    // the binary, like every runtime entry point.
    if let Err(e) = berth_runtime::sys::sealed_exe::ensure_sealed() {
        eprintln!("berth monitor: re-executing from a sealed copy of the binary: {e}");
        return 1;
    }
    let paths = Paths { root: a.root, run_root: a.run_root };
    let Some(id) = a.id else { return zygote(paths) };
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
    berth_engine::monitor::run(&paths, &id, a.wait_attach, listener)
}

/// A zygote (`berth_engine::zygote`): waits on stdin for its container,
/// then is its monitor. Exits when the daemon closes the socket first.
fn zygote(paths: Paths) -> i32 {
    use std::os::fd::AsFd;
    let _ = nix::sys::prctl::set_name(c"berth-zygote");
    let mut buf = [0u8; 4096];
    let (n, fd) = match berth_runtime::sys::recv_with_fd(std::io::stdin().as_fd(), &mut buf) {
        Ok((0, _)) | Err(_) => return 0,
        Ok(got) => got,
    };
    let a: berth_engine::zygote::Activation = match serde_json::from_slice(&buf[..n]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth monitor: bad activation: {e}");
            return 1;
        }
    };
    // What ps shows from now on: a monitor's command line, with the id.
    let (root, run_root) = (paths.root.to_string_lossy(), paths.run_root.to_string_lossy());
    crate::sys::set_cmdline(&["monitor", "--root", &root, "--run-root", &run_root, &a.id]);
    let _ = nix::sys::prctl::set_name(c"berth-monitor");
    let listener = fd.map(std::os::unix::net::UnixListener::from);
    berth_engine::monitor::run(&paths, &a.id, a.wait_attach, listener)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: MonitorArgs,
    }

    /// The fast parser reads what clap reads, or leaves it to clap.
    #[test]
    fn fast_parse_agrees_with_clap_or_declines() {
        let split =
            |l: &str| -> Vec<std::ffi::OsString> { l.split(' ').filter(|a| !a.is_empty()).map(Into::into).collect() };
        for line in [
            "--wait-attach 1 --root /r --run-root /rr --listen-fd 0 abc",
            "--root=/r --run-root=/rr abc",
            "abc --root /r --run-root /rr --wait-attach=2",
            "--zygote x --root /r --run-root /rr",
        ] {
            let fast = MonitorArgs::fast_parse(split(line)).unwrap_or_else(|| panic!("declined {line:?}"));
            let clap = Cli::try_parse_from(std::iter::once("monitor".into()).chain(split(line))).expect("clap").args;
            assert_eq!(format!("{fast:?}"), format!("{clap:?}"), "{line}");
        }
        for line in [
            "",
            "--root /r abc",
            "--root /r --run-root /rr",
            "--root /r --run-root /rr a b",
            "--help",
            "--root /r --run-root /rr --wait-attach x abc",
            "--root /r --run-root /rr --bogus abc",
            "--zygote x --root /r --run-root /rr abc",
        ] {
            assert!(MonitorArgs::fast_parse(split(line)).is_none(), "accepted {line:?}");
        }
    }
}
