//! Bad input to the organizations API gets the WorkOS error shape and status (workos-api.md
//! §2.4), never a 5xx, and writes nothing: after every rejected write the full list (and the
//! seeded organization) is compared with a snapshot taken before.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{bail, ensure, Context};
use idbridge_tests::api::{capture, Captured};
use idbridge_tests::TestServer;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

const UNKNOWN_ORG: &str = "org_01ARZ3NDEKTSV4RRFFQ69G5FAV";

/// Every organization, oldest first, walking all pages.
async fn snapshot(server: &TestServer) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let mut path = "/organizations?limit=100&order=asc".to_string();
        if let Some(a) = &after {
            path.push_str("&after=");
            path.push_str(a);
        }
        let page = capture(server.get(&path)).await?;
        page.expect_conventions()?;
        let body = page.expect_json(200)?;
        let data = body["data"].as_array().context("list without data[]")?;
        all.extend(data.iter().cloned());
        match body["list_metadata"]["after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => return Ok(all),
        }
    }
    bail!("pagination did not end")
}

/// Creates an organization with every optional part filled, to have something to corrupt.
async fn seed(server: &TestServer, name: &str) -> anyhow::Result<Value> {
    let resp = capture(server.post("/organizations").json(&json!({
        "name": name,
        "domain_data": [{"domain": format!("{}.example.com", name.to_lowercase()), "state": "verified"}],
        "external_id": format!("ext-{name}"),
        "metadata": {"k": "v"},
    })))
    .await?;
    resp.expect_conventions()?;
    Ok(resp.expect_json(201)?.clone())
}

fn raw_json(
    server: &TestServer,
    method: Method,
    path: &str,
    body: &str,
) -> reqwest::RequestBuilder {
    server
        .request(method, path)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

/// A 422 `invalid_request_parameters` naming a field that starts with `field`
/// (nested errors may be reported as `domain_data[0].domain`).
fn expect_invalid_field(resp: &Captured, field: &str) -> anyhow::Result<()> {
    resp.expect_error(422, Some("invalid_request_parameters"))?;
    let fields = resp.error_fields();
    ensure!(
        fields.iter().any(|f| f.starts_with(field)),
        "{}: expected errors[] to name {field:?}, got {fields:?}",
        resp.request
    );
    Ok(())
}

/// Either status is acceptable (the spec leaves the choice open), but it must be one of them.
fn expect_status_in(resp: &Captured, allowed: &[u16]) -> anyhow::Result<u16> {
    let status = resp.status.as_u16();
    ensure!(
        allowed.contains(&status),
        "{}: expected status in {allowed:?}, got {status} body {}",
        resp.request,
        resp.text
    );
    Ok(status)
}

#[tokio::test]
async fn malformed_and_wrong_typed_creates_are_rejected_and_write_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    seed(&server, "Seeded").await?;
    let before = snapshot(&server).await?;
    ensure!(before.len() == 1, "expected the seed only, got {before:?}");

    // Not JSON at all: 400.
    for body in [r#"{"name": "#, "not json", r#"{"name": "x",}"#, "\u{0}"] {
        let resp = capture(raw_json(&server, Method::POST, "/organizations", body)).await?;
        resp.expect_error(400, None)?;
        ensure!(snapshot(&server).await? == before, "{} wrote", resp.request);
    }
    // JSON, but not an object: 400 or 422, both WorkOS-shaped.
    for body in ["[]", "5", r#""name""#, "null"] {
        let resp = capture(raw_json(&server, Method::POST, "/organizations", body)).await?;
        if expect_status_in(&resp, &[400, 422])? == 422 {
            resp.expect_error(422, Some("invalid_request_parameters"))?;
        } else {
            resp.expect_error(400, None)?;
        }
        ensure!(
            snapshot(&server).await? == before,
            "{} with {body} wrote",
            resp.request
        );
    }

    // Fields of the wrong type or value: 422 naming the field.
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": null}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": ["a"]}), "name"),
        (json!({"name": "ok", "domain_data": "x"}), "domain_data"),
        (
            json!({"name": "ok", "domain_data": ["x.example.com"]}),
            "domain_data",
        ),
        (
            json!({"name": "ok", "domain_data": [{"domain": 5, "state": "verified"}]}),
            "domain_data",
        ),
        (
            json!({"name": "ok", "domain_data": [{"domain": "a.example.com", "state": "bogus"}]}),
            "domain_data",
        ),
        (json!({"name": "ok", "external_id": 5}), "external_id"),
        (
            json!({"name": "ok", "allow_profiles_outside_organization": "yes"}),
            "allow_profiles_outside_organization",
        ),
        (json!({"name": "ok", "domains": "a.example.com"}), "domains"),
    ];
    for (body, field) in &cases {
        let resp = capture(server.post("/organizations").json(body)).await?;
        expect_invalid_field(&resp, field).with_context(|| format!("body {body}"))?;
        ensure!(
            snapshot(&server).await? == before,
            "{} with {body} wrote",
            resp.request
        );
    }

    // Bad metadata: the spec documents 400 invalid_metadata; a 422 naming metadata is the
    // generic validation shape. Either way nothing is written.
    for body in [
        json!({"name": "ok", "metadata": "x"}),
        json!({"name": "ok", "metadata": {"k": 5}}),
        json!({"name": "ok", "metadata": {"k": {"nested": "v"}}}),
        json!({"name": "ok", "metadata": {"k": "x".repeat(601)}}),
    ] {
        let resp = capture(server.post("/organizations").json(&body)).await?;
        if expect_status_in(&resp, &[400, 422])? == 400 {
            resp.expect_error(400, Some("invalid_metadata"))?;
        } else {
            expect_invalid_field(&resp, "metadata").with_context(|| format!("body {body}"))?;
        }
        ensure!(
            snapshot(&server).await? == before,
            "{} with {body} wrote",
            resp.request
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_updates_are_rejected_and_change_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let org = seed(&server, "Target").await?;
    let id = org["id"].as_str().context("seed without id")?.to_string();
    let path = format!("/organizations/{id}");
    let before = snapshot(&server).await?;

    for body in [r#"{"name": "#, "not json"] {
        let resp = capture(raw_json(&server, Method::PUT, &path, body)).await?;
        resp.expect_error(400, None)?;
    }
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": 5}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"domain_data": "x"}), "domain_data"),
        (
            json!({"domain_data": [{"domain": "a.example.com", "state": "bogus"}]}),
            "domain_data",
        ),
        (json!({"external_id": 5}), "external_id"),
        (json!({"stripe_customer_id": 5}), "stripe_customer_id"),
        // One good field beside a bad one must not be applied either.
        (
            json!({"name": "Changed", "domain_data": "x"}),
            "domain_data",
        ),
    ];
    for (body, field) in &cases {
        let resp = capture(server.put(&path).json(body)).await?;
        expect_invalid_field(&resp, field).with_context(|| format!("body {body}"))?;
    }
    let resp = capture(server.put(&path).json(&json!({"metadata": "x"}))).await?;
    if expect_status_in(&resp, &[400, 422])? == 400 {
        resp.expect_error(400, Some("invalid_metadata"))?;
    } else {
        expect_invalid_field(&resp, "metadata")?;
    }

    let after = capture(server.get(&path)).await?;
    after.expect_conventions()?;
    ensure!(
        after.expect_json(200)? == &org,
        "organization changed by rejected updates:\nbefore {org}\nafter  {}",
        after.text
    );
    ensure!(
        snapshot(&server).await? == before,
        "rejected updates changed the list"
    );
    Ok(())
}

#[tokio::test]
async fn pagination_parameters_are_validated() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    for i in 0..3 {
        seed(&server, &format!("Page{i}")).await?;
    }
    for q in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=99999999999999999999",
    ] {
        let resp = capture(server.get(&format!("/organizations?{q}"))).await?;
        expect_invalid_field(&resp, "limit")?;
    }
    // The bounds themselves are valid.
    for (q, want) in [("limit=1", 1), ("limit=100", 3)] {
        let resp = capture(server.get(&format!("/organizations?{q}"))).await?;
        resp.expect_conventions()?;
        let n = resp.expect_json(200)?["data"]
            .as_array()
            .map_or(0, Vec::len);
        ensure!(
            n == want,
            "{}: expected {want} items, got {n}",
            resp.request
        );
    }
    let resp = capture(server.get("/organizations?order=sideways")).await?;
    expect_invalid_field(&resp, "order")?;

    // Cursors that cannot be organization ids: a WorkOS-shaped 4xx naming the cursor.
    for (param, value) in [
        ("after", "garbage"),
        ("before", "garbage"),
        ("after", "conn_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("before", "org_"),
        ("after", "org_01ARZ3NDEKTSV4RRFFQ69G5FA%21"),
    ] {
        let resp = capture(server.get(&format!("/organizations?{param}={value}"))).await?;
        if expect_status_in(&resp, &[400, 422])? == 422 {
            expect_invalid_field(&resp, param)?;
        } else {
            resp.expect_error(400, None)?;
        }
    }
    Ok(())
}

/// After rejecting an unread body the server may close the connection, but then it must say
/// `Connection: close`: otherwise a keep-alive client (every SDK) reuses the dead connection
/// and its next request fails with a network error. Checked on one raw TCP connection so the
/// outcome does not depend on a client pool's timing.
async fn expect_keep_alive_honest(
    server: &TestServer,
    method: &str,
    path: &str,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let body = json!({"name": "x".repeat(2 * 1024 * 1024)}).to_string();
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", server.port())).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.api_key(),
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    // The server may stop reading once over the limit; a failed write is its right.
    let _ = sock.write_all(body.as_bytes()).await;
    let first = read_response(&mut sock).await?;
    ensure!(
        first.starts_with("HTTP/1.1 413"),
        "{method} {path}: expected 413, got {first}"
    );
    if first.to_ascii_lowercase().contains("\r\nconnection: close") {
        return Ok(());
    }
    let second = async {
        sock.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        read_response(&mut sock).await
    }
    .await;
    match second {
        Ok(resp) if resp.starts_with("HTTP/1.1 200") => Ok(()),
        other => bail!(
            "{method} {path}: the 413 kept the connection open (no `Connection: close`), but the \
             next request on it got {other:?}; keep-alive clients would see a network error"
        ),
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body (enough for our JSON answers).
async fn read_response(sock: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = std::time::Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(text);
            }
        }
        let n = tokio::time::timeout(deadline, sock.read(&mut chunk)).await??;
        ensure!(
            n > 0,
            "connection closed after {} bytes: {:?}",
            buf.len(),
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn oversized_body_is_413_and_writes_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let org = seed(&server, "Big").await?;
    let id = org["id"].as_str().context("seed without id")?.to_string();
    let before = snapshot(&server).await?;
    let huge = json!({"name": "x".repeat(2 * 1024 * 1024)}).to_string();

    let resp = capture(raw_json(&server, Method::POST, "/organizations", &huge)).await?;
    resp.expect_error(413, None)?;
    expect_keep_alive_honest(&server, "POST", "/organizations").await?;
    let resp = capture(raw_json(
        &server,
        Method::PUT,
        &format!("/organizations/{id}"),
        &huge,
    ))
    .await?;
    resp.expect_error(413, None)?;
    expect_keep_alive_honest(&server, "PUT", &format!("/organizations/{id}")).await?;
    ensure!(
        snapshot(&server).await? == before,
        "an oversized body was written"
    );

    // The server is still healthy afterwards.
    let resp = capture(server.get(&format!("/organizations/{id}"))).await?;
    resp.expect_conventions()?;
    ensure!(resp.expect_json(200)? == &org);
    Ok(())
}

#[tokio::test]
async fn missing_or_wrong_api_key_is_401_and_writes_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let org = seed(&server, "Guarded").await?;
    let id = org["id"].as_str().context("seed without id")?.to_string();
    let before = snapshot(&server).await?;
    let one = format!("/organizations/{id}");

    let bad_auth: [Option<String>; 6] = [
        None,
        Some("Bearer sk_test_wrong_key_0000000000".into()),
        Some(format!("Bearer {}x", server.api_key())),
        Some("Bearer ".into()),
        Some(format!("Basic {}", server.api_key())),
        Some(server.api_key().to_string()),
    ];
    for auth in &bad_auth {
        let requests = [
            (Method::GET, "/organizations".to_string(), None),
            (
                Method::POST,
                "/organizations".to_string(),
                Some(json!({"name": "Intruder"})),
            ),
            (Method::GET, one.clone(), None),
            (Method::PUT, one.clone(), Some(json!({"name": "Hijacked"}))),
            (Method::DELETE, one.clone(), None),
            (
                Method::GET,
                "/organizations/external_id/ext-Guarded".to_string(),
                None,
            ),
        ];
        for (method, path, body) in requests {
            let mut req = server.http().request(method, server.endpoint(&path));
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = capture(req).await?;
            resp.expect_error(401, None)
                .with_context(|| format!("Authorization: {auth:?}"))?;
        }
    }
    ensure!(
        snapshot(&server).await? == before,
        "an unauthorized request changed the store"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_ids_are_404_entity_not_found() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    seed(&server, "Known").await?;
    let before = snapshot(&server).await?;
    let one = format!("/organizations/{UNKNOWN_ORG}");
    for resp in [
        capture(server.get(&one)).await?,
        capture(server.put(&one).json(&json!({"name": "ghost"}))).await?,
        capture(server.delete(&one)).await?,
        capture(server.get("/organizations/external_id/no-such-external-id")).await?,
    ] {
        resp.expect_error(404, Some("entity_not_found"))?;
    }
    // An id that cannot be an organization id at all: 404 or 422, WorkOS-shaped.
    for path in [
        "/organizations/not-an-id",
        "/organizations/conn_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ] {
        let resp = capture(server.get(path)).await?;
        let status = resp.status.as_u16();
        ensure!(
            status == 404 || status == 422,
            "{}: got {status}",
            resp.request
        );
        resp.expect_error(status, None)?;
    }
    ensure!(
        snapshot(&server).await? == before,
        "a request on an unknown id wrote"
    );
    Ok(())
}

#[tokio::test]
async fn request_ids_are_unique_and_on_every_response() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let org = seed(&server, "Ids").await?;
    let id = org["id"].as_str().context("seed without id")?.to_string();
    let mut seen = std::collections::HashSet::new();
    let requests = [
        server.get("/organizations"),
        server.get(&format!("/organizations/{id}")),
        server
            .put(&format!("/organizations/{id}"))
            .json(&json!({"name": "Ids2"})),
        server.get("/organizations?limit=0"),
        server.http().get(server.endpoint("/organizations")),
        server.get(&format!("/organizations/{UNKNOWN_ORG}")),
        server.request(Method::PATCH, "/organizations"),
        server.get("/no-such-route"),
    ];
    for req in requests {
        let resp = capture(req).await?;
        resp.expect_conventions()?;
        let rid = resp.header("x-request-id").unwrap_or_default().to_string();
        ensure!(
            seen.insert(rid.clone()),
            "{}: X-Request-ID {rid} reused",
            resp.request
        );
    }
    Ok(())
}
