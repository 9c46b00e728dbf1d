//! seccomp filter compilation (placeholder, being written).
