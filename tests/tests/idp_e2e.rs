//! idbridge as the identity provider of another SAML service provider (issue 16), end to end:
//! a real `slapd`; idbridge **A** (the IdP) syncs it as an `[[ldap_directories]]` source of
//! organization "acme" and registers idbridge **B** as a service provider from B's SP metadata
//! URL; B (the SP, standing in for WorkOS) has a SAML connection created from A's IdP metadata
//! URL. The browser's part is driven here with plain HTTP (cookies by hand, no redirects
//! followed): B's `/sso/authorize` → A's SSO endpoint (B's AuthnRequest) → A's login page →
//! password checked by binding as the user against slapd → the auto-submitting page with the
//! signed assertion → B's ACS → the app's callback with a code. The profile then arrives
//! through the official WorkOS Node SDK's `getProfileAndToken` (tests/js/idp_profile.test.mjs).
//!
//! Refused on the way, each with no assertion: a wrong password, an unknown user, a disabled
//! user and another organization's user (one message for all), the attempt limit (429, even
//! for the right password), a login POST without its CSRF token, a replayed login session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{ensure, Context};
use idbridge_tests::directory_api::{all_pages, events, sync, users_by_email};
use idbridge_tests::login_page::{browser, cookie, form_action, input, log_in_through_page};
use idbridge_tests::{
    ldap_group, run_node_test, run_python_test, Slapd, TestServer, LDAP_ADMIN_DN, LDAP_SUFFIX,
};
use serde_json::{json, Value};

/// The app's callback: allow-listed at B, never contacted (the browser test answers it itself).
const CALLBACK: &str = "http://app.example.test/callback";
const BAD_CREDENTIALS: &str = "The username or password is incorrect.";

fn person(uid: &str, ou: &str, given: &str, sn: &str, password: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou={ou},{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
         cn: {given} {sn}\ngivenName: {given}\nsn: {sn}\nmail: {uid}@example.test\n\
         userPassword: {password}\n{extra}\n"
    )
}

/// One SP-initiated login up to A's login page: (B's cookie, A's cookie, login page HTML).
struct LoginStart {
    sp_cookie: String,
    idp_cookie: String,
    page: String,
}

async fn start_login(b: &TestServer, conn: &str) -> anyhow::Result<LoginStart> {
    let http = browser();
    let url = format!(
        "{}/sso/authorize?client_id={}&redirect_uri={CALLBACK}&response_type=code&connection={conn}&state=st-1",
        b.url(),
        b.client_id()
    );
    let r = http.get(&url).send().await?;
    ensure!(r.status() == 302, "authorize: {}", r.status());
    let sp_cookie = cookie(&r, "idbridge_sso_").context("B's login cookie")?;
    let to_idp = r
        .headers()
        .get("location")
        .context("redirect to the IdP")?
        .to_str()?
        .to_owned();
    let r = http.get(&to_idp).send().await?;
    let status = r.status();
    let idp_cookie = cookie(&r, "idbridge_idp_");
    let page = r.text().await?;
    ensure!(status == 200, "IdP SSO endpoint: {status}: {page}");
    Ok(LoginStart {
        sp_cookie,
        idp_cookie: idp_cookie.context("A's login cookie")?,
        page,
    })
}

async fn submit(
    a: &TestServer,
    org: &str,
    s: &LoginStart,
    login: &str,
    password: &str,
    with_csrf: bool,
) -> anyhow::Result<(u16, String)> {
    let k = input(&s.page, "k").context("k")?;
    let csrf = input(&s.page, "csrf").context("csrf")?;
    let mut form = vec![
        ("k", k),
        ("login", login.to_owned()),
        ("password", password.to_owned()),
    ];
    if with_csrf {
        form.push(("csrf", csrf));
    }
    let r = browser()
        .post(format!("{}/idp/{org}/login", a.url()))
        .header("cookie", &s.idp_cookie)
        .form(&form)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// Everything both tests need: slapd, A (the IdP) with its synced directory, B (the SP) with
/// its connection to A, and B registered at A.
struct World {
    _slapd: Slapd,
    a: TestServer,
    b: TestServer,
    org_a: String,
    org_b: String,
    conn_id: String,
    sp: Value,
    uuid: String,
}

/// `app_callback`: one more allow-listed redirect URI at B (the browser test's own app).
async fn world(app_callback: Option<&str>) -> anyhow::Result<World> {
    let slapd = Slapd::start()?;
    let mut tree =
        format!("dn: ou=Partners,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: Partners\n\n");
    tree.push_str(&person(
        "alice",
        "People",
        "Alice",
        "Archer",
        "alice-pw-1",
        "",
    ));
    tree.push_str(&person("dave", "People", "Dave", "Dyer", "dave-pw-1", ""));
    tree.push_str(&person(
        "erin",
        "People",
        "Erin",
        "Eck",
        "erin-pw-1",
        "employeeType: disabled\n",
    ));
    tree.push_str(&person("pat", "Partners", "Pat", "Partner", "pat-pw-1", ""));
    tree.push_str(&ldap_group("engineering", &["alice", "dave"]));
    tree.push_str(&ldap_group("admins", &["alice"]));
    slapd.add(&tree)?;
    let uuid = slapd
        .search(
            &format!("uid=alice,ou=People,{LDAP_SUFFIX}"),
            "(objectClass=*)",
            &["entryUUID"],
        )?
        .into_iter()
        .flatten()
        .find(|(k, _)| k == "entryUUID")
        .map(|(_, v)| v)
        .context("alice's entryUUID")?;

    let pw = slapd.password_file()?;
    let ldap = |dir: &str, ou: &str| {
        format!(
            r#"
[[ldap_directories]]
directory = "{dir}"
full_sync_interval_secs = 3600
delta_sync_interval_secs = 3600
[ldap_directories.ldap]
url = "{url}"
allow_plain = true
flavor = "openldap"
bind_dn = "{LDAP_ADMIN_DN}"
bind_password_file = "{pw}"
user_base_dns = ["ou={ou},{LDAP_SUFFIX}"]
group_base_dns = ["ou=Groups,{LDAP_SUFFIX}"]
[ldap_directories.ldap.attributes]
disabled = "employeeType"
disabled_values = ["disabled"]
"#,
            url = slapd.url(),
            pw = pw.display()
        )
    };
    let config = format!(
        r#"
[[organizations]]
external_id = "acme"
name = "Acme"
domains = ["example.test"]

[[organizations]]
external_id = "partners"
name = "Partners"
domains = ["partners.test"]

[[directories]]
key = "corp-ldap"
organization = "acme"
name = "Corp LDAP"
type = "ldap"

[[directories]]
key = "partner-ldap"
organization = "partners"
name = "Partner LDAP"
type = "ldap"
{}{}"#,
        ldap("corp-ldap", "People"),
        ldap("partner-ldap", "Partners")
    );
    let a = TestServer::builder().config_toml(config).start().await?;
    let redirect_uris = match app_callback {
        Some(extra) => format!("{CALLBACK},{extra}"),
        None => CALLBACK.to_owned(),
    };
    let b = TestServer::builder()
        .env("IDBRIDGE_SSO_REDIRECT_URIS", redirect_uris)
        .start()
        .await?;

    // A: the directory synced, and its organization's id.
    let dirs = all_pages(&a, "/directories").await?;
    let dir = dirs
        .iter()
        .find(|d| d["name"] == "Corp LDAP")
        .context("declared directory")?;
    let dir_id = dir["id"].as_str().unwrap().to_owned();
    let org_a = dir["organization_id"].as_str().unwrap().to_owned();
    let rec = sync(&a, &dir_id, "full").await?;
    ensure!(rec["ok"] == true, "sync: {rec}");
    let users = users_by_email(&a, &format!("directory={dir_id}")).await?;
    ensure!(users.contains_key("alice@example.test"), "{users:?}");
    let partner_dir = dirs
        .iter()
        .find(|d| d["name"] == "Partner LDAP")
        .context("partner directory")?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ensure!(sync(&a, &partner_dir, "full").await?["ok"] == true);

    // B: an organization and a SAML connection from A's IdP metadata URL.
    let idp_metadata = format!("{}/idp/{org_a}/saml/metadata", a.url());
    let r = b
        .post("/organizations")
        .json(&json!({"name": "Acme at B"}))
        .send()
        .await?;
    ensure!(r.status() == 201, "{}", r.text().await?);
    let org_b = r.json::<Value>().await?["id"].as_str().unwrap().to_owned();
    let r = b
        .post("/connections")
        .json(&json!({"organization_id": org_b, "connection_type": "GenericSAML", "name": "idbridge A", "saml_options": {"idp_metadata_url": idp_metadata, "sign_requests": true}}))
        .send()
        .await?;
    let status = r.status();
    let conn: Value = r.json().await?;
    ensure!(status == 201, "connection at B: {conn}");
    let conn_id = conn["id"].as_str().unwrap().to_owned();

    // A: B registered as a service provider from B's SP metadata URL.
    let sp_metadata = format!("{}/sso/saml/metadata/{conn_id}", b.url());
    let r = a
        .post("/admin/service_providers")
        .json(&json!({"organization_id": org_a, "metadata_url": sp_metadata, "directory_id": dir_id, "name": "App at B", "colour": "blue"}))
        .send()
        .await?;
    ensure!(
        r.status() == 422,
        "unknown field accepted: {}",
        r.text().await?
    );
    let r = a
        .post("/admin/service_providers")
        .json(&json!({"organization_id": org_a, "metadata_url": sp_metadata, "directory_id": dir_id, "name": "App at B"}))
        .send()
        .await?;
    let status = r.status();
    let sp: Value = r.json().await?;
    ensure!(status == 201, "service provider at A: {sp}");
    ensure!(sp["idp"]["metadata_url"] == idp_metadata.as_str(), "{sp}");
    // B's metadata says AuthnRequestsSigned: A requires (and verifies) B's signature.
    ensure!(sp["require_signed_requests"] == true, "{sp}");

    Ok(World {
        _slapd: slapd,
        a,
        b,
        org_a,
        org_b,
        conn_id,
        sp,
        uuid,
    })
}

#[tokio::test]
async fn idbridge_is_the_saml_idp_of_another_idbridge() -> anyhow::Result<()> {
    let World {
        _slapd,
        a,
        b,
        org_a,
        org_b,
        conn_id,
        sp,
        uuid,
    } = world(None).await?;
    // Refusals: one message for a wrong password, an unknown user, a disabled user and another
    // organization's user; none carries an assertion.
    let s = start_login(&b, &conn_id).await?;
    ensure!(s.page.contains("App at B"), "{}", s.page);
    for (login, password) in [
        ("alice", "wrong"),
        ("nobody", "whatever"),
        ("erin", "erin-pw-1"),
        ("pat", "pat-pw-1"),
        ("pat@example.test", "pat-pw-1"),
    ] {
        let (status, body) = submit(&a, &org_a, &s, login, password, true).await?;
        ensure!(status == 401, "{login}: {status}: {body}");
        ensure!(body.contains(BAD_CREDENTIALS), "{login}: {body}");
        ensure!(!body.contains("SAMLResponse"), "{login}: an assertion");
    }
    // Without the CSRF token: refused before the directory is asked.
    let (status, body) = submit(&a, &org_a, &s, "alice", "alice-pw-1", false).await?;
    ensure!(
        status == 403 && !body.contains("SAMLResponse"),
        "{status}: {body}"
    );

    // The attempt limit per account: after five failures even the right password waits.
    let s2 = start_login(&b, &conn_id).await?;
    for _ in 0..5 {
        let (status, _) = submit(&a, &org_a, &s2, "dave", "nope", true).await?;
        ensure!(status == 401);
    }
    let (status, body) = submit(&a, &org_a, &s2, "dave", "dave-pw-1", true).await?;
    ensure!(status == 429, "{status}: {body}");
    ensure!(body.contains("Too many failed sign-in attempts"), "{body}");
    ensure!(!body.contains("SAMLResponse"));

    // The right password (after the failures above on the same page): the assertion.
    let (status, body) = submit(&a, &org_a, &s, "alice", "alice-pw-1", true).await?;
    ensure!(status == 200, "{status}: {body}");
    let acs = form_action(&body).context("form action")?;
    ensure!(
        acs == format!("{}/sso/saml/acs/{conn_id}", b.url()),
        "posted to {acs}, not B's registered ACS"
    );
    let saml_response = input(&body, "SAMLResponse").context("SAMLResponse")?;
    let relay_state = input(&body, "RelayState").context("RelayState")?;
    // The login session is single use.
    let (status, again) = submit(&a, &org_a, &s, "alice", "alice-pw-1", true).await?;
    ensure!(
        status == 400 && !again.contains("SAMLResponse"),
        "{status}: {again}"
    );

    let r = browser()
        .post(&acs)
        .header("cookie", &s.sp_cookie)
        .form(&[
            ("SAMLResponse", saml_response.as_str()),
            ("RelayState", relay_state.as_str()),
        ])
        .send()
        .await?;
    ensure!(r.status() == 302, "ACS at B: {}", r.status());
    let back = url::Url::parse(r.headers()["location"].to_str()?)?;
    ensure!(back.as_str().starts_with(CALLBACK), "{back}");
    let q: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    ensure!(!q.contains_key("error"), "B refused the assertion: {back}");
    ensure!(q.get("state").map(String::as_str) == Some("st-1"), "{back}");
    let code = q.get("code").context("code")?.clone();

    // A's own opt-in events: one success (with the login's commit), a failure per refusal
    // with its reason (never the password).
    let evs = events(&a, "idp.login_succeeded,idp.login_failed").await?;
    let ok: Vec<&Value> = evs
        .iter()
        .filter(|e| e["event"] == "idp.login_succeeded")
        .collect();
    ensure!(ok.len() == 1, "{evs:?}");
    ensure!(ok[0]["data"]["email"] == "alice@example.test", "{}", ok[0]);
    ensure!(
        ok[0]["data"]["service_provider_id"] == sp["id"],
        "{}",
        ok[0]
    );
    let reasons: Vec<&str> = evs
        .iter()
        .filter(|e| e["event"] == "idp.login_failed")
        .filter_map(|e| e["data"]["reason"].as_str())
        .collect();
    for r in ["bad_password", "no_such_user", "disabled", "attempt_limit"] {
        ensure!(reasons.contains(&r), "no {r} in {reasons:?}");
    }
    ensure!(
        !format!("{evs:?}").contains("alice-pw-1"),
        "a password in an event"
    );
    // Without `events=` naming them, the opt-in kinds stay out of the WorkOS feed.
    let feed = all_pages(&a, "/events?events=authentication.sso_succeeded").await?;
    ensure!(feed.iter().all(|e| e["event"] != "idp.login_succeeded"));
    let metrics = a.get("/metrics").send().await?.text().await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("idbridge_idp_logins_total{")
                && l.contains("result=\"succeeded\"")
                && l.contains("protocol=\"saml\"")),
        "metrics: {metrics}"
    );

    // The profile, through the WorkOS Node SDK against B.
    let expect = json!({
        "email": "alice@example.test",
        "firstName": "Alice",
        "lastName": "Archer",
        "idpId": uuid.to_lowercase(),
        "connectionId": conn_id,
        "organizationId": org_b,
        "groups": ["engineering", "admins"],
    });
    let mut env = b.peer_env();
    env.push(("IDBRIDGE_IDP_CODE".into(), code.clone()));
    env.push(("IDBRIDGE_IDP_EXPECT".into(), expect.to_string()));
    let report = run_node_test("idp_profile.test.mjs", env).await?;
    eprintln!(
        "node SDK: ran={} passed={} failed={}",
        report.ran(),
        report.passed,
        report.failed
    );
    if report.ran() {
        ensure!(
            report.passed >= 1 && report.failed == 0,
            "node SDK: {} passed, {} failed:\n{}",
            report.passed,
            report.failed,
            report.output
        );
    } else {
        // Without node: the same checks over plain HTTP.
        let r = b
            .post("/sso/token")
            .form(&[
                ("client_id", b.client_id()),
                ("client_secret", b.api_key()),
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
            ])
            .send()
            .await?;
        let token: Value = r.json().await?;
        let p = &token["profile"];
        ensure!(
            p["email"] == "alice@example.test" && p["idp_id"] == expect["idpId"],
            "{token}"
        );
    }
    Ok(())
}

/// The login page in headless Chromium (tests/js/idp_browser.test.mjs): a keyboard-only login
/// and a phone-sized one, each a full SP-initiated login from B ending on the app's redirect
/// URI with a code; then with "remember this browser" ticked, after which a second login of the
/// same browser ends on the app without the login page; screenshots are kept in
/// target/test-artifacts/.
#[tokio::test]
async fn the_login_page_in_chromium() -> anyhow::Result<()> {
    // The app: a loopback listener the browser test runs itself (Chromium refuses port 9 and
    // cannot intercept a redirect's target).
    let app_port = idbridge_tests::free_port()?;
    let app_callback = format!("http://127.0.0.1:{app_port}/callback");
    let w = world(Some(&app_callback)).await?;
    let authorize = |state: &str| {
        format!(
            "{}/sso/authorize?client_id={}&redirect_uri={app_callback}&response_type=code&connection={}&state={state}",
            w.b.url(),
            w.b.client_id(),
            w.conn_id
        )
    };
    let artifacts = idbridge_tests::repo_root()
        .join("target")
        .join("test-artifacts");
    // "Remember this browser" on: the third login ticks it, the fourth skips the password.
    let r =
        w.a.request(reqwest::Method::PATCH, "/admin/idp/settings")
            .json(&json!({"remember_browser_ttl_secs": 600}))
            .send()
            .await?;
    ensure!(r.status() == 200, "{}", r.text().await?);
    let mut env = w.b.peer_env();
    env.extend([
        (
            "IDBRIDGE_AUTHORIZE_URLS".to_owned(),
            json!([
                authorize("browser-1"),
                authorize("browser-2"),
                authorize("browser-3"),
                authorize("browser-4")
            ])
            .to_string(),
        ),
        ("IDBRIDGE_SSO_CALLBACK".to_owned(), app_callback.clone()),
        ("IDBRIDGE_APP_PORT".to_owned(), app_port.to_string()),
        ("IDBRIDGE_IDP_LOGIN".to_owned(), "alice".to_owned()),
        ("IDBRIDGE_IDP_PASSWORD".to_owned(), "alice-pw-1".to_owned()),
        (
            "IDBRIDGE_ARTIFACTS".to_owned(),
            artifacts.display().to_string(),
        ),
    ]);
    let report = run_node_test("idp_browser.test.mjs", env).await?;
    eprintln!("{}", report.output);
    if report.ran() && std::path::Path::new("/usr/bin/chromium").exists() {
        ensure!(
            report.passed >= 3 && report.failed == 0,
            "chromium: {} passed, {} failed:\n{}",
            report.passed,
            report.failed,
            report.output
        );
        ensure!(artifacts.join("idp-login-desktop.png").is_file());
        ensure!(artifacts.join("idp-remembered-second-login.png").is_file());
    }
    Ok(())
}

/// openid-client's login against A's OpenID Provider (crates/oidc/tests/peer/idp_login.mjs):
/// its JSON, or its error output.
async fn openid_client_login(cfg: &Value) -> anyhow::Result<Value> {
    use tokio::io::AsyncWriteExt;
    let peer = idbridge_tests::repo_root().join("crates/oidc/tests/peer");
    ensure!(
        peer.join("node_modules/openid-client/package.json")
            .exists(),
        "openid-client is not installed: run scripts/test-deps.d/oidc.sh"
    );
    let mut child = tokio::process::Command::new("node")
        .arg("idp_login.mjs")
        .current_dir(&peer)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(cfg.to_string().as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await??;
    ensure!(
        out.status.success(),
        "openid-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// From an authorization URL at A to the redirect back to the client: the login page (its
/// cookie and CSRF token), then the password. Returns the `Location` of the 303.
async fn oidc_login(
    a: &TestServer,
    authorize: &str,
    login: &str,
    pw: &str,
) -> anyhow::Result<String> {
    let r = log_in_through_page(a.url(), authorize, login, pw).await?;
    ensure!(
        r.status() == 303,
        "login at A: {}: {}",
        r.status(),
        r.text().await?
    );
    Ok(r.headers()["location"].to_str()?.to_owned())
}

/// idbridge A as an OpenID Provider: `openid-client` logs in through the directory-mode login
/// page and validates the ID token; then idbridge B, with a Generic OIDC connection to A's
/// issuer, completes a login whose profile arrives through the WorkOS Node SDK.
#[tokio::test]
async fn idbridge_is_the_oidc_provider_of_openid_client_and_another_idbridge() -> anyhow::Result<()>
{
    let w = world(None).await?;
    let (a, b, org_a) = (&w.a, &w.b, w.org_a.as_str());
    let dir_id = w.sp["auth_source"]["directory_id"]
        .as_str()
        .context("directory of the SP")?
        .to_owned();
    let issuer = format!("{}/idp/{org_a}/oidc", a.url());

    // Registration: unknown fields are named; the secret is shown once, never again.
    let rp_redirect = "http://127.0.0.1:9/rp/callback";
    let r = a
        .post("/admin/oidc_clients")
        .json(&json!({"organization_id": org_a, "redirect_uris": [rp_redirect], "directory_id": dir_id, "grant_types": ["implicit"]}))
        .send()
        .await?;
    let body = r.text().await?;
    ensure!(
        body.contains("grant_types"),
        "unknown field not named: {body}"
    );
    // Custom claims: a standard claim's name or an unknown user field is a 422 naming it.
    let r = a
        .post("/admin/oidc_clients")
        .json(&json!({"organization_id": org_a, "redirect_uris": [rp_redirect], "directory_id": dir_id,
            "custom_claims": {"sub": "username", "x": "password"}}))
        .send()
        .await?;
    ensure!(r.status() == 422);
    let body = r.text().await?;
    ensure!(
        body.contains("custom_claims.sub") && body.contains("custom_claims.x"),
        "{body}"
    );
    let r = a
        .post("/admin/oidc_clients")
        .json(&json!({"organization_id": org_a, "name": "openid-client", "redirect_uris": [rp_redirect], "directory_id": dir_id,
            "custom_claims": {"uid": "username", "cn": "raw_attributes.cn"}}))
        .send()
        .await?;
    ensure!(r.status() == 201, "{}", r.text().await?);
    let rp: Value = r.json().await?;
    let secret = rp["client_secret"]
        .as_str()
        .context("secret shown once")?
        .to_owned();
    let rp_id = rp["client_id"].as_str().unwrap().to_owned();
    ensure!(rp["provider"]["issuer"] == issuer.as_str(), "{rp}");
    let again = a
        .get(&format!("/admin/oidc_clients/{rp_id}"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        !again.contains(&secret) && !again.contains("secret_sealed"),
        "{again}"
    );
    let listed = a.get("/admin/oidc_clients").send().await?.text().await?;
    ensure!(
        listed.contains(&rp_id) && !listed.contains(&secret),
        "{listed}"
    );

    // openid-client: discovery, PKCE, nonce, state, the login page, the code, the ID token
    // (signature, iss, aud, nonce, at_hash), userinfo; the replayed code is refused.
    for method in ["client_secret_basic", "client_secret_post"] {
        let out = openid_client_login(&json!({
            "issuer": issuer, "clientId": rp_id, "clientSecret": secret, "authMethod": method,
            "redirectUri": rp_redirect, "scope": "openid email profile groups",
            "login": "alice", "password": "alice-pw-1",
        }))
        .await?;
        let c = &out["claims"];
        ensure!(
            c["iss"] == issuer.as_str() && c["aud"] == rp_id.as_str(),
            "{out}"
        );
        ensure!(
            c["sub"] == w.uuid.to_lowercase().as_str() || c["sub"] == w.uuid.as_str(),
            "{out}"
        );
        ensure!(c["email"] == "alice@example.test", "{out}");
        ensure!(
            c["given_name"] == "Alice" && c["family_name"] == "Archer",
            "{out}"
        );
        let mut groups: Vec<String> = serde_json::from_value(c["groups"].clone())?;
        groups.sort();
        ensure!(groups == ["admins", "engineering"], "{out}");
        // The configured custom claims, in the ID token openid-client validated and in userinfo.
        ensure!(c["uid"] == "alice" && c["cn"] == "Alice Archer", "{out}");
        ensure!(out["userinfo"]["uid"] == "alice", "{out}");
        ensure!(out["userinfo"]["email"] == "alice@example.test", "{out}");
        ensure!(out["replay"] == "invalid_grant", "code replay: {out}");
    }

    // B: a Generic OIDC connection to A's issuer, with a client registered at A for B's
    // callback.
    let r = a
        .post("/admin/oidc_clients")
        .json(&json!({"organization_id": org_a, "name": "App at B", "redirect_uris": [format!("{}/sso/oidc/callback", b.url())], "directory_id": dir_id}))
        .send()
        .await?;
    ensure!(r.status() == 201, "{}", r.text().await?);
    let at_a: Value = r.json().await?;
    let r = b
        .post("/connections")
        .json(&json!({"organization_id": w.org_b, "connection_type": "GenericOIDC", "name": "idbridge A (OIDC)",
            "oidc_options": {"discovery_endpoint": format!("{issuer}/.well-known/openid-configuration"),
            "client_id": at_a["client_id"], "client_secret": at_a["client_secret"]}}))
        .send()
        .await?;
    let status = r.status();
    let conn: Value = r.json().await?;
    ensure!(status == 201, "OIDC connection at B: {conn}");
    let conn_id = conn["id"].as_str().unwrap().to_owned();
    let http = browser();
    let r = http
        .get(format!(
            "{}/sso/authorize?client_id={}&redirect_uri={CALLBACK}&response_type=code&connection={conn_id}&state=st-oidc",
            b.url(),
            b.client_id()
        ))
        .send()
        .await?;
    ensure!(r.status() == 302, "authorize at B: {}", r.status());
    let sp_cookie = cookie(&r, "idbridge_sso_").context("B's login cookie")?;
    let to_a = r.headers()["location"].to_str()?.to_owned();
    ensure!(to_a.starts_with(&format!("{issuer}/authorize?")), "{to_a}");
    let back_to_b = oidc_login(a, &to_a, "alice", "alice-pw-1").await?;
    ensure!(
        back_to_b.starts_with(&format!("{}/sso/oidc/callback?", b.url())),
        "{back_to_b}"
    );
    let r = http
        .get(&back_to_b)
        .header("cookie", &sp_cookie)
        .send()
        .await?;
    ensure!(r.status() == 302, "B's callback: {}", r.status());
    let back = url::Url::parse(r.headers()["location"].to_str()?)?;
    let q: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    ensure!(!q.contains_key("error"), "B refused A's tokens: {back}");
    ensure!(
        q.get("state").map(String::as_str) == Some("st-oidc"),
        "{back}"
    );
    let code = q.get("code").context("code")?.clone();

    // A's events carry the protocol.
    let evs = events(a, "idp.login_succeeded").await?;
    ensure!(
        evs.iter().any(|e| e["data"]["protocol"] == "oidc" && e["data"]["client_id"] == at_a["client_id"]),
        "{evs:?}"
    );

    let expect = json!({
        "email": "alice@example.test",
        "firstName": "Alice",
        "lastName": "Archer",
        "idpId": w.uuid.to_lowercase(),
        "connectionId": conn_id,
        "organizationId": w.org_b,
        "groups": ["engineering", "admins"],
    });
    let mut env = b.peer_env();
    env.push(("IDBRIDGE_IDP_CODE".into(), code));
    env.push(("IDBRIDGE_IDP_EXPECT".into(), expect.to_string()));
    let report = run_node_test("idp_profile.test.mjs", env).await?;
    ensure!(
        report.ran() && report.passed >= 1 && report.failed == 0,
        "node SDK: {} passed, {} failed:\n{}",
        report.passed,
        report.failed,
        report.output
    );

    // Issue 19: the Python SDK creates an OIDC connection with `attribute_maps`; its custom
    // attributes come back in the profile.
    let mut env = b.peer_env();
    env.extend([
        ("IDBRIDGE_SSO_CALLBACK".to_owned(), CALLBACK.to_owned()),
        ("IDBRIDGE_ORG_ID".to_owned(), w.org_b.clone()),
        ("IDBRIDGE_OP_ISSUER".to_owned(), issuer.clone()),
        (
            "IDBRIDGE_OP_CLIENT_ID".to_owned(),
            at_a["client_id"].as_str().unwrap().to_owned(),
        ),
        (
            "IDBRIDGE_OP_CLIENT_SECRET".to_owned(),
            at_a["client_secret"].as_str().unwrap().to_owned(),
        ),
        ("IDBRIDGE_OP_LOGIN".to_owned(), "alice".to_owned()),
        ("IDBRIDGE_OP_PASSWORD".to_owned(), "alice-pw-1".to_owned()),
    ]);
    let report = run_python_test("test_idp_oidc_attribute_maps.py", env).await?;
    ensure!(
        report.ran() && report.passed == 1 && report.failed == 0,
        "python SDK: {} passed, {} failed:\n{}",
        report.passed,
        report.failed,
        report.output
    );
    Ok(())
}

/// What A's login page handed the browser after the right password: the auto-submitting form.
struct Answer {
    acs: String,
    saml_response: String,
    relay_state: Option<String>,
}

/// A browser arriving at A's SSO endpoint with an SP's AuthnRequest (`to_idp`), logging in with
/// `login`/`password`; returns the signed answer A posts to the SP's registered ACS.
async fn log_in_at_a(
    a: &TestServer,
    org: &str,
    to_idp: &str,
    login: &str,
    password: &str,
) -> anyhow::Result<Answer> {
    let r = browser().get(to_idp).send().await?;
    let status = r.status();
    let idp_cookie = cookie(&r, "idbridge_idp_");
    let page = r.text().await?;
    ensure!(status == 200, "A's SSO endpoint: {status}: {page}");
    let s = LoginStart {
        sp_cookie: String::new(),
        idp_cookie: idp_cookie.context("A's login cookie")?,
        page,
    };
    let (status, body) = submit(a, org, &s, login, password, true).await?;
    ensure!(status == 200, "login at A: {status}: {body}");
    Ok(Answer {
        acs: form_action(&body).context("form action")?,
        saml_response: input(&body, "SAMLResponse").context("SAMLResponse")?,
        relay_state: input(&body, "RelayState"),
    })
}

/// The Response with one byte of its signed content changed: the first character of the
/// NameID, or, in an encrypted assertion, a character in the middle of the encrypted data.
fn tamper(saml_response: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut xml = b64.decode(saml_response)?;
    let text = String::from_utf8(xml.clone())?;
    let at = match text.rfind("CipherValue>") {
        // The last CipherValue is the assertion's data (the first is the wrapped key).
        Some(close) if text.contains("EncryptedAssertion") => {
            let end = text[..close].rfind("</").context("closing tag")?;
            let start = text[..end].rfind('>').context("cipher text")? + 1;
            start + (end - start) / 2
        }
        _ => {
            let open = text
                .match_indices("NameID")
                .map(|(i, _)| i)
                .find(|&i| matches!(text.as_bytes().get(i + 6), Some(b' ' | b'>')))
                .context("no NameID in the Response")?;
            open + text[open..].find('>').context("NameID tag")? + 1
        }
    };
    // Another letter in the same place (still valid text, and still base64 in cipher text).
    xml[at] = if xml[at] == b'A' { b'B' } else { b'A' };
    Ok(b64.encode(xml))
}

/// A peer script speaking one JSON object per line on stdin/stdout.
struct LinePeer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl LinePeer {
    fn spawn(mut cmd: tokio::process::Command) -> anyhow::Result<LinePeer> {
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        use tokio::io::AsyncBufReadExt as _;
        Ok(LinePeer {
            child,
            stdin,
            stdout: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    async fn call(&mut self, msg: Value) -> anyhow::Result<Value> {
        use tokio::io::AsyncWriteExt as _;
        self.stdin.write_all(format!("{msg}\n").as_bytes()).await?;
        let line =
            tokio::time::timeout(std::time::Duration::from_secs(60), self.stdout.next_line())
                .await
                .context("the peer did not answer within 60 s")??
                .context("the peer ended without an answer")?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("{line:?}"))?;
        ensure!(v.get("error").is_none(), "peer: {}", v["error"]);
        Ok(v)
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        drop(self.stdin);
        let status =
            tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait()).await??;
        ensure!(status.success(), "the peer exited with {status}");
        Ok(())
    }
}

/// One login through Polis's OAuth flow up to A's answer: Polis's authorize (a signed
/// AuthnRequest on HTTP-Redirect to A's SSO URL), then A's login page.
async fn polis_login(
    polis: &mut LinePeer,
    a: &TestServer,
    org_a: &str,
    state: &str,
) -> anyhow::Result<Answer> {
    let start = polis.call(json!({ "authorize": state })).await?;
    let to_idp = start["redirect_url"].as_str().context("redirect_url")?;
    ensure!(
        to_idp.starts_with(&format!("{}/idp/{org_a}/saml/sso?", a.url())),
        "{to_idp}"
    );
    log_in_at_a(a, org_a, to_idp, "alice", "alice-pw-1").await
}

fn samlify_modules() -> std::path::PathBuf {
    let peers = std::env::var("IDBRIDGE_PEERS_DIR")
        .unwrap_or_else(|_| "/var/cache/idbridge-peers".to_owned());
    std::path::PathBuf::from(peers).join("samlify/node_modules")
}

/// samlify as an SP (crates/saml/tests/peers/samlify_sp.js): JSON in, JSON out; `Err` with its
/// stderr when it refuses.
async fn samlify_sp(cfg: &Value) -> anyhow::Result<Result<Value, String>> {
    use tokio::io::AsyncWriteExt as _;
    ensure!(
        samlify_modules().join("samlify/package.json").exists(),
        "samlify is not installed: run scripts/test-deps.sh (test-deps.d/saml.sh)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(idbridge_tests::repo_root().join("crates/saml/tests/peers/samlify_sp.js"))
        .env("NODE_PATH", samlify_modules())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(cfg.to_string().as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await??;
    if !out.status.success() {
        return Ok(Err(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(Ok(serde_json::from_slice(&out.stdout)?))
}

/// Independent service providers of the RUNNING IdP (directory mode against slapd):
/// - the official **WorkOS Python SDK**'s `get_profile_and_token` at B (the second idbridge);
/// - **Ory Polis** (a SAML connection from A's IdP metadata; its OAuth flow: authorize → A's
///   login page → Polis's ACS → code → token → userInfo);
/// - **samlify** as SP, with a signed assertion and with a signed Response around an assertion
///   encrypted to samlify's key.
///
/// Each SP refuses the same answer with one byte of the signed NameID (or of the encrypted
/// assertion) flipped: they really verify.
#[tokio::test]
async fn independent_service_providers_accept_the_running_idp() -> anyhow::Result<()> {
    let w = world(None).await?;
    let (a, b, org_a) = (&w.a, &w.b, w.org_a.as_str());
    let dir_id = w.sp["auth_source"]["directory_id"]
        .as_str()
        .context("directory of the SP")?
        .to_owned();
    let uuid = w.uuid.to_lowercase();
    let idp_metadata = a
        .get(&format!("/idp/{org_a}/saml/metadata"))
        .send()
        .await?
        .text()
        .await?;

    // 1. The Python SDK at B, after a login through A.
    let s = start_login(b, &w.conn_id).await?;
    let (status, body) = submit(a, org_a, &s, "alice", "alice-pw-1", true).await?;
    ensure!(status == 200, "{status}: {body}");
    let r = browser()
        .post(form_action(&body).context("form action")?)
        .header("cookie", &s.sp_cookie)
        .form(&[
            (
                "SAMLResponse",
                input(&body, "SAMLResponse").context("SAMLResponse")?,
            ),
            (
                "RelayState",
                input(&body, "RelayState").context("RelayState")?,
            ),
        ])
        .send()
        .await?;
    ensure!(r.status() == 302, "ACS at B: {}", r.status());
    let back = url::Url::parse(r.headers()["location"].to_str()?)?;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .with_context(|| format!("no code: {back}"))?;
    let expect = json!({
        "email": "alice@example.test", "firstName": "Alice", "lastName": "Archer",
        "idpId": uuid, "connectionId": w.conn_id, "organizationId": w.org_b,
        "groups": ["engineering", "admins"],
    });
    let mut env = b.peer_env();
    env.push(("IDBRIDGE_IDP_CODE".into(), code));
    env.push(("IDBRIDGE_IDP_EXPECT".into(), expect.to_string()));
    let report = run_python_test("test_idp_profile.py", env).await?;
    ensure!(
        report.ran() && report.passed == 1 && report.failed == 0,
        "python SDK: {} passed, {} failed:\n{}",
        report.passed,
        report.failed,
        report.output
    );

    // 2. Ory Polis.
    let polis_dir = idbridge_tests::repo_root().join("crates/saml/benches/polis");
    ensure!(
        polis_dir
            .join("node_modules/@boxyhq/saml-jackson/package.json")
            .exists(),
        "Ory Polis is not installed: run scripts/test-deps.sh (test-deps.d/polis.sh)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(idbridge_tests::repo_root().join("tests/js/idp_polis_sp.mjs"))
        .env("POLIS_DIR", &polis_dir)
        .env("DO_NOT_TRACK", "1")
        .env("BOXYHQ_NO_ANALYTICS", "1");
    let mut polis = LinePeer::spawn(cmd)?;
    let sp_metadata = polis.call(json!({ "idpMetadata": idp_metadata })).await?["spMetadata"]
        .as_str()
        .context("Polis's SP metadata")?
        .to_owned();
    let r = a
        .post("/admin/service_providers")
        .json(&json!({"organization_id": org_a, "metadata_xml": sp_metadata, "directory_id": dir_id, "name": "Ory Polis",
            // Polis signs its AuthnRequests (its metadata does not say so): A verifies them.
            "require_signed_requests": true}))
        .send()
        .await?;
    let status = r.status();
    let polis_sp: Value = r.json().await?;
    ensure!(status == 201, "Polis at A: {polis_sp}");
    ensure!(polis_sp["require_signed_requests"] == true, "{polis_sp}");
    let tampered_login = polis_login(&mut polis, a, org_a, "polis-tampered").await?;
    let genuine = polis_login(&mut polis, a, org_a, "polis-1").await?;
    ensure!(
        genuine.acs == "https://polis.test/api/oauth/saml",
        "{}",
        genuine.acs
    );
    let refused = polis
        .call(json!({"state": "polis-tampered", "acs": {
            "SAMLResponse": tamper(&tampered_login.saml_response)?,
            "RelayState": tampered_login.relay_state}}))
        .await?;
    ensure!(
        refused.get("refused").is_some(),
        "Polis took a tampered NameID: {refused}"
    );
    let got = polis
        .call(json!({"state": "polis-1", "acs": {
            "SAMLResponse": genuine.saml_response, "RelayState": genuine.relay_state}}))
        .await?;
    let profile = got
        .get("profile")
        .with_context(|| format!("Polis refused: {got}"))?;
    eprintln!("Polis profile: {profile}");
    ensure!(profile["email"] == "alice@example.test", "{profile}");
    ensure!(
        profile["firstName"] == "Alice" && profile["lastName"] == "Archer",
        "{profile}"
    );
    ensure!(
        profile["raw"]["id"].as_str().map(str::to_lowercase) == Some(uuid.clone()),
        "{profile}"
    );
    let mut groups: Vec<String> = serde_json::from_value(profile["raw"]["groups"].clone())?;
    groups.sort();
    ensure!(groups == ["admins", "engineering"], "{profile}");
    polis.finish().await?;

    // 3. samlify as SP: a signed assertion, then a signed Response with an encrypted assertion.
    let (enc_key, enc_cert) = idbridge_tests::throwaway_key_pair("samlify-sp-encryption")?;
    for encrypted in [false, true] {
        let entity = format!("https://samlify-sp.example.test/{encrypted}");
        let acs = format!("https://samlify-sp.example.test/{encrypted}/acs");
        let cfg = |command: &str| {
            json!({"command": command, "idpMetadata": idp_metadata, "sp": entity, "acs": acs,
                "encrypted": encrypted, "wantMessageSigned": encrypted,
                "spEncKey": enc_key, "spEncCert": enc_cert, "binding": "redirect"})
        };
        let md = samlify_sp(&cfg("metadata"))
            .await?
            .map_err(anyhow::Error::msg)?;
        // Custom attributes: a standard name, an unknown user field or a non-string source is
        // a 422 naming it.
        for (bad, field) in [
            (json!({"email": "username"}), "custom_attributes.email"),
            (json!({"secret": "password"}), "custom_attributes.secret"),
            (json!({"n": 1}), "custom_attributes.n"),
        ] {
            let r = a
                .post("/admin/service_providers")
                .json(
                    &json!({"organization_id": org_a, "metadata_xml": md["metadata"],
                    "directory_id": dir_id, "custom_attributes": bad}),
                )
                .send()
                .await?;
            ensure!(r.status() == 422, "bad custom attributes accepted: {bad}");
            let refusal = r.text().await?;
            ensure!(refusal.contains(field), "{field} not named: {refusal}");
        }
        let r = a
            .post("/admin/service_providers")
            .json(&json!({"organization_id": org_a, "metadata_xml": md["metadata"], "directory_id": dir_id,
                "name": format!("samlify {encrypted}"), "encrypt_assertions": encrypted, "sign_response": encrypted,
                "custom_attributes": {"uid": "username", "commonName": "raw_attributes.cn", "title": "job_title"}}))
            .send()
            .await?;
        let status = r.status();
        let sp: Value = r.json().await?;
        ensure!(status == 201, "samlify at A: {sp}");
        let mut answers = Vec::new();
        for _ in 0..2 {
            let req = samlify_sp(&cfg("request"))
                .await?
                .map_err(anyhow::Error::msg)?;
            let to_idp = req["context"].as_str().context("samlify request URL")?;
            let answer = log_in_at_a(a, org_a, to_idp, "alice", "alice-pw-1").await?;
            ensure!(answer.acs == acs, "posted to {}", answer.acs);
            answers.push((req["id"].clone(), answer));
        }
        let parse = |saml_response: &str| {
            let mut c = cfg("parse");
            c["samlResponse"] = json!(saml_response);
            c
        };
        let (_, first) = &answers[0];
        let tampered = tamper(&first.saml_response)?;
        ensure!(tampered != first.saml_response);
        let refusal = samlify_sp(&parse(&tampered)).await?;
        ensure!(
            refusal.is_err(),
            "samlify (encrypted: {encrypted}) took a tampered answer: {refusal:?}"
        );
        let (req_id, second) = &answers[1];
        let extract = samlify_sp(&parse(&second.saml_response))
            .await?
            .map_err(|e| anyhow::anyhow!("samlify (encrypted: {encrypted}) refused: {e}"))?;
        ensure!(extract["response"]["inResponseTo"] == *req_id, "{extract}");
        ensure!(extract["audience"] == entity.as_str(), "{extract}");
        let at = &extract["attributes"];
        ensure!(at["email"] == "alice@example.test", "{extract}");
        ensure!(
            at["firstName"] == "Alice" && at["lastName"] == "Archer",
            "{extract}"
        );
        ensure!(
            at["id"].as_str().map(str::to_lowercase) == Some(uuid.clone()),
            "{extract}"
        );
        let mut groups: Vec<String> = serde_json::from_value(at["groups"].clone())?;
        groups.sort();
        ensure!(groups == ["admins", "engineering"], "{extract}");
        // The custom attributes, read by samlify; alice has no job title: left out.
        ensure!(at["uid"] == "alice", "{extract}");
        ensure!(at["commonName"] == "Alice Archer", "{extract}");
        ensure!(at.get("title").is_none(), "{extract}");
        if encrypted {
            use base64::Engine as _;
            let xml = base64::engine::general_purpose::STANDARD.decode(&second.saml_response)?;
            let xml = String::from_utf8(xml)?;
            ensure!(
                xml.contains("EncryptedAssertion") && !xml.contains("alice@example.test"),
                "not encrypted: {xml}"
            );
        }
    }
    Ok(())
}
