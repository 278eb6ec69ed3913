//! The `WorkOS-Signature` header (workos-api.md §4.4).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex HMAC-SHA256 of `"<t_ms>.<body>"` keyed by the endpoint secret, as the WorkOS SDKs
/// recompute it (Node `computeSignature`, Python `verify_header`).
pub fn sign(secret: &str, t_ms: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail for SHA-256.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(t_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The full header value `t=<ms>, v1=<hex>`: `t` first and exactly comma + one space, because
/// the Python SDKs split on `", "` and strip fixed-length prefixes.
pub fn signature_header(secret: &str, t_ms: i64, body: &[u8]) -> String {
    format!("t={t_ms}, v1={}", sign(secret, t_ms, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Computes the HMAC with Python's `hmac` module or `openssl dgst`, whichever exists, so
    /// the expected value does not come from our own code.
    fn independent_hmac(secret: &str, message: &[u8]) -> Option<String> {
        let msg_hex = hex::encode(message);
        let py = Command::new("python3")
            .args([
                "-c",
                "import hmac,hashlib,sys;print(hmac.new(sys.argv[1].encode(),bytes.fromhex(sys.argv[2]),hashlib.sha256).hexdigest())",
                secret,
                &msg_hex,
            ])
            .output();
        if let Ok(out) = py {
            if out.status.success() {
                return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
        }
        let dir = tempfile::tempdir().ok()?;
        let file = dir.path().join("msg");
        std::fs::write(&file, message).ok()?;
        let out = Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", secret, "-r"])
            .arg(&file)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().next().map(str::to_string)
    }

    #[test]
    fn matches_an_independent_hmac() {
        let secret = "whsec_test_0123456789";
        let body = r#"{"object":"event","id":"event_01","data":{"name":"Ünïcode / ok"}}"#;
        let t = 1_700_000_000_123_i64;
        let expected = independent_hmac(secret, format!("{t}.{body}").as_bytes())
            .expect("python3 or openssl is needed to check the signature independently");
        assert_eq!(expected.len(), 64);
        assert_eq!(sign(secret, t, body.as_bytes()), expected);
        // A different timestamp or body must change the signature.
        assert_ne!(sign(secret, t + 1, body.as_bytes()), expected);
        assert_ne!(sign(secret, t, b"{}"), expected);
    }

    #[test]
    fn header_has_the_exact_separator() {
        let h = signature_header("s", 42, b"{}");
        let (t, v1) = h.split_once(", ").expect("comma + space");
        assert_eq!(t, "t=42");
        assert_eq!(v1.strip_prefix("v1=").map(str::len), Some(64));
        assert_eq!(h.matches(',').count(), 1);
    }
}
