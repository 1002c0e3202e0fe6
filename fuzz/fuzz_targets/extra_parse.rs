#![no_main]
//! `extra_parse`: see the crate's README and `splitnet_fuzz::extra_parse`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| splitnet_fuzz::extra_parse::run(data));
