//! Feeds arbitrary bytes to the manifest/index parser: errors are fine,
//! panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = berth_image::manifest::parse(data, None);
});
