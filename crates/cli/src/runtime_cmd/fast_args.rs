//! A parser for the runtime commands on the container start path
//! (`create`, `start`, `run`, `state`, `kill`, `delete`), lighter than clap.
//!
//! Why: building clap's command tree for [`RuntimeCli`] costs ~0.3 ms of
//! every `berth runtime` start (it is built, globals propagated into every
//! subcommand, before a single argument is read), and podman or containerd
//! run `berth runtime` several times per container. [`parse`] reads the
//! arguments with `lexopt` into the same [`RuntimeCli`] value clap would
//! produce; anything it does not fully understand (another subcommand,
//! `--help`, a bad flag or value, an optional-value flag whose value clap
//! might take from the next argument) makes it return `None`, and clap then
//! parses the arguments and speaks for itself. A test checks both agree.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::{Arg, Parser};

use super::{CreateArgs, Global, LogFormat, RtCommand, RuntimeCli};

/// Parses `args` (without the program name) as clap would, or `None` when
/// clap must do it.
pub(super) fn parse(args: impl IntoIterator<Item = OsString>) -> Option<RuntimeCli> {
    let mut p = Parser::from_args(args);
    let mut global = Global {
        root: PathBuf::from("/run/berth-runtime"),
        log: None,
        log_format: LogFormat::Text,
        debug: false,
        systemd_cgroup: false,
        rootless: None,
        criu: None,
    };
    let mut verb: Option<String> = None;
    let mut pos: Vec<String> = Vec::new();
    let mut create = CreateArgs {
        bundle: PathBuf::from("."),
        console_socket: None,
        pid_file: None,
        no_pivot: false,
        no_new_keyring: false,
        preserve_fds: 0,
        id: String::new(),
    };
    let (mut detach, mut keep, mut force, mut all) = (false, false, false, false);
    while let Some(arg) = p.next().ok()? {
        let v = verb.as_deref();
        match arg {
            // Global flags, before or after the subcommand.
            Arg::Long("root") => global.root = p.value().ok()?.into(),
            Arg::Long("log") => global.log = Some(p.value().ok()?.into()),
            Arg::Long("log-format") => {
                global.log_format = match p.value().ok()?.to_str()? {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return None,
                }
            }
            Arg::Long("debug") => global.debug = true,
            Arg::Long("systemd-cgroup") => global.systemd_cgroup = true,
            Arg::Long("criu") => global.criu = Some(p.value().ok()?.into_string().ok()?),
            // create/run
            Arg::Short('b') | Arg::Long("bundle") if matches!(v, Some("create" | "run")) => {
                create.bundle = p.value().ok()?.into()
            }
            Arg::Long("console-socket") if matches!(v, Some("create" | "run")) => {
                create.console_socket = Some(p.value().ok()?.into())
            }
            Arg::Long("pid-file") if matches!(v, Some("create" | "run")) => {
                create.pid_file = Some(p.value().ok()?.into())
            }
            Arg::Long("no-pivot") if matches!(v, Some("create" | "run")) => create.no_pivot = true,
            Arg::Long("no-new-keyring") if matches!(v, Some("create" | "run")) => create.no_new_keyring = true,
            Arg::Long("preserve-fds") if matches!(v, Some("create" | "run")) => {
                create.preserve_fds = p.value().ok()?.to_str()?.parse().ok()?
            }
            Arg::Short('d') | Arg::Long("detach") if v == Some("run") => detach = true,
            Arg::Long("keep") if v == Some("run") => keep = true,
            Arg::Short('f') | Arg::Long("force") if v == Some("delete") => force = true,
            Arg::Short('a') | Arg::Long("all") if v == Some("kill") => all = true,
            Arg::Value(val) => {
                let val = val.into_string().ok()?;
                if verb.is_none() {
                    verb = Some(val);
                } else {
                    pos.push(val);
                }
            }
            // --help, --version, --rootless (whose value clap may take from
            // the next argument) and anything unknown. (lexopt reads what
            // follows `--` as values, as clap does.)
            _ => return None,
        }
    }
    let one = |pos: &mut Vec<String>| (pos.len() == 1).then(|| pos.remove(0));
    let command = match verb?.as_str() {
        "create" => {
            create.id = one(&mut pos)?;
            RtCommand::Create(create)
        }
        "run" => {
            create.id = one(&mut pos)?;
            RtCommand::Run { create, detach, keep }
        }
        "start" => RtCommand::Start { id: one(&mut pos)? },
        "state" => RtCommand::State { id: one(&mut pos)? },
        "delete" => RtCommand::Delete { force, id: one(&mut pos)? },
        "kill" => {
            if pos.is_empty() || pos.len() > 2 {
                return None;
            }
            let id = pos.remove(0);
            let signal = pos.pop().unwrap_or_else(|| "SIGTERM".to_string());
            RtCommand::Kill { all, id, signal }
        }
        _ => return None,
    };
    Some(RuntimeCli { global, command })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Every argument list either parses exactly as clap parses it, or is
    /// left to clap.
    #[test]
    fn agrees_with_clap_or_declines() {
        let parsed = [
            "run t",
            "run -b /b t",
            "--root /r run --bundle /b -d t",
            "--root=/r run --bundle=/b --detach --keep t",
            "run -db /b t",
            "--root /r --log /l --log-format json create --bundle /b --pid-file /p --console-socket /s t",
            "create -b /b --no-pivot --no-new-keyring --preserve-fds 2 t",
            "create t --root /r",
            "--systemd-cgroup --debug start t",
            "state t",
            "--root /r kill t",
            "kill t KILL",
            "kill -a t 9",
            "kill --all t SIGKILL",
            "delete t",
            "delete -f t",
            "delete --force t --root /r",
            "--criu /usr/sbin/criu delete t",
            "--log-format text state t",
            "run -- t",
        ];
        for line in parsed {
            let args: Vec<&str> = line.split(' ').collect();
            let fast = parse(os(&args)).unwrap_or_else(|| panic!("fast parser declined {line:?}"));
            let mut full_args = vec!["berth-runtime"];
            full_args.extend(&args);
            let clap = RuntimeCli::try_parse_from(os(&full_args)).unwrap_or_else(|e| panic!("clap on {line:?}: {e}"));
            assert_eq!(format!("{fast:?}"), format!("{clap:?}"), "{line}");
        }
        let declined = [
            "",
            "--help",
            "run --help",
            "--version",
            "run",
            "run a b",
            "start",
            "kill t 9 extra",
            "--log-format yaml state t",
            "--rootless run t",
            "--rootless=true run t",
            "create --preserve-fds x t",
            "delete -d t",
            "run -f t",
            "exec t ls",
            "ps t",
            "list",
            "features",
            "spec",
            "run -- t --root /r",
            "frobnicate t",
        ];
        for line in declined {
            let args: Vec<&str> = if line.is_empty() { vec![] } else { line.split(' ').collect() };
            assert!(parse(os(&args)).is_none(), "fast parser accepted {line:?}");
        }
    }
}
