#![no_main]
//! `netback_ctrl`: see the crate's README and `splitnet_fuzz::netback_ctrl`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| splitnet_fuzz::netback_ctrl::run(data));
