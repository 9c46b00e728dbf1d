//! Resource limits on cgroup v1 hierarchies.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};

use super::devices_bpf::{rules_from_oci, DeviceRule};
use super::{create_dir, has, read, write, write_supported, Error, Manager, Result};

/// Creates `dir` (below the cpuset hierarchy mounted at `mount`) and every
/// missing ancestor, copying `cpuset.cpus`/`cpuset.mems` from the parent
/// into each level where they are empty: a v1 cpuset without CPUs or memory
/// nodes accepts no tasks.
pub(super) fn ensure_cpuset(mount: &Path, dir: &Path) -> Result<()> {
    let rel = dir.strip_prefix(mount).map_err(|_| Error::Invalid {
        what: format!("cpuset cgroup {}", dir.display()),
        msg: format!("it is not below {}", mount.display()),
    })?;
    let mut parent = mount.to_path_buf();
    for comp in rel.components() {
        let cur = parent.join(comp);
        create_dir(&cur)?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read(&cur, file)?.trim().is_empty() {
                let v = read(&parent, file)?;
                write(&cur, file, v.trim())?;
            }
        }
        parent = cur;
    }
    Ok(())
}

/// Writes every setting present in `r`.
pub(super) fn set(m: &Manager, r: &LinuxResources) -> Result<()> {
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(Error::Unsupported("unified (cgroup v2) resources requested but this host uses cgroup v1".into()));
    }
    if let Some(c) = r.cpu() {
        cpu(m, c)?;
    }
    if let Some(mem) = r.memory() {
        memory(m, mem)?;
    }
    if let Some(p) = r.pids() {
        let dir = m.need("pids", "a pids limit")?;
        write(dir, "pids.max", &pids_value(p.limit()))?;
    }
    if let Some(b) = r.block_io() {
        blkio(m, b)?;
    }
    if let Some(list) = r.hugepage_limits().as_ref().filter(|l| !l.is_empty()) {
        let dir = m.need("hugetlb", "hugepage limits")?;
        for h in list {
            let size = super::v2::page_size(h.page_size())?;
            let file = format!("hugetlb.{size}.limit_in_bytes");
            write_supported(dir, &file, &h.limit().to_string(), &format!("hugepage limit for {size}"))?;
        }
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            let dir = m.need("net_cls", "network classID")?;
            write(dir, "net_cls.classid", &id.to_string())?;
        }
        if let Some(prios) = n.priorities().as_ref().filter(|p| !p.is_empty()) {
            let dir = m.need("net_prio", "network priorities")?;
            for p in prios {
                write(dir, "net_prio.ifpriomap", &format!("{} {}", p.name(), p.priority()))?;
            }
        }
    }
    if let Some(rdma) = r.rdma().as_ref().filter(|r| !r.is_empty()) {
        let dir = m.need("rdma", "rdma limits")?;
        for line in super::v2::rdma_lines(rdma) {
            write(dir, "rdma.max", &line)?;
        }
    }
    if let Some(list) = r.devices() {
        let dir = m.need("devices", "device rules")?;
        for (file, line) in device_writes(list)? {
            write(dir, file, &line)?;
        }
    }
    Ok(())
}

/// `pids.max` for an OCI pids limit (0 or negative: unlimited).
pub(super) fn pids_value(limit: i64) -> String {
    if limit <= 0 {
        "max".into()
    } else {
        limit.to_string()
    }
}

/// The `(file, line)` writes that install an OCI device rule list on v1:
/// first deny everything, then each rule in order.
pub fn device_writes(list: &[LinuxDeviceCgroup]) -> Result<Vec<(&'static str, String)>> {
    let rules: Vec<DeviceRule> = rules_from_oci(list)?;
    let mut out = vec![("devices.deny", "a".to_string())];
    for r in rules {
        let file = if r.allow { "devices.allow" } else { "devices.deny" };
        out.extend(r.v1_lines().into_iter().map(|l| (file, l)));
    }
    Ok(out)
}

fn cpu(m: &Manager, c: &LinuxCpu) -> Result<()> {
    let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
    let mems = c.mems().as_deref().filter(|s| !s.is_empty());
    if cpus.is_some() || mems.is_some() {
        let dir = m.need("cpuset", "cpuset cpus/mems")?;
        if let Some(v) = cpus {
            write(dir, "cpuset.cpus", v)?;
        }
        if let Some(v) = mems {
            write(dir, "cpuset.mems", v)?;
        }
    }
    let shares = c.shares().filter(|&s| s != 0);
    let quota = c.quota().filter(|&q| q != 0);
    let period = c.period().filter(|&p| p != 0);
    let rt_runtime = c.realtime_runtime().filter(|&r| r != 0);
    let rt_period = c.realtime_period().filter(|&p| p != 0);
    if shares.is_none()
        && quota.is_none()
        && period.is_none()
        && rt_runtime.is_none()
        && rt_period.is_none()
        && c.burst().is_none()
        && c.idle().is_none()
    {
        return Ok(());
    }
    let dir = m.need("cpu", "cpu limits")?;
    if let Some(s) = shares {
        write(dir, "cpu.shares", &s.to_string())?;
    }
    let quota_s = quota.map(|q| if q < 0 { "-1".to_string() } else { q.to_string() });
    let mut quota_done = false;
    if let Some(p) = period {
        if let Err(e) = write(dir, "cpu.cfs_period_us", &p.to_string()) {
            // A shorter period may be refused while the old quota is in
            // place (or the other way round): set the quota first and retry.
            match (&quota_s, e.errno()) {
                (Some(q), Some(libc::EINVAL)) => {
                    write(dir, "cpu.cfs_quota_us", q)?;
                    quota_done = true;
                    write(dir, "cpu.cfs_period_us", &p.to_string())?;
                }
                _ => return Err(e),
            }
        }
    }
    if let (Some(q), false) = (&quota_s, quota_done) {
        write(dir, "cpu.cfs_quota_us", q)?;
    }
    if let Some(b) = c.burst() {
        write_supported(dir, "cpu.cfs_burst_us", &b.to_string(), "cpu burst")?;
    }
    if let Some(p) = rt_period {
        write_supported(dir, "cpu.rt_period_us", &p.to_string(), "realtime cpu period")?;
    }
    if let Some(r) = rt_runtime {
        write_supported(dir, "cpu.rt_runtime_us", &r.to_string(), "realtime cpu runtime")?;
    }
    if let Some(i) = c.idle() {
        write_supported(dir, "cpu.idle", &i.to_string(), "cpu idle")?;
    }
    Ok(())
}

fn memory(m: &Manager, mem: &LinuxMemory) -> Result<()> {
    let limit = mem.limit().filter(|&l| l != 0);
    let swap = mem.swap().filter(|&s| s != 0);
    let kernel = mem.kernel().filter(|&k| k != 0);
    let kernel_tcp = mem.kernel_tcp().filter(|&k| k != 0);
    if limit.is_none()
        && swap.is_none()
        && kernel.is_none()
        && kernel_tcp.is_none()
        && mem.reservation().is_none()
        && mem.swappiness().is_none()
        && mem.disable_oom_killer() != Some(true)
        && mem.use_hierarchy().is_none()
    {
        return Ok(());
    }
    let dir = m.need("memory", "memory limits")?;
    for (name, v) in [("memory.limit", limit), ("memory.swap", swap), ("memory.reservation", mem.reservation())] {
        if let Some(v) = v.filter(|&v| v < -1) {
            return Err(Error::Invalid { what: name.into(), msg: format!("{v} is negative") });
        }
    }
    if let (Some(l), Some(s)) = (limit, swap) {
        if s != -1 && (l == -1 || s < l) {
            return Err(Error::Invalid {
                what: "memory.swap".into(),
                msg: format!("memory+swap {s} must be at least the memory limit {l}"),
            });
        }
    }
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    if swap.is_some() && !has(dir, MEMSW) {
        return Err(Error::Unsupported(format!(
            "swap limit requested but this kernel has no {MEMSW} file (swap accounting is off)"
        )));
    }
    match (limit, swap) {
        (Some(l), Some(s)) => {
            // memsw must stay >= the memory limit at every step: raise it
            // first when growing, lower it last when shrinking.
            let cur: i64 = read(dir, "memory.limit_in_bytes")?.trim().parse().unwrap_or(i64::MAX);
            if s == -1 || cur < s {
                write(dir, MEMSW, &s.to_string())?;
                write(dir, "memory.limit_in_bytes", &l.to_string())?;
            } else {
                write(dir, "memory.limit_in_bytes", &l.to_string())?;
                write(dir, MEMSW, &s.to_string())?;
            }
        }
        (Some(l), None) => write(dir, "memory.limit_in_bytes", &l.to_string())?,
        (None, Some(s)) => write(dir, MEMSW, &s.to_string())?,
        (None, None) => {}
    }
    if let Some(r) = mem.reservation() {
        write(dir, "memory.soft_limit_in_bytes", &r.to_string())?;
    }
    if let Some(k) = kernel {
        const KMEM: &str = "memory.kmem.limit_in_bytes";
        write_supported(dir, KMEM, &k.to_string(), "kernel memory limit")?;
        // Since Linux 6.x the file is still there but writes are ignored.
        let unlimited = read(dir, KMEM)?.trim().parse::<i64>().map_or(true, |v| v >= 1 << 62);
        if k > 0 && unlimited {
            return Err(Error::Unsupported(format!("kernel memory limit requested but this kernel ignores {KMEM}")));
        }
    }
    if let Some(k) = kernel_tcp {
        write_supported(dir, "memory.kmem.tcp.limit_in_bytes", &k.to_string(), "kernel TCP memory limit")?;
    }
    if let Some(s) = mem.swappiness() {
        if s > 100 {
            return Err(Error::Invalid { what: "memory.swappiness".into(), msg: format!("{s} is above 100") });
        }
        write_supported(dir, "memory.swappiness", &s.to_string(), "memory swappiness")?;
    }
    if mem.disable_oom_killer() == Some(true) {
        write_supported(dir, "memory.oom_control", "1", "disableOOMKiller")?;
    }
    if let Some(h) = mem.use_hierarchy() {
        write_supported(dir, "memory.use_hierarchy", if h { "1" } else { "0" }, "memory useHierarchy")?;
    }
    Ok(())
}

fn dev(major: i64, minor: i64) -> Result<String> {
    if major < 0 || minor < 0 {
        return Err(Error::Invalid {
            what: "blockIO device".into(),
            msg: format!("{major}:{minor} has a negative number"),
        });
    }
    Ok(format!("{major}:{minor}"))
}

fn blkio(m: &Manager, b: &LinuxBlockIo) -> Result<()> {
    let weight = b.weight().filter(|&w| w != 0);
    let weight_devs = b.weight_device().as_deref().unwrap_or_default();
    let throttles = [
        ("blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
        ("blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
        ("blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
        ("blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
    ];
    let any_throttle = throttles.iter().any(|(_, l)| l.as_ref().is_some_and(|l| !l.is_empty()));
    if weight.is_none() && b.leaf_weight().is_none() && weight_devs.is_empty() && !any_throttle {
        return Ok(());
    }
    let dir = m.need("blkio", "blkio limits")?;
    let weight_file = ["blkio.weight", "blkio.bfq.weight"].into_iter().find(|f| has(dir, f));
    if let Some(w) = weight {
        let file = weight_file.ok_or_else(|| {
            Error::Unsupported("blkio weight requested but this kernel has no blkio.weight file".into())
        })?;
        write(dir, file, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight() {
        write_supported(dir, "blkio.leaf_weight", &w.to_string(), "blkio leaf weight")?;
    }
    for d in weight_devs {
        let id = dev(d.major(), d.minor())?;
        if let Some(w) = d.weight() {
            let file = ["blkio.weight_device", "blkio.bfq.weight_device"]
                .into_iter()
                .find(|f| has(dir, f))
                .ok_or_else(|| {
                    Error::Unsupported(
                        "blkio weightDevice requested but this kernel has no blkio.weight_device file".into(),
                    )
                })?;
            write(dir, file, &format!("{id} {w}"))?;
        }
        if let Some(w) = d.leaf_weight() {
            write_supported(dir, "blkio.leaf_weight_device", &format!("{id} {w}"), "blkio leaf weight")?;
        }
    }
    for (file, list) in throttles {
        for t in list.as_deref().unwrap_or_default() {
            let line = format!("{} {}", dev(t.major(), t.minor())?, t.rate());
            write_supported(dir, file, &line, "blkio throttling")?;
        }
    }
    Ok(())
}
