#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| idbridge_fuzz_targets::api::api_json(data));
