//! Integration tests of `berth runtime` against the real kernel: each test
//! runs a busybox bundle and checks the effect from inside the container.
//! They need root; without it they print "skipped" and pass.

mod common;

mod cgroups;
mod cli;
mod hooks;
mod isolation;
mod lifecycle;
mod seccomp;
mod security;
