//! Thin safe wrappers over raw Linux syscalls. Every `unsafe` block of the
//! crate lives under this module, each with a `// SAFETY:` comment.
