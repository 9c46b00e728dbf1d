//! `/_ping`, `/version`, `/info`, `/system/df`.

use axum::extract::State;
use axum::http::header::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::error::{blocking, ApiResult};
use crate::{AppState, API_VERSION, MIN_API_VERSION};

/// Headers every ping carries (the CLI negotiates its version from them).
fn ping_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert("OSType", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Cache-Control", HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h
}

/// `GET|HEAD /_ping`.
pub async fn ping() -> impl IntoResponse {
    (ping_headers(), "OK")
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /version`.
pub async fn version() -> impl IntoResponse {
    let v = env!("CARGO_PKG_VERSION");
    Json(json!({
        "Platform": {"Name": "berth"},
        "Components": [{"Name": "Engine", "Version": v, "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": go_arch(), "KernelVersion": kernel()}}],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel(),
        "BuildTime": "",
    }))
}

/// `GET /info`.
pub async fn info(State(engine): State<AppState>) -> ApiResult<impl IntoResponse> {
    blocking(move || {
        let containers = engine.list()?;
        let count = |s: &str| containers.iter().filter(|c| c.state.status.as_str() == s).count();
        let images = engine.images().db().list()?.len();
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_string))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
            .unwrap_or(0)
            * 1024;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
        let cgroup_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
            .unwrap_or_else(|| "Linux".into());
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
        Ok(Json(json!({
            "ID": "",
            "Containers": containers.len(),
            "ContainersRunning": count("running"),
            "ContainersPaused": count("paused"),
            "ContainersStopped": count("exited") + count("created") + count("dead"),
            "Images": images,
            "Driver": "overlayfs",
            "DriverStatus": [],
            "DockerRootDir": engine.paths().root.display().to_string(),
            "Plugins": {"Volume": [], "Network": [], "Log": ["json-file"]},
            "MemoryLimit": true,
            "SwapLimit": true,
            "CpuCfsPeriod": true,
            "CpuCfsQuota": true,
            "CPUShares": true,
            "CPUSet": true,
            "PidsLimit": true,
            "OomKillDisable": false,
            "IPv4Forwarding": false,
            "Debug": false,
            "NFd": 0,
            "NGoroutines": 0,
            "SystemTime": berth_runtime::state::now_rfc3339(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": if cgroup_v2 { "2" } else { "1" },
            "NEventsListener": 0,
            "KernelVersion": kernel(),
            "OperatingSystem": os,
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "MemTotal": mem_total,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "Mirrors": []},
            "GenericResources": null,
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Name": host,
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Runtimes": {"berth": {"path": exe}},
            "DefaultRuntime": "berth",
            "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
            "LiveRestoreEnabled": true,
            "Isolation": "",
            "InitBinary": "",
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": [],
        })))
    })
    .await
}

/// Docker's `/system/df` answer for `engine` (also what `berth system df`
/// prints from when no daemon holds the store).
pub fn disk_usage_json(engine: &berth_engine::Engine) -> berth_engine::Result<serde_json::Value> {
    let du = engine.disk_usage()?;
    let images: Vec<serde_json::Value> = du
        .images
        .iter()
        .map(|i| {
            crate::images::image_summary(engine, &i.record, &i.tags, i.size, i.shared_size as i64, i.containers as i64)
        })
        .collect();
    let containers: Vec<serde_json::Value> = du
        .containers
        .iter()
        .map(|(c, size)| {
            let mut v = crate::containers::summary(c);
            v["SizeRw"] = json!(size);
            v["SizeRootFs"] = json!(
                size + engine
                    .images()
                    .resolve(&c.record.image_id)
                    .map(|r| engine.images().unpacked_size(&r))
                    .unwrap_or(0)
            );
            v
        })
        .collect();
    let volumes: Vec<serde_json::Value> = du
        .volumes
        .iter()
        .map(|(v, size, refs)| {
            let mut j = serde_json::to_value(v).unwrap_or_else(|_| json!({}));
            j["UsageData"] = json!({"Size": size, "RefCount": refs});
            j
        })
        .collect();
    Ok(json!({
        "LayersSize": du.layers_size,
        "Images": images,
        "Containers": containers,
        "Volumes": volumes,
        "BuildCache": [],
    }))
}

/// `GET /system/df`.
pub async fn df(State(engine): State<AppState>) -> ApiResult<impl IntoResponse> {
    blocking(move || Ok(Json(disk_usage_json(&engine)?))).await
}
