//! ACS verifications per second on one core, for distinct signed 2048-bit RSA-SHA256 responses,
//! next to Ory Polis's rate for the same responses (goal: at least 20x) and
//! `openssl speed -seconds 3 rsa2048` verify/s (the floor; goal: within 4x).
//!
//! Run: `cargo bench -p idbridge-saml --bench verify` (env BENCH_RESPONSES=N, default 400).
//! Polis runs from `benches/polis` (install it with `scripts/bench-deps.sh`); the same signed
//! responses and IdP certificate are handed to it through a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Utc};
use idbridge_saml::testkit::{b64, AssertionSpec, ResponseSpec, SignMode};
use idbridge_saml::{
    verify_post_blocking, IdpSigner, MemoryReplayCache, ResponseContext, SpSettings,
};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

mod util;
use util::{openssl_rsa2048, thread_cpu_secs};

const SP: &str = "https://sp.bench.test/saml";
const ACS: &str = "https://sp.bench.test/saml/acs";
const IDP: &str = "https://idp.bench.test";

fn main() {
    let n: usize = std::env::var("BENCH_RESPONSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let idp = IdpSigner::generate(IDP).expect("idp key");
    let idp_settings = idp.settings(None);
    let sp = SpSettings::new(SP, ACS);
    let now: DateTime<Utc> = Utc::now();
    eprintln!("signing {n} distinct responses...");
    let responses: Vec<(String, String)> = (0..n)
        .map(|i| {
            let req = format!("_req{i:08}");
            let mut a =
                AssertionSpec::new(IDP, SP, ACS, &name_id(i), Some(&req), now).expect("assertion");
            a.attributes = vec![
                ("email".into(), vec![format!("user{i}@example.com")]),
                ("firstName".into(), vec!["Bench".into()]),
                (
                    "groups".into(),
                    vec!["Engineering".into(), "Everyone".into()],
                ),
            ];
            let r = ResponseSpec::new(IDP, ACS, Some(&req), now).expect("response");
            (
                req,
                b64(&idp.response(&r, &a, SignMode::Response).expect("sign")),
            )
        })
        .collect();
    let polis_dir = tempfile::tempdir().expect("temp dir");
    write_polis_input(polis_dir.path(), &responses, &idp_settings);
    let cache = MemoryReplayCache::new();
    // Warm-up (xmlsec init) on a throwaway cache.
    let warm = MemoryReplayCache::new();
    for (req, resp) in responses.iter().take(5) {
        let ctx = ResponseContext {
            expected_in_response_to: Some(req.clone()),
            now,
        };
        verify_post_blocking(resp, None, &ctx, &sp, &idp_settings, &warm).expect("warm-up verify");
    }
    let start = Instant::now();
    let cpu_start = thread_cpu_secs();
    for (req, resp) in &responses {
        let ctx = ResponseContext {
            expected_in_response_to: Some(req.clone()),
            now,
        };
        verify_post_blocking(resp, None, &ctx, &sp, &idp_settings, &cache).expect("verify");
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs() - cpu_start;
    // CPU time is the per-core figure (the machine is shared, so wall time includes waiting for
    // a core); `openssl speed` also reports per CPU second by default.
    let per_sec = n as f64 / cpu;
    println!(
        "ACS verifications (signed RSA-2048/SHA-256 Response, distinct, 1 thread): {per_sec:.0}/s per CPU-second ({:.3} ms CPU each; wall-clock {:.0}/s; {n} responses)",
        cpu * 1000.0 / n as f64,
        n as f64 / secs
    );
    // Right after ours, while the responses are fresh (Polis checks expiry against its clock).
    let polis = run_polis(polis_dir.path());
    phase_breakdown(&responses, &idp_settings);
    let floor = openssl_rsa2048().map(|(_, verify)| verify);
    match floor {
        Some(floor) => println!("openssl speed -seconds 3 rsa2048: {floor:.0} verify/s"),
        None => println!("openssl speed rsa2048: not available"),
    }
    println!("summary (per CPU-second, one core):");
    println!("  idbridge: {per_sec:.0}/s");
    match polis {
        Some(p) => println!(
            "  Ory Polis: {p:.0}/s; ours/Polis = {:.1}x (goal >= 20x)",
            per_sec / p
        ),
        None => println!("  Ory Polis: not measured (see above)"),
    }
    if let Some(floor) = floor {
        println!(
            "  openssl rsa2048 verify: {floor:.0}/s; floor/ours = {:.1}x (goal <= 4x)",
            floor / per_sec
        );
    }
}

fn name_id(i: usize) -> String {
    format!("user{i}@example.com")
}

/// The harness directory of `verify.mjs` (Polis, pinned by its package-lock.json).
fn polis_harness() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/polis"))
}

/// The same signed responses, the IdP certificate and a manifest, for `verify.mjs`.
fn write_polis_input(dir: &Path, responses: &[(String, String)], idp: &idbridge_saml::IdpSettings) {
    let pem = idp.signing_certs[0].to_pem().expect("cert pem");
    std::fs::write(dir.join("idp-cert.pem"), pem).expect("write cert");
    let mut entries = Vec::with_capacity(responses.len());
    for (i, (req, b64)) in responses.iter().enumerate() {
        let file = format!("response-{i:06}.b64");
        std::fs::write(dir.join(&file), b64).expect("write response");
        entries.push(serde_json::json!({
            "file": file,
            "in_response_to": req,
            "name_id": name_id(i),
        }));
    }
    let manifest = serde_json::json!({
        "audience": SP,
        "acs_url": ACS,
        "idp_entity_id": IDP,
        "responses": entries,
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).expect("manifest json"),
    )
    .expect("write manifest");
}

/// Run Polis on `dir` and return its verifications per CPU-second, or print why not.
fn run_polis(dir: &Path) -> Option<f64> {
    let harness = polis_harness();
    let installed = harness
        .join("node_modules/@boxyhq/saml-jackson/package.json")
        .is_file();
    let node = Command::new("node").arg("--version").output().is_ok();
    if !installed || !node {
        println!(
            "Ory Polis: harness not installed; run `scripts/bench-deps.sh` (npm ci in {}) and rerun",
            harness.display()
        );
        return None;
    }
    let out = match Command::new("node")
        .arg(harness.join("verify.mjs"))
        .arg(dir)
        .current_dir(harness)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("Ory Polis: could not run node: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        println!(
            "Ory Polis: harness FAILED ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    for line in stdout.lines().filter(|l| !l.starts_with("POLIS_RESULT ")) {
        println!("{line}");
    }
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("POLIS_RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())?;
    result
        .get("per_cpu_sec")
        .and_then(serde_json::Value::as_f64)
}

/// Where the time goes: our pre-gate alone, and samael/xmlsec's verification alone.
fn phase_breakdown(responses: &[(String, String)], idp: &idbridge_saml::IdpSettings) {
    use idbridge_saml::xml::{self, Limits};
    use samael::crypto::{CertificateDer, Crypto, CryptoProvider, ReduceMode};
    let xmls: Vec<String> = responses
        .iter()
        .map(|(_, b)| idbridge_saml::verify::decode_post_binding(b).expect("decode"))
        .collect();
    let n = xmls.len() as f64;
    let start = thread_cpu_secs();
    for x in &xmls {
        let root = xml::parse(x, &Limits::MESSAGE).expect("parse");
        idbridge_saml::gate::check_response(&root, false).expect("gate");
    }
    let gate_us = (thread_cpu_secs() - start) * 1e6 / n;
    let certs: Vec<CertificateDer> = idp
        .signing_certs
        .iter()
        .map(|c| CertificateDer::from(c.to_der().expect("der")))
        .collect();
    let start = thread_cpu_secs();
    for x in &xmls {
        Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            x,
            &certs,
            ReduceMode::PreDigest,
            None,
        )
        .expect("xmlsec");
    }
    let xmlsec_us = (thread_cpu_secs() - start) * 1e6 / n;
    println!("breakdown per response (CPU): quick-xml parse + gate {gate_us:.0} us; samael/xmlsec verify (PreDigest) {xmlsec_us:.0} us");
}
