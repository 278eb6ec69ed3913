//! SIGHUP with a new certificate: the next handshake presents it, an open keep-alive
//! connection keeps working; a bad pair is refused with a log line and the old one kept; the
//! admin endpoint does the same.

use std::time::{Duration, Instant};

use crate::harness::{self, call, request, Server};

/// Polls new handshakes until one presents `fingerprint` (or panics after 20 s).
fn wait_presented(server: &Server, fingerprint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(conn) = server.connect() {
            seen = conn.peer_fingerprint();
            if seen == fingerprint {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("new handshakes still present {seen}, not {fingerprint}");
}

#[test]
fn sighup_presents_the_new_certificate_to_new_handshakes_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let a = harness::write_pair(&cert, &key);
    // Long idle timers: the first connection stays open through the whole test.
    let server = harness::start(
        dir.path(),
        &dir.path().join("data"),
        "keep_alive_idle_secs = 120\nheader_read_timeout_secs = 120\n",
        Some((&cert, &key)),
    );
    let api_key = server.api_key();

    let mut kept = server.connect().unwrap();
    assert_eq!(kept.peer_fingerprint(), a);
    assert_eq!(
        request(&mut kept, "GET", "/healthz", None, None).unwrap().0,
        200
    );

    // B in place, SIGHUP: new handshakes get B; the open connection still answers.
    let b = harness::write_pair(&cert, &key);
    assert_ne!(a, b);
    server.signal("HUP");
    wait_presented(&server, &b);
    server.wait_log("TLS certificate reloaded", 1);
    assert!(
        server.logs().contains(&b),
        "the log names the new fingerprint"
    );
    assert_eq!(
        request(&mut kept, "GET", "/healthz", None, None).unwrap().0,
        200
    );
    assert_eq!(
        kept.peer_fingerprint(),
        a,
        "the open connection keeps its session"
    );

    // A certificate whose key is not in place (C's cert, B's key): refused, B stays.
    let other = tempfile::tempdir().unwrap();
    let (c_cert, c_key) = (other.path().join("c.crt"), other.path().join("c.key"));
    harness::write_pair(&c_cert, &c_key);
    harness::replace_file(&cert, &std::fs::read(&c_cert).unwrap());
    server.signal("HUP");
    server.wait_log("TLS certificate reload refused", 1);
    assert!(
        server.logs().contains("does not fit the certificate"),
        "the log says why: {}",
        server.logs()
    );
    assert_eq!(server.connect().unwrap().peer_fingerprint(), b);
    // Garbage in the certificate file: refused too.
    harness::replace_file(&cert, b"not a certificate");
    server.signal("HUP");
    server.wait_log("TLS certificate reload refused", 2);
    assert_eq!(server.connect().unwrap().peer_fingerprint(), b);

    // The admin endpoint: a refusal is a 409 saying why, a good pair is presented next.
    let (status, body) = call(&server, "POST", "/admin/tls/reload", Some(&api_key), None);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "tls_reload_refused");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no PEM certificate"),
        "{body}"
    );
    let (status, _) = call(&server, "POST", "/admin/tls/reload", None, None);
    assert_eq!(status, 401, "the endpoint is behind the API key");
    let d = harness::write_pair(&cert, &key);
    let (status, body) = call(
        &server,
        "POST",
        "/admin/tls/reload",
        Some(&api_key),
        Some(r#"{"force":true}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "force");
    assert_eq!(
        server.connect().unwrap().peer_fingerprint(),
        b,
        "422 changed nothing"
    );
    let (status, body) = call(&server, "POST", "/admin/tls/reload", Some(&api_key), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fingerprint_sha256"], d);
    assert_eq!(server.connect().unwrap().peer_fingerprint(), d);

    // The first connection lived through all of it.
    assert_eq!(
        request(&mut kept, "GET", "/healthz", None, None).unwrap().0,
        200
    );
    let (_, metrics) = call(&server, "GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("idbridge_tls_reloads_total{outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("idbridge_tls_reloads_total{outcome=\"refused\"} 3"));
}

#[test]
fn sighup_without_tls_is_logged_and_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = harness::start(dir.path(), &dir.path().join("data"), "", None);
    server.signal("HUP");
    server.wait_log("no [server.tls] is configured", 1);
    assert!(
        server.child_status().unwrap().is_none(),
        "SIGHUP must not kill the server"
    );
    assert_eq!(call(&server, "GET", "/healthz", None, None).0, 200);
    let key = server.api_key();
    let (status, body) = call(&server, "POST", "/admin/tls/reload", Some(&key), None);
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("tls_not_configured"))
    );
}
