#![no_main]
//! `netback_tx`: see the crate's README and `splitnet_fuzz::netback_tx`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| splitnet_fuzz::netback_tx::run(data));
