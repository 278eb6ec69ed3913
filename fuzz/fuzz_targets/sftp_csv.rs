#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| idbridge_fuzz_targets::sftp_csv::sftp_csv(data));
