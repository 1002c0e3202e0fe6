#![no_main]
//! `bridge_forward`: see the crate's README and `splitnet_fuzz::bridge_forward`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| splitnet_fuzz::bridge_forward::run(data));
