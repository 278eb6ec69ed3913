//! The operator console and the Admin Portal driven in-process through the whole router:
//! sessions, cookie flags, CSRF on every form, the CSP on every page, sign-in limits, no
//! secret rendered, and the portal link's single use, expiry and organization scope; and
//! `POST /portal/generate_link`'s WorkOS answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_console::{operators, portal, web};
use idbridge_saml::testkit::keys::{IdpSigningKey, RsaBits};
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Resp {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// `name=value` of the Set-Cookie for `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_string())
    }

    /// The value of the first hidden `csrf` field of the page.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.text));
        let rest = &self.text[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

struct Env {
    app: Router,
    store: Arc<dyn Store>,
    key: String,
}

impl Env {
    fn new() -> Env {
        Env::with_url("http://127.0.0.1:8080")
    }

    fn with_url(public_url: &str) -> Env {
        Env::build(public_url, |_| {})
    }

    /// An environment whose state `prepare` sees before the router is built (LDAP runners).
    fn build(public_url: &str, prepare: impl FnOnce(&AppState)) -> Env {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
        let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
        operators::add(store.as_ref(), USER, PASSWORD).unwrap();
        let config = ApiConfig {
            public_url: public_url.into(),
            ..ApiConfig::default()
        };
        let state = AppState::new(store.clone(), config).with_sso(
            idbridge_sso::SsoConfig::default(),
            Some(idbridge_sso::SecretBox::generate().unwrap()),
        );
        prepare(&state);
        let app = router(state);
        Env {
            app,
            store,
            key: boot.api_key,
        }
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn api(&self, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Signs in; returns the session cookie (`name=value`) and the session's CSRF token.
    async fn sign_in(&self) -> (String, String) {
        let r = self.try_sign_in(USER, PASSWORD).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
        let cookie = r.cookie("idbridge_console").expect("session cookie");
        let page = self
            .send("GET", "/console/organizations", Some(&cookie), None)
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        (cookie, page.csrf())
    }

    async fn try_sign_in(&self, user: &str, password: &str) -> Resp {
        let form = self.send("GET", "/console/login", None, None).await;
        assert_eq!(form.status, StatusCode::OK);
        let login_cookie = form.cookie("idbridge_console_login").expect("login cookie");
        let body = serde_urlencoded::to_string([
            ("csrf", form.csrf().as_str()),
            ("username", user),
            ("password", password),
        ])
        .unwrap();
        self.send("POST", "/console/login", Some(&login_cookie), Some(&body))
            .await
    }

    async fn org(&self, name: &str) -> String {
        let (s, v) = self
            .api("POST", "/organizations", json!({"name": name}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    fn count(&self, table: &str) -> usize {
        self.store.scan(table, "", None, usize::MAX).unwrap().len()
    }
}

fn metadata_xml() -> String {
    let key = IdpSigningKey::generate("idp.example", RsaBits::Rsa2048, 365).unwrap();
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"https://idp.example/metadata\"><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://idp.example/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>",
        key.cert_der_b64()
    )
}

fn assert_page_headers(r: &Resp, what: &str) {
    assert_eq!(
        r.headers
            .get(header::CONTENT_SECURITY_POLICY)
            .map(|v| v.to_str().unwrap()),
        Some(web::CSP),
        "CSP of {what}"
    );
    assert!(web::CSP.contains("default-src 'none'") && web::CSP.contains("frame-ancestors 'none'"));
    assert_eq!(
        r.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff",
        "{what}"
    );
    assert_eq!(
        r.headers.get(header::REFERRER_POLICY).unwrap(),
        "no-referrer",
        "{what}"
    );
    assert_eq!(
        r.headers.get(header::X_FRAME_OPTIONS).unwrap(),
        "DENY",
        "{what}"
    );
    // No inline script or style anywhere: the CSP would block them.
    assert!(!r.text.contains("<script"), "{what} has a script");
    assert!(!r.text.contains("style=\""), "{what} has an inline style");
}

/// Every operator page, for the given organization, connection and directory.
fn operator_pages(org: &str, conn: &str) -> Vec<String> {
    vec![
        "/console".into(),
        "/console/organizations".into(),
        "/console/organizations?search=acme".into(),
        format!("/console/organizations/{org}"),
        format!("/console/connections/{conn}"),
        "/console/directories".into(),
        "/console/events".into(),
        "/console/health".into(),
    ]
}

async fn create_connection(env: &Env, cookie: &str, csrf: &str, org: &str) -> String {
    let body = serde_urlencoded::to_string([
        ("csrf", csrf),
        ("connection_type", "GenericSAML"),
        ("name", "Acme SAML"),
        ("idp_metadata_xml", metadata_xml().as_str()),
    ])
    .unwrap();
    let r = env
        .send(
            "POST",
            &format!("/console/organizations/{org}/connections"),
            Some(cookie),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    r.location().rsplit('/').next().unwrap().to_string()
}

#[tokio::test]
async fn pages_need_a_session_and_carry_the_csp() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let (cookie, csrf) = env.sign_in().await;
    let conn = create_connection(&env, &cookie, &csrf, &org).await;
    for path in operator_pages(&org, &conn) {
        for bad in [
            None,
            Some("idbridge_console=forged"),
            Some("idbridge_portal=x"),
        ] {
            let r = env.send("GET", &path, bad, None).await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{path} without a session");
            assert_eq!(r.location(), "/console/login", "{path}");
            assert_page_headers(&r, &path);
        }
        let r = env.send("GET", &path, Some(&cookie), None).await;
        let expect = if path == "/console" {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status, expect, "{path}: {}", r.text);
        assert_page_headers(&r, &path);
        assert_eq!(
            r.headers.get(header::CACHE_CONTROL).unwrap(),
            "no-store",
            "{path}"
        );
    }
    let login = env.send("GET", "/console/login", None, None).await;
    assert_page_headers(&login, "login");
    let css = env
        .send("GET", "/console/static/console.css", None, None)
        .await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css
        .headers
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[tokio::test]
async fn session_cookie_flags_follow_public_url() {
    let env = Env::new();
    let r = env.try_sign_in(USER, PASSWORD).await;
    let set = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("idbridge_console="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain-http console must not set Secure: {set}"
    );
    assert_eq!(r.location(), "/console/organizations");

    // Behind a reverse proxy on https with a path prefix.
    let env = Env::with_url("https://sso.example.com/idbridge");
    let form = env.send("GET", "/console/login", None, None).await;
    assert!(
        form.text.contains("action=\"/idbridge/console/login\""),
        "{}",
        form.text
    );
    assert!(form
        .text
        .contains("href=\"/idbridge/console/static/console.css\""));
    let r = env.try_sign_in(USER, PASSWORD).await;
    let set = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("idbridge_console="))
        .unwrap();
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/idbridge/console",
        "Secure",
    ] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert_eq!(r.location(), "/idbridge/console/organizations");
    let login_cookie = form
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("idbridge_console_login="))
        .unwrap();
    assert!(
        login_cookie.contains("Secure") && login_cookie.contains("HttpOnly"),
        "{login_cookie}"
    );
}

#[tokio::test]
async fn every_form_refuses_a_missing_or_wrong_csrf_token() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let (cookie, csrf) = env.sign_in().await;
    let xml = metadata_xml();
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/console/organizations".into(), vec![("name", "Evil Corp")]),
        (
            format!("/console/organizations/{org}/domains"),
            vec![("domain", "evil.example")],
        ),
        (
            format!("/console/organizations/{org}/connections"),
            vec![
                ("connection_type", "GenericSAML"),
                ("idp_metadata_xml", xml.as_str()),
            ],
        ),
        ("/console/logout".into(), vec![]),
    ];
    let events_before = env.store.last_event_seq().unwrap();
    for (path, fields) in &forms {
        for token in [None, Some("wrong"), Some("")] {
            let mut body = fields.clone();
            if let Some(t) = token {
                body.push(("csrf", t));
            }
            let body = serde_urlencoded::to_string(&body).unwrap();
            let r = env.send("POST", path, Some(&cookie), Some(&body)).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{path} with csrf {token:?}: {}",
                r.text
            );
            assert_page_headers(&r, path);
        }
    }
    // Nothing changed, and the session still works.
    assert_eq!(env.store.last_event_seq().unwrap(), events_before);
    assert_eq!(env.count("organizations"), 1);
    let r = env
        .send("GET", "/console/organizations", Some(&cookie), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Another session's token is wrong too.
    let (_, other_csrf) = env.sign_in().await;
    assert_ne!(other_csrf, csrf);
    let body = serde_urlencoded::to_string([("csrf", other_csrf.as_str()), ("name", "X")]).unwrap();
    let r = env
        .send("POST", "/console/organizations", Some(&cookie), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The right token works for each form.
    let body = serde_urlencoded::to_string([
        ("csrf", csrf.as_str()),
        ("name", "Globex"),
        ("domains", "globex.example"),
    ])
    .unwrap();
    let r = env
        .send("POST", "/console/organizations", Some(&cookie), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let created = env.send("GET", r.location(), Some(&cookie), None).await;
    assert!(
        created.text.contains("Globex") && created.text.contains("globex.example"),
        "{}",
        created.text
    );
    let body =
        serde_urlencoded::to_string([("csrf", csrf.as_str()), ("domain", "acme.example")]).unwrap();
    let r = env
        .send(
            "POST",
            &format!("/console/organizations/{org}/domains"),
            Some(&cookie),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let conn = create_connection(&env, &cookie, &csrf, &org).await;
    let detail = env
        .send(
            "GET",
            &format!("/console/connections/{conn}"),
            Some(&cookie),
            None,
        )
        .await;
    assert!(
        detail.text.contains(&format!("/sso/saml/metadata/{conn}")),
        "{}",
        detail.text
    );
    // An unknown form field is refused (422) and changes nothing.
    let body = serde_urlencoded::to_string([
        ("csrf", csrf.as_str()),
        ("name", "Initech"),
        ("organization_id", org.as_str()),
    ])
    .unwrap();
    let r = env
        .send("POST", "/console/organizations", Some(&cookie), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(env.count("organizations"), 2);
    // The sign-in form: without its cookie, or with another token, refused.
    let form = env.send("GET", "/console/login", None, None).await;
    let body = serde_urlencoded::to_string([
        ("csrf", form.csrf().as_str()),
        ("username", USER),
        ("password", PASSWORD),
    ])
    .unwrap();
    let r = env.send("POST", "/console/login", None, Some(&body)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "login without its cookie");
    let r = env
        .send(
            "POST",
            "/console/login",
            Some("idbridge_console_login=other"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "login with another token");
    assert!(r.cookie("idbridge_console").is_none());
}

#[tokio::test]
async fn logout_ends_the_session() {
    let env = Env::new();
    let (cookie, csrf) = env.sign_in().await;
    let body = serde_urlencoded::to_string([("csrf", csrf.as_str())]).unwrap();
    let r = env
        .send("POST", "/console/logout", Some(&cookie), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/console/login");
    assert!(r
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("idbridge_console=;") && c.contains("Max-Age=0")));
    let r = env
        .send("GET", "/console/organizations", Some(&cookie), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "the old cookie must not work after logout"
    );
}

#[tokio::test]
async fn removed_operators_lose_their_sessions() {
    let env = Env::new();
    let (cookie, _) = env.sign_in().await;
    operators::remove(env.store.as_ref(), USER).unwrap();
    let r = env
        .send("GET", "/console/organizations", Some(&cookie), None)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn wrong_passwords_are_limited_per_account() {
    let env = Env::new();
    let r = env.try_sign_in("nobody", PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "unknown account");
    assert!(r.text.contains("Wrong username or password."));
    for i in 0..5 {
        let r = env.try_sign_in(USER, "not the password").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(r.cookie("idbridge_console").is_none());
    }
    // Now even the right password is refused, with a message that says what to do.
    let r = env.try_sign_in(USER, PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert!(r.text.contains("Too many failed sign-ins"), "{}", r.text);
    assert!(r.cookie("idbridge_console").is_none());
    // Another account is not locked by it.
    operators::add(env.store.as_ref(), "bob", PASSWORD).unwrap();
    let r = env.try_sign_in("bob", PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn no_secret_is_rendered() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let (cookie, csrf) = env.sign_in().await;
    let conn = create_connection(&env, &cookie, &csrf, &org).await;
    let record: Value =
        serde_json::from_slice(&env.store.get(operators::OPERATORS, USER).unwrap().unwrap())
            .unwrap();
    let hash = record["password_hash"].as_str().unwrap().to_string();
    for path in operator_pages(&org, &conn) {
        let r = env.send("GET", &path, Some(&cookie), None).await;
        for secret in [
            hash.as_str(),
            "$argon2",
            PASSWORD,
            env.key.as_str(),
            "PRIVATE KEY",
            "client_secret",
        ] {
            assert!(!r.text.contains(secret), "{path} shows {secret:?}");
        }
    }
}

async fn generate(env: &Env, org: &str, intent: &str) -> String {
    let (s, v) = env
        .api(
            "POST",
            "/portal/generate_link",
            json!({"organization": org, "intent": intent, "return_url": "https://app.example/back", "success_url": "https://app.example/done"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v.as_object().unwrap().len(), 1, "only {{link}}: {v}");
    let link = v["link"].as_str().unwrap();
    assert!(
        link.starts_with("http://127.0.0.1:8080/portal/launch?token="),
        "{link}"
    );
    link.trim_start_matches("http://127.0.0.1:8080").to_string()
}

#[tokio::test]
async fn generate_link_answers_like_workos() {
    let env = Env::new();
    let org = env.org("Acme").await;
    for intent in ["sso", "dsync", "domain_verification", "certificate_renewal"] {
        generate(&env, &org, intent).await;
    }
    // No intent: SSO setup.
    let (s, v) = env
        .api(
            "POST",
            "/portal/generate_link",
            json!({"organization": org}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Unknown organization: WorkOS's not-found message.
    let (s, v) = env
        .api(
            "POST",
            "/portal/generate_link",
            json!({"organization": "org_01EHQMYV6MBK39QC5PZXHY59C3", "intent": "sso"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Organization not found: 'org_01EHQMYV6MBK39QC5PZXHY59C3'"),
        "{v}"
    );
    // Unknown intent, unknown field, missing organization, bad URL: 422 naming each.
    let (s, v) = env
        .api(
            "POST",
            "/portal/generate_link",
            json!({"organization": org, "intent": "audit_logs", "colour": "blue", "success_url": "javascript:alert(1)"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let fields: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["intent", "colour", "success_url"] {
        assert!(fields.contains(&f), "{f} not named: {v}");
    }
    let (s, v) = env
        .api("POST", "/portal/generate_link", json!({"intent": "sso"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Without an API key.
    let req = Request::builder()
        .method("POST")
        .uri("/portal/generate_link")
        .header("content-type", "application/json")
        .body(Body::from(json!({"organization": org}).to_string()))
        .unwrap();
    assert_eq!(
        env.app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_portal_link_works_once_and_expires() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let link = generate(&env, &org, "sso").await;
    let r = env.send("GET", &link, None, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(r.location(), "/portal");
    let set = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("idbridge_portal="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/portal"] {
        assert!(set.contains(flag), "{flag}: {set}");
    }
    let cookie = r.cookie("idbridge_portal").unwrap();
    let home = env.send("GET", "/portal", Some(&cookie), None).await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.text);
    assert!(home.text.contains("Acme"));
    assert!(
        home.text.contains("https://app.example/done"),
        "finish link"
    );
    assert_page_headers(&home, "portal home");
    // Second use: refused.
    let again = env.send("GET", &link, None, None).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.text);
    assert!(again.cookie("idbridge_portal").is_none());
    assert_page_headers(&again, "used link");
    // An expired link: refused.
    let token = portal::create_link(
        env.store.as_ref(),
        &org,
        portal::Intent::Sso,
        None,
        None,
        None,
        idbridge_model::Timestamp::now().as_millis() - 10 * 60 * 1000,
    )
    .unwrap();
    let r = env
        .send("GET", &format!("/portal/launch?token={token}"), None, None)
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    // Garbage and missing tokens.
    for uri in ["/portal/launch?token=nope", "/portal/launch"] {
        assert_eq!(
            env.send("GET", uri, None, None).await.status,
            StatusCode::GONE,
            "{uri}"
        );
    }
    // Portal pages without a portal session, and with a console session instead.
    let (console_cookie, _) = env.sign_in().await;
    for c in [
        None,
        Some(console_cookie.as_str()),
        Some("idbridge_portal=forged"),
    ] {
        let r = env.send("GET", "/portal", c, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{c:?}");
    }
    // And the portal cookie does not open the console.
    let r = env
        .send(
            "GET",
            "/console/organizations",
            Some(&cookie.replace("idbridge_portal", "idbridge_console")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_portal_link_reaches_only_its_organization() {
    let env = Env::new();
    let a = env.org("Alpha Org").await;
    let b = env.org("Bravo Org").await;
    // B has a connection (made by an operator).
    let (console_cookie, console_csrf) = env.sign_in().await;
    let b_conn = create_connection(&env, &console_cookie, &console_csrf, &b).await;
    let link = generate(&env, &a, "sso").await;
    let r = env.send("GET", &link, None, None).await;
    let cookie = r.cookie("idbridge_portal").unwrap();
    let home = env.send("GET", "/portal", Some(&cookie), None).await;
    assert!(
        home.text.contains("Alpha Org") && !home.text.contains("Bravo Org"),
        "{}",
        home.text
    );
    assert!(!home.text.contains(&b_conn));
    let csrf = home.csrf();
    // B's connection is not A's.
    let r = env
        .send(
            "GET",
            &format!("/portal/sso/connections/{b_conn}"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(!r.text.contains("Bravo"));
    // A form cannot name another organization.
    let xml = metadata_xml();
    let body = serde_urlencoded::to_string([
        ("csrf", csrf.as_str()),
        ("connection_type", "GenericSAML"),
        ("idp_metadata_xml", xml.as_str()),
        ("organization_id", b.as_str()),
    ])
    .unwrap();
    let r = env
        .send(
            "POST",
            "/portal/sso/connections",
            Some(&cookie),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Without / with a wrong CSRF token.
    for token in [None, Some("wrong")] {
        let mut fields = vec![
            ("connection_type", "GenericSAML"),
            ("idp_metadata_xml", xml.as_str()),
        ];
        if let Some(t) = token {
            fields.push(("csrf", t));
        }
        let body = serde_urlencoded::to_string(&fields).unwrap();
        let r = env
            .send(
                "POST",
                "/portal/sso/connections",
                Some(&cookie),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{token:?}");
    }
    let count = |org: &str| {
        let sso = idbridge_sso::connections::Connections::new(env.store.clone());
        sso.of_organization(org).unwrap().len()
    };
    assert_eq!((count(&a), count(&b)), (0, 1));
    // The real form creates A's connection and shows what to paste into the IdP.
    let body = serde_urlencoded::to_string([
        ("csrf", csrf.as_str()),
        ("connection_type", "OktaSAML"),
        ("idp_metadata_xml", xml.as_str()),
    ])
    .unwrap();
    let r = env
        .send(
            "POST",
            "/portal/sso/connections",
            Some(&cookie),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!((count(&a), count(&b)), (1, 1));
    let page = env.send("GET", r.location(), Some(&cookie), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let conn = r.location().rsplit('/').next().unwrap();
    assert!(
        page.text
            .contains(&format!("http://127.0.0.1:8080/sso/saml/metadata/{conn}")),
        "{}",
        page.text
    );
    assert!(page.text.contains("https://app.example/done"));
    assert_page_headers(&page, "portal connection");
    // A dsync link for A cannot create connections.
    let link = generate(&env, &a, "dsync").await;
    let dsync_cookie = env
        .send("GET", &link, None, None)
        .await
        .cookie("idbridge_portal")
        .unwrap();
    let dsync_home = env.send("GET", "/portal", Some(&dsync_cookie), None).await;
    assert_eq!(dsync_home.status, StatusCode::OK, "{}", dsync_home.text);
    let session_id = dsync_cookie.trim_start_matches("idbridge_portal=");
    let grant = portal::session(
        env.store.as_ref(),
        session_id,
        idbridge_model::Timestamp::now().as_millis(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (grant.organization_id.as_str(), grant.intent),
        (a.as_str(), portal::Intent::Dsync)
    );
    let body = serde_urlencoded::to_string([
        ("csrf", grant.csrf.as_str()),
        ("connection_type", "OktaSAML"),
        ("idp_metadata_xml", xml.as_str()),
    ])
    .unwrap();
    let r = env
        .send(
            "POST",
            "/portal/sso/connections",
            Some(&dsync_cookie),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(count(&a), 1);
}

impl Env {
    /// A console form at `path` refuses a request without a session (to the sign-in page),
    /// without or with a wrong CSRF token (403), and with the unknown field `extra` (422
    /// naming it).
    async fn assert_form_guarded(&self, path: &str, cookie: &str, csrf: &str, extra: &str) {
        let r = self.send("POST", path, None, Some("")).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path} without a session");
        assert!(r.location().ends_with("/console/login"));
        for body in ["", "csrf=wrong"] {
            let r = self.send("POST", path, Some(cookie), Some(body)).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} with {body:?}");
        }
        let body = format!("csrf={csrf}&{extra}=x");
        let r = self.send("POST", path, Some(cookie), Some(&body)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {}",
            r.text
        );
        assert!(
            r.text.contains(extra),
            "{path}: the 422 names {extra}: {}",
            r.text
        );
    }

    async fn scim_status(&self, dir: &str, token: &str) -> StatusCode {
        let req = Request::builder()
            .method("GET")
            .uri(format!("/scim/v2/{dir}/Users"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        self.app.clone().oneshot(req).await.unwrap().status()
    }
}

/// The value of the read-only field with this id on a page.
fn field_value(page: &str, id: &str) -> Option<String> {
    let at = page.find(&format!("id=\"{id}\""))?;
    let rest = &page[at..];
    let v = rest.find("value=\"")? + "value=\"".len();
    Some(rest[v..v + rest[v..].find('"')?].to_string())
}

#[tokio::test]
async fn scim_token_rotation_is_shown_once_and_needs_csrf_and_a_session() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let (s, v) = env
        .api(
            "POST",
            "/admin/directories",
            json!({"organization_id": org, "name": "Okta", "type": "okta scim v2.0"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dir = v["directory"]["id"].as_str().unwrap().to_string();
    let first = v["scim"]["bearer_token"].as_str().unwrap().to_string();
    let (cookie, csrf) = env.sign_in().await;
    let path = format!("/console/directories/{dir}");
    let page = env.send("GET", &path, Some(&cookie), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        field_value(&page.text, "scim_endpoint").as_deref(),
        Some(format!("http://127.0.0.1:8080/scim/v2/{dir}").as_str())
    );
    assert!(field_value(&page.text, "scim_token").is_none());
    assert!(!page.text.contains(&first));

    // Refused without a session, without / with a wrong CSRF token, with an unknown field:
    // the old token still works after each.
    let rotate = format!("{path}/scim-token");
    env.assert_form_guarded(&rotate, &cookie, &csrf, "token")
        .await;
    assert_eq!(env.scim_status(&dir, &first).await, StatusCode::OK);

    // Rotated: the new token on this answer only; it works and the old one does not.
    let r = env
        .send(
            "POST",
            &rotate,
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_page_headers(&r, "rotated");
    let token = field_value(&r.text, "scim_token").expect("the new token is shown");
    assert!(token.len() >= 32 && token != first);
    assert_eq!(env.scim_status(&dir, &token).await, StatusCode::OK);
    assert_eq!(
        env.scim_status(&dir, &first).await,
        StatusCode::UNAUTHORIZED
    );
    // Never again: the page, its search and paging views do not carry it.
    for p in [path.clone(), format!("{path}?search=a&table=users")] {
        let again = env.send("GET", &p, Some(&cookie), None).await;
        assert_eq!(again.status, StatusCode::OK);
        assert!(!again.text.contains(&token), "{p} shows the token again");
        assert!(field_value(&again.text, "scim_token").is_none());
    }
}

/// Where a page's `<meta http-equiv="refresh">` sends the browser.
fn refresh_target(page: &str) -> String {
    let at = page.find("url=").expect("a refresh") + 4;
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

/// `(state, authorize path)` of a test sign-in started by the operator.
async fn start_test_sign_in(env: &Env, cookie: &str, csrf: &str, conn: &str) -> (String, String) {
    let r = env
        .send(
            "POST",
            &format!("/console/connections/{conn}/test-sign-in"),
            Some(cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_page_headers(&r, "test sign-in start");
    let location = refresh_target(&r.text).replace("&amp;", "&");
    assert!(location.starts_with("/sso/authorize?"), "{location}");
    let q: Vec<(String, String)> =
        serde_urlencoded::from_str(location.split_once('?').unwrap().1).unwrap();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("redirect_uri").as_deref(),
        Some("http://127.0.0.1:8080/console/test-sign-in/callback")
    );
    assert_eq!(get("connection").as_deref(), Some(conn));
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert!(get("code_challenge").is_some());
    (get("state").unwrap(), location)
}

#[tokio::test]
async fn test_sign_in_is_bound_to_the_operator_session_and_used_once() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let (cookie, csrf) = env.sign_in().await;
    let conn = create_connection(&env, &cookie, &csrf, &org).await;
    let page = env
        .send(
            "GET",
            &format!("/console/connections/{conn}"),
            Some(&cookie),
            None,
        )
        .await;
    assert!(page.text.contains("Test sign-in"));

    // The form needs a session, the CSRF token and no unknown field.
    let start = format!("/console/connections/{conn}/test-sign-in");
    env.assert_form_guarded(&start, &cookie, &csrf, "redirect_uri")
        .await;
    let r = env
        .send(
            "POST",
            "/console/connections/conn_01EHQMYV6MBK39QC5PZXHY59C3/test-sign-in",
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The console's callback is accepted by /sso/authorize (not in the allow-list) and the
    // login goes to the IdP; without a code_challenge it is refused.
    let (state, authorize) = start_test_sign_in(&env, &cookie, &csrf, &conn).await;
    let r = env.send("GET", &authorize, None, None).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert!(
        r.location().starts_with("https://idp.example/sso?"),
        "{}",
        r.location()
    );
    let bare = authorize
        .split('&')
        .filter(|p| !p.starts_with("code_challenge"))
        .collect::<Vec<_>>()
        .join("&");
    let r = env.send("GET", &bare, None, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("code_challenge"), "{}", r.text);

    // An unknown or missing state is refused; nothing is shown.
    for q in ["state=forged&code=abc", "code=abc", ""] {
        let r = env
            .send(
                "GET",
                &format!("/console/test-sign-in/callback?{q}"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_page_headers(&r, "callback");
    }
    // The IdP's answer (here an error) lands on the callback without a console cookie, once.
    let cb = format!(
        "/console/test-sign-in/callback?state={state}&error=access_denied&error_description=The+user+cancelled"
    );
    let r = env.send("GET", &cb, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_page_headers(&r, "callback");
    let result = refresh_target(&r.text);
    assert!(
        result.starts_with("/console/test-sign-in/results/"),
        "{result}"
    );
    assert!(
        !result.contains(&state),
        "the state is not in the result URL"
    );
    let again = env.send("GET", &cb, None, None).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "used once");

    // The result: this session sees it; no session → sign in; another session → 404.
    let r = env.send("GET", &result, Some(&cookie), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("The sign-in failed") && r.text.contains("access_denied"));
    assert!(r.text.contains("The user cancelled"));
    let r = env.send("GET", &result, None, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let (other, _) = env.sign_in().await;
    let r = env.send("GET", &result, Some(&other), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.text.contains("access_denied"));

    // A code the console did not get from a login is refused by the exchange (shown as an
    // error, never as a profile).
    let (state, _) = start_test_sign_in(&env, &cookie, &csrf, &conn).await;
    let r = env
        .send(
            "GET",
            &format!("/console/test-sign-in/callback?state={state}&code=not-a-code"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let result = refresh_target(&r.text);
    let r = env.send("GET", &result, Some(&cookie), None).await;
    assert!(r.text.contains("invalid_grant"), "{}", r.text);
    assert!(!r.text.contains("Profile id"));
}

#[tokio::test]
async fn ldap_sync_now_runs_against_slapd_with_progress_and_the_deletion_needs_confirming() {
    use idbridge_ldap::{Flavor, LdapSettings, LdapSource, PendingGuard, StateStore, Syncer};
    use idbridge_testkit::slapd::{ldap_person, Slapd, LDAP_ADMIN_DN, LDAP_SUFFIX};

    let slapd = Slapd::start().expect("slapd (scripts/test-deps.sh installs it)");
    let mut ldif = String::new();
    for i in 0..30 {
        ldif.push_str(&ldap_person(
            &format!("user{i}"),
            "Given",
            &format!("Sn{i}"),
        ));
    }
    slapd.add(&ldif).unwrap();
    // The runners are installed once the directory exists (they are shared with the router).
    let mut handles = None;
    let env = Env::build("http://127.0.0.1:8080", |state| {
        handles = Some((state.ldap.clone(), state.directory.clone()));
    });
    let (runners, engine) = handles.unwrap();
    let org = env.org("Acme").await;
    let (s, v) = env
        .api(
            "POST",
            "/admin/directories",
            json!({"organization_id": org, "name": "Corp LDAP", "type": "ldap"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dir = v["directory"]["id"].as_str().unwrap().to_string();
    let (cookie, csrf) = env.sign_in().await;
    let path = format!("/console/directories/{dir}");
    let sync = format!("{path}/sync");

    // Not configured yet: a clear 409 on the page, nothing run.
    let r = env
        .send("POST", &sync, Some(&cookie), Some(&format!("csrf={csrf}")))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("has no LDAP feed"), "{}", r.text);

    let mut settings = LdapSettings::new(
        slapd.url(),
        Flavor::Openldap,
        format!("ou=People,{LDAP_SUFFIX}"),
    );
    settings.allow_plain = true;
    settings.bind_dn = Some(LDAP_ADMIN_DN.into());
    settings.bind_password_file = Some(slapd.password_file().unwrap());
    runners.install(
        Arc::new(Syncer::new(engine)),
        [LdapSource {
            directory_id: dir.clone(),
            settings,
        }],
    );

    // The form needs a session, the CSRF token, and no unknown field; none of these runs.
    env.assert_form_guarded(&sync, &cookie, &csrf, "kind").await;
    let states = StateStore::new(env.store.clone());
    assert_eq!(states.load(&dir).unwrap().runs, 0);
    // Not an LDAP directory → 404.
    let (_, scim) = env
        .api(
            "POST",
            "/admin/directories",
            json!({"organization_id": org, "name": "Okta", "type": "okta scim v2.0"}),
        )
        .await;
    let scim_id = scim["directory"]["id"].as_str().unwrap();
    let r = env
        .send(
            "POST",
            &format!("/console/directories/{scim_id}/sync"),
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Sync now: the page reloads itself while the run goes, then shows its summary.
    let r = env
        .send("POST", &sync, Some(&cookie), Some(&format!("csrf={csrf}")))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let mut saw_running = false;
    let page = loop {
        let p = env.send("GET", &path, Some(&cookie), None).await;
        assert_eq!(p.status, StatusCode::OK);
        let running = p.text.contains("Sync running");
        assert_eq!(
            running,
            p.text.contains("http-equiv=\"refresh\""),
            "the page refreshes itself exactly while a run goes"
        );
        assert_eq!(running, !p.text.contains(">Sync now<"));
        saw_running |= running;
        if !running {
            break p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(saw_running, "the page showed the run in progress");
    let st = states.load(&dir).unwrap();
    assert_eq!(st.runs, 1, "{st:?}");
    assert!(page.text.contains("applied"), "{}", page.text);
    assert!(page.text.contains("30 users, "), "{}", page.text);
    assert!(page.text.contains("30 created"), "{}", page.text);

    // The mass-deletion guard stopped a run: the page says so and the operator confirms.
    states
        .update(&dir, |st| {
            st.pending_guard = Some(PendingGuard {
                would_delete: 27,
                total: 30,
                threshold: 0.2,
                at: chrono::Utc::now(),
                sample: vec!["directory_user_01HZZZZZZZZZZZZZZZZZZZZZZZ".into()],
            })
        })
        .unwrap();
    let p = env.send("GET", &path, Some(&cookie), None).await;
    assert!(p.text.contains("would delete 27 of 30"), "{}", p.text);
    let confirm = format!("{sync}/confirm");
    env.assert_form_guarded(&confirm, &cookie, &csrf, "all")
        .await;
    assert!(!states.load(&dir).unwrap().deletion_confirmed);
    let r = env
        .send(
            "POST",
            &confirm,
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert!(states.load(&dir).unwrap().deletion_confirmed);
    let p = env.send("GET", &path, Some(&cookie), None).await;
    assert!(p
        .text
        .contains("Confirmed: the next full sync deletes them"));
}

#[tokio::test]
async fn user_search_finds_matches_and_pages_on() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let (_, v) = env
        .api(
            "POST",
            "/admin/directories",
            json!({"organization_id": org, "name": "Okta", "type": "okta scim v2.0"}),
        )
        .await;
    let dir = v["directory"]["id"].as_str().unwrap().to_string();
    let token = v["scim"]["bearer_token"].as_str().unwrap().to_string();
    for (user, given) in [("grace", "Grace"), ("ada", "Ada"), ("alan", "Alan")] {
        let req = Request::builder()
            .method("POST")
            .uri(format!("/scim/v2/{dir}/Users"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/scim+json")
            .body(Body::from(
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": format!("{user}@acme.example"),
                    "name": {"givenName": given, "familyName": "Tester"},
                    "emails": [{"value": format!("{user}@acme.example"), "primary": true}],
                    "active": true
                })
                .to_string(),
            ))
            .unwrap();
        let status = env.app.clone().oneshot(req).await.unwrap().status();
        assert_eq!(status, StatusCode::CREATED);
    }
    let (cookie, _) = env.sign_in().await;
    let path = format!("/console/directories/{dir}");
    let all = env.send("GET", &path, Some(&cookie), None).await;
    for u in ["grace@", "ada@", "alan@"] {
        assert!(all.text.contains(u), "{u} listed");
    }
    let r = env
        .send(
            "GET",
            &format!("{path}?table=users&search=GRACE"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("grace@acme.example"));
    assert!(!r.text.contains("ada@acme.example") && !r.text.contains("alan@acme.example"));
    // The whole directory was read: no "search on" link.
    assert!(!r.text.contains("searches on"));
    let r = env
        .send(
            "GET",
            &format!("{path}?table=users&search=nobody"),
            Some(&cookie),
            None,
        )
        .await;
    assert!(r.text.contains("No user."));
}
