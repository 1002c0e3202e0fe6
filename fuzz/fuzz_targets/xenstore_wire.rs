#![no_main]
//! `xenstore_wire`: see the crate's README and `splitnet_fuzz::xenstore_wire`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| splitnet_fuzz::xenstore_wire::run(data));
