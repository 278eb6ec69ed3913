//! Runs Ory Polis's own SSO flow (`benches/polis_login.mjs`: authorize → samlResponse → token →
//! userInfo, in process, mem engine) on this machine, for the benches that print its rate
//! beside ours. Needs `scripts/bench-deps.sh` (node and the pinned Polis install).

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// Polis's `POLIS_RESULT` JSON for `logins` logins with an IdP signing with `key_pem` (PKCS#8)
/// and `cert_pem` as `idp_entity_id`; or why it could not run.
pub fn run_polis(
    logins: usize,
    key_pem: &[u8],
    cert_pem: &[u8],
    idp_entity_id: &str,
) -> Result<Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/polis_login.mjs");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.path().join(name), bytes).map_err(|e| format!("writing {name}: {e}"))
    };
    write("idp-key.pem", key_pem)?;
    write("idp-cert.pem", cert_pem)?;
    write(
        "params.json",
        json!({"logins": logins, "idp_entity_id": idp_entity_id})
            .to_string()
            .as_bytes(),
    )?;
    let out = Command::new("node")
        .arg(&script)
        .arg(dir.path())
        .output()
        .map_err(|e| format!("running node (scripts/bench-deps.sh installs it): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "Polis harness failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("POLIS_RESULT "))
        .ok_or("no POLIS_RESULT line")?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}
