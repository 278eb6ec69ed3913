//! A real `idbridge serve` process for the lifecycle tests: config file, free port, stdout
//! (the first-start API key) and stderr (the logs) captured, raw HTTP/1.1 over TCP or TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a fresh self-signed pair for 127.0.0.1 to `cert`/`key` (through a rename, as a
/// Kubernetes Secret update does) and returns the certificate's SHA-256 fingerprint.
pub fn write_pair(cert: &Path, key: &Path) -> String {
    let pair =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    replace_file(cert, pair.cert.pem().as_bytes());
    replace_file(key, pair.key_pair.serialize_pem().as_bytes());
    let x509 = openssl::x509::X509::from_der(pair.cert.der()).unwrap();
    hex(&x509.digest(MessageDigest::sha256()).unwrap())
}

pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub tls: bool,
    pub stderr_path: PathBuf,
    pub stdout: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config of a test server: `[server]` keys in `server_keys`, TLS when `tls` names the
/// cert and key files.
pub fn write_config(
    dir: &Path,
    data: &Path,
    port: u16,
    server_keys: &str,
    tls: Option<(&Path, &Path)>,
) -> PathBuf {
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{server_keys}\n",
        data.display()
    );
    if let Some((cert, key)) = tls {
        toml.push_str(&format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    toml.push_str("[log]\nformat = \"text\"\nlevel = \"info\"\n");
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    config
}

/// Starts `idbridge serve` and waits for `/readyz`.
pub fn start(dir: &Path, data: &Path, server_keys: &str, tls: Option<(&Path, &Path)>) -> Server {
    start_env(dir, data, server_keys, tls, &[])
}

/// [`start`] with extra environment variables.
pub fn start_env(
    dir: &Path,
    data: &Path,
    server_keys: &str,
    tls: Option<(&Path, &Path)>,
    env: &[(&str, &str)],
) -> Server {
    let mut server = spawn_env(dir, data, server_keys, tls, env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut conn) = server.connect() {
            if let Ok((200, _)) = request(&mut conn, "GET", "/readyz", None, None) {
                return server;
            }
        }
        if let Ok(Some(status)) = server.child_status() {
            panic!("server exited with {status}: {}", server.logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server did not become ready: {}", server.logs());
}

/// Starts `idbridge serve` without waiting.
pub fn spawn(dir: &Path, data: &Path, server_keys: &str, tls: Option<(&Path, &Path)>) -> Server {
    spawn_env(dir, data, server_keys, tls, &[])
}

/// [`spawn`] with extra environment variables (the secrets' variables are cleared first).
pub fn spawn_env(
    dir: &Path,
    data: &Path,
    server_keys: &str,
    tls: Option<(&Path, &Path)>,
    env: &[(&str, &str)],
) -> Server {
    let port = free_port();
    let config = write_config(dir, data, port, server_keys, tls);
    let stderr_path = dir.join(format!("stderr-{port}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("IDBRIDGE_SECRET_KEY")
        .env_remove("IDBRIDGE_SECRET_KEY_FILE")
        .env_remove("IDBRIDGE_API_KEY")
        .env_remove("IDBRIDGE_API_KEY_FILE")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = Arc::new(Mutex::new(String::new()));
    let pipe = child.stdout.take().unwrap();
    let sink = stdout.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    Server {
        child,
        port,
        tls: tls.is_some(),
        stderr_path,
        stdout,
    }
}

impl Server {
    /// The server's log so far, without terminal colour codes.
    pub fn logs(&self) -> String {
        let raw = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ params final-byte
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    pub fn child_status(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits until the log holds `needle` `times` times (or panics after 20 s).
    pub fn wait_log(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.logs().matches(needle).count() >= times {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("log line {needle:?} (x{times}) never came: {}", self.logs());
    }

    /// The first-start API key printed on stdout.
    pub fn api_key(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(key) = self
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("IDBRIDGE_API_KEY="))
            {
                return key.to_owned();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no API key on stdout")
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit (or panics after `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server still running after {limit:?}: {}", self.logs());
    }

    pub fn connect(&self) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        if !self.tls {
            return Ok(Conn::Plain(tcp));
        }
        let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        let tls = builder
            .build()
            .configure()
            .unwrap()
            .verify_hostname(false)
            .connect("localhost", tcp)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Conn::Tls(Box::new(tls)))
    }
}

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Conn {
    /// SHA-256 of the certificate the server presented on this connection.
    pub fn peer_fingerprint(&self) -> String {
        match self {
            Conn::Tls(s) => hex(&s
                .ssl()
                .peer_certificate()
                .unwrap()
                .digest(MessageDigest::sha256())
                .unwrap()),
            Conn::Plain(_) => panic!("not a TLS connection"),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// The head of a keep-alive request with a JSON body of `len` bytes.
pub fn head(method: &str, path: &str, bearer: Option<&str>, len: usize) -> String {
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n"
    )
}

/// One keep-alive request; the status and body of the answer.
pub fn request(
    conn: &mut Conn,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let body = body.unwrap_or("");
    conn.write_all(head(method, path, bearer, body.len()).as_bytes())?;
    conn.write_all(body.as_bytes())?;
    read_response(conn)
}

/// Reads one HTTP/1.1 response (Content-Length or chunked).
pub fn read_response(conn: &mut Conn) -> std::io::Result<(u16, String)> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&raw)),
            ));
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        body.resize(len.parse().unwrap(), 0);
        conn.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                conn.read_exact(&mut byte)?;
                line.push(byte[0]);
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            conn.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// A request on a new connection; `(0, "")` when the server cannot be reached.
pub fn call(
    server: &Server,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    match server
        .connect()
        .and_then(|mut c| request(&mut c, method, path, bearer, body))
    {
        Ok((status, text)) => (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ),
        Err(_) => (0, serde_json::Value::Null),
    }
}
