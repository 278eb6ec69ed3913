//! Shared by the benches: per-thread CPU time and `openssl speed rsa2048`'s figures.
#![allow(dead_code)]

use std::process::Command;

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID).
#[allow(unsafe_code)] // clock_gettime
pub fn thread_cpu_secs() -> f64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes into the provided, properly sized struct.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// `openssl speed -seconds 3 rsa2048`: (sign/s, verify/s) on one core.
pub fn openssl_rsa2048() -> Option<(f64, f64)> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000580s 0.000017s   1724.1  58823.5"  (sign, verify, sign/s, verify/s)
    let line = text.lines().find(|l| {
        l.trim_start().starts_with("rsa 2048 bits") || l.trim_start().starts_with("rsa  2048 bits")
    })?;
    let cols: Vec<f64> = line
        .split_whitespace()
        .rev()
        .take(2)
        .map(|v| v.parse().ok())
        .collect::<Option<Vec<f64>>>()?;
    match cols.as_slice() {
        [verify, sign] => Some((*sign, *verify)),
        _ => None,
    }
}
