//! cgroup management (placeholder, being written).
