//! Runs the real `idbridge serve` binary for a test.
//!
//! The binary is started as a separate process (not linked in) so the tests exercise exactly
//! what ships: argument and env parsing, first-start key generation, the listener, shutdown.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder};
use tempfile::TempDir;

use crate::error::HarnessError;

/// How long `start()`/`restart()` wait for `/readyz` and the key lines by default.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the process is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How much of the server's stderr is printed when a server is dropped (the runner shows it
/// only for failing tests); the full log stays readable through [`TestServer::stderr`].
const STDERR_TAIL_LINES: usize = 400;

/// Options for [`TestServer`]; `TestServer::start()` is `TestServer::builder().start()`.
#[derive(Debug, Clone)]
pub struct TestServerBuilder {
    envs: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    config: Option<ConfigSource>,
    port: Option<u16>,
    ready_timeout: Duration,
}

#[derive(Debug, Clone)]
enum ConfigSource {
    File(PathBuf),
    Inline(String),
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        TestServerBuilder {
            envs: Vec::new(),
            args: Vec::new(),
            config: None,
            port: None,
            ready_timeout: READY_TIMEOUT,
        }
    }
}

impl TestServerBuilder {
    /// Sets an extra environment variable for the server process (kept across restarts).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Appends an argument after `serve`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Passes `--config FILE`.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(ConfigSource::File(path.into()));
        self
    }

    /// Writes `contents` to a private `config.toml` and passes `--config` with it.
    pub fn config_toml(mut self, contents: impl Into<String>) -> Self {
        self.config = Some(ConfigSource::Inline(contents.into()));
        self
    }

    /// Uses this port instead of a free one (for tests that must know the URL beforehand,
    /// prefer [`free_port`] to pick it).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Changes how long to wait for readiness (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Spawns `idbridge serve` and waits until it answers `/readyz` and has printed its keys.
    pub async fn start(self) -> Result<TestServer, HarnessError> {
        let bin = find_binary()?;
        let port = match self.port {
            Some(p) => p,
            None => free_port()?,
        };
        let keep = std::env::var_os("IDBRIDGE_KEEP_DATA").is_some_and(|v| v == "1");
        let data_dir = temp_dir("idbridge-data-", keep)?;
        let log_dir = temp_dir("idbridge-log-", keep)?;
        let config_path = match &self.config {
            None => None,
            Some(ConfigSource::File(p)) => Some(p.clone()),
            Some(ConfigSource::Inline(text)) => {
                let p = log_dir.path().join("config.toml");
                std::fs::write(&p, text)
                    .map_err(|e| HarnessError::io(format!("writing {}", p.display()), e))?;
                Some(p)
            }
        };
        let http = http_client()?;
        let mut server = TestServer {
            bin,
            options: self,
            config_path,
            port,
            url: format!("http://127.0.0.1:{port}"),
            api_key: String::new(),
            client_id: String::new(),
            data_dir,
            log_dir,
            child: None,
            stdout: Arc::new(Mutex::new(Vec::new())),
            http,
        };
        server.spawn()?;
        server.wait_ready(true).await?;
        Ok(server)
    }
}

/// A running `idbridge serve` on `127.0.0.1:<free port>` with its own data directory.
///
/// Dropping it stops the process (SIGTERM, then SIGKILL after 10 s) and prints the tail of its
/// stderr, which the test runner shows only when the test failed. Set `IDBRIDGE_KEEP_DATA=1`
/// to keep the data and log directories for inspection.
pub struct TestServer {
    bin: PathBuf,
    options: TestServerBuilder,
    config_path: Option<PathBuf>,
    port: u16,
    url: String,
    api_key: String,
    client_id: String,
    data_dir: TempDir,
    log_dir: TempDir,
    child: Option<Child>,
    /// Lines the current process printed on stdout (a reader thread appends them).
    stdout: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl TestServer {
    /// Starts a server with default options.
    pub async fn start() -> Result<TestServer, HarnessError> {
        TestServerBuilder::default().start().await
    }

    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `sk_` key printed on first start.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The console operator and password printed on first start
    /// (`IDBRIDGE_CONSOLE_USER=` / `IDBRIDGE_CONSOLE_PASSWORD=` on stdout), if printed.
    pub fn console_credentials(&self) -> Option<(String, String)> {
        let lines = lock(&self.stdout);
        let find = |prefix: &str| {
            lines
                .iter()
                .find_map(|l| l.trim_end().strip_prefix(prefix).map(str::to_string))
        };
        Some((
            find("IDBRIDGE_CONSOLE_USER=")?,
            find("IDBRIDGE_CONSOLE_PASSWORD=")?,
        ))
    }

    /// The `client_` id printed on first start.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// OS process id of the current server process, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The environment the SDK test files read: `IDBRIDGE_URL`, `IDBRIDGE_API_KEY`,
    /// `IDBRIDGE_CLIENT_ID`, `IDBRIDGE_PORT`.
    pub fn peer_env(&self) -> Vec<(String, String)> {
        vec![
            ("IDBRIDGE_URL".into(), self.url.clone()),
            ("IDBRIDGE_API_KEY".into(), self.api_key.clone()),
            ("IDBRIDGE_CLIENT_ID".into(), self.client_id.clone()),
            ("IDBRIDGE_PORT".into(), self.port.to_string()),
        ]
    }

    /// A shared HTTP client that ignores proxy settings (the server is on loopback).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `url() + path`; `path` starts with `/`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// A request with the API key as bearer token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.endpoint(path))
            .bearer_auth(&self.api_key)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Everything the server wrote to stderr so far, across restarts.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path())
    }

    /// Lines the current process printed on stdout.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process with SIGKILL (no chance to flush or clean up), for crash tests.
    pub fn kill9(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: the point is that it is gone.
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| HarnessError::io("waiting for the killed server", e))?;
        }
        Ok(())
    }

    /// Stops the process gracefully (SIGTERM), killing it if it takes longer than 10 s.
    /// Returns whether it exited on its own within the grace period.
    pub fn stop(&mut self) -> Result<bool, HarnessError> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(true);
        }
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        if pid > 0 {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet (so it cannot have
            // been reused) and a constant signal number has no memory-safety requirements.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(true),
                Ok(None) => std::thread::sleep(Duration::from_millis(25)),
                Err(e) => return Err(HarnessError::io("waiting for the server to stop", e)),
            }
        }
        let _ = child.kill();
        child
            .wait()
            .map_err(|e| HarnessError::io("waiting for the killed server", e))?;
        Ok(false)
    }

    /// Starts the server again on the same port and data directory (stopping it gracefully
    /// first if it still runs). The API key and client id stay those of the first start.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop()?;
        self.spawn()?;
        self.wait_ready(false).await
    }

    fn stderr_path(&self) -> PathBuf {
        self.log_dir.path().join("stderr.log")
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        // A fresh client per process: pooled keep-alive connections to a killed or stopped
        // process would fail the next request ("connection closed before message completed").
        self.http = http_client()?;
        let log_path = self.stderr_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| HarnessError::io(format!("opening {}", log_path.display()), e))?;
        {
            use std::io::Write;
            let _ = writeln!(log, "----- harness: starting {} -----", self.bin.display());
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve");
        if let Some(cfg) = &self.config_path {
            cmd.arg("--config").arg(cfg);
        }
        cmd.args(&self.options.args)
            .env("IDBRIDGE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("IDBRIDGE_DATA_DIR", self.data_dir.path())
            .env("IDBRIDGE_PUBLIC_URL", &self.url)
            .envs(self.options.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            what: self.bin.display().to_string(),
            source,
        })?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let sink = Arc::clone(&lines);
            // Drains stdout for the whole life of the process so it never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lock(&sink).push(line);
                }
            });
        }
        self.stdout = lines;
        self.child = Some(child);
        Ok(())
    }

    /// Polls until `/readyz` answers 200 and (on first start) both key lines were printed.
    async fn wait_ready(&mut self, expect_keys: bool) -> Result<(), HarnessError> {
        let timeout = self.options.ready_timeout;
        let deadline = Instant::now() + timeout;
        let readyz = self.endpoint("/readyz");
        let mut ready = false;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    // Give the stdout thread and the log a moment to catch the last words.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    self.child = None;
                    return Err(HarnessError::ExitedEarly {
                        status,
                        stderr: self.stderr(),
                    });
                }
            }
            if expect_keys {
                self.take_keys_from_stdout();
            }
            if !ready {
                ready = matches!(
                    self.http
                        .get(&readyz)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await,
                    Ok(resp) if resp.status() == reqwest::StatusCode::OK
                );
            }
            let keys_ok = !expect_keys || (!self.api_key.is_empty() && !self.client_id.is_empty());
            if ready && keys_ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let what = if ready {
                    "the IDBRIDGE_API_KEY=/IDBRIDGE_CLIENT_ID= lines on stdout"
                } else {
                    "GET /readyz to answer 200"
                };
                return Err(HarnessError::Timeout {
                    what: what.into(),
                    secs: timeout.as_secs(),
                    stderr: self.stderr(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn take_keys_from_stdout(&mut self) {
        for line in lock(&self.stdout).iter() {
            let line = line.trim_end();
            if let Some(key) = line.strip_prefix("IDBRIDGE_API_KEY=") {
                self.api_key = key.to_string();
            } else if let Some(id) = line.strip_prefix("IDBRIDGE_CLIENT_ID=") {
                self.client_id = id.to_string();
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop();
        let keep = std::env::var_os("IDBRIDGE_KEEP_DATA").is_some_and(|v| v == "1");
        let log = self.stderr();
        let lines: Vec<&str> = log.lines().collect();
        let skip = lines.len().saturating_sub(STDERR_TAIL_LINES);
        // eprintln! (not a raw write) so the test runner captures it and shows it on failure.
        eprintln!(
            "----- idbridge stderr (port {}, data dir {}{}) -----",
            self.port,
            self.data_dir.path().display(),
            if keep { ", kept" } else { "" }
        );
        if skip > 0 {
            eprintln!("[... {skip} earlier lines ...]");
        }
        for line in &lines[skip..] {
            eprintln!("{line}");
        }
        eprintln!("----- end of idbridge stderr -----");
    }
}

/// Asks the OS for a free loopback port. Another process could take it before the server
/// binds; on a test machine that is rare enough, and the server then fails loudly.
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding a probe socket for a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("reading the probe socket's port", e))?
        .port();
    Ok(port)
}

/// `IDBRIDGE_BIN`, else `idbridge` in the target profile dir next to this test executable
/// (`target/debug/deps/<test>` → `target/debug/idbridge`).
fn find_binary() -> Result<PathBuf, HarnessError> {
    let path = match std::env::var_os("IDBRIDGE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| HarnessError::io("locating the test executable", e))?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            profile_dir.join(format!("idbridge{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::BinaryNotFound { path })
    }
}

fn temp_dir(prefix: &str, keep: bool) -> Result<TempDir, HarnessError> {
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| HarnessError::io("creating a temp dir", e))?;
    dir.disable_cleanup(keep);
    Ok(dir)
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A poisoned lock only means a reader thread panicked mid-push; the lines are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The harness's HTTP client (no proxy, a 60 s timeout).
fn http_client() -> Result<reqwest::Client, HarnessError> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(HarnessError::Http)
}
