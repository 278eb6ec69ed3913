//! SCIM push end to end with real processes (issue 15): a directory fed by each source kind —
//! SCIM from an Okta-shaped client, an LDAP full sync against a real slapd, an SFTP CSV delivery
//! through OpenSSH's `sftp` — is forwarded by the real `idbridge serve` to two independent
//! targets in turn: a SECOND `idbridge serve` (after which the official WorkOS Node and Python
//! SDKs read the same users, groups, memberships and attributes from both, field by field) and
//! `scim2-server` (PyPI). Then a 10,000-user backfill with the source SIGKILLed in the middle of
//! the backfill and in the middle of steady forwarding, and the target restarted with its data,
//! each ending with remote == local and no duplicate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use idbridge_tests::directory_api::sync;
use idbridge_tests::{
    free_port, ldap_group, ldap_person, repo_root, run_node_test, run_python_test, Slapd,
    TestServer, LDAP_ADMIN_DN, LDAP_SUFFIX,
};
use reqwest::Method;
use serde_json::{json, Value};

const CUSTOM: &str = "urn:idbridge:params:scim:schemas:extension:custom_attributes:2.0:User";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = s.request(method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn ok(
    s: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let (status, v) = call(s, method.clone(), path, body).await?;
    ensure!(
        (200..300).contains(&status),
        "{method} {path}: HTTP {status}: {v}"
    );
    Ok(v)
}

/// An organization with the same roles and group → role mapping on every side.
async fn organization(s: &TestServer, name: &str) -> anyhow::Result<String> {
    let v = ok(
        s,
        Method::POST,
        "/organizations",
        Some(json!({"name": name})),
    )
    .await?;
    let org = v["id"].as_str().context("org id")?.to_owned();
    roles(s, &org).await?;
    Ok(org)
}

async fn roles(s: &TestServer, org: &str) -> anyhow::Result<()> {
    ok(
        s,
        Method::PUT,
        &format!("/admin/organizations/{org}/roles"),
        Some(json!({"roles": [
            {"slug": "member", "priority": 1, "default": true},
            {"slug": "admin", "priority": 10}
        ]})),
    )
    .await?;
    ok(
        s,
        Method::PUT,
        &format!("/admin/organizations/{org}/role_mappings"),
        Some(json!({"role_mappings": [{"idp_group": "Admins", "role_slug": "admin"}]})),
    )
    .await?;
    Ok(())
}

/// A directory created through the admin API: (id, SCIM endpoint, token).
async fn directory(
    s: &TestServer,
    org: &str,
    ty: &str,
    settings: Value,
) -> anyhow::Result<(String, Option<(String, String)>)> {
    let v = ok(
        s,
        Method::POST,
        "/admin/directories",
        Some(
            json!({"organization_id": org, "name": "Forwarded", "type": ty, "settings": settings}),
        ),
    )
    .await?;
    let id = v["directory"]["id"].as_str().context("dir id")?.to_owned();
    let scim = match (
        v["scim"]["endpoint"].as_str(),
        v["scim"]["bearer_token"].as_str(),
    ) {
        (Some(e), Some(t)) => Some((e.to_owned(), t.to_owned())),
        _ => None,
    };
    Ok((id, scim))
}

/// The target idbridge's directory for a source whose extra custom attributes are `custom`.
async fn target_directory(
    b: &TestServer,
    custom: &[&str],
) -> anyhow::Result<(String, String, String)> {
    let org = organization(b, "Acme (WorkOS side)").await?;
    let map: BTreeMap<String, String> = custom
        .iter()
        .map(|c| ((*c).to_owned(), format!("{CUSTOM}.{c}")))
        .collect();
    let (id, scim) = directory(b, &org, "generic scim v2.0", json!({"attribute_map": map})).await?;
    let (endpoint, token) = scim.context("a SCIM directory has an endpoint")?;
    Ok((id, endpoint, token))
}

async fn set_forward(a: &TestServer, dir: &str, body: Value) -> anyhow::Result<Value> {
    ok(
        a,
        Method::PUT,
        &format!("/admin/directories/{dir}/forward"),
        Some(body),
    )
    .await
}

async fn forward_status(a: &TestServer, dir: &str) -> anyhow::Result<Value> {
    ok(
        a,
        Method::GET,
        &format!("/admin/directories/{dir}/forward"),
        None,
    )
    .await
}

/// Every page of `/directory_users` (or groups) of a directory.
async fn all(s: &TestServer, path: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(a) => format!("{path}&limit=100&after={a}"),
            None => format!("{path}&limit=100"),
        };
        let page = ok(s, Method::GET, &url, None).await?;
        let data = page["data"].as_array().context("data")?;
        out.extend(data.iter().cloned());
        match page["list_metadata"]["after"].as_str() {
            Some(a) if !data.is_empty() => after = Some(a.to_owned()),
            _ => return Ok(out),
        }
    }
}

/// Users (with groups) and groups of a directory as the WorkOS API shows them, without the
/// fields each side owns (ids, timestamps, the deprecated raw_attributes), keyed by idp_id.
async fn view(s: &TestServer, dir: &str) -> anyhow::Result<Value> {
    let strip = |v: &Value| -> Value {
        let mut o = v.as_object().cloned().unwrap_or_default();
        for k in [
            "id",
            "directory_id",
            "organization_id",
            "created_at",
            "updated_at",
            "raw_attributes",
        ] {
            o.remove(k);
        }
        Value::Object(o)
    };
    let mut users = BTreeMap::new();
    for u in all(s, &format!("/directory_users?directory={dir}")).await? {
        let mut x = strip(&u);
        let mut groups: Vec<Value> = u["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(strip)
            .collect();
        groups.sort_by_key(|g| g["idp_id"].as_str().unwrap_or("").to_owned());
        x["groups"] = Value::Array(groups);
        users.insert(u["idp_id"].as_str().unwrap_or("").to_owned(), x);
    }
    let mut groups = BTreeMap::new();
    for g in all(s, &format!("/directory_groups?directory={dir}")).await? {
        groups.insert(g["idp_id"].as_str().unwrap_or("").to_owned(), strip(&g));
    }
    Ok(json!({"users": users, "groups": groups}))
}

/// Waits until the forwarder has nothing left and the target equals the source.
async fn converge(
    a: &TestServer,
    dir_a: &str,
    b: &TestServer,
    dir_b: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = forward_status(a, dir_a).await?;
        let idle = st["lag_events"] == 0 && st["backfill"]["state"] != "running";
        let (va, vb) = (view(a, dir_a).await?, view(b, dir_b).await?);
        if idle && va == vb {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "not converged: status {st}\nsource {}\ntarget {}",
                serde_json::to_string_pretty(&va)?,
                serde_json::to_string_pretty(&vb)?
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The official SDKs compare both sides (tests/js/forward_compare.test.mjs,
/// tests/py/test_forward_compare.py).
async fn sdks_agree(
    a: &TestServer,
    dir_a: &str,
    b: &TestServer,
    dir_b: &str,
    users: usize,
) -> anyhow::Result<()> {
    let env = vec![
        ("FWD_SOURCE_URL".to_owned(), a.url().to_owned()),
        ("FWD_SOURCE_KEY".to_owned(), a.api_key().to_owned()),
        ("FWD_SOURCE_DIRECTORY".to_owned(), dir_a.to_owned()),
        ("FWD_TARGET_URL".to_owned(), b.url().to_owned()),
        ("FWD_TARGET_KEY".to_owned(), b.api_key().to_owned()),
        ("FWD_TARGET_DIRECTORY".to_owned(), dir_b.to_owned()),
        ("FWD_EXPECT_USERS".to_owned(), users.to_string()),
        ("IDBRIDGE_CLIENT_ID".to_owned(), a.client_id().to_owned()),
    ];
    let node = run_node_test("forward_compare.test.mjs", env.clone()).await?;
    ensure!(!node.ran() || node.passed >= 1, "{}", node.output);
    let py = run_python_test("test_forward_compare.py", env).await?;
    ensure!(!py.ran() || py.passed >= 1, "{}", py.output);
    Ok(())
}

/// Runs `idbridge directory forward ...` against the running server `a` (its admin API).
fn cli(a: &TestServer, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let out = std::process::Command::new(a.binary())
        .args(["directory", "forward"])
        .args(args)
        .args(["--url", a.url()])
        .env("IDBRIDGE_API_KEY", a.api_key())
        .envs(env.iter().copied())
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .context("running idbridge")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "idbridge directory forward {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// A reconcile (through the admin API) of a converged target finds no drift.
async fn no_drift(a: &TestServer, dir: &str) -> anyhow::Result<()> {
    ok(
        a,
        Method::POST,
        &format!("/admin/directories/{dir}/forward/reconcile"),
        Some(json!({"dry_run": true})),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = forward_status(a, dir).await?;
        if st["reconcile"]["state"] == "done" {
            let r = &st["reconcile"]["report"];
            ensure!(r["ok"] == true, "{r}");
            for k in ["users", "groups"] {
                for d in ["missing", "extra", "changed", "unlinked", "parked"] {
                    ensure!(r[k][d] == 0, "drift after convergence: {r}");
                }
            }
            ensure!(
                r["memberships"]["missing"] == 0 && r["memberships"]["extra"] == 0,
                "{r}"
            );
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "reconcile did not finish: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `scim2-server` (PyPI) on a loopback port; killed on drop.
struct Scim2Server {
    child: std::process::Child,
    endpoint: String,
    token: String,
    http: reqwest::Client,
}

impl Drop for Scim2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scim2Server {
    async fn start() -> anyhow::Result<Scim2Server> {
        let bin = repo_root().join(".venv/bin/scim2-server");
        ensure!(
            bin.exists(),
            "{} is missing: run scripts/test-deps.sh (scripts/test-deps.d/forward.sh)",
            bin.display()
        );
        let port = free_port()?;
        let token = "scim2-token-0123456789".to_owned();
        let child = std::process::Command::new(&bin)
            .args(["--port", &port.to_string(), "--bearer-token", &token])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting scim2-server")?;
        let s = Scim2Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}/v2"),
            token,
            http: reqwest::Client::builder().no_proxy().build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.list("Users").await.is_err() {
            ensure!(Instant::now() < deadline, "scim2-server did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(s)
    }

    async fn list(&self, kind: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut start = 1;
        loop {
            let v: Value = self
                .http
                .get(format!(
                    "{}/{kind}?startIndex={start}&count=100",
                    self.endpoint
                ))
                .bearer_auth(&self.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let page = v["Resources"].as_array().cloned().unwrap_or_default();
            let total = v["totalResults"].as_u64().unwrap_or(0) as usize;
            start += page.len();
            let n = page.len();
            out.extend(page);
            if n == 0 || out.len() >= total {
                return Ok(out);
            }
        }
    }
}

/// scim2-server holds exactly the source's active users (userName, names, emails, active) and
/// groups (displayName, members), matched by externalId, with no twin.
async fn scim2_matches(a: &TestServer, dir: &str, s2: &Scim2Server) -> anyhow::Result<()> {
    let users = all(a, &format!("/directory_users?directory={dir}")).await?;
    let groups = all(a, &format!("/directory_groups?directory={dir}")).await?;
    let remote_users = s2.list("Users").await?;
    let remote_groups = s2.list("Groups").await?;
    let ext = |r: &Value| r["externalId"].as_str().unwrap_or("").to_owned();
    let remote_by_ext: BTreeMap<String, &Value> =
        remote_users.iter().map(|r| (ext(r), r)).collect();
    ensure!(
        remote_by_ext.len() == remote_users.len(),
        "duplicate remote users: {remote_users:?}"
    );
    let active: Vec<&Value> = users.iter().filter(|u| u["state"] == "active").collect();
    ensure!(
        remote_users.len() == active.len(),
        "{} remote users for {} active local ones",
        remote_users.len(),
        active.len()
    );
    let mut id_to_idp = BTreeMap::new();
    for u in &active {
        let idp = u["idp_id"].as_str().unwrap_or("");
        let r = remote_by_ext
            .get(idp)
            .with_context(|| format!("user {idp} missing remotely"))?;
        id_to_idp.insert(r["id"].as_str().unwrap_or("").to_owned(), idp.to_owned());
        let want_name = u["username"].as_str().or(u["email"].as_str()).unwrap_or("");
        ensure!(
            r["userName"].as_str() == Some(want_name),
            "userName of {idp}: {r}"
        );
        ensure!(r["active"] == true, "{r}");
        ensure!(
            r["name"]["givenName"] == u["first_name"] && r["name"]["familyName"] == u["last_name"],
            "names of {idp}: {r}"
        );
        ensure!(r["emails"][0]["value"] == u["email"], "email of {idp}: {r}");
    }
    ensure!(
        remote_groups.len() == groups.len(),
        "groups: {remote_groups:?}"
    );
    for g in &groups {
        let idp = g["idp_id"].as_str().unwrap_or("");
        let r = remote_groups
            .iter()
            .find(|r| ext(r) == idp)
            .with_context(|| format!("group {idp} missing remotely"))?;
        ensure!(r["displayName"] == g["name"], "{r}");
        let members: BTreeSet<String> = r["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["value"].as_str())
            .filter_map(|id| id_to_idp.get(id).cloned())
            .collect();
        let gid = g["id"].as_str().unwrap_or("");
        let local: BTreeSet<String> =
            all(a, &format!("/directory_users?group={gid}&directory={dir}"))
                .await?
                .iter()
                .filter(|u| u["state"] == "active")
                .filter_map(|u| u["idp_id"].as_str().map(str::to_owned))
                .collect();
        ensure!(
            members == local,
            "members of {idp}: remote {members:?}, local {local:?}"
        );
    }
    Ok(())
}

/// Switches the forward target to scim2-server and checks it (a new endpoint: a new backfill).
async fn forward_to_scim2(a: &TestServer, dir: &str) -> anyhow::Result<()> {
    let s2 = Scim2Server::start().await?;
    let v = set_forward(
        a,
        dir,
        json!({"endpoint": s2.endpoint, "bearer_token": s2.token, "concurrency": 4,
               // scim2-server knows only RFC 7643 schemas: no custom-attributes extension.
               "custom_attributes_schema": null}),
    )
    .await?;
    ensure!(v["backfill"]["state"] == "running", "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = forward_status(a, dir).await?;
        if st["backfill"]["state"] == "done" && st["lag_events"] == 0 {
            match scim2_matches(a, dir, &s2).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
        }
        ensure!(Instant::now() < deadline, "scim2-server backfill: {st}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// An Okta-shaped SCIM client.
struct Okta {
    http: reqwest::Client,
    endpoint: String,
    token: String,
}

impl Okta {
    /// One request; a 429 is retried after its `Retry-After`, as Okta does (the server limits
    /// each SCIM directory's request rate, and the 10,000-user seeds go past it).
    async fn send(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let mut throttled = 0;
        let resp = loop {
            let resp = self
                .http
                .request(method.clone(), format!("{}/{path}", self.endpoint))
                .bearer_auth(&self.token)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await?;
            if resp.status().as_u16() != 429 || throttled == 60 {
                break resp;
            }
            throttled += 1;
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        };
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        ensure!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        Ok(v)
    }

    async fn user(
        &self,
        login: &str,
        given: &str,
        family: &str,
        lang: &str,
    ) -> anyhow::Result<String> {
        let v = self
            .send(
                Method::POST,
                "Users",
                json!({"schemas": [USER_SCHEMA, ENTERPRISE], "userName": login,
                    "externalId": format!("00u{given}"),
                    "name": {"givenName": given, "familyName": family},
                    "displayName": format!("{given} {family}"), "locale": "en-US",
                    "preferredLanguage": lang, "title": "Engineer",
                    "emails": [{"primary": true, "value": login, "type": "work"}],
                    "active": true, "groups": [],
                    ENTERPRISE: {"department": "R&D", "costCenter": "CC-7", "employeeNumber": "42"}}),
            )
            .await?;
        Ok(v["id"].as_str().context("id")?.to_owned())
    }

    async fn group(&self, name: &str, members: &[&str]) -> anyhow::Result<String> {
        let v = self
            .send(
                Method::POST,
                "Groups",
                json!({"schemas": [GROUP_SCHEMA], "displayName": name, "externalId": format!("00g{name}"),
                    "members": members.iter().map(|m| json!({"value": m})).collect::<Vec<_>>()}),
            )
            .await?;
        Ok(v["id"].as_str().context("id")?.to_owned())
    }

    async fn patch(&self, path: &str, ops: Value) -> anyhow::Result<Value> {
        self.send(
            Method::PATCH,
            path,
            json!({"schemas": [PATCH], "Operations": ops}),
        )
        .await
    }
}

#[tokio::test]
async fn scim_source_reaches_a_second_idbridge_and_scim2_server() -> anyhow::Result<()> {
    let a = TestServer::start().await?;
    let b = TestServer::start().await?;
    let org = organization(&a, "Acme").await?;
    let (dir, scim) = directory(
        &a,
        &org,
        "okta scim v2.0",
        json!({"attribute_map": {"preferred_language": "preferredLanguage"}}),
    )
    .await?;
    let (endpoint, token) = scim.context("SCIM endpoint")?;
    let okta = Okta {
        http: reqwest::Client::builder().no_proxy().build()?,
        endpoint,
        token,
    };
    let alice = okta
        .user("alice@acme.test", "Alice", "Archer", "en")
        .await?;
    let bob = okta.user("bob@acme.test", "Bob", "Baker", "de").await?;
    let carol = okta.user("carol@acme.test", "Carol", "Cook", "fr").await?;
    let eng = okta.group("Engineering", &[&alice, &bob]).await?;
    let admins = okta.group("Admins", &[&alice]).await?;
    let (dir_b, ep_b, tok_b) = target_directory(&b, &["preferred_language"]).await?;
    let v = set_forward(
        &a,
        &dir,
        json!({"endpoint": ep_b, "bearer_token": tok_b, "concurrency": 4}),
    )
    .await?;
    ensure!(v["backfill"]["state"] == "running", "{v}");
    converge(&a, &dir, &b, &dir_b, Duration::from_secs(60)).await?;

    // Lifecycle the way Okta drives it.
    okta.send(
        Method::PUT,
        &format!("Users/{bob}"),
        json!({"schemas": [USER_SCHEMA], "userName": "bob@acme.test", "externalId": "00uBob",
            "name": {"givenName": "Robert", "familyName": "Baker"}, "displayName": "Robert Baker",
            "preferredLanguage": "de", "title": "Staff Engineer",
            "emails": [{"primary": true, "value": "bob@acme.test", "type": "work"}], "active": true}),
    )
    .await?;
    let dave = okta.user("dave@acme.test", "Dave", "Dyer", "en").await?;
    okta.patch(
        &format!("Groups/{eng}"),
        json!([{"op": "add", "path": "members", "value": [{"value": dave}]},
        {"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]),
    )
    .await?;
    okta.patch(
        &format!("Groups/{admins}"),
        json!([{"op": "add", "path": "members", "value": [{"value": carol}]}]),
    )
    .await?;
    okta.patch(
        &format!("Groups/{eng}"),
        json!([{"op": "replace", "value": {"displayName": "Engineering Team"}}]),
    )
    .await?;
    // Deactivate (Okta's PATCH active:false), reactivate, delete.
    okta.patch(
        &format!("Users/{carol}"),
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .await?;
    converge(&a, &dir, &b, &dir_b, Duration::from_secs(30)).await?;
    okta.patch(
        &format!("Users/{carol}"),
        json!([{"op": "replace", "value": {"active": true}}]),
    )
    .await?;
    let ops = okta.group("Ops", &[&dave]).await?;
    okta.send(Method::DELETE, &format!("Groups/{ops}"), Value::Null)
        .await
        .ok();
    okta.send(Method::DELETE, &format!("Users/{dave}"), Value::Null)
        .await
        .ok();
    converge(&a, &dir, &b, &dir_b, Duration::from_secs(30)).await?;
    let st = forward_status(&a, &dir).await?;
    ensure!(st["parked"] == 0 && st["last_error"].is_null(), "{st}");
    sdks_agree(&a, &dir, &b, &dir_b, 3).await?;
    no_drift(&a, &dir).await?;
    let metrics = a.get("/metrics").send().await?.text().await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("idbridge_scim_push_lag_events") && l.contains(&dir)),
        "no SCIM push metrics:\n{metrics}"
    );

    forward_to_scim2(&a, &dir).await
}

#[tokio::test]
async fn ldap_source_reaches_a_second_idbridge_and_scim2_server() -> anyhow::Result<()> {
    let slapd = Slapd::start()?;
    let mut tree = String::new();
    for (uid, given, sn) in [
        ("alice", "Alice", "Archer"),
        ("bob", "Bob", "Baker"),
        ("carol", "Carol", "Cook"),
    ] {
        tree.push_str(&ldap_person(uid, given, sn));
    }
    tree.push_str(&ldap_group("engineering", &["alice", "bob"]));
    tree.push_str(&ldap_group("Admins", &["carol"]));
    slapd.add(&tree)?;
    let b = TestServer::start().await?;
    let (dir_b, ep_b, tok_b) = target_directory(&b, &["common_name"]).await?;
    let pw = slapd.password_file()?;
    // The forward target is declared in the config file, its token in the environment.
    let config = format!(
        r#"
[[organizations]]
external_id = "acme"
name = "Acme"

[[directories]]
key = "corp-ldap"
organization = "acme"
name = "Corp LDAP"
type = "ldap"
attribute_map = {{ common_name = "cn" }}
forward = {{ endpoint = "{ep_b}", bearer_token_env = "FWD_TARGET_TOKEN", concurrency = 4 }}

[[ldap_directories]]
directory = "corp-ldap"
full_sync_interval_secs = 3600
delta_sync_interval_secs = 3600
[ldap_directories.ldap]
url = "{url}"
allow_plain = true
flavor = "openldap"
bind_dn = "{LDAP_ADMIN_DN}"
bind_password_file = "{pw}"
user_base_dns = ["ou=People,{LDAP_SUFFIX}"]
group_base_dns = ["ou=Groups,{LDAP_SUFFIX}"]
"#,
        url = slapd.url(),
        pw = pw.display()
    );
    let a = TestServer::builder()
        .config_toml(config)
        .env("FWD_TARGET_TOKEN", &tok_b)
        .start()
        .await?;
    let dirs = ok(&a, Method::GET, "/directories", None).await?;
    let dir = dirs["data"][0]["id"]
        .as_str()
        .context("ldap directory")?
        .to_owned();
    let org = dirs["data"][0]["organization_id"]
        .as_str()
        .context("org")?
        .to_owned();
    roles(&a, &org).await?;
    let rec = sync(&a, &dir, "full").await?;
    ensure!(rec["ok"] == true, "{rec}");
    let st = forward_status(&a, &dir).await?;
    ensure!(
        st["source"] == "config" && st["endpoint"] == ep_b.as_str(),
        "{st}"
    );
    converge(&a, &dir, &b, &dir_b, Duration::from_secs(60)).await?;
    // Changes in the directory server, picked up by the next full sync, forwarded.
    slapd.modify(
        &format!("dn: uid=bob,ou=People,{LDAP_SUFFIX}\nchangetype: modify\nreplace: title\ntitle: Manager\n-\nreplace: cn\ncn: Robert Baker\n\n\
                  dn: cn=engineering,ou=Groups,{LDAP_SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=People,{LDAP_SUFFIX}\n-\nadd: member\nmember: uid=carol,ou=People,{LDAP_SUFFIX}\n\n"),
        false,
    )?;
    slapd.add(&ldap_person("dave", "Dave", "Dyer"))?;
    let rec = sync(&a, &dir, "full").await?;
    ensure!(rec["ok"] == true, "{rec}");
    converge(&a, &dir, &b, &dir_b, Duration::from_secs(30)).await?;
    sdks_agree(&a, &dir, &b, &dir_b, 4).await?;
    // The CLI, against the running server: show, a dry-run reconcile, an idempotent set.
    let shown = cli(&a, &["show", &dir], &[])?;
    ensure!(
        shown.contains(&ep_b) && shown.contains("forwarding") && !shown.contains(&tok_b),
        "{shown}"
    );
    let report = cli(&a, &["reconcile", &dir, "--dry-run"], &[])?;
    ensure!(
        report.contains("users:        missing 0, extra 0, changed 0, unlinked 0, parked 0")
            && report.contains("memberships:  missing 0, extra 0")
            && report.contains("dry run"),
        "{report}"
    );
    let set = cli(
        &a,
        &[
            "set",
            &dir,
            "--endpoint",
            &ep_b,
            "--bearer-token-env",
            "FWD_CLI_TOKEN",
            "--concurrency",
            "4",
            "--wait",
        ],
        &[("FWD_CLI_TOKEN", &tok_b)],
    )?;
    ensure!(set.contains("backfill") || set.contains("state"), "{set}");
    forward_to_scim2(&a, &dir).await?;
    let deleted = cli(&a, &["delete", &dir], &[])?;
    ensure!(deleted.contains("deleted"), "{deleted}");
    let (s, _) = call(
        &a,
        Method::GET,
        &format!("/admin/directories/{dir}/forward"),
        None,
    )
    .await?;
    ensure!(s == 404, "still set after the CLI delete");
    Ok(())
}

fn ssh_keygen(dir: &Path) -> anyhow::Result<(std::path::PathBuf, String)> {
    let key = dir.join("hr_key");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", "hr", "-f"])
        .arg(&key)
        .output()
        .context("ssh-keygen (scripts/test-deps.sh installs openssh-client)")?;
    ensure!(out.status.success(), "ssh-keygen: {out:?}");
    let public = std::fs::read_to_string(dir.join("hr_key.pub"))?;
    Ok((key, public.trim().to_owned()))
}

fn sftp_put(key: &Path, port: u16, work: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut batch = String::new();
    for (name, body) in files {
        std::fs::write(work.join(name), body)?;
        batch.push_str(&format!("put {name}\n"));
    }
    std::fs::write(work.join("batch.txt"), batch)?;
    let out = std::process::Command::new("sftp")
        .current_dir(work)
        .arg("-b")
        .arg("batch.txt")
        .arg("-i")
        .arg(key)
        .args([
            "-P",
            &port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "hr@127.0.0.1",
        ])
        .output()
        .context("sftp (scripts/test-deps.sh installs openssh-client)")?;
    ensure!(
        out.status.success(),
        "sftp: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn sftp_source_reaches_a_second_idbridge_and_scim2_server() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (key, public) = ssh_keygen(work.path())?;
    let sftp_port = free_port()?;
    let b = TestServer::start().await?;
    let (dir_b, ep_b, tok_b) =
        target_directory(&b, &["employment_start_date", "manager_email"]).await?;
    let config = format!(
        r#"
[[organizations]]
external_id = "acme"
name = "Acme"

[[directories]]
key = "hr"
organization = "acme"
name = "HR"
type = "sftp"

[sftp_server]
listen = "127.0.0.1:{sftp_port}"
debounce_ms = 200

[[sftp_directories]]
directory = "hr"
username = "hr"
authorized_keys = ["{public}"]
max_delete_ratio = 0.5
"#
    );
    let a = TestServer::builder().config_toml(config).start().await?;
    let dirs = ok(&a, Method::GET, "/directories", None).await?;
    let dir = dirs["data"][0]["id"]
        .as_str()
        .context("sftp directory")?
        .to_owned();
    let org = dirs["data"][0]["organization_id"]
        .as_str()
        .context("org")?
        .to_owned();
    roles(&a, &org).await?;
    // Set through the API this time.
    set_forward(
        &a,
        &dir,
        json!({"endpoint": ep_b, "bearer_token": tok_b, "concurrency": 4}),
    )
    .await?;
    let header = "user_id,first_name,last_name,email,username,job_title,display_name,department_name,cost_center_name,employment_start_date,manager_email\n";
    let users = format!(
        "{header}e1,Alice,Archer,alice@acme.test,alice,Engineer,Alice Archer,R&D,CC1,2020-01-02,boss@acme.test\n\
         e2,Bob,Baker,bob@acme.test,bob,Engineer,Bob Baker,R&D,CC1,2021-03-04,boss@acme.test\n\
         e3,Carol,Cook,carol@acme.test,carol,Designer,Carol Cook,Design,CC2,2022-05-06,boss@acme.test\n"
    );
    let groups = "group_name,user_id\nEngineering,e1\nEngineering,e2\nAdmins,e3\n";
    sftp_put(
        &key,
        sftp_port,
        work.path(),
        &[("users.csv", &users), ("user_groups.csv", groups)],
    )?;
    converge(&a, &dir, &b, &dir_b, Duration::from_secs(60)).await?;
    // The next delivery: an update, a removal, a membership change.
    let users2 = format!(
        "{header}e1,Alice,Archer,alice@acme.test,alice,Principal Engineer,Alice Archer,R&D,CC1,2020-01-02,boss@acme.test\n\
         e3,Carol,Cook,carol@acme.test,carol,Designer,Carol Cook,Design,CC2,2022-05-06,boss@acme.test\n\
         e4,Dave,Dyer,dave@acme.test,dave,Engineer,Dave Dyer,R&D,CC1,2023-07-08,boss@acme.test\n"
    );
    let groups2 = "group_name,user_id\nEngineering,e1\nEngineering,e4\nAdmins,e3\nAdmins,e1\n";
    sftp_put(
        &key,
        sftp_port,
        work.path(),
        &[("users.csv", &users2), ("user_groups.csv", groups2)],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while view(&a, &dir).await?["users"].get("e4").is_none() {
        ensure!(Instant::now() < deadline, "second delivery not applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    converge(&a, &dir, &b, &dir_b, Duration::from_secs(30)).await?;
    sdks_agree(&a, &dir, &b, &dir_b, 3).await?;
    forward_to_scim2(&a, &dir).await
}

/// 10,000 users pushed into a second idbridge; the source is SIGKILLed in the middle of the
/// backfill and in the middle of steady forwarding, the target is restarted with its data
/// while changes wait; each ends with the same users on both sides and none twice.
#[tokio::test]
async fn backfill_of_10000_users_survives_sigkill_and_a_target_restart() -> anyhow::Result<()> {
    const USERS: usize = 10_000;
    let mut a = TestServer::start().await?;
    let mut b = TestServer::start().await?;
    let org = organization(&a, "Acme").await?;
    let (dir, scim) = directory(&a, &org, "okta scim v2.0", json!({})).await?;
    let (endpoint, token) = scim.context("SCIM endpoint")?;
    let okta = std::sync::Arc::new(Okta {
        http: reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(16)
            .build()?,
        endpoint,
        token,
    });
    let create = |n: usize| {
        let okta = okta.clone();
        async move {
            okta.send(
                Method::POST,
                "Users",
                json!({"schemas": [USER_SCHEMA], "userName": format!("user{n:05}@acme.test"),
                    "externalId": format!("00u{n:05}"), "name": {"givenName": format!("G{n}"), "familyName": "F"},
                    "emails": [{"primary": true, "value": format!("user{n:05}@acme.test")}], "active": true}),
            )
            .await
        }
    };
    use futures_like::run_bounded;
    let ids = run_bounded(0..USERS, 8, create).await?;
    let ids: Vec<String> = ids
        .iter()
        .map(|v| v["id"].as_str().unwrap_or("").to_owned())
        .collect();
    for (i, chunk) in ids.chunks(1000).enumerate() {
        okta.send(
            Method::POST,
            "Groups",
            json!({"schemas": [GROUP_SCHEMA], "displayName": format!("Team {i}"), "externalId": format!("00g{i}"),
                "members": chunk.iter().map(|m| json!({"value": m})).collect::<Vec<_>>()}),
        )
        .await?;
    }
    let (dir_b, ep_b, tok_b) = target_directory(&b, &[]).await?;
    set_forward(&a, &dir, json!({"endpoint": ep_b, "bearer_token": tok_b})).await?;
    // SIGKILL in the middle of the backfill.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = forward_status(&a, &dir).await?;
        let done = st["backfill"]["users_done"].as_u64().unwrap_or(0);
        if done >= 2_000 {
            ensure!(
                st["backfill"]["state"] == "running",
                "too late to kill mid-backfill: {st}"
            );
            eprintln!("SIGKILL during the backfill at {done} users done");
            break;
        }
        ensure!(Instant::now() < deadline, "backfill did not progress: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9()?;
    a.restart().await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = forward_status(&a, &dir).await?;
        if st["backfill"]["state"] == "done" && st["lag_events"] == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "backfill did not finish after the restart: {st}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ensure!(active_users(&b, &dir_b).await? == USERS as u64);
    let st = forward_status(&a, &dir).await?;
    ensure!(
        st["forwarded"] == (USERS + 10) as u64 && st["parked"] == 0,
        "{st}"
    );

    // Steady forwarding, SIGKILLed in the middle: changes keep coming while the source dies
    // (writes refused by the dead process are simply not made; the comparison is with what the
    // source holds).
    let writer = {
        let okta = okta.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            run_bounded(0..600usize, 8, move |n| {
                let okta = okta.clone();
                let id = ids[n].clone();
                async move {
                    okta.patch(
                        &format!("Users/{id}"),
                        json!([{"op": "replace", "value": {"title": format!("Title {n}")}}]),
                    )
                    .await
                    .or(Ok(Value::Null))
                }
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = forward_status(&a, &dir).await?;
    a.kill9()?;
    eprintln!(
        "SIGKILL during steady forwarding: lag {} events, cursor {}",
        before["lag_events"], before["cursor"]
    );
    writer.await??;
    a.restart().await?;
    // The target restarted with its data while changes wait.
    b.stop()?;
    run_bounded(600..700usize, 8, |n| {
        let okta = okta.clone();
        let id = ids[n].clone();
        async move {
            okta.patch(
                &format!("Users/{id}"),
                json!([{"op": "replace", "value": {"title": format!("Title {n}")}}]),
            )
            .await
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.restart().await?;
    converge(&a, &dir, &b, &dir_b, Duration::from_secs(180)).await?;
    let v = view(&b, &dir_b).await?;
    ensure!(v["users"].as_object().map(|m| m.len()) == Some(USERS));
    ensure!(
        v["users"]["00u00699"]["job_title"] == "Title 699",
        "{}",
        v["users"]["00u00699"]
    );
    Ok(())
}

async fn active_users(s: &TestServer, dir: &str) -> anyhow::Result<u64> {
    let v = ok(s, Method::GET, &format!("/directories/{dir}"), None).await?;
    Ok(v["metadata"]["users"]["active"].as_u64().unwrap_or(0))
}

/// A tiny bounded-concurrency runner (the tests crate has no futures dependency).
mod futures_like {
    use std::future::Future;

    pub async fn run_bounded<I, F, Fut, T>(items: I, limit: usize, f: F) -> anyhow::Result<Vec<T>>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> Fut,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let items: Vec<usize> = items.into_iter().collect();
        let mut out: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < items.len() || !set.is_empty() {
            while next < items.len() && set.len() < limit {
                let fut = f(items[next]);
                let i = next;
                set.spawn(async move { (i, fut.await) });
                next += 1;
            }
            if let Some(r) = set.join_next().await {
                let (i, v) = r?;
                out[i] = Some(v?);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}
