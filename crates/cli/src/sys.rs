//! The process entry point, and the rewrite of the command line a zygote
//! monitor shows once activated: the binary's only `unsafe` items.

use std::sync::atomic::{AtomicIsize, AtomicPtr, Ordering};

/// `main`'s argc and argv, for [`set_cmdline`].
static ARGC: AtomicIsize = AtomicIsize::new(0);
static ARGV: AtomicPtr<*const std::ffi::c_char> = AtomicPtr::new(std::ptr::null_mut());

/// The C `main` that libc calls. The crate is `no_main`, so Rust's own
/// runtime setup (and its `main` symbol) is left out: what berth needs of
/// it is done by `berth_runtime::sys::process_start`.
// SAFETY: `no_mangle` exports this as the program's only `main` symbol:
// with `no_main`, rustc emits none of its own (tests, which keep the
// harness's `main`, do not build this one).
#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    ARGC.store(argc as isize, Ordering::Relaxed);
    ARGV.store(argv.cast_mut(), Ordering::Relaxed);
    berth_runtime::sys::process_start();
    crate::berth_main()
}

/// Makes `/proc/self/cmdline` (what `ps` and `pgrep -f` show) read
/// argv[0] followed by `args`, the way setproctitle(3) does: over the
/// original argument strings, padded with NULs. Nothing reads those after
/// start-up (arguments are parsed from copies). Returns false, changing
/// nothing, when `args` does not fit or the strings are not laid out as
/// the kernel lays them (one after the other).
pub fn set_cmdline(args: &[&str]) -> bool {
    let argc = ARGC.load(Ordering::Relaxed);
    let argv = ARGV.load(Ordering::Relaxed);
    if argv.is_null() || argc < 2 {
        return false;
    }
    // SAFETY: argv holds argc valid pointers to NUL-terminated strings
    // (main's contract, kept alive for the whole process by the kernel's
    // stack layout). We only read them here, and check that argv[1..] are
    // contiguous before writing over exactly that span.
    let (start, len) = unsafe {
        let mut end = *argv.add(1);
        for i in 1..argc as usize {
            let s = *argv.add(i);
            if s != end {
                return false;
            }
            end = s.add(libc::strlen(s) + 1);
        }
        let start = *argv.add(1);
        (start.cast_mut().cast::<u8>(), end.offset_from(start) as usize)
    };
    let need: usize = args.iter().map(|a| a.len() + 1).sum();
    if need > len || args.iter().any(|a| a.contains('\0')) {
        return false;
    }
    // SAFETY: [start, start + len) is the argument area just measured:
    // writable process memory that no Rust reference points into.
    let area = unsafe { std::slice::from_raw_parts_mut(start, len) };
    area.fill(0);
    let mut at = 0;
    for a in args {
        area[at..at + a.len()].copy_from_slice(a.as_bytes());
        at += a.len() + 1;
    }
    true
}
