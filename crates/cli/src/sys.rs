//! The process entry point, the one `unsafe` item of the binary.

/// The C `main` that libc calls. The crate is `no_main`, so Rust's own
/// runtime setup (and its `main` symbol) is left out: what berth needs of
/// it is done by `berth_runtime::sys::process_start`.
// SAFETY: `no_mangle` exports this as the program's only `main` symbol:
// with `no_main`, rustc emits none of its own (tests, which keep the
// harness's `main`, do not build this one).
#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    berth_runtime::sys::process_start();
    crate::berth_main()
}
