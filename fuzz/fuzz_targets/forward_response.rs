#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| idbridge_fuzz_targets::forward_response::forward_response(data));
