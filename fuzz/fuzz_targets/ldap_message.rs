#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| idbridge_fuzz_targets::ldap::ldap_message(data));
