//! Slow and greedy clients against a real `idbridge serve`, with raw sockets, on the plain
//! port and on the TLS port: a silent connection and half a request head are closed after the
//! header-read timeout; a stalled body is answered 408 in the protocol's error format (never a
//! 5xx) after the body-read timeout; an idle kept-alive connection is closed; connections over
//! the total and per-address limits are closed at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};

/// The timeouts every server here runs with (short, so the tests are quick).
const HEADER_TIMEOUT: u64 = 2;
const BODY_TIMEOUT: u64 = 2;
const IDLE: u64 = 1;

struct Server {
    child: Child,
    port: u16,
    tls: bool,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(tls: bool, extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\
         header_read_timeout_secs = {HEADER_TIMEOUT}\nbody_read_timeout_secs = {BODY_TIMEOUT}\n{extra}\n",
        dir.path().join("data").display()
    );
    if !extra.contains("keep_alive_idle_secs") {
        toml.push_str(&format!("keep_alive_idle_secs = {IDLE}\n"));
    }
    if tls {
        let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        std::fs::write(dir.path().join("cert.pem"), pair.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), pair.key_pair.serialize_pem()).unwrap();
        toml.push_str(&format!(
            "[server.tls]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n",
            dir.path().display()
        ));
    }
    toml.push_str("[log]\nformat = \"text\"\nlevel = \"warn\"\n");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, toml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        tls,
        _dir: dir,
    };
    wait_ready(&server);
    server
}

fn wait_ready(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut conn) = server.connect() {
            conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            let _ = conn.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server on port {} did not become ready", server.port);
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
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

impl Server {
    fn connect(&self) -> std::io::Result<Conn> {
        self.connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// A connection from `local` (any 127.x address: a different client address).
    fn connect_from(&self, local: IpAddr) -> std::io::Result<Conn> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(local, 0).into())?;
        socket.connect(&SocketAddr::from(([127, 0, 0, 1], self.port)).into())?;
        let tcp: TcpStream = socket.into();
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        if !self.tls {
            return Ok(Conn::Plain(tcp));
        }
        let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
        connector.set_verify(SslVerifyMode::NONE);
        connector
            .build()
            .connect("localhost", tcp)
            .map(|s| Conn::Tls(Box::new(s)))
            .map_err(|e| std::io::Error::new(ErrorKind::ConnectionAborted, e.to_string()))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// Reads until the server closes the connection; returns how long that took and what came.
fn until_closed(conn: &mut Conn, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {:?}", started.elapsed())
            }
            // Reset or TLS close without notify: closed either way.
            Err(_) => break,
        }
        assert!(started.elapsed() < limit, "still open after {limit:?}");
    }
    (started.elapsed(), got)
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, headers, body).
fn read_response(conn: &mut Conn) -> (u16, String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while got.len() < end + 4 + len {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "closed mid-body");
                got.extend_from_slice(&buf[..n]);
            }
            let status = head[9..12].parse().unwrap();
            let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string();
            return (status, head, body);
        }
        let n = conn.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn header_timeout_closes(tls: bool) {
    let server = start(tls, "");
    let limit = Duration::from_secs(HEADER_TIMEOUT + 3);
    // Silent: connected (and, on TLS, handshaken), then nothing.
    let mut silent = server.connect().unwrap();
    // Half a head: the request line and one header, then nothing.
    let mut half = server.connect().unwrap();
    half.write_all(b"POST /organizations HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let (took, _) = until_closed(&mut silent, limit);
    assert!(
        took >= Duration::from_millis(HEADER_TIMEOUT * 1000 - 500),
        "{took:?}"
    );
    let (took, answer) = until_closed(&mut half, limit);
    assert!(took <= limit, "{took:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 5"), "{answer}");
    assert!(server.stderr().lines().all(|l| !l.contains("panicked")));
}

#[test]
fn plain_silent_connection_and_half_head_are_closed_after_the_header_timeout() {
    header_timeout_closes(false);
}

#[test]
fn tls_silent_connection_and_half_head_are_closed_after_the_header_timeout() {
    header_timeout_closes(true);
}

/// A TLS connection that never starts its handshake is closed by the handshake limit.
#[test]
fn tls_connection_without_a_handshake_is_closed() {
    let server = start(true, "");
    let mut raw = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

fn stalled_body_gets_408(tls: bool) {
    let server = start(tls, "");
    let cases = [
        ("/organizations", "application/json", "request_timeout"),
        (
            "/sso/saml/acs/conn_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "application/x-www-form-urlencoded",
            "request_timeout",
        ),
        (
            "/scim/v2/directory_01ARZ3NDEKTSV4RRFFQ69G5FAV/Users",
            "application/scim+json",
            "urn:ietf:params:scim:api:messages:2.0:Error",
        ),
    ];
    let mut conns: Vec<_> = cases
        .iter()
        .map(|(path, ct, _)| {
            let mut conn = server.connect().unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: 100\r\n\r\n"
            );
            conn.write_all(head.as_bytes()).unwrap();
            conn.write_all(b"{\"name\": \"sta").unwrap();
            (Instant::now(), conn)
        })
        .collect();
    for ((path, _, marker), (sent, conn)) in cases.iter().zip(conns.iter_mut()) {
        let (status, head, body) = read_response(conn);
        let took = sent.elapsed();
        assert_eq!(status, 408, "{path}: {head}\n{body}");
        assert!(body.contains(marker), "{path}: {body}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(
            took >= Duration::from_millis(BODY_TIMEOUT * 1000 - 500)
                && took < Duration::from_secs(BODY_TIMEOUT + 3),
            "{path}: {took:?}"
        );
        if path.starts_with("/scim/") {
            assert!(body.contains("\"status\":\"408\""), "{body}");
        }
        until_closed(conn, Duration::from_secs(5));
    }
}

#[test]
fn plain_stalled_body_is_answered_408_in_the_protocol_format() {
    stalled_body_gets_408(false);
}

#[test]
fn tls_stalled_body_is_answered_408_in_the_protocol_format() {
    stalled_body_gets_408(true);
}

fn idle_keep_alive_closes(tls: bool) {
    let server = start(tls, "");
    let mut conn = server.connect().unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    // Two requests inside the idle time reuse the connection...
    for _ in 0..2 {
        conn.write_all(request).unwrap();
        assert_eq!(read_response(&mut conn).0, 200);
        std::thread::sleep(Duration::from_millis(IDLE * 1000 / 3));
    }
    // ...then idleness closes it, well before the header timeout.
    let (took, _) = until_closed(&mut conn, Duration::from_secs(HEADER_TIMEOUT + 3));
    assert!(
        took < Duration::from_millis(HEADER_TIMEOUT * 1000),
        "closed after {took:?}, not by the idle timer"
    );
}

/// Half a head on a kept-alive connection (hyper's header timer, not the idle one).
#[test]
fn half_head_on_a_kept_alive_connection_is_closed() {
    let server = start(false, "keep_alive_idle_secs = 30\n");
    let mut conn = server.connect().unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut conn).0, 200);
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let (took, _) = until_closed(&mut conn, Duration::from_secs(HEADER_TIMEOUT + 3));
    assert!(
        took >= Duration::from_millis(HEADER_TIMEOUT * 1000 - 500),
        "{took:?}"
    );
}

#[test]
fn plain_idle_keep_alive_connection_is_closed() {
    idle_keep_alive_closes(false);
}

#[test]
fn tls_idle_keep_alive_connection_is_closed() {
    idle_keep_alive_closes(true);
}

/// Whether the server keeps `conn` open for a request (a refused one is closed at once).
fn answers(conn: &mut Conn) -> bool {
    if conn
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(conn.read(&mut buf), Ok(n) if n > 0)
}

/// The server's own count of open connections, read over `conn` (which is one of them).
fn open_connections(conn: &mut Conn) -> Option<u64> {
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    let (status, _, body) = read_response(conn);
    assert_eq!(status, 200, "/metrics: {body}");
    body.lines()
        .find_map(|l| l.strip_prefix("idbridge_http_connections_open "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

fn connection_limits(tls: bool) {
    let server = start(tls, "max_connections = 3\nmax_connections_per_ip = 2\n");
    let ip = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    // The readiness probe's connection gives its slot back only once the server's connection
    // task ends, a moment after the probe saw the close: wait until the server counts only b1.
    let mut b1 = server.connect_from(ip(2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_connections(&mut b1) != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the readiness probe's slot was not given back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut a1 = server.connect_from(ip(1)).unwrap();
    let mut a2 = server.connect_from(ip(1)).unwrap();
    assert!(answers(&mut a1) && answers(&mut a2));
    // A third from the same address is over the per-address limit.
    let refused = server.connect_from(ip(1)).map(|mut c| answers(&mut c));
    assert!(
        !refused.unwrap_or(false),
        "third connection from one address served"
    );
    // b1 from another address got in (3 in total)...
    assert!(answers(&mut b1));
    // ...but a fourth connection is over the total, from any address.
    let refused = server.connect_from(ip(3)).map(|mut c| answers(&mut c));
    assert!(!refused.unwrap_or(false), "fourth connection served");
    // Closing one frees its slot.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(mut c) = server.connect_from(ip(1)) {
            if answers(&mut c) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "slot not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answers(&mut a2) && answers(&mut b1));
}

#[test]
fn plain_connections_over_the_limits_are_closed() {
    connection_limits(false);
}

#[test]
fn tls_connections_over_the_limits_are_closed() {
    connection_limits(true);
}
