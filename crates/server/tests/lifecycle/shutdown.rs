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
