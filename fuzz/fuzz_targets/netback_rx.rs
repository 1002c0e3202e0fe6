#![no_main]
//! `netback_rx`: see the crate's README and `splitnet_fuzz::netback_rx`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| splitnet_fuzz::netback_rx::run(data));
