//! Runs the SDK test files (`tests/js/*.mjs` with node:test, `tests/py/*.py` with pytest)
//! against a running server, as child processes.
//!
//! A peer run that passes but ran no test is an error: a renamed or emptied test file must not
//! look like a green suite.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::error::HarnessError;

/// Upper bound for one peer test file (the Node SDK's auto-pagination sleeps 350 ms a page).
const PEER_TIMEOUT: Duration = Duration::from_secs(600);

/// What a peer test run reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerReport {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Set when the run was skipped (`IDBRIDGE_SKIP_PEERS=1` and the tool is missing).
    pub skipped_reason: Option<String>,
    /// stdout then stderr of the run.
    pub output: String,
}

impl PeerReport {
    /// Whether the peer tests actually ran.
    pub fn ran(&self) -> bool {
        self.skipped_reason.is_none()
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Runs `node --test tests/js/<file>` with `env` added (use [`crate::TestServer::peer_env`]).
pub async fn run_node_test<I, K, V>(file: &str, env: I) -> Result<PeerReport, HarnessError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let js_dir = repo_root().join("tests").join("js");
    let node = std::env::var_os("IDBRIDGE_NODE").unwrap_or_else(|| "node".into());
    if let Err(detail) = probe(&node, &["--version"]).await {
        return missing("node", detail);
    }
    if !js_dir.join("node_modules").is_dir() {
        return missing("tests/js/node_modules", "npm ci has not run".into());
    }
    let mut cmd = Command::new(&node);
    // TAP output has stable `# pass N` / `# fail N` summary lines to count.
    cmd.args(["--test", "--test-reporter=tap"])
        .arg(file)
        .current_dir(&js_dir);
    let out = run(cmd, env, &format!("node --test tests/js/{file}")).await?;
    let mut report = PeerReport {
        output: out.clone(),
        ..PeerReport::default()
    };
    for line in out.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") {
            continue;
        }
        let (Some(kind), Some(n)) = (words.next(), words.next().and_then(|n| n.parse().ok()))
        else {
            continue;
        };
        match kind {
            "pass" => report.passed = n,
            "fail" => report.failed = n,
            "skipped" => report.skipped = n,
            _ => {}
        }
    }
    check_ran(report, &format!("node --test tests/js/{file}"))
}

/// Runs `<repo>/.venv/bin/python -m pytest -q tests/py/<file>` with `env` added.
pub async fn run_python_test<I, K, V>(file: &str, env: I) -> Result<PeerReport, HarnessError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let root = repo_root();
    let python = root.join(".venv").join("bin").join("python");
    if let Err(detail) = probe(python.as_os_str(), &["-c", "import pytest"]).await {
        return missing(".venv with pytest", detail);
    }
    let mut cmd = Command::new(&python);
    // No cache dir and no bytecode: the test run leaves the work tree as it found it.
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(Path::new("tests").join("py").join(file))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&root);
    let command = format!(".venv/bin/python -m pytest -q tests/py/{file}");
    let out = run(cmd, env, &command).await?;
    let mut report = PeerReport {
        output: out.clone(),
        ..PeerReport::default()
    };
    // The closing line reads like "1 failed, 6 passed, 2 skipped in 0.52s".
    if let Some(summary) = out
        .lines()
        .rev()
        .find(|l| l.contains(" passed") || l.contains(" failed"))
    {
        let words: Vec<&str> = summary
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if let Ok(n) = pair[0].parse::<u32>() {
                match pair[1] {
                    "passed" => report.passed = n,
                    "failed" => report.failed = n,
                    "skipped" => report.skipped = n,
                    _ => {}
                }
            }
        }
    }
    check_ran(report, &command)
}

/// Runs the command with the extra env, a timeout, and proxies disabled for loopback; fails
/// with both output streams when it exits non-zero.
async fn run<I, K, V>(mut cmd: Command, env: I, command: &str) -> Result<String, HarnessError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    cmd.envs(env)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
        what: command.to_string(),
        source,
    })?;
    let output = match tokio::time::timeout(PEER_TIMEOUT, child.wait_with_output()).await {
        Ok(res) => res.map_err(|e| HarnessError::io(format!("running `{command}`"), e))?,
        Err(_) => {
            return Err(HarnessError::PeerFailed {
                command: command.to_string(),
                status: format!("timed out after {} s", PEER_TIMEOUT.as_secs()),
                stdout: String::new(),
                stderr: String::new(),
            })
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(HarnessError::PeerFailed {
            command: command.to_string(),
            status: output.status.to_string(),
            stdout,
            stderr,
        });
    }
    // Printed so `cargo test -- --nocapture` shows what the peer said (a failure carries the
    // output in its error instead, so it is not printed twice).
    println!("----- {command} -----\n{stdout}{stderr}");
    Ok(format!("{stdout}{stderr}"))
}

fn check_ran(report: PeerReport, command: &str) -> Result<PeerReport, HarnessError> {
    if report.failed > 0 {
        return Err(HarnessError::PeerFailed {
            command: command.to_string(),
            status: format!("{} failed despite exit code 0", report.failed),
            stdout: report.output,
            stderr: String::new(),
        });
    }
    if report.passed == 0 {
        return Err(HarnessError::PeerRanNothing {
            command: command.to_string(),
            output: report.output,
        });
    }
    Ok(report)
}

/// Checks that a tool starts at all, so a missing install gives a clear message.
async fn probe(program: &OsStr, args: &[&str]) -> Result<(), String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{} {}` failed: {}",
            program.to_string_lossy(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("`{}`: {e}", program.to_string_lossy())),
    }
}

/// A missing peer tool fails the test unless `IDBRIDGE_SKIP_PEERS=1` says to skip.
fn missing(tool: &str, detail: String) -> Result<PeerReport, HarnessError> {
    if std::env::var_os("IDBRIDGE_SKIP_PEERS").is_some_and(|v| v == "1") {
        let reason = format!("{tool} missing ({detail}); skipped because IDBRIDGE_SKIP_PEERS=1");
        eprintln!("SKIPPED: {reason}");
        return Ok(PeerReport {
            skipped_reason: Some(reason),
            ..PeerReport::default()
        });
    }
    Err(HarnessError::PeerMissing {
        tool: tool.to_string(),
        detail,
    })
}

/// A throwaway RSA-2048 key pair for a peer (a test IdP's or SP's signing or encryption key):
/// (PKCS#8 key PEM, self-signed certificate PEM), made by the `openssl` command.
pub fn throwaway_key_pair(common_name: &str) -> Result<(String, String), HarnessError> {
    let dir = tempfile::tempdir().map_err(|source| HarnessError::Spawn {
        what: "a temporary directory".into(),
        source,
    })?;
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={common_name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|source| HarnessError::Spawn {
            what: "openssl req".into(),
            source,
        })?;
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    match (out.status.success(), read(&key), read(&cert)) {
        (true, Some(key), Some(cert)) => Ok((key, cert)),
        _ => Err(HarnessError::PeerFailed {
            command: "openssl req -x509 -newkey rsa:2048".into(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
    }
}
