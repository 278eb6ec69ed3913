//! Runs scim2-tester (PyPI) against an in-memory server made only of this crate's protocol
//! functions (tests/support). The bar is the SCIM issue's: no ERROR and no CRITICAL result.
//! Needs `scim2-tester` and `httpx2` (scripts/test-deps.d/scim.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

#[test]
fn scim2_tester_reports_no_error_or_critical() {
    let token = "se_test_token_for_scim2_tester";
    let server = support::start(token);
    let script = format!(
        "{}/tests/py/run_scim2_tester.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .arg(&script)
        .arg(&server.base_url)
        .arg(token)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "scim2-tester is not installed: run scripts/test-deps.d/scim.sh\n{stderr}"
    );
    println!("{stdout}");
    assert!(out.status.success(), "scim2-tester:\n{stdout}\n{stderr}");
    // The run must actually have exercised the resources, not just discovery.
    assert!(
        stdout.contains("User") && stdout.contains("Group"),
        "{stdout}"
    );
}

mod http_support;

/// Runs scim2-tester against `base_url` and returns its output (asserting it ran at all).
fn run_tester(base_url: &str, token: &str) -> (bool, String) {
    let script = format!(
        "{}/tests/py/run_scim2_tester.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .arg(&script)
        .arg(base_url)
        .arg(token)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "scim2-tester is not installed: run scripts/test-deps.d/scim.sh\n{stderr}"
    );
    assert!(
        stdout.contains("User") && stdout.contains("Group"),
        "{stdout}\n{stderr}"
    );
    (out.status.success(), format!("{stdout}\n{stderr}"))
}

fn status_counts(output: &str) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for line in output.lines() {
        if let Some(word) = line.split_whitespace().next() {
            if word.chars().all(|c| c.is_ascii_uppercase()) && word.len() > 3 {
                *counts.entry(word.to_owned()).or_insert(0) += 1;
            }
        }
    }
    format!("{counts:?}")
}

/// The product's router over the directory engine, on a real socket, for a fresh directory
/// with the DEFAULT settings (deactivation deletes the user from the directory, as WorkOS
/// does): the SCIM resource of a deactivated user is parked and stays readable, so
/// scim2-tester's deactivate-and-read-back checks pass too.
#[test]
fn scim2_tester_against_the_real_router() {
    run_real_router(idbridge_directory::DirectorySettings::default());
}

/// The same with `deactivation = "keep_inactive"` (the user stays, `state: inactive`).
#[test]
fn scim2_tester_against_the_real_router_keep_inactive() {
    run_real_router(idbridge_directory::DirectorySettings {
        deactivation: idbridge_directory::Deactivation::KeepInactive,
        ..Default::default()
    });
}

fn run_real_router(settings: idbridge_directory::DirectorySettings) {
    let env_holder = std::sync::Arc::new(std::sync::Mutex::new(None));
    let holder = env_holder.clone();
    let base = http_support::serve_on_socket(move |url| {
        let env = http_support::Env::with_url(url);
        let app = env.app.clone();
        if let Ok(mut h) = holder.lock() {
            *h = Some(env);
        }
        app
    });
    let (dir, token) = {
        let guard = env_holder.lock().unwrap_or_else(|e| panic!("{e}"));
        let env = guard.as_ref().unwrap_or_else(|| panic!("no env"));
        env.dir(settings)
    };
    let (ok, output) = run_tester(&format!("{base}/scim/v2/{dir}"), &token);
    println!("{output}");
    println!("status counts: {}", status_counts(&output));
    assert!(
        ok,
        "scim2-tester reported ERROR/CRITICAL results:\n{output}"
    );
    // Belt and braces: the script's exit code and the printed statuses must agree.
    for bad in ["ERROR", "CRITICAL"] {
        assert!(
            !output.lines().any(|l| l.starts_with(bad)),
            "scim2-tester reported {bad}:\n{output}"
        );
    }
}
