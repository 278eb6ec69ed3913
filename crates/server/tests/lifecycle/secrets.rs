//! Secrets from Kubernetes Secrets: `IDBRIDGE_API_KEY` (or `_FILE`) provisions the API key
//! instead of the first-start random one and replaces it when the value changes; a weak key
//! or an ambiguous setting stops the start with a clear error; `IDBRIDGE_SECRET_KEY_FILE`
//! supplies the sealing key so none is written to the volume.

use std::time::Duration;

use crate::harness::{self, call};

const KEY_A: &str = "sk_0123456789abcdef0123456789abcdef0123456789abcdef";
const KEY_B: &str = "sk_fedcba9876543210fedcba9876543210fedcba9876543210";

#[test]
fn the_provided_api_key_is_used_and_a_changed_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret_file = dir.path().join("secret-key");
    std::fs::write(&secret_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let secret_path = secret_file.display().to_string();
    let mut server = harness::start_env(
        dir.path(),
        &data,
        "",
        None,
        &[
            ("IDBRIDGE_API_KEY", KEY_A),
            ("IDBRIDGE_SECRET_KEY_FILE", secret_path.as_str()),
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    let stdout = server.stdout.lock().unwrap().clone();
    assert!(
        !stdout.contains("IDBRIDGE_API_KEY="),
        "no random key beside the provided one: {stdout}"
    );
    assert_eq!(
        call(&server, "GET", "/organizations", Some(KEY_A), None).0,
        200
    );
    assert_eq!(
        call(&server, "GET", "/organizations", Some(KEY_B), None).0,
        401
    );
    assert!(
        !data.join("secret.key").exists(),
        "the sealing key came from the file: none is written to the volume"
    );
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    drop(server);

    // The Secret changed (now mounted as a file): B works, A is revoked.
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, format!("{KEY_B}\n")).unwrap();
    let key_path = key_file.display().to_string();
    let server = harness::start_env(
        dir.path(),
        &data,
        "",
        None,
        &[
            ("IDBRIDGE_API_KEY_FILE", key_path.as_str()),
            ("IDBRIDGE_SECRET_KEY_FILE", secret_path.as_str()),
        ],
    );
    assert_eq!(
        call(&server, "GET", "/organizations", Some(KEY_B), None).0,
        200
    );
    assert_eq!(
        call(&server, "GET", "/organizations", Some(KEY_A), None).0,
        401
    );
    server.wait_log("API key provisioned from IDBRIDGE_API_KEY", 1);
    assert!(
        server.logs().contains("revoked_previous=1"),
        "{}",
        server.logs()
    );
}

#[test]
fn weak_or_ambiguous_secrets_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, KEY_A).unwrap();
    let key_path = key_file.display().to_string();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("IDBRIDGE_API_KEY", "sk_short")], "too short"),
        (
            &[("IDBRIDGE_API_KEY", "0123456789abcdef0123456789abcdef0123")],
            "does not start with sk_",
        ),
        (
            &[("IDBRIDGE_API_KEY", "sk_0123456789abcdef0123456789abcdef!!")],
            "other than a letter or digit",
        ),
        (
            &[
                ("IDBRIDGE_API_KEY", KEY_A),
                ("IDBRIDGE_API_KEY_FILE", key_path.as_str()),
            ],
            "both IDBRIDGE_API_KEY and IDBRIDGE_API_KEY_FILE are set",
        ),
        (
            &[("IDBRIDGE_SECRET_KEY_FILE", "/nonexistent/secret-key")],
            "IDBRIDGE_SECRET_KEY_FILE: cannot read /nonexistent/secret-key",
        ),
    ];
    for (env, expected) in cases {
        let mut server = harness::spawn_env(dir.path(), &data, "", None, env);
        let exit = server.wait_exit(Duration::from_secs(30));
        assert!(!exit.success(), "{env:?} was accepted");
        assert!(
            server.logs().contains(expected),
            "{env:?}: {}",
            server.logs()
        );
    }
    // Nothing was provisioned by the refused starts: a plain start mints the first key now.
    let server = harness::start(dir.path(), &data, "", None);
    let key = server.api_key();
    assert_eq!(
        call(&server, "GET", "/organizations", Some(&key), None).0,
        200
    );
}
