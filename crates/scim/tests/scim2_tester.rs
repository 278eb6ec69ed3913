//! Runs scim2-tester (PyPI) against an in-memory server made only of this crate's protocol
//! functions (tests/support). The bar is the SCIM issue's: no ERROR and no CRITICAL result.
//! Needs `scim2-tester` and `httpx2` (scripts/test-deps.d/scim.sh).

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
