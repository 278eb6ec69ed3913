//! Reading directory results the way a customer's application does: the WorkOS list
//! endpoints (every page), the Events API, and the admin sync trigger. Shared by the
//! end-to-end tests of the pull sources (LDAP, Active Directory).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::api::capture;
use crate::TestServer;

/// GET with the API key; checks the wire conventions and a 200.
pub async fn get(server: &TestServer, path: &str) -> anyhow::Result<Value> {
    let resp = capture(server.get(path)).await?;
    resp.expect_conventions()?;
    Ok(resp.expect_json(200)?.clone())
}

/// Every page of a WorkOS list endpoint (`after` cursors), oldest first for `/events`.
pub async fn all_pages(server: &TestServer, path: &str) -> anyhow::Result<Vec<Value>> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let url = match &after {
            Some(a) => format!("{path}{sep}limit=100&after={a}"),
            None => format!("{path}{sep}limit=100"),
        };
        let page = get(server, &url).await?;
        let data = page["data"]
            .as_array()
            .with_context(|| format!("{url}: no data array: {page}"))?;
        if data.is_empty() {
            return Ok(out);
        }
        out.extend(data.iter().cloned());
        match page["list_metadata"]["after"].as_str() {
            Some(a) => after = Some(a.to_owned()),
            None => return Ok(out),
        }
    }
    bail!("{path}: more than 100 pages")
}

/// `POST /admin/directories/{id}/sync`, retried while another run (the start-up one, or the
/// scheduler picking up a confirmation) holds the directory. Returns the run record.
pub async fn sync(server: &TestServer, dir: &str, kind: &str) -> anyhow::Result<Value> {
    let path = format!("/admin/directories/{dir}/sync");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = capture(server.post(&path).json(&json!({ "kind": kind }))).await?;
        resp.expect_conventions()?;
        if resp.status == 409
            && resp.json.as_ref().and_then(|j| j["code"].as_str()) == Some("sync_in_progress")
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        return Ok(resp.expect_json(200)?.clone());
    }
}

/// Directory users by email.
pub async fn users_by_email(
    server: &TestServer,
    query: &str,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let users = all_pages(server, &format!("/directory_users?{query}")).await?;
    let mut out = BTreeMap::new();
    for u in users {
        let email = u["email"]
            .as_str()
            .with_context(|| format!("user without email: {u}"))?
            .to_owned();
        out.insert(email, u);
    }
    Ok(out)
}

/// Sorted emails of a group's members, through `GET /directory_users?group=`.
pub async fn member_emails(server: &TestServer, group_id: &str) -> anyhow::Result<Vec<String>> {
    Ok(users_by_email(server, &format!("group={group_id}"))
        .await?
        .into_keys()
        .collect())
}

/// Events of the given types, oldest first.
pub async fn events(server: &TestServer, types: &str) -> anyhow::Result<Vec<Value>> {
    all_pages(server, &format!("/events?events={types}")).await
}

pub fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

pub fn emails_of(events: &[Value], kind: &str) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == kind)
        .filter_map(|e| e["data"]["email"].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}
