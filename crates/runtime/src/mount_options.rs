//! Parsing of config.json mount `options` into mount(2) flags, propagation
//! changes and the filesystem-specific data string.

use nix::mount::MsFlags;

/// A mount entry's options, split the way mount(2) wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount call itself (MS_RDONLY, MS_NOSUID, …).
    pub flags: MsFlags,
    /// Flags that must be cleared (e.g. "rw", "suid"); only matter on remount.
    pub cleared: MsFlags,
    /// Propagation changes applied after mounting, in order.
    pub propagation: Vec<MsFlags>,
    /// Bind mount ("bind" or "rbind").
    pub bind: bool,
    /// Recursive bind ("rbind").
    pub recursive: bool,
    /// Recursive read-only ("rro"): applied with mount_setattr(AT_RECURSIVE)
    /// so submounts of an rbind become read-only too.
    pub recursive_ro: bool,
    /// Unknown options, passed to the filesystem as data ("size=64k,mode=755").
    pub data: Vec<String>,
}

impl MountOptions {
    /// The data string for mount(2), or None when empty.
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }

    /// True when a bind mount needs a second, remount call to apply flags
    /// (the kernel ignores most flags on the initial MS_BIND).
    pub fn needs_bind_remount(&self) -> bool {
        let relevant = MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_NOATIME
            | MsFlags::MS_NODIRATIME
            | MsFlags::MS_RELATIME
            | MsFlags::MS_STRICTATIME;
        self.bind && self.flags.intersects(relevant)
    }
}

/// Parses a mount's option list. Unknown options become filesystem data.
pub fn parse(options: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: Vec::new(),
        bind: false,
        recursive: false,
        recursive_ro: false,
        data: Vec::new(),
    };
    for opt in options {
        let (set, clear): (MsFlags, MsFlags) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            "rro" => {
                o.recursive_ro = true;
                (MsFlags::MS_RDONLY, MsFlags::empty())
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                if let Some(p) = propagation_flag(opt) {
                    o.propagation.push(p);
                }
                continue;
            }
            // Options handled by higher layers (podman's copy-up, idmap
            // requests we refuse elsewhere) are not passed to the kernel.
            "tmpcopyup" | "notmpcopyup" | "copy-symlink" | "z" | "Z" => continue,
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
        o.cleared.insert(clear);
        o.cleared.remove(set);
    }
    o
}

/// Maps a propagation keyword ("rslave", "shared", …) to its flags.
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn tmpfs_options_split_into_flags_and_data() {
        let o = parse(&v(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=65536k"));
        assert!(!o.bind);
    }

    #[test]
    fn bind_ro_needs_remount() {
        let o = parse(&v(&["rbind", "ro", "rprivate"]));
        assert!(o.bind && o.recursive);
        assert!(o.needs_bind_remount());
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert!(!parse(&v(&["bind"])).needs_bind_remount());
    }

    #[test]
    fn later_options_override_earlier() {
        let o = parse(&v(&["ro", "rw", "nodev", "dev", "noexec"]));
        assert_eq!(o.flags, MsFlags::MS_NOEXEC);
        assert!(o.cleared.contains(MsFlags::MS_RDONLY | MsFlags::MS_NODEV));
    }
}
