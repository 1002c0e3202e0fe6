#![no_main]
//! `xenbus_keys`: see the crate's README and `splitnet_fuzz::xenbus_keys`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| splitnet_fuzz::xenbus_keys::run(data));
