#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| idbridge_fuzz_targets::saml_idp::saml_authn_request(data));
