//! Resource limits on the cgroup v2 unified hierarchy.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxRdma, LinuxResources};

use super::devices_bpf::{program, rules_from_oci};
use super::{
    blkio_weight_to_io_weight, cpu_max, has, read_opt, shares_to_weight, swap_to_v2, write, Error, Result,
    CGROUP2_SUPER_MAGIC,
};
use crate::sys::bpf;

/// Writes a controller's interface file; when the (existing) cgroup has no
/// such file, says that the controller is missing or not enabled rather
/// than "no such file".
fn write_ctl(dir: &Path, file: &str, value: &str) -> Result<()> {
    if dir.is_dir() && !has(dir, file) {
        let controller = file.split('.').next().unwrap_or(file);
        return Err(Error::Unsupported(format!(
            "cannot set {file}={value} in {}: no such file (the {controller} controller is missing or not enabled)",
            dir.display()
        )));
    }
    write(dir, file, value)
}

/// Enables, in every ancestor of `dir` from the hierarchy root at `mount`
/// down, the controllers that ancestor has (`cgroup.controllers`) for its
/// children (`cgroup.subtree_control`). Best-effort: a controller that
/// cannot be enabled shows up later as a missing interface file when a
/// limit needs it.
pub(super) fn enable_controllers(mount: &Path, dir: &Path) {
    let Ok(rel) = dir.strip_prefix(mount) else { return };
    let mut ancestors = vec![mount.to_path_buf()];
    let mut cur = mount.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        ancestors.push(cur.clone());
    }
    let mut inherited: Vec<String> = Vec::new();
    for a in ancestors {
        let available: Vec<String> = match read_opt(&a, "cgroup.controllers") {
            Ok(Some(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => inherited.clone(),
        };
        let enabled = read_opt(&a, "cgroup.subtree_control").ok().flatten().unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let missing: Vec<&String> = available.iter().filter(|c| !enabled.contains(&c.as_str())).collect();
        if !missing.is_empty() {
            let all = missing.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
            if write(&a, "cgroup.subtree_control", &all).is_err() {
                for c in &missing {
                    let _ = write(&a, "cgroup.subtree_control", &format!("+{c}"));
                }
            }
        }
        inherited = available;
    }
}

/// `Some(frozen)` from the `frozen` key of `cgroup.events`, `None` when
/// the file or key is missing.
pub(super) fn events_frozen(dir: &Path) -> Result<Option<bool>> {
    Ok(read_opt(dir, "cgroup.events")?
        .and_then(|ev| ev.lines().find_map(|l| l.strip_prefix("frozen ").map(|v| v.trim() == "1"))))
}

/// Validates a hugepage size as used in file names ("2MB", "1GB").
pub(super) fn page_size(size: &str) -> Result<&str> {
    if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::Invalid { what: "hugepage size".into(), msg: format!("{size:?} is not like \"2MB\"") });
    }
    Ok(size)
}

/// `rdma.max` lines ("mlx4_0 hca_handle=2 hca_object=2000"), sorted by
/// device; devices without limits are skipped.
pub(super) fn rdma_lines(rdma: &HashMap<String, LinuxRdma>) -> Vec<String> {
    let mut devs: Vec<_> = rdma.iter().collect();
    devs.sort_by(|a, b| a.0.cmp(b.0));
    devs.into_iter()
        .filter_map(|(dev, l)| {
            let mut s = dev.clone();
            if let Some(h) = l.hca_handles() {
                s.push_str(&format!(" hca_handle={h}"));
            }
            if let Some(o) = l.hca_objects() {
                s.push_str(&format!(" hca_object={o}"));
            }
            (s.len() > dev.len()).then_some(s)
        })
        .collect()
}

/// Writes every setting present in `r` into the cgroup directory `dir`.
pub(super) fn set(dir: &Path, r: &LinuxResources) -> Result<()> {
    check_unsupported(r)?;
    if let Some(c) = r.cpu() {
        cpu(dir, c)?;
    }
    if let Some(m) = r.memory() {
        memory(dir, m)?;
    }
    if let Some(p) = r.pids() {
        write_ctl(dir, "pids.max", &super::v1::pids_value(p.limit()))?;
    }
    if let Some(b) = r.block_io() {
        io(dir, b)?;
    }
    for h in r.hugepage_limits().as_deref().unwrap_or_default() {
        let size = page_size(h.page_size())?;
        let v = if h.limit() < 0 { "max".to_string() } else { h.limit().to_string() };
        write_ctl(dir, &format!("hugetlb.{size}.max"), &v)?;
    }
    if let Some(rdma) = r.rdma() {
        for line in rdma_lines(rdma) {
            write_ctl(dir, "rdma.max", &line)?;
        }
    }
    if let Some(u) = r.unified() {
        unified(dir, u)?;
    }
    if let Some(list) = r.devices() {
        devices(dir, list)?;
    }
    Ok(())
}

/// Fails on settings that have no cgroup v2 equivalent, before anything is
/// written.
fn check_unsupported(r: &LinuxResources) -> Result<()> {
    let no = |what: &str| Err(Error::Unsupported(format!("{what} requested but cgroup v2 has no equivalent")));
    if let Some(n) = r.network() {
        if n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return no("network classID/priorities (net_cls/net_prio)");
        }
    }
    if let Some(c) = r.cpu() {
        if c.realtime_runtime().is_some_and(|v| v != 0) || c.realtime_period().is_some_and(|v| v != 0) {
            return no("realtime cpu scheduling (cpu.rt_*)");
        }
    }
    if let Some(m) = r.memory() {
        if m.kernel().is_some_and(|k| k > 0) {
            return no("kernel memory limit (memory.kmem.limit_in_bytes)");
        }
        if m.kernel_tcp().is_some_and(|k| k > 0) {
            return no("kernel TCP memory limit (memory.kmem.tcp.limit_in_bytes)");
        }
        if m.swappiness().is_some() {
            return no("memory swappiness");
        }
        if m.disable_oom_killer() == Some(true) {
            return no("disableOOMKiller (memory.oom_control)");
        }
    }
    if let Some(b) = r.block_io() {
        if b.leaf_weight().is_some()
            || b.weight_device().as_ref().is_some_and(|d| d.iter().any(|d| d.leaf_weight().is_some()))
        {
            return no("blkio leaf weight");
        }
    }
    Ok(())
}

fn cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(w) = c.shares().map(shares_to_weight).filter(|&w| w != 0) {
        write_ctl(dir, "cpu.weight", &w.to_string())?;
    }
    let need_current = c.quota().filter(|&q| q != 0).is_none() && c.period().is_some_and(|p| p != 0);
    let current = if need_current { read_opt(dir, "cpu.max")? } else { None };
    if let Some(line) = cpu_max(c.quota(), c.period(), current.as_deref()) {
        write_ctl(dir, "cpu.max", &line)?;
    }
    if let Some(b) = c.burst() {
        write_ctl(dir, "cpu.max.burst", &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        write_ctl(dir, "cpu.idle", &i.to_string())?;
    }
    if let Some(v) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        write_ctl(dir, "cpuset.cpus", v)?;
    }
    if let Some(v) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        write_ctl(dir, "cpuset.mems", v)?;
    }
    Ok(())
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = m.limit().filter(|&l| l != 0);
    for (name, v) in [("memory.limit", limit), ("memory.reservation", m.reservation())] {
        if let Some(v) = v.filter(|&v| v < -1) {
            return Err(Error::Invalid { what: name.into(), msg: format!("{v} is negative") });
        }
    }
    let swap = swap_to_v2(m.swap(), m.limit())?;
    if let Some(l) = limit {
        write_ctl(dir, "memory.max", &max_or(l))?;
    }
    if let Some(r) = m.reservation() {
        write_ctl(dir, "memory.low", &max_or(r))?;
    }
    if let Some(s) = swap {
        let explicit = m.swap().is_some_and(|s| s != 0);
        if has(dir, "memory.swap.max") || !dir.is_dir() {
            write(dir, "memory.swap.max", &s)?;
        } else if explicit {
            return Err(Error::Unsupported(
                "swap limit requested but this kernel has no memory.swap.max file (swap accounting is off)".into(),
            ));
        }
    }
    Ok(())
}

fn io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let dev = |major: i64, minor: i64| -> Result<String> {
        if major < 0 || minor < 0 {
            return Err(Error::Invalid {
                what: "blockIO device".into(),
                msg: format!("{major}:{minor} has a negative number"),
            });
        }
        Ok(format!("{major}:{minor}"))
    };
    // BFQ takes blkio-style weights (1..1000) as they are; io.weight (the
    // io.cost controller) takes 1..10000.
    let weight_line = |prefix: &str, w: u16| -> Result<(&'static str, String)> {
        if has(dir, "io.bfq.weight") {
            Ok(("io.bfq.weight", format!("{prefix}{w}")))
        } else if has(dir, "io.weight") {
            Ok(("io.weight", format!("{prefix}{}", blkio_weight_to_io_weight(u64::from(w)))))
        } else {
            Err(Error::Unsupported(
                "blkio weight requested but this kernel has no io.weight or io.bfq.weight file".into(),
            ))
        }
    };
    if let Some(w) = b.weight().filter(|&w| w != 0) {
        let (file, line) = weight_line("default ", w)?;
        write(dir, file, &line)?;
    }
    for d in b.weight_device().as_deref().unwrap_or_default() {
        if let Some(w) = d.weight() {
            let (file, line) = weight_line(&format!("{} ", dev(d.major(), d.minor())?), w)?;
            write(dir, file, &line)?;
        }
    }
    let throttles = [
        ("rbps", b.throttle_read_bps_device()),
        ("wbps", b.throttle_write_bps_device()),
        ("riops", b.throttle_read_iops_device()),
        ("wiops", b.throttle_write_iops_device()),
    ];
    for (key, list) in throttles {
        for t in list.as_deref().unwrap_or_default() {
            // 0 lifts the limit, as it does on v1.
            let rate = if t.rate() == 0 { "max".to_string() } else { t.rate().to_string() };
            let line = format!("{} {key}={rate}", dev(t.major(), t.minor())?);
            write_ctl(dir, "io.max", &line)?;
        }
    }
    Ok(())
}

/// Writes the `unified` key/value pairs, in key order.
fn unified(dir: &Path, u: &HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<&String> = u.keys().collect();
    keys.sort();
    for k in keys {
        if k.is_empty() || k.contains('/') || k.starts_with('.') || !k.contains('.') {
            return Err(Error::Invalid {
                what: format!("unified key {k:?}"),
                msg: "expected a cgroup file name like \"memory.high\"".into(),
            });
        }
        if matches!(k.as_str(), "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control") {
            return Err(Error::Invalid { what: format!("unified key {k:?}"), msg: "not a resource setting".into() });
        }
        let v = u.get(k).map_or("", String::as_str);
        if dir.is_dir() && !has(dir, k) {
            return Err(Error::Unsupported(format!(
                "unified setting {k} requested but {} has no such file (controller missing or not enabled)",
                dir.display()
            )));
        }
        write(dir, k, v)?;
    }
    Ok(())
}

/// Installs the device rules as a `BPF_PROG_TYPE_CGROUP_DEVICE` program:
/// the new program is attached next to the ones already there, which are
/// then detached, so the cgroup is never left unrestricted.
fn devices(dir: &Path, list: &[LinuxDeviceCgroup]) -> Result<()> {
    let prog = program(&rules_from_oci(list)?);
    let fail = |msg: String| Error::DeviceFilter { dir: dir.to_path_buf(), msg };
    match rustix::fs::statfs(dir) {
        Ok(s) if s.f_type as u64 == CGROUP2_SUPER_MAGIC => {}
        Ok(_) => return Err(fail("not a cgroup2 directory, cannot attach a device program".into())),
        Err(e) => return Err(fail(format!("statfs: {}", super::describe(&e.into())))),
    }
    let cg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| fail(format!("opening: {}", super::describe(&e))))?;
    let old = bpf::prog_query(cg.as_fd(), bpf::ATTACH_CGROUP_DEVICE)
        .map_err(|e| fail(format!("listing attached programs: {}", super::describe(&e))))?;
    let p = bpf::load_cgroup_device_prog(&prog, "Apache-2.0")
        .map_err(|e| fail(format!("loading the program: {}", super::describe(&e))))?;
    bpf::prog_attach(cg.as_fd(), p.as_fd(), bpf::ATTACH_CGROUP_DEVICE, bpf::F_ALLOW_MULTI)
        .map_err(|e| fail(format!("attaching the program: {}", super::describe(&e))))?;
    for id in old {
        let detached =
            bpf::prog_fd_by_id(id).and_then(|f| bpf::prog_detach(cg.as_fd(), f.as_fd(), bpf::ATTACH_CGROUP_DEVICE));
        match detached {
            Ok(()) => {}
            // Already gone (detached concurrently).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(fail(format!("detaching old program {id}: {}", super::describe(&e)))),
        }
    }
    Ok(())
}
