//! An OIDC connection end to end against a real OpenID Provider (the certified `oidc-provider`
//! library, crates/oidc/tests/peer, installed by scripts/test-deps.d/oidc.sh): POST
//! /connections (client secret sealed) → /sso/authorize → the provider's login and consent
//! pages → our /sso/oidc/callback → the app's redirect with a code → /sso/token → profile.
//! Also the IdP error path (`access_denied`) and that the client secret never leaves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// kill(2) on the peer processes the test starts.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use idbridge_tests::TestServer;
use reqwest::Url;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const CALLBACK: &str = "http://127.0.0.1:9/callback";
const OP_CLIENT_ID: &str = "idbridge-sso-e2e";
const OP_CLIENT_SECRET: &str = "sso-e2e-client-secret-that-must-not-leak";

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/oidc/tests/peer")
}

/// `true` when the provider is not installed and skipping was explicitly allowed.
fn skip_or_panic() -> bool {
    if peer_dir()
        .join("node_modules/oidc-provider/package.json")
        .exists()
    {
        return false;
    }
    if std::env::var("IDBRIDGE_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!("skipping: oidc-provider not installed and IDBRIDGE_SKIP_PEERS=1");
        return true;
    }
    panic!("oidc-provider is not installed: run scripts/test-deps.sh (test-deps.d/oidc.sh)");
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The provider in its own process group, killed on drop.
struct Provider {
    issuer: String,
    child: Child,
}

impl Provider {
    async fn start(redirect_uri: &str) -> anyhow::Result<Provider> {
        let port = free_port()?;
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(peer_dir())
            .env("OP_PORT", port.to_string())
            .env("OP_ALG", "RS256")
            .env("OP_KID", "sso-e2e")
            .env("OP_CLIENT_ID", OP_CLIENT_ID)
            .env("OP_CLIENT_SECRET", OP_CLIENT_SECRET)
            .env("OP_REDIRECT_URI", redirect_uri)
            .env("OP_AUTH_METHOD", "client_secret_basic")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "READY" {
                    return true;
                }
            }
            false
        })
        .await;
        anyhow::ensure!(ready == Ok(true), "oidc-provider did not start");
        // Keep draining stdout: a closed pipe would kill node on its next log line.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Provider {
            issuer: format!("http://127.0.0.1:{port}"),
            child,
        })
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the process group this test created; no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// A minimal browser: no automatic redirects, one cookie jar for every host (all on 127.0.0.1).
struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> anyhow::Result<Browser> {
        Ok(Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()?,
            jar: BTreeMap::new(),
        })
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let cookies = self
            .jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let resp = req.header(reqwest::header::COOKIE, cookies).send().await?;
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let pair = v.to_str()?.split(';').next().unwrap_or_default();
            if let Some((k, val)) = pair.split_once('=') {
                self.jar.insert(k.trim().to_string(), val.to_string());
            }
        }
        Ok(resp)
    }

    /// From `url` to the app's callback: logs in as `login` and consents (or cancels).
    async fn run(
        &mut self,
        url: &str,
        login: &str,
        abort: bool,
    ) -> anyhow::Result<HashMap<String, String>> {
        let mut base = Url::parse(url)?;
        let mut next = self.send(self.http.get(base.clone())).await?;
        for _ in 0..25 {
            if next.status().is_redirection() {
                let loc = next
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .ok_or_else(|| anyhow::anyhow!("redirect without Location"))?
                    .to_str()?
                    .to_string();
                let target = base.join(&loc)?;
                if target.as_str().starts_with(CALLBACK) {
                    return Ok(target.query_pairs().into_owned().collect());
                }
                base = target.clone();
                next = self.send(self.http.get(target)).await?;
                continue;
            }
            let status = next.status();
            let html = next.text().await?;
            anyhow::ensure!(status == 200, "unexpected {status} at {base}: {html}");
            if abort {
                let href = attr_after(&html, "href=\"", "/abort")
                    .ok_or_else(|| anyhow::anyhow!("no abort link"))?;
                let target = base.join(&href)?;
                next = self.send(self.http.get(target)).await?;
                continue;
            }
            let action = attr_after(&html, "action=\"", "")
                .ok_or_else(|| anyhow::anyhow!("no form at {base}"))?;
            let target = base.join(&action)?;
            let form: Vec<(&str, &str)> = if html.contains("name=\"prompt\" value=\"login\"") {
                vec![("prompt", "login"), ("login", login), ("password", "any")]
            } else {
                vec![("prompt", "consent")]
            };
            base = target.clone();
            next = self.send(self.http.post(target).form(&form)).await?;
        }
        anyhow::bail!("too many steps without reaching the app's callback")
    }
}

/// The first `marker"…"` attribute value containing `must_contain`.
fn attr_after(html: &str, marker: &str, must_contain: &str) -> Option<String> {
    html.match_indices(marker).find_map(|(i, _)| {
        let rest = &html[i + marker.len()..];
        let value = &rest[..rest.find('"')?];
        value
            .contains(must_contain)
            .then(|| value.replace("&amp;", "&"))
    })
}

#[tokio::test]
async fn oidc_connection_end_to_end_with_oidc_provider() -> anyhow::Result<()> {
    if skip_or_panic() {
        return Ok(());
    }
    let server = TestServer::builder()
        .env("IDBRIDGE_SSO_REDIRECT_URIS", CALLBACK)
        .start()
        .await?;
    let provider = Provider::start(&server.endpoint("/sso/oidc/callback")).await?;

    let org: Value = server
        .post("/organizations")
        .json(&json!({"name": "OIDC Co"}))
        .send()
        .await?
        .json()
        .await?;
    let org_id = org["id"].as_str().unwrap_or_default().to_string();
    let created = server
        .post("/connections")
        .json(&json!({
            "organization_id": org_id,
            "connection_type": "OktaOIDC",
            "name": "oidc-provider",
            "oidc_options": {
                "discovery_endpoint": format!("{}/.well-known/openid-configuration", provider.issuer),
                "client_id": OP_CLIENT_ID,
                "client_secret": OP_CLIENT_SECRET,
            },
        }))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let text = created.text().await?;
    assert!(
        !text.contains(OP_CLIENT_SECRET),
        "client secret in the response"
    );
    let conn: Value = serde_json::from_str(&text)?;
    let conn_id = conn["id"].as_str().unwrap_or_default().to_string();

    let authorize = |state: &str| {
        format!(
            "{}?client_id={}&redirect_uri={}&response_type=code&connection={conn_id}&state={state}",
            server.endpoint("/sso/authorize"),
            server.client_id(),
            CALLBACK
        )
    };

    // A full login.
    let cb = Browser::new()?
        .run(&authorize("oidc-state"), "grace", false)
        .await?;
    assert_eq!(
        cb.get("state").map(String::as_str),
        Some("oidc-state"),
        "{cb:?}"
    );
    assert!(!cb.contains_key("error"), "{cb:?}");
    let code = cb.get("code").cloned().unwrap_or_default();
    let token: Value = server
        .post("/sso/token")
        .json(
            &json!({"client_id": server.client_id(), "client_secret": server.api_key(),
                      "grant_type": "authorization_code", "code": code}),
        )
        .send()
        .await?
        .json()
        .await?;
    let p = &token["profile"];
    assert_eq!(p["email"], "grace@example.com", "{token}");
    assert_eq!(p["idp_id"], "grace");
    assert_eq!(p["first_name"], "Grace");
    assert_eq!(p["last_name"], "Hopper");
    assert_eq!(p["connection_type"], "OktaOIDC");
    assert_eq!(p["connection_id"], conn_id.as_str());
    assert_eq!(p["organization_id"], org_id.as_str());
    assert_eq!(p["groups"], json!(["navy", "cobol"]));
    assert_eq!(token["token_type"], "Bearer");

    // The user cancels at the provider: access_denied comes back to the app, with its state.
    let cb = Browser::new()?
        .run(&authorize("denied"), "grace", true)
        .await?;
    assert_eq!(
        cb.get("error").map(String::as_str),
        Some("access_denied"),
        "{cb:?}"
    );
    assert_eq!(cb.get("state").map(String::as_str), Some("denied"));
    assert!(!cb.contains_key("code"));

    // The secret never shows up in the API, the events or the logs.
    for path in [
        format!("/connections/{conn_id}"),
        format!("/admin/connections/{conn_id}"),
        "/events".into(),
    ] {
        let body = server.get(&path).send().await?.text().await?;
        assert!(
            !body.contains(OP_CLIENT_SECRET),
            "{path} leaks the client secret"
        );
    }
    assert!(
        !server.stderr().contains(OP_CLIENT_SECRET),
        "the logs leak the client secret"
    );
    drop(provider);
    Ok(())
}
