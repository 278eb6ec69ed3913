//! idbridge's IdP in broker mode, end to end through two real `idbridge serve` processes and
//! real upstream IdPs: idbridge **A** is the IdP of idbridge **B** (B's SAML connection comes
//! from A's metadata URL; A registers B from B's SP metadata URL). A's service provider
//! authenticates users through one of A's own SSO connections:
//!
//! 1. a SAML connection whose IdP is **samlify** (crates/saml/tests/peers/samlify_idp.js signs
//!    the answer to A's AuthnRequest), then
//! 2. an OIDC connection to the certified **oidc-provider** (its login and consent pages driven
//!    over HTTP).
//!
//! The browser (plain HTTP, one cookie jar, no redirects followed automatically) goes
//! B `/sso/authorize` → A's SSO endpoint (B's signed AuthnRequest) → the upstream IdP → A's
//! ACS or OIDC callback → A's broker return → the auto-submitting page → B's ACS → the app's
//! callback with a code; the profile then arrives through the official WorkOS Node SDK's
//! `getProfileAndToken` (tests/js/idp_profile.test.mjs) with the upstream user's email, names,
//! idp_id and groups.
//!
//! Then **pysaml2** is a service provider of A too: its own client makes the AuthnRequest (HTTP-
//! Redirect) and accepts A's answer (signature, audience, InResponseTo, XSD), users again
//! through the samlify upstream.
//!
//! Refused: the upstream response replayed (no second code), the upstream login cancelled
//! (B gets a SAML error Response from A at its ACS and sends the app an OAuth error, not a
//! 500), another organization's connection as the broker source (422 naming the field).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context};
use idbridge_tests::login_page::input;
use idbridge_tests::{repo_root, run_node_test, OidcProvider, OidcProviderOptions, TestServer};
use serde_json::{json, Value};
use url::Url;

const CALLBACK: &str = "http://app.example.test/callback";
const SAMLIFY_ENTITY: &str = "https://samlify-idp.example.test/metadata";
const SAMLIFY_SSO: &str = "https://samlify-idp.example.test/sso";
const PYSAML2_SP: &str = "https://pysaml2-sp.example.test/metadata";
const PYSAML2_ACS: &str = "https://pysaml2-sp.example.test/acs";
const OP_CLIENT_ID: &str = "idbridge-a";
const OP_CLIENT_SECRET: &str = "a-client-secret-for-the-broker-e2e";

fn samlify_modules() -> PathBuf {
    let peers = std::env::var("IDBRIDGE_PEERS_DIR")
        .unwrap_or_else(|_| "/var/cache/idbridge-peers".to_owned());
    PathBuf::from(peers).join("samlify").join("node_modules")
}

/// Whether both upstream peers are installed; fails naming the script unless
/// `IDBRIDGE_SKIP_PEERS=1` asks to skip.
fn peers_installed() -> anyhow::Result<bool> {
    let samlify = samlify_modules().join("samlify").is_dir();
    if samlify && OidcProvider::installed()? {
        return Ok(true);
    }
    if std::env::var("IDBRIDGE_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: samlify or oidc-provider not installed and IDBRIDGE_SKIP_PEERS=1");
        return Ok(false);
    }
    anyhow::bail!("samlify is not installed: run scripts/test-deps.sh (test-deps.d/saml.sh)")
}

/// samlify signs the upstream answer to A's AuthnRequest `req_id` for connection `conn`.
fn samlify_response(
    a: &TestServer,
    keys: &(String, String),
    conn: &str,
    req_id: &str,
) -> anyhow::Result<String> {
    let cfg = json!({
        "idp": SAMLIFY_ENTITY,
        "idpKey": keys.0,
        "idpCert": keys.1,
        "encrypt": false,
        "sp": a.endpoint(&format!("/sso/saml/{conn}")),
        "acs": a.endpoint(&format!("/sso/saml/acs/{conn}")),
        "signAssertion": true,
        "signMessage": false,
        "spCert": keys.1,
        "reqId": req_id,
        "user": "grace@upstream.test",
        "attributes": {
            "id": ["upstream-grace-1"],
            "email": ["grace@upstream.test"],
            "firstName": ["Grace"],
            "lastName": ["Hopper"],
            "groups": ["navy", "cobol"],
        },
    });
    let mut child = Command::new("node")
        .arg(repo_root().join("crates/saml/tests/peers/samlify_idp.js"))
        .env("NODE_PATH", samlify_modules())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("node samlify_idp.js")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(cfg.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "samlify_idp.js failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// pysaml2 as a service provider (crates/saml/tests/peers/pysaml2_sp.py): JSON in, JSON out.
fn pysaml2_sp(cfg: &Value) -> anyhow::Result<Value> {
    let peers = std::env::var("IDBRIDGE_PEERS_DIR")
        .unwrap_or_else(|_| "/var/cache/idbridge-peers".to_owned());
    let mut child = Command::new(PathBuf::from(peers).join("pysaml2-venv/bin/python"))
        .arg(repo_root().join("crates/saml/tests/peers/pysaml2_sp.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("pysaml2 (scripts/test-deps.d/saml.sh)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(cfg.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "pysaml2_sp.py {} failed",
        cfg["command"]
    );
    Ok(serde_json::from_slice(&out.stdout)?)
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

/// What the browser met at the samlify IdP: its AuthnRequest id and RelayState.
#[derive(Debug, Clone)]
struct AtSamlify {
    request_id: String,
    relay_state: String,
}

/// How a run through the browser ended.
#[derive(Debug)]
enum End {
    /// The app's callback with these query parameters.
    Callback(HashMap<String, String>),
    /// Stopped at the samlify IdP (the test answers it).
    Samlify(AtSamlify),
    /// The SAMLResponse page aimed at pysaml2's ACS: (SAMLResponse, RelayState).
    AtPysaml2(String, Option<String>),
}

/// A minimal browser: no automatic redirects, one cookie jar (everything is on 127.0.0.1).
struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<String, String>,
    /// Every SAMLResponse page it submitted (the XML), to look at.
    posted: Vec<String>,
}

impl Browser {
    fn new() -> anyhow::Result<Browser> {
        Ok(Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()?,
            jar: BTreeMap::new(),
            posted: Vec::new(),
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
                if val.is_empty() {
                    self.jar.remove(k.trim());
                } else {
                    self.jar.insert(k.trim().to_string(), val.to_string());
                }
            }
        }
        Ok(resp)
    }

    /// Follows redirects and forms from `first` until the app's callback or the samlify IdP.
    /// oidc-provider's login and consent forms are answered as `login`, or cancelled.
    async fn run(
        &mut self,
        first: reqwest::RequestBuilder,
        mut base: Url,
        login: &str,
        cancel: bool,
    ) -> anyhow::Result<End> {
        let mut next = self.send(first).await?;
        for _ in 0..30 {
            if next.status().is_redirection() {
                let loc = next
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .context("redirect without Location")?
                    .to_str()?
                    .to_owned();
                let target = base.join(&loc)?;
                if target.as_str().starts_with(CALLBACK) {
                    return Ok(End::Callback(target.query_pairs().into_owned().collect()));
                }
                if target.as_str().starts_with(SAMLIFY_SSO) {
                    let q: HashMap<String, String> = target.query_pairs().into_owned().collect();
                    let xml = inflate(q.get("SAMLRequest").context("SAMLRequest")?)?;
                    let request_id = xml
                        .split(" ID=\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .context("request ID")?
                        .to_owned();
                    return Ok(End::Samlify(AtSamlify {
                        request_id,
                        relay_state: q.get("RelayState").cloned().unwrap_or_default(),
                    }));
                }
                base = target.clone();
                next = self.send(self.http.get(target)).await?;
                continue;
            }
            let status = next.status();
            let html = next.text().await?;
            ensure!(status == 200, "unexpected {status} at {base}: {html}");
            // The auto-submitting SAML page (A's answer to B): submit it as the browser would.
            if let Some(saml) = input(&html, "SAMLResponse") {
                let action = attr_after(&html, "action=\"", "").context("no form action")?;
                self.posted.push(decode_b64(&saml)?);
                if action == PYSAML2_ACS {
                    return Ok(End::AtPysaml2(saml, input(&html, "RelayState")));
                }
                let mut form = vec![("SAMLResponse".to_owned(), saml)];
                if let Some(rs) = input(&html, "RelayState") {
                    form.push(("RelayState".to_owned(), rs));
                }
                let target = base.join(&action)?;
                base = target.clone();
                next = self.send(self.http.post(target).form(&form)).await?;
                continue;
            }
            if cancel {
                let href = attr_after(&html, "href=\"", "/abort").context("no abort link")?;
                let target = base.join(&href)?;
                next = self.send(self.http.get(target)).await?;
                continue;
            }
            let action = attr_after(&html, "action=\"", "").context("no form")?;
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

fn decode_b64(s: &str) -> anyhow::Result<String> {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .ok_or_else(|| std::io::Error::other("stdin"))?
                .write_all(s.as_bytes())?;
            c.wait_with_output()
        })?;
    Ok(String::from_utf8(out.stdout)?)
}

/// The Redirect binding's DEFLATE, undone with python's zlib (no Rust inflate in this crate).
fn inflate(b64: &str) -> anyhow::Result<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys,base64,zlib;sys.stdout.write(zlib.decompress(base64.b64decode(sys.stdin.read()),-15).decode())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .ok_or_else(|| std::io::Error::other("stdin"))?
                .write_all(b64.as_bytes())?;
            c.wait_with_output()
        })?;
    ensure!(out.status.success(), "inflate failed");
    Ok(String::from_utf8(out.stdout)?)
}

async fn json_ok(resp: reqwest::Response, what: &str, status: u16) -> anyhow::Result<Value> {
    let got = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    ensure!(got == status, "{what}: {got}: {body}");
    Ok(body)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

async fn profile_through_the_sdk(b: &TestServer, code: &str, expect: Value) -> anyhow::Result<()> {
    let mut env = b.peer_env();
    env.push(("IDBRIDGE_IDP_CODE".into(), code.to_owned()));
    env.push(("IDBRIDGE_IDP_EXPECT".into(), expect.to_string()));
    let report = run_node_test("idp_profile.test.mjs", env).await?;
    if report.ran() {
        ensure!(
            report.passed == 1 && report.failed == 0,
            "getProfileAndToken through the Node SDK:\n{}",
            report.output
        );
    }
    Ok(())
}

#[tokio::test]
async fn broker_mode_with_samlify_and_oidc_provider_upstream() -> anyhow::Result<()> {
    if !peers_installed()? {
        return Ok(());
    }
    let a = TestServer::builder().start().await?;
    let b = TestServer::builder()
        .env("IDBRIDGE_SSO_REDIRECT_URIS", CALLBACK)
        .start()
        .await?;
    let mut op = OidcProviderOptions::new(
        OP_CLIENT_ID,
        OP_CLIENT_SECRET,
        &a.endpoint("/sso/oidc/callback"),
    );
    op.users = json!({"ada": {"given_name": "Ada", "family_name": "Lovelace", "groups": ["analysts", "staff"]}});
    let provider = OidcProvider::start(&op).await?;

    // A: the organization, its two upstream connections, and another organization's.
    let org_a = id(&json_ok(
        a.post("/organizations")
            .json(&json!({"name": "Acme"}))
            .send()
            .await?,
        "org at A",
        201,
    )
    .await?);
    let keys = idbridge_tests::throwaway_key_pair("samlify-upstream")?;
    let saml_conn = id(&json_ok(
        a.post("/connections")
            .json(&json!({
                "organization_id": org_a, "name": "samlify", "connection_type": "GenericSAML",
                "saml_options": {"idp_entity_id": SAMLIFY_ENTITY, "idp_sso_url": SAMLIFY_SSO, "idp_signing_certs": [keys.1]},
            }))
            .send()
            .await?,
        "SAML connection at A",
        201,
    )
    .await?);
    let oidc_conn = id(&json_ok(
        a.post("/connections")
            .json(&json!({
                "organization_id": org_a, "name": "oidc-provider", "connection_type": "GenericOIDC",
                "oidc_options": {"discovery_endpoint": provider.discovery_url(), "client_id": OP_CLIENT_ID, "client_secret": OP_CLIENT_SECRET, "scopes": ["openid", "profile", "email", "groups"]},
            }))
            .send()
            .await?,
        "OIDC connection at A",
        201,
    )
    .await?);
    let org_other = id(&json_ok(
        a.post("/organizations")
            .json(&json!({"name": "Other"}))
            .send()
            .await?,
        "other org at A",
        201,
    )
    .await?);
    let foreign_conn = id(&json_ok(
        a.post("/connections")
            .json(&json!({
                "organization_id": org_other, "name": "foreign", "connection_type": "GenericSAML",
                "saml_options": {"idp_entity_id": "https://foreign.example", "idp_sso_url": SAMLIFY_SSO, "idp_signing_certs": [keys.1]},
            }))
            .send()
            .await?,
        "foreign connection at A",
        201,
    )
    .await?);

    // B: an organization and a SAML connection from A's IdP metadata URL (signed requests).
    let org_b = id(&json_ok(
        b.post("/organizations")
            .json(&json!({"name": "Acme at B"}))
            .send()
            .await?,
        "org at B",
        201,
    )
    .await?);
    let b_conn = id(&json_ok(
        b.post("/connections")
            .json(&json!({"organization_id": org_b, "connection_type": "GenericSAML", "name": "idbridge A", "saml_options": {"idp_metadata_url": a.endpoint(&format!("/idp/{org_a}/saml/metadata")), "sign_requests": true}}))
            .send()
            .await?,
        "connection at B",
        201,
    )
    .await?);

    // A: B registered from its SP metadata URL. Another organization's connection is refused.
    let sp_metadata = b.endpoint(&format!("/sso/saml/metadata/{b_conn}"));
    let r = a
        .post("/admin/service_providers")
        .json(&json!({"organization_id": org_a, "metadata_url": sp_metadata, "auth_source": {"type": "broker", "connection_id": foreign_conn}}))
        .send()
        .await?;
    let refused = json_ok(r, "foreign broker connection", 422).await?;
    ensure!(
        refused.to_string().contains("auth_source.connection_id"),
        "{refused}"
    );
    let sp = json_ok(
        a.post("/admin/service_providers")
            .json(&json!({"organization_id": org_a, "metadata_url": sp_metadata, "name": "App at B", "auth_source": {"type": "broker", "connection_id": saml_conn}}))
            .send()
            .await?,
        "SP at A",
        201,
    )
    .await?;
    ensure!(sp["require_signed_requests"] == true, "{sp}");
    let authorize = b.endpoint(&format!(
        "/sso/authorize?client_id={}&redirect_uri={CALLBACK}&response_type=code&connection={b_conn}&state=st-1",
        b.client_id()
    ));
    let b_base = Url::parse(b.url())?;

    // 1. Upstream samlify.
    let mut browser = Browser::new()?;
    let End::Samlify(at) = browser
        .run(browser.http.get(&authorize), b_base.clone(), "", false)
        .await?
    else {
        anyhow::bail!("the browser did not reach the samlify IdP");
    };
    let saml = samlify_response(&a, &keys, &saml_conn, &at.request_id)?;
    let acs = a.endpoint(&format!("/sso/saml/acs/{saml_conn}"));
    let form = [
        ("SAMLResponse", saml.as_str()),
        ("RelayState", at.relay_state.as_str()),
    ];
    let replay_cookies = browser.jar.clone();
    let end = browser
        .run(
            browser.http.post(&acs).form(&form),
            Url::parse(&acs)?,
            "",
            false,
        )
        .await?;
    let End::Callback(q) = end else {
        anyhow::bail!("no callback: {end:?}");
    };
    let code = q.get("code").context(format!("no code: {q:?}"))?;
    ensure!(q.get("state").map(String::as_str) == Some("st-1"), "{q:?}");
    let assertion = browser.posted.last().context("no assertion posted")?;
    ensure!(assertion.contains("InResponseTo="), "{assertion}");
    profile_through_the_sdk(
        &b,
        code,
        json!({
            "email": "grace@upstream.test", "firstName": "Grace", "lastName": "Hopper",
            "idpId": "upstream-grace-1", "connectionId": b_conn, "organizationId": org_b,
            "groups": ["navy", "cobol"],
        }),
    )
    .await?;

    // The samlify response replayed with the same browser state: no second code anywhere.
    let mut replayer = Browser::new()?;
    replayer.jar = replay_cookies;
    let end = replayer
        .run(
            replayer.http.post(&acs).form(&form),
            Url::parse(&acs)?,
            "",
            false,
        )
        .await;
    if let Ok(End::Callback(q)) = &end {
        ensure!(
            !q.contains_key("code"),
            "a replayed response gave a code: {q:?}"
        );
    }
    ensure!(replayer.posted.is_empty(), "a replay produced an assertion");

    // 2. Upstream oidc-provider: the SP's source switched to the OIDC connection.
    json_ok(
        a.put(&format!("/admin/service_providers/{}", id(&sp)))
            .json(&json!({"auth_source": {"type": "broker", "connection_id": oidc_conn}}))
            .send()
            .await?,
        "switch to OIDC",
        200,
    )
    .await?;
    let mut browser = Browser::new()?;
    let end = browser
        .run(browser.http.get(&authorize), b_base.clone(), "ada", false)
        .await?;
    let End::Callback(q) = end else {
        anyhow::bail!("no callback: {end:?}");
    };
    let code = q.get("code").context(format!("no code: {q:?}"))?;
    profile_through_the_sdk(
        &b,
        code,
        json!({
            "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace",
            "idpId": "ada", "connectionId": b_conn, "organizationId": org_b,
            "groups": ["analysts", "staff"],
        }),
    )
    .await?;

    // The upstream login cancelled: A posts B a SAML error Response (not a 500) and B sends
    // the app an OAuth error.
    let mut browser = Browser::new()?;
    let end = browser
        .run(browser.http.get(&authorize), b_base, "ada", true)
        .await?;
    let End::Callback(q) = end else {
        anyhow::bail!("no callback: {end:?}");
    };
    ensure!(!q.contains_key("code"), "{q:?}");
    ensure!(q.contains_key("error"), "{q:?}");
    let error_response = browser.posted.last().context("no SAML error Response")?;
    ensure!(
        error_response.contains("status:AuthnFailed")
            && !error_response.contains("<saml:Assertion"),
        "{error_response}"
    );

    // 3. pysaml2 as a service provider of A (from its own metadata, A's IdP metadata imported),
    //    users through the samlify upstream: its client makes the AuthnRequest and accepts the
    //    answer (signature, audience, InResponseTo, XSD).
    let idp_metadata = a
        .http()
        .get(a.endpoint(&format!("/idp/{org_a}/saml/metadata")))
        .send()
        .await?
        .text()
        .await?;
    let py = |command: &str| json!({"command": command, "sp": PYSAML2_SP, "acs": PYSAML2_ACS, "idpMetadata": idp_metadata});
    let md = pysaml2_sp(&py("metadata"))?;
    json_ok(
        a.post("/admin/service_providers")
            .json(&json!({"organization_id": org_a, "metadata_xml": md["metadata"], "name": "pysaml2", "auth_source": {"type": "broker", "connection_id": saml_conn}}))
            .send()
            .await?,
        "pysaml2 SP at A",
        201,
    )
    .await?;
    let mut req = py("request");
    req["binding"] = json!("redirect");
    req["idp"] = json!(a.endpoint(&format!("/idp/{org_a}/saml/metadata")));
    req["relayState"] = json!("py-rs");
    let req = pysaml2_sp(&req)?;
    let location = req["location"]
        .as_str()
        .context("pysaml2 location")?
        .to_owned();
    let mut browser = Browser::new()?;
    let End::Samlify(at) = browser
        .run(
            browser.http.get(&location),
            Url::parse(&location)?,
            "",
            false,
        )
        .await?
    else {
        anyhow::bail!("the browser did not reach the samlify IdP");
    };
    let saml = samlify_response(&a, &keys, &saml_conn, &at.request_id)?;
    let form = [
        ("SAMLResponse", saml.as_str()),
        ("RelayState", at.relay_state.as_str()),
    ];
    let end = browser
        .run(
            browser.http.post(&acs).form(&form),
            Url::parse(&acs)?,
            "",
            false,
        )
        .await?;
    let End::AtPysaml2(response, relay) = end else {
        anyhow::bail!("no answer for pysaml2: {end:?}");
    };
    ensure!(relay.as_deref() == Some("py-rs"), "{relay:?}");
    let mut parse = py("parse");
    parse["samlResponse"] = json!(response);
    parse["reqId"] = req["id"].clone();
    let got = pysaml2_sp(&parse)?;
    ensure!(got["inResponseTo"] == req["id"], "{got}");
    ensure!(got["audience"] == json!([PYSAML2_SP]), "{got}");
    ensure!(
        got["ava"]["email"] == json!(["grace@upstream.test"])
            && got["ava"]["firstName"] == json!(["Grace"])
            && got["ava"]["lastName"] == json!(["Hopper"]),
        "{got}"
    );
    drop(provider);
    Ok(())
}
