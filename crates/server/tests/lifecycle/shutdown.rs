//! SIGTERM while a request is in flight: it completes with its answer, new connections are
//! refused, the process exits 0 within the grace period, and the store is closed cleanly (no
//! WAL left to replay) with every acknowledged write in it.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{self, call, head, read_response};

/// Nothing left for the next open to replay: SQLite removes the WAL on its last clean close.
fn assert_closed_cleanly(data: &Path) {
    let wal = data.join("idbridge.sqlite3-wal");
    let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(left, 0, "{} still holds {left} bytes", wal.display());
    assert!(data.join("idbridge.sqlite3").exists());
}

fn refused(server: &harness::Server) -> bool {
    matches!(
        std::net::TcpStream::connect(("127.0.0.1", server.port)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn sigterm_drains_an_in_flight_request_refuses_new_ones_and_closes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = "shutdown_grace_secs = 8\nbody_read_timeout_secs = 60\nrequest_timeout_secs = 60\n";
    let mut server = harness::start(dir.path(), &data, keys, None);
    let key = server.api_key();
    let (status, before) = call(
        &server,
        "POST",
        "/organizations",
        Some(&key),
        Some(r#"{"name":"Before"}"#),
    );
    assert_eq!(status, 201, "{before}");

    // A request whose body is still arriving when the signal comes.
    let body = r#"{"name":"In flight"}"#;
    let mut slow = server.connect().unwrap();
    slow.write_all(head("POST", "/organizations", Some(&key), body.len()).as_bytes())
        .unwrap();
    slow.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    server.signal("TERM");
    server.wait_log("shutting down", 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !refused(&server) {
        assert!(
            Instant::now() < deadline,
            "new connections still accepted while draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.child_status().unwrap().is_none(),
        "exited before the request finished"
    );

    // The rest of the body: the request completes with its answer.
    std::thread::sleep(Duration::from_millis(500));
    slow.write_all(&body.as_bytes()[5..]).unwrap();
    let (status, text) = read_response(&mut slow).unwrap();
    assert_eq!(status, 201, "{text}");
    let during: serde_json::Value = serde_json::from_str(&text).unwrap();

    let exit = server.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "{exit}: {}", server.logs());
    // Well inside the 8 s grace: nothing is left to wait for once the request is answered.
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "it waited for nothing: {:?}",
        signalled.elapsed()
    );
    let logs = server.logs();
    assert!(logs.contains("store closed"), "{logs}");
    assert!(logs.contains("idbridge stopped"), "{logs}");
    assert_closed_cleanly(&data);

    // A new start serves both acknowledged writes.
    drop(server);
    let again = harness::start(dir.path(), &data, keys, None);
    for org in [&before, &during] {
        let id = org["id"].as_str().unwrap();
        let (status, got) = call(
            &again,
            "GET",
            &format!("/organizations/{id}"),
            Some(&key),
            None,
        );
        assert_eq!((status, &got["name"]), (200, &org["name"]), "{got}");
    }
}

#[test]
fn a_request_that_never_finishes_is_cut_at_the_grace_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = "shutdown_grace_secs = 2\nbody_read_timeout_secs = 60\nrequest_timeout_secs = 60\n";
    let mut server = harness::start(dir.path(), &data, keys, None);
    let key = server.api_key();
    let mut stuck = server.connect().unwrap();
    stuck
        .write_all(head("POST", "/organizations", Some(&key), 100).as_bytes())
        .unwrap();
    stuck.write_all(b"{\"na").unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit}: {}", server.logs());
    assert!(
        took >= Duration::from_millis(1900),
        "did not wait for the in-flight request: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "exceeded the 2 s grace by far: {took:?}"
    );
    // The cut request got no answer; nothing half-written.
    assert!(read_response(&mut stuck).is_err());
    assert_closed_cleanly(&data);
}

#[test]
fn with_a_shutdown_delay_readyz_turns_503_while_requests_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = "shutdown_delay_secs = 3\nshutdown_grace_secs = 5\n";
    let mut server = harness::start(dir.path(), &data, keys, None);
    let key = server.api_key();
    let (status, _) = call(&server, "GET", "/readyz", None, None);
    assert_eq!(status, 200);

    let signalled = Instant::now();
    server.signal("TERM");
    server.wait_log("stop requested", 1);
    // New connections during the delay: readiness says "take me out", work is still done.
    let (status, ready) = call(&server, "GET", "/readyz", None, None);
    assert_eq!(status, 503, "{ready}");
    assert!(ready.to_string().contains("draining"), "{ready}");
    let (status, org) = call(
        &server,
        "POST",
        "/organizations",
        Some(&key),
        Some(r#"{"name":"During the delay"}"#),
    );
    assert_eq!(status, 201, "{org}");
    assert!(
        server.child_status().unwrap().is_none(),
        "exited during the delay"
    );
    // Then the listener closes, no sooner than the delay.
    let deadline = Instant::now() + Duration::from_secs(8);
    while !refused(&server) {
        assert!(Instant::now() < deadline, "never stopped accepting");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        signalled.elapsed() >= Duration::from_millis(2900),
        "stopped accepting before the delay: {:?}",
        signalled.elapsed()
    );
    let exit = server.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "{exit}: {}", server.logs());
    assert_closed_cleanly(&data);

    // The delay is a live setting: shown and changed through the admin API.
    drop(server);
    let mut again = harness::start(dir.path(), &data, keys, None);
    let (status, settings) = call(&again, "GET", "/admin/settings/server", Some(&key), None);
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["values"]["shutdown_delay_secs"], 3, "{settings}");
    assert!(
        !settings["restart_required"]
            .to_string()
            .contains("shutdown_"),
        "{settings}"
    );
    let (status, patched) = call(
        &again,
        "PATCH",
        "/admin/settings/server",
        Some(&key),
        Some(r#"{"shutdown_delay_secs":0}"#),
    );
    assert_eq!(status, 200, "{patched}");
    let signalled = Instant::now();
    again.signal("TERM");
    let exit = again.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "{exit}: {}", again.logs());
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "the changed delay was not used: {:?}",
        signalled.elapsed()
    );
    assert!(!again.logs().contains("stop requested"), "{}", again.logs());
    let id = org["id"].as_str().unwrap();
    drop(again);
    let last = harness::start(dir.path(), &data, keys, None);
    let (status, got) = call(
        &last,
        "GET",
        &format!("/organizations/{id}"),
        Some(&key),
        None,
    );
    assert_eq!(status, 200, "{got}");
}

/// A webhook receiver that holds each request for `hold` before answering 200, and records
/// the event ids it answered.
struct SlowReceiver {
    port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    answered: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl SlowReceiver {
    fn start(hold: Duration) -> SlowReceiver {
        use std::io::{BufRead, BufReader, Read};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (rx, ax) = (received.clone(), answered.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (rx, ax) = (rx.clone(), ax.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let event: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let id = event["id"].as_str().unwrap_or("?").to_string();
                    rx.lock().unwrap().push(id.clone());
                    std::thread::sleep(hold);
                    if stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .is_ok()
                    {
                        ax.lock().unwrap().push(id);
                    }
                });
            }
        });
        SlowReceiver {
            port,
            received,
            answered,
        }
    }
}

#[test]
fn sigterm_lets_a_webhook_delivery_in_flight_finish_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = "shutdown_grace_secs = 10\n";
    let env = [
        ("IDBRIDGE_WEBHOOKS_POLL_INTERVAL_MS", "50"),
        ("IDBRIDGE_WEBHOOKS_INITIAL_BACKOFF_MS", "100"),
    ];
    let receiver = SlowReceiver::start(Duration::from_millis(1500));
    let mut server = harness::start_env(dir.path(), &data, keys, None, &env);
    let key = server.api_key();
    let endpoint = format!(
        r#"{{"endpoint_url":"http://127.0.0.1:{}/hook","events":["organization.created"]}}"#,
        receiver.port
    );
    let (status, created) = call(
        &server,
        "POST",
        "/webhook_endpoints",
        Some(&key),
        Some(&endpoint),
    );
    assert_eq!(status, 201, "{created}");
    let (status, org) = call(
        &server,
        "POST",
        "/organizations",
        Some(&key),
        Some(r#"{"name":"Announced once"}"#),
    );
    assert_eq!(status, 201, "{org}");

    // SIGTERM while the receiver holds the delivery.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no delivery: {}", server.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(15));
    assert!(exit.success(), "{exit}: {}", server.logs());
    let first: Vec<String> = receiver.answered.lock().unwrap().clone();
    assert_eq!(
        first.len(),
        1,
        "the delivery in flight was not answered: {first:?}"
    );
    assert!(
        !server.logs().contains("were cut"),
        "the delivery was cut: {}",
        server.logs()
    );

    // After the restart the endpoint is idle: the answered delivery was recorded, not resent.
    drop(server);
    let again = harness::start_env(dir.path(), &data, keys, None, &env);
    std::thread::sleep(Duration::from_secs(3));
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received, first, "sent again after the restart");
    drop(again);
}
