//! Unit tests against fake cgroupfs trees (tempdirs with the interface
//! files pre-created, as the kernel would create them).

use super::*;
use oci_spec::runtime::LinuxResources;
use std::path::Path;

fn touch(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).expect("mkdir");
    for (f, c) in files {
        fs::write(dir.join(f), c).expect("write fake file");
    }
}

fn get(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("reading {}/{file}: {e}", dir.display()))
        .trim_end()
        .to_string()
}

fn res(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).expect("valid LinuxResources")
}

fn full_resources() -> LinuxResources {
    res(serde_json::json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        ],
        "memory": {
            "limit": 1073741824_i64, "reservation": 536870912_i64, "swap": 2147483648_i64,
            "kernelTCP": 104857600_i64, "swappiness": 10, "disableOOMKiller": true
        },
        "cpu": {
            "shares": 512, "quota": 50000, "period": 100000, "realtimeRuntime": 950000,
            "realtimePeriod": 1000000, "cpus": "0-1", "mems": "0", "idle": 1, "burst": 10000
        },
        "pids": {"limit": 42},
        "blockIO": {
            "weight": 500,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 2097152}],
            "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 200}]
        },
        "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}],
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}
    }))
}

// --- cgroup v1 --------------------------------------------------------------

const UNLIMITED: &str = "9223372036854771712";

/// A v1 root with the controllers this project's test host has plus
/// hugetlb/net_cls/net_prio, and the cgroup /berth/x pre-populated.
fn fake_v1() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    let ctls: &[(&str, &[(&str, &str)])] = &[
        (
            "cpu",
            &[
                ("cpu.shares", "1024"),
                ("cpu.cfs_quota_us", "-1"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_burst_us", "0"),
                ("cpu.rt_runtime_us", "0"),
                ("cpu.rt_period_us", "1000000"),
                ("cpu.idle", "0"),
            ],
        ),
        ("cpuacct", &[]),
        ("cpuset", &[("cpuset.cpus", ""), ("cpuset.mems", "")]),
        (
            "memory",
            &[
                ("memory.limit_in_bytes", UNLIMITED),
                ("memory.memsw.limit_in_bytes", UNLIMITED),
                ("memory.soft_limit_in_bytes", UNLIMITED),
                ("memory.kmem.limit_in_bytes", UNLIMITED),
                ("memory.kmem.tcp.limit_in_bytes", UNLIMITED),
                ("memory.swappiness", "60"),
                ("memory.oom_control", "oom_kill_disable 0"),
                ("memory.use_hierarchy", "1"),
            ],
        ),
        ("devices", &[("devices.allow", ""), ("devices.deny", "")]),
        ("freezer", &[("freezer.state", "THAWED")]),
        (
            "blkio",
            &[
                ("blkio.weight", "100"),
                ("blkio.weight_device", ""),
                ("blkio.throttle.read_bps_device", ""),
                ("blkio.throttle.write_bps_device", ""),
                ("blkio.throttle.read_iops_device", ""),
                ("blkio.throttle.write_iops_device", ""),
            ],
        ),
        ("pids", &[("pids.max", "max")]),
        ("hugetlb", &[("hugetlb.2MB.limit_in_bytes", UNLIMITED)]),
        ("net_cls", &[("net_cls.classid", "0")]),
        ("net_prio", &[("net_prio.ifpriomap", "")]),
        ("systemd", &[]),
    ];
    for (ctl, files) in ctls {
        touch(&root.join(ctl), &[("cgroup.procs", "")]);
        let mut files = files.to_vec();
        files.push(("cgroup.procs", ""));
        touch(&root.join(ctl).join("berth/x"), &files);
    }
    touch(&root.join("cpuset"), &[("cpuset.cpus", "0-3"), ("cpuset.mems", "0")]);
    touch(&root.join("cpuset/berth"), &[("cpuset.cpus", ""), ("cpuset.mems", "\n")]);
    touch(&root.join("unified"), &[("cgroup.procs", "")]);
    t
}

fn v1(t: &tempfile::TempDir) -> Manager {
    Manager::with_root(Mode::V1, t.path(), "/berth/x").expect("v1 manager")
}

#[test]
fn v1_apply_joins_every_hierarchy_and_copies_cpuset() {
    let t = fake_v1();
    let m = v1(&t);
    assert_eq!(m.mode(), Mode::V1);
    assert_eq!(m.path(), "/berth/x");
    m.apply(1234).expect("apply");
    for ctl in ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"] {
        assert_eq!(get(&t.path().join(ctl).join("berth/x"), "cgroup.procs"), "1234", "{ctl}");
    }
    let cs = t.path().join("cpuset");
    assert_eq!(get(&cs.join("berth"), "cpuset.cpus"), "0-3");
    assert_eq!(get(&cs.join("berth"), "cpuset.mems"), "0");
    assert_eq!(get(&cs.join("berth/x"), "cpuset.cpus"), "0-3");
    assert_eq!(get(&cs.join("berth/x"), "cpuset.mems"), "0");
    // The hybrid unified hierarchy is joined best-effort (the fake has no
    // cgroup.procs there, which must not fail apply).
    assert!(t.path().join("unified/berth/x").is_dir());
}

#[test]
fn v1_cpuset_keeps_existing_values() {
    let t = fake_v1();
    touch(&t.path().join("cpuset/berth/x"), &[("cpuset.cpus", "2"), ("cpuset.mems", "")]);
    v1(&t).apply(1).expect("apply");
    let x = t.path().join("cpuset/berth/x");
    assert_eq!(get(&x, "cpuset.cpus"), "2");
    assert_eq!(get(&x, "cpuset.mems"), "0");
}

#[test]
fn v1_full_resources() {
    let t = fake_v1();
    let m = v1(&t);
    m.set(&full_resources()).expect("set");
    let d = |c: &str| t.path().join(c).join("berth/x");
    let cpu = d("cpu");
    assert_eq!(get(&cpu, "cpu.shares"), "512");
    assert_eq!(get(&cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(get(&cpu, "cpu.cfs_quota_us"), "50000");
    assert_eq!(get(&cpu, "cpu.cfs_burst_us"), "10000");
    assert_eq!(get(&cpu, "cpu.rt_period_us"), "1000000");
    assert_eq!(get(&cpu, "cpu.rt_runtime_us"), "950000");
    assert_eq!(get(&cpu, "cpu.idle"), "1");
    assert_eq!(get(&d("cpuset"), "cpuset.cpus"), "0-1");
    assert_eq!(get(&d("cpuset"), "cpuset.mems"), "0");
    let mem = d("memory");
    assert_eq!(get(&mem, "memory.limit_in_bytes"), "1073741824");
    assert_eq!(get(&mem, "memory.memsw.limit_in_bytes"), "2147483648");
    assert_eq!(get(&mem, "memory.soft_limit_in_bytes"), "536870912");
    assert_eq!(get(&mem, "memory.kmem.tcp.limit_in_bytes"), "104857600");
    assert_eq!(get(&mem, "memory.kmem.limit_in_bytes"), UNLIMITED, "kernel not requested");
    assert_eq!(get(&mem, "memory.swappiness"), "10");
    assert_eq!(get(&mem, "memory.oom_control"), "1");
    assert_eq!(get(&d("pids"), "pids.max"), "42");
    let blk = d("blkio");
    assert_eq!(get(&blk, "blkio.weight"), "500");
    assert_eq!(get(&blk, "blkio.weight_device"), "8:0 300");
    assert_eq!(get(&blk, "blkio.throttle.read_bps_device"), "8:0 1048576");
    assert_eq!(get(&blk, "blkio.throttle.write_bps_device"), "8:16 2097152");
    assert_eq!(get(&blk, "blkio.throttle.read_iops_device"), "8:0 100");
    assert_eq!(get(&blk, "blkio.throttle.write_iops_device"), "8:0 200");
    assert_eq!(get(&d("hugetlb"), "hugetlb.2MB.limit_in_bytes"), "209715200");
    assert_eq!(get(&d("net_cls"), "net_cls.classid"), "1048577");
    assert_eq!(get(&d("net_prio"), "net_prio.ifpriomap"), "eth0 5");
    // The fake files keep only the last write of each kind.
    assert_eq!(get(&d("devices"), "devices.deny"), "a");
    assert_eq!(get(&d("devices"), "devices.allow"), "c 1:3 rwm");
}

#[test]
fn v1_device_rule_strings_in_order() {
    let list: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_value(serde_json::json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 136, "access": "rw"},
        {"allow": false, "type": "b", "major": 8, "minor": -1, "access": "w"},
        {"allow": true, "type": "a", "major": 10, "minor": 200, "access": "rm"},
        {"allow": true, "type": "p", "access": "rwm"},
        {"allow": true, "type": "u", "major": 4, "minor": 1}
    ]))
    .expect("rules");
    let w = v1::device_writes(&list).expect("writes");
    let w: Vec<(&str, &str)> = w.iter().map(|(f, l)| (*f, l.as_str())).collect();
    assert_eq!(
        w,
        [
            ("devices.deny", "a"),
            ("devices.deny", "a"),
            ("devices.allow", "c 1:3 rwm"),
            ("devices.allow", "c 136:* rw"),
            ("devices.deny", "b 8:* w"),
            ("devices.allow", "b 10:200 rm"),
            ("devices.allow", "c 10:200 rm"),
            ("devices.allow", "c 4:1 rwm"),
        ]
    );
}

#[test]
fn v1_unsupported_settings_are_errors() {
    let t = fake_v1();
    let m = v1(&t);
    let err = |v| m.set(&res(v)).expect_err("must fail").to_string();

    let e = err(serde_json::json!({"unified": {"memory.high": "1"}}));
    assert!(e.contains("unified") && e.contains("cgroup v1"), "{e}");

    fs::remove_file(t.path().join("blkio/berth/x/blkio.weight")).expect("rm");
    let e = err(serde_json::json!({"blockIO": {"weight": 300}}));
    assert_eq!(e, "cgroup: blkio weight requested but this kernel has no blkio.weight file");
    // With only the BFQ file, the weight goes there.
    touch(&t.path().join("blkio/berth/x"), &[("blkio.bfq.weight", "100")]);
    m.set(&res(serde_json::json!({"blockIO": {"weight": 300}}))).expect("bfq weight");
    assert_eq!(get(&t.path().join("blkio/berth/x"), "blkio.bfq.weight"), "300");

    let e = err(serde_json::json!({"blockIO": {"leafWeight": 300}}));
    assert!(e.contains("blkio.leaf_weight"), "{e}");

    fs::remove_file(t.path().join("memory/berth/x/memory.memsw.limit_in_bytes")).expect("rm");
    let e = err(serde_json::json!({"memory": {"limit": 1000000, "swap": 2000000}}));
    assert!(e.contains("swap limit requested") && e.contains("memory.memsw.limit_in_bytes"), "{e}");

    fs::remove_file(t.path().join("memory/berth/x/memory.kmem.limit_in_bytes")).expect("rm");
    let e = err(serde_json::json!({"memory": {"kernel": 1000000}}));
    assert_eq!(e, "cgroup: kernel memory limit requested but this kernel has no memory.kmem.limit_in_bytes file");

    let e = err(serde_json::json!({"memory": {"limit": 2000000, "swap": 1000000}}));
    assert!(e.contains("invalid memory.swap"), "{e}");

    fs::remove_file(t.path().join("hugetlb/berth/x/hugetlb.2MB.limit_in_bytes")).expect("rm");
    let e = err(serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}));
    assert!(e.contains("hugetlb.2MB.limit_in_bytes"), "{e}");
    let e = err(serde_json::json!({"hugepageLimits": [{"pageSize": "../x", "limit": 1}]}));
    assert!(e.contains("invalid hugepage size"), "{e}");

    for ctl in ["hugetlb", "net_cls"] {
        fs::remove_dir_all(t.path().join(ctl)).expect("rm");
    }
    let m = v1(&t);
    let e = m.set(&res(serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}))).expect_err("fail");
    assert_eq!(e.to_string(), "cgroup: hugepage limits requested but the hugetlb controller is not mounted");
    let e = m.set(&res(serde_json::json!({"network": {"classID": 1}}))).expect_err("fail");
    assert_eq!(e.to_string(), "cgroup: network classID requested but the net_cls controller is not mounted");
}

#[test]
fn v1_pids_are_recursive() {
    let t = fake_v1();
    let m = v1(&t);
    touch(&t.path().join("pids/berth/x"), &[("cgroup.procs", "30\n10\n")]);
    touch(&t.path().join("pids/berth/x/sub"), &[("cgroup.procs", "20\n10\n")]);
    assert_eq!(m.pids().expect("pids"), [10, 20, 30]);
    let gone = Manager::with_root(Mode::V1, t.path(), "/berth/none").expect("manager");
    assert!(gone.pids().expect("pids").is_empty());
}

#[test]
fn v1_freeze_thaw() {
    let t = fake_v1();
    let m = v1(&t);
    assert!(!m.is_frozen().expect("state"));
    m.freeze().expect("freeze");
    assert_eq!(get(&t.path().join("freezer/berth/x"), "freezer.state"), "FROZEN");
    assert!(m.is_frozen().expect("state"));
    m.thaw().expect("thaw");
    assert!(!m.is_frozen().expect("state"));
    let gone = Manager::with_root(Mode::V1, t.path(), "/berth/none").expect("manager");
    assert!(!gone.is_frozen().expect("a missing cgroup is not frozen"));
}

#[test]
fn v1_host_dirs_and_combined_mounts() {
    let t = fake_v1();
    let dirs = v1(&t).host_dirs();
    assert!(dirs.contains(&("memory".to_string(), t.path().join("memory/berth/x"))));
    assert!(dirs.contains(&("systemd".to_string(), t.path().join("systemd/berth/x"))));
    assert!(!dirs.iter().any(|(n, _)| n == "unified"));

    let t = tempfile::tempdir().expect("tempdir");
    touch(&t.path().join("cpu,cpuacct"), &[]);
    touch(&t.path().join("memory"), &[]);
    std::os::unix::fs::symlink("cpu,cpuacct", t.path().join("cpu")).expect("symlink");
    std::os::unix::fs::symlink("cpu,cpuacct", t.path().join("cpuacct")).expect("symlink");
    let m = Manager::with_root(Mode::V1, t.path(), "berth/y").expect("manager");
    assert_eq!(m.path(), "/berth/y", "relative paths are relative to the root");
    let combined = t.path().join("cpu,cpuacct/berth/y");
    let mut dirs = m.host_dirs();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            ("cpu".to_string(), combined.clone()),
            ("cpu,cpuacct".to_string(), combined.clone()),
            ("cpuacct".to_string(), combined),
            ("memory".to_string(), t.path().join("memory/berth/y")),
        ]
    );
    let e = Manager::with_root(Mode::V1, &t.path().join("memory"), "/x").expect_err("no hierarchies");
    assert!(e.to_string().contains("no cgroup v1 hierarchies"), "{e}");
}

#[test]
fn destroy_removes_children_first_and_tolerates_missing() {
    let t = tempfile::tempdir().expect("tempdir");
    for ctl in ["memory", "pids"] {
        fs::create_dir_all(t.path().join(ctl).join("berth/x/child/grandchild")).expect("mkdir");
    }
    let m = Manager::with_root(Mode::V1, t.path(), "/berth/x").expect("manager");
    m.destroy().expect("destroy");
    for ctl in ["memory", "pids"] {
        assert!(!t.path().join(ctl).join("berth/x").exists());
        assert!(t.path().join(ctl).join("berth").exists(), "parents stay");
    }
    m.destroy().expect("missing dirs are fine");

    // A directory that cannot be removed (a regular file inside, which a
    // real cgroup never has) is reported, and the others still go.
    fs::create_dir_all(t.path().join("memory/berth/x")).expect("mkdir");
    fs::create_dir_all(t.path().join("pids/berth/x")).expect("mkdir");
    fs::write(t.path().join("memory/berth/x/junk"), "").expect("write");
    let e = m.destroy().expect_err("must fail");
    assert!(!t.path().join("pids/berth/x").exists());
    let s = e.to_string();
    assert!(s.starts_with("cgroup: removing ") && s.contains("memory/berth/x: directory not empty"), "{s}");
}

#[test]
fn errors_name_file_value_dir_and_cause() {
    let t = tempfile::tempdir().expect("tempdir");
    let m = Manager::with_root(Mode::V2, t.path(), "/berth/x").expect("manager");
    let e = m.set(&res(serde_json::json!({"pids": {"limit": 42}}))).expect_err("no dir");
    assert_eq!(
        e.to_string(),
        format!("cgroup: setting pids.max=42 in {}: no such file or directory", t.path().join("berth/x").display())
    );
}

// --- cgroup v2 --------------------------------------------------------------

const CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma";

fn fake_v2() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    touch(root, &[("cgroup.controllers", CONTROLLERS), ("cgroup.subtree_control", ""), ("cgroup.procs", "")]);
    touch(
        &root.join("berth"),
        &[("cgroup.controllers", CONTROLLERS), ("cgroup.subtree_control", ""), ("cgroup.procs", "")],
    );
    touch(
        &root.join("berth/x"),
        &[
            ("cgroup.controllers", CONTROLLERS),
            ("cgroup.procs", ""),
            ("cgroup.freeze", "0"),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("cpu.max.burst", "0"),
            ("cpu.idle", "0"),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("memory.max", "max"),
            ("memory.low", "0"),
            ("memory.high", "max"),
            ("memory.swap.max", "max"),
            ("pids.max", "max"),
            ("io.weight", "default 100"),
            ("io.max", ""),
            ("hugetlb.2MB.max", "max"),
            ("rdma.max", ""),
        ],
    );
    t
}

fn v2m(t: &tempfile::TempDir) -> Manager {
    Manager::with_root(Mode::V2, t.path(), "/berth/x").expect("v2 manager")
}

#[test]
fn v2_apply_enables_controllers_in_ancestors() {
    let t = fake_v2();
    fs::write(t.path().join("cgroup.subtree_control"), "cpu memory").expect("write");
    let m = v2m(&t);
    assert_eq!(m.mode(), Mode::V2);
    m.apply(77).expect("apply");
    assert_eq!(get(t.path(), "cgroup.subtree_control"), "+cpuset +io +hugetlb +pids +rdma");
    assert_eq!(get(&t.path().join("berth"), "cgroup.subtree_control"), "+cpuset +cpu +io +memory +hugetlb +pids +rdma");
    assert!(!t.path().join("berth/x/cgroup.subtree_control").exists(), "the leaf is left alone");
    assert_eq!(get(&t.path().join("berth/x"), "cgroup.procs"), "77");
}

#[test]
fn v2_apply_creates_missing_levels() {
    let t = fake_v2();
    // A deeper path whose intermediate level lacks interface files (the
    // fake cannot create them): the parent's list is inherited.
    touch(&t.path().join("berth/x/y/z"), &[("cgroup.procs", "")]);
    touch(&t.path().join("berth/x/y"), &[("cgroup.subtree_control", "")]);
    fs::remove_file(t.path().join("berth/x/cgroup.controllers")).expect("rm");
    touch(&t.path().join("berth/x"), &[("cgroup.subtree_control", "")]);
    let m = Manager::with_root(Mode::V2, t.path(), "berth/x/y/z").expect("manager");
    m.apply(5).expect("apply");
    assert_eq!(
        get(&t.path().join("berth/x/y"), "cgroup.subtree_control"),
        "+cpuset +cpu +io +memory +hugetlb +pids +rdma"
    );
    assert_eq!(get(&t.path().join("berth/x/y/z"), "cgroup.procs"), "5");
}

#[test]
fn v2_full_resources() {
    let t = fake_v2();
    let m = v2m(&t);
    let mut r = full_resources();
    // No v2 equivalents (tested separately below).
    r.set_network(None);
    r.set_devices(None);
    if let Some(c) = r.cpu_mut() {
        c.set_realtime_runtime(None);
        c.set_realtime_period(None);
    }
    if let Some(mem) = r.memory_mut() {
        mem.set_kernel_tcp(None);
        mem.set_swappiness(None);
        mem.set_disable_oom_killer(None);
    }
    r.set_unified(Some([("memory.high".to_string(), "900000000".to_string())].into_iter().collect()));
    r.set_rdma(Some(
        [(
            "mlx5_1".to_string(),
            serde_json::from_value(serde_json::json!({"hcaHandles": 3, "hcaObjects": 10000})).expect("rdma"),
        )]
        .into_iter()
        .collect(),
    ));
    m.set(&r).expect("set");
    let x = t.path().join("berth/x");
    assert_eq!(get(&x, "cpu.weight"), shares_to_weight(512).to_string());
    assert_eq!(get(&x, "cpu.weight"), "20");
    assert_eq!(get(&x, "cpu.max"), "50000 100000");
    assert_eq!(get(&x, "cpu.max.burst"), "10000");
    assert_eq!(get(&x, "cpu.idle"), "1");
    assert_eq!(get(&x, "cpuset.cpus"), "0-1");
    assert_eq!(get(&x, "cpuset.mems"), "0");
    assert_eq!(get(&x, "memory.max"), "1073741824");
    assert_eq!(get(&x, "memory.low"), "536870912");
    assert_eq!(get(&x, "memory.swap.max"), "1073741824", "swap minus limit");
    assert_eq!(get(&x, "memory.high"), "900000000");
    assert_eq!(get(&x, "pids.max"), "42");
    // Default then per-device weight land in io.weight; the last is kept.
    assert_eq!(get(&x, "io.weight"), format!("8:0 {}", blkio_weight_to_io_weight(300)));
    assert_eq!(get(&x, "io.max"), "8:0 wiops=200");
    assert_eq!(get(&x, "hugetlb.2MB.max"), "209715200");
    assert_eq!(get(&x, "rdma.max"), "mlx5_1 hca_handle=3 hca_object=10000");

    m.set(&res(serde_json::json!({"blockIO": {"weight": 500}}))).expect("weight");
    assert_eq!(get(&x, "io.weight"), "default 4950");
    m.set(&res(serde_json::json!({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 0}]}})))
        .expect("throttle");
    assert_eq!(get(&x, "io.max"), "8:0 rbps=max");
    touch(&x, &[("io.bfq.weight", "default 100")]);
    m.set(&res(serde_json::json!({"blockIO": {"weight": 500}}))).expect("bfq");
    assert_eq!(get(&x, "io.bfq.weight"), "default 500", "bfq takes blkio weights unconverted");
}

#[test]
fn v2_cpu_and_memory_edge_values() {
    let t = fake_v2();
    let m = v2m(&t);
    let x = t.path().join("berth/x");
    m.set(&res(serde_json::json!({"cpu": {"quota": -1, "period": 50000}}))).expect("set");
    assert_eq!(get(&x, "cpu.max"), "max 50000");
    fs::write(x.join("cpu.max"), "20000 100000\n").expect("write");
    m.set(&res(serde_json::json!({"cpu": {"period": 50000}}))).expect("set");
    assert_eq!(get(&x, "cpu.max"), "20000 50000", "a period alone keeps the quota");
    m.set(&res(serde_json::json!({"cpu": {"quota": 30000}}))).expect("set");
    assert_eq!(get(&x, "cpu.max"), "30000");
    m.set(&res(serde_json::json!({"memory": {"limit": -1}, "pids": {"limit": 0}}))).expect("set");
    assert_eq!(get(&x, "memory.max"), "max");
    assert_eq!(get(&x, "memory.swap.max"), "max");
    assert_eq!(get(&x, "pids.max"), "max");
    m.set(&res(serde_json::json!({"memory": {"limit": 1000, "swap": -1}}))).expect("set");
    assert_eq!(get(&x, "memory.swap.max"), "max");

    fs::remove_file(x.join("memory.swap.max")).expect("rm");
    m.set(&res(serde_json::json!({"memory": {"limit": -1}}))).expect("implicit swap is skipped");
    let e = m.set(&res(serde_json::json!({"memory": {"limit": 1000, "swap": 2000}}))).expect_err("fail");
    assert!(e.to_string().contains("no memory.swap.max file"), "{e}");
}

#[test]
fn v2_unsupported_settings_are_errors() {
    let t = fake_v2();
    let m = v2m(&t);
    let err = |v| m.set(&res(v)).expect_err("must fail").to_string();
    assert_eq!(
        err(serde_json::json!({"memory": {"kernel": 1000000}})),
        "cgroup: kernel memory limit (memory.kmem.limit_in_bytes) requested but cgroup v2 has no equivalent"
    );
    assert!(err(serde_json::json!({"memory": {"kernelTCP": 1}})).contains("kernel TCP"));
    assert!(err(serde_json::json!({"memory": {"swappiness": 1}})).contains("swappiness"));
    assert!(err(serde_json::json!({"memory": {"disableOOMKiller": true}})).contains("disableOOMKiller"));
    assert!(err(serde_json::json!({"cpu": {"realtimeRuntime": 1}})).contains("realtime"));
    assert!(err(serde_json::json!({"network": {"classID": 1}})).contains("net_cls"));
    assert!(err(serde_json::json!({"blockIO": {"leafWeight": 10}})).contains("leaf weight"));
    assert!(err(serde_json::json!({"hugepageLimits": [{"pageSize": "1GB", "limit": 1}]})).contains("hugetlb.1GB.max"));
    assert!(err(serde_json::json!({"unified": {"../etc": "1"}})).contains("invalid unified key"));
    assert!(err(serde_json::json!({"unified": {"cgroup.procs": "1"}})).contains("not a resource setting"));
    assert!(err(serde_json::json!({"unified": {"memory.zswap.max": "1"}})).contains("no such file"));
    // Nothing is written before an unsupported setting is detected.
    assert!(err(serde_json::json!({"pids": {"limit": 9}, "memory": {"kernel": 1}})).contains("kernel memory"));
    assert_eq!(get(&t.path().join("berth/x"), "pids.max"), "max");
    fs::remove_file(t.path().join("berth/x/io.weight")).expect("rm");
    assert_eq!(
        err(serde_json::json!({"blockIO": {"weight": 100}})),
        "cgroup: blkio weight requested but this kernel has no io.weight or io.bfq.weight file"
    );
    // Device rules need a real cgroup2 directory to attach a program to.
    let e = err(serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}));
    assert!(e.contains("device filter") && e.contains("not a cgroup2 directory"), "{e}");
    // Harmless "unlimited" kernel memory values are accepted.
    m.set(&res(serde_json::json!({"memory": {"kernel": -1, "kernelTCP": 0}}))).expect("no-op");
}

#[test]
fn v2_freeze_thaw_pids_host_dirs() {
    let t = fake_v2();
    let m = v2m(&t);
    let x = t.path().join("berth/x");
    assert!(!m.is_frozen().expect("state"));
    // The fake kernel reports frozen as soon as asked.
    fs::write(x.join("cgroup.events"), "populated 1\nfrozen 1\n").expect("write");
    m.freeze().expect("freeze");
    assert_eq!(get(&x, "cgroup.freeze"), "1");
    assert!(m.is_frozen().expect("state"));
    m.thaw().expect("thaw");
    assert_eq!(get(&x, "cgroup.freeze"), "0");

    touch(&x, &[("cgroup.procs", "7\n3\n")]);
    touch(&x.join("inner"), &[("cgroup.procs", "5\n")]);
    assert_eq!(m.pids().expect("pids"), [3, 5, 7]);
    assert_eq!(m.host_dirs(), [(String::new(), x)]);
}

// --- paths and conversions ---------------------------------------------------

#[test]
fn systemd_paths_through_new() {
    let m = match Manager::new("system.slice:berth:abc", true) {
        Ok(m) => m,
        Err(Error::Detect(why)) => {
            eprintln!("skipping: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(m.path(), "/system.slice/berth-abc.scope");
    let again = Manager::new(m.path(), true).expect("saved path");
    assert_eq!(again.path(), m.path());
    assert_eq!(again.host_dirs(), m.host_dirs());
    assert!(Manager::new("not-systemd", true).is_err());
    assert!(Manager::new("/a/../b", false).is_err());
    let rel = Manager::new("berth-unit-test/rel", false).expect("relative");
    assert!(rel.path().ends_with("/berth-unit-test/rel"), "{}", rel.path());
    assert_eq!(Manager::new(rel.path(), false).expect("saved").host_dirs(), rel.host_dirs());
}

#[test]
fn cpu_weight_conversion() {
    assert_eq!(shares_to_weight(0), 0);
    assert_eq!(shares_to_weight(1), 1);
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(u64::MAX), 10_000);
    assert_eq!(weight_to_shares(1), 2);
    assert_eq!(weight_to_shares(10_000), 262_144);
    for s in [2u64, 100, 1024, 4096, 262_144] {
        let back = weight_to_shares(shares_to_weight(s));
        assert!(back.abs_diff(s) <= 27, "{s} -> {back}");
    }
    assert_eq!(blkio_weight_to_io_weight(0), 0);
    assert_eq!(blkio_weight_to_io_weight(10), 1);
    assert_eq!(blkio_weight_to_io_weight(500), 4950);
    assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
}

#[test]
fn swap_conversion() {
    let s = |swap, limit| swap_to_v2(swap, limit);
    assert_eq!(s(None, None).expect("ok"), None);
    assert_eq!(s(Some(0), Some(100)).expect("ok"), None);
    assert_eq!(s(None, Some(-1)).expect("ok").as_deref(), Some("max"));
    assert_eq!(s(Some(-1), Some(100)).expect("ok").as_deref(), Some("max"));
    assert_eq!(s(Some(300), Some(100)).expect("ok").as_deref(), Some("200"));
    assert_eq!(s(Some(100), Some(100)).expect("ok").as_deref(), Some("0"));
    assert!(s(Some(50), Some(100)).is_err());
    assert!(s(Some(50), None).is_err());
    assert!(s(Some(50), Some(-1)).is_err());
    assert!(s(Some(-5), Some(100)).is_err());
}

#[test]
fn cpu_max_conversion() {
    assert_eq!(cpu_max(None, None, None), None);
    assert_eq!(cpu_max(Some(0), Some(0), None), None);
    assert_eq!(cpu_max(Some(50_000), Some(100_000), None).as_deref(), Some("50000 100000"));
    assert_eq!(cpu_max(Some(-1), Some(100_000), None).as_deref(), Some("max 100000"));
    assert_eq!(cpu_max(Some(20_000), None, None).as_deref(), Some("20000"));
    assert_eq!(cpu_max(None, Some(10_000), Some("5000 100000")).as_deref(), Some("5000 10000"));
    assert_eq!(cpu_max(None, Some(10_000), None).as_deref(), Some("max 10000"));
}
