//! The `idbridge` command line as an operator meets it. Also makes `cargo test` build the
//! binary that the end-to-end tests in `tests/` start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn idbridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_idbridge"))
}

fn example_config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/idbridge.example.toml")
}

#[test]
fn config_check_accepts_the_documented_example() {
    let out = idbridge()
        .args(["config", "check"])
        .arg(example_config())
        .output()
        .expect("runs idbridge");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "config check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": OK"), "unexpected output: {stdout}");
}

#[test]
fn config_check_names_the_offending_key_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = 8080\n").expect("write config");
    let out = idbridge()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("runs idbridge");
    assert!(!out.status.success(), "a mistyped key was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.listen"),
        "error does not name the key: {stderr}"
    );
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = idbridge()
        .arg("frobnicate")
        .output()
        .expect("runs idbridge");
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit with 2");
}

/// The commented-out LDAP example (a declared `ldap` directory and the feed naming it by key)
/// is valid once uncommented, and a feed naming an unknown key is refused with its key path.
#[test]
fn config_check_resolves_feeds_by_directory_key() {
    let text = std::fs::read_to_string(example_config()).expect("read example");
    let start = text
        .find("# [[directories]]\n# key = \"acme-ad\"")
        .expect("the example documents a declared ldap directory");
    let end = start
        + text[start..]
            .find("# operation_secs = 30\n")
            .expect("end of the ldap example")
        + "# operation_secs = 30\n".len();
    let block: String = text[start..end]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let enabled = format!("{}{block}{}", &text[..start], &text[end..]);
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, contents: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, contents).expect("write config");
        let out = idbridge()
            .args(["config", "check"])
            .arg(&file)
            .output()
            .expect("runs idbridge");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, output) = check("ldap.toml", &enabled);
    assert!(ok, "the uncommented ldap example fails: {output}\n{block}");
    let typo = enabled.replace("directory = \"acme-ad\"", "directory = \"acme-adx\"");
    let (ok, output) = check("typo.toml", &typo);
    assert!(!ok, "an unknown directory key was accepted");
    assert!(
        output.contains("ldap_directories[0].directory") && output.contains("acme-adx"),
        "error does not name the key path: {output}"
    );
}
