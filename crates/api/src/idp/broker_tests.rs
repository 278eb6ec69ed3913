//! Broker mode (an upstream SAML connection as the SP's authentication source), IdP-initiated
//! start, the live IdP settings and SP list paging, driven in-process. The upstream IdP is
//! idbridge-saml's test signer; the end-to-end runs with real upstream IdPs (samlify,
//! oidc-provider) are in tests/tests/idp_e2e.rs.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use idbridge_saml::idp::{b64, AssertionSpec, IdpSigner, ResponseSpec, SignMode};
use serde_json::{json, Value};

use super::tests::{
    cookie_of, hidden, now, post_request, sp_metadata, Env, Resp, PUBLIC, SP_ACS, SP_ENTITY,
};

const UP_ENTITY: &str = "https://upstream.example.org/entity";
const UP_SSO: &str = "https://upstream.example.org/sso";

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn location(r: &Resp) -> String {
    r.headers
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn param(url: &str, name: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn set_cookie(r: &Resp, prefix: &str) -> String {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The decoded XML of the SAMLResponse an auto-submitting page carries.
fn posted_response(r: &Resp) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.text.contains(&format!("action=\"{SP_ACS}\"")),
        "{}",
        r.text
    );
    let b = hidden(&r.text, "SAMLResponse");
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
}

struct Broker {
    env: Env,
    org: String,
    conn: String,
    upstream: IdpSigner,
}

/// A browser's broker login up to the upstream IdP.
struct Started {
    /// The upstream AuthnRequest id.
    upstream_request: String,
    /// The upstream RelayState (our SSO relay key).
    relay: String,
    sso_cookie: String,
    idp_cookie: String,
    /// The downstream AuthnRequest id.
    request_id: String,
}

impl Broker {
    async fn new() -> Broker {
        let env = Env::new();
        let org = env.org("Acme").await;
        let upstream = IdpSigner::generate(UP_ENTITY).unwrap();
        let conn = Self::saml_conn(&env, &org, &upstream).await;
        let r = env
            .api(
                "POST",
                "/admin/service_providers",
                Some(json!({
                    "organization_id": org,
                    "metadata_xml": sp_metadata(false, None),
                    "auth_source": {"type": "broker", "connection_id": conn},
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["auth_source"]["type"], "broker");
        Broker {
            env,
            org,
            conn,
            upstream,
        }
    }

    async fn saml_conn(env: &Env, org: &str, upstream: &IdpSigner) -> String {
        let cert = String::from_utf8(upstream.keys.cert.to_pem().unwrap()).unwrap();
        let r = env
            .api(
                "POST",
                "/connections",
                Some(json!({
                    "organization_id": org,
                    "name": "Upstream SAML",
                    "connection_type": "GenericSAML",
                    "saml_options": {
                        "idp_entity_id": UP_ENTITY,
                        "idp_sso_url": UP_SSO,
                        "idp_signing_certs": [cert],
                    },
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// The SP's AuthnRequest → a redirect to the upstream IdP with both cookies.
    async fn start(&self, relay_state: &str) -> Started {
        let (request_id, req) = post_request(&self.org, SP_ENTITY, SP_ACS, &now());
        let r = self
            .env
            .form(
                &format!("/idp/{}/saml/sso", self.org),
                &[("SAMLRequest", &req), ("RelayState", relay_state)],
                None,
            )
            .await;
        self.started(r, request_id)
    }

    fn started(&self, r: Resp, request_id: String) -> Started {
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
        let loc = location(&r);
        assert!(loc.starts_with(UP_SSO), "{loc}");
        let xml =
            idbridge_saml::decode_redirect_binding(&param(&loc, "SAMLRequest").unwrap()).unwrap();
        let upstream_request = xml
            .split("ID=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        Started {
            upstream_request,
            relay: param(&loc, "RelayState").unwrap(),
            sso_cookie: set_cookie(&r, "idbridge_sso_"),
            idp_cookie: set_cookie(&r, "idbridge_idp_"),
            request_id,
        }
    }

    /// The upstream IdP's signed answer (by `signer`) to `in_response_to`.
    fn upstream_response(&self, signer: &IdpSigner, in_response_to: &str, email: &str) -> String {
        let acs = format!("{PUBLIC}/sso/saml/acs/{}", self.conn);
        let sp_entity = format!("{PUBLIC}/sso/saml/{}", self.conn);
        let t = chrono::Utc::now();
        let mut a = AssertionSpec::new(UP_ENTITY, &sp_entity, &acs, email, Some(in_response_to), t)
            .unwrap();
        a.attributes = vec![
            ("id".into(), vec!["upstream-42".into()]),
            ("email".into(), vec![email.into()]),
            ("firstName".into(), vec!["Ada".into()]),
            ("lastName".into(), vec!["Lovelace".into()]),
            ("groups".into(), vec!["g-admins".into(), "g-eng".into()]),
        ];
        let resp = ResponseSpec::new(UP_ENTITY, &acs, Some(in_response_to), t).unwrap();
        b64(&signer.response(&resp, &a, SignMode::Assertion).unwrap())
    }

    /// The browser posts the upstream answer to our ACS: the redirect it gets.
    async fn post_acs(&self, s: &Started, saml: &str) -> Resp {
        let body = format!("SAMLResponse={}&RelayState={}", enc(saml), enc(&s.relay));
        let req = Request::builder()
            .method("POST")
            .uri(format!("/sso/saml/acs/{}", self.conn))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(header::COOKIE, &s.sso_cookie)
            .body(Body::from(body))
            .unwrap();
        self.env.send(req).await
    }

    /// Follows a redirect to our own server with a cookie.
    async fn follow(&self, loc: &str, cookie: &str) -> Resp {
        let path = loc.strip_prefix(PUBLIC).expect("a redirect to idbridge");
        let req = Request::builder()
            .uri(path)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        self.env.send(req).await
    }

    /// Upstream login answered: the redirect to the broker return.
    async fn upstream_done(&self, s: &Started) -> String {
        let saml = self.upstream_response(&self.upstream, &s.upstream_request, "ada@acme.test");
        let r = self.post_acs(s, &saml).await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
        let loc = location(&r);
        assert!(
            loc.starts_with(&format!("{PUBLIC}/idp/{}/broker/return?", self.org)),
            "{loc}"
        );
        loc
    }
}

#[tokio::test]
async fn broker_login_through_an_upstream_saml_connection() {
    let b = Broker::new().await;
    let s = b.start("rs-1").await;
    let ret = b.upstream_done(&s).await;
    assert!(param(&ret, "code").is_some());

    let r = b.follow(&ret, &s.idp_cookie).await;
    let xml = posted_response(&r);
    assert!(
        xml.contains(&format!("InResponseTo=\"{}\"", s.request_id)),
        "{xml}"
    );
    assert!(xml.contains("urn:oasis:names:tc:SAML:2.0:status:Success"));
    for v in [
        "ada@acme.test",
        "upstream-42",
        "Ada",
        "Lovelace",
        "g-admins",
        "g-eng",
    ] {
        assert!(xml.contains(v), "{v} missing: {xml}");
    }
    assert!(xml.contains(&format!("Destination=\"{SP_ACS}\"")));
    assert_eq!(hidden(&r.text, "RelayState"), "rs-1");
    // The IdP login cookie is cleared.
    assert!(set_cookie(&r, "idbridge_idp_").ends_with('='));

    // Single use: the same return again gets no assertion.
    let again = b.follow(&ret, &s.idp_cookie).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.text);
    assert!(!again.text.contains("SAMLResponse"));

    // The upstream response replayed (same browser, same cookie): no new code.
    let saml = b.upstream_response(&b.upstream, &s.upstream_request, "ada@acme.test");
    let replay = b.post_acs(&s, &saml).await;
    assert!(
        param(&location(&replay), "code").is_none(),
        "{} {}",
        location(&replay),
        replay.text
    );
}

#[tokio::test]
async fn a_code_or_session_of_another_login_gets_no_assertion() {
    let b = Broker::new().await;
    let a = b.start("rs-a").await;
    let other = b.start("rs-b").await;
    let ret_a = b.upstream_done(&a).await;

    // Browser B's session presented under A's cookie name: refused on our page.
    let key_a = param(&ret_a, "state").unwrap();
    let secret_b = other.idp_cookie.split_once('=').unwrap().1;
    let swapped = format!("idbridge_idp_{key_a}={secret_b}");
    let r = b.follow(&ret_a, &swapped).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(!r.text.contains("SAMLResponse"));

    // A's code brought to B's login (B's state and cookie): the PKCE binding fails, and B's SP
    // gets a SAML error Response (not a 500, not an assertion).
    let key_b = other
        .idp_cookie
        .split_once('=')
        .unwrap()
        .0
        .trim_start_matches("idbridge_idp_")
        .to_owned();
    let code_a = param(&ret_a, "code").unwrap();
    let forged = format!(
        "{PUBLIC}/idp/{}/broker/return?code={}&state={key_b}",
        b.org,
        enc(&code_a)
    );
    let r = b.follow(&forged, &other.idp_cookie).await;
    let xml = posted_response(&r);
    assert!(xml.contains("status:AuthnFailed"), "{xml}");
    assert!(xml.contains(&format!("InResponseTo=\"{}\"", other.request_id)));
    assert!(!xml.contains("ada@acme.test"));

    // The code was spent by that attempt: A cannot use it either.
    let r = b.follow(&ret_a, &a.idp_cookie).await;
    let xml = posted_response(&r);
    assert!(xml.contains("status:AuthnFailed"), "{xml}");
}

#[tokio::test]
async fn an_upstream_failure_is_a_saml_error_at_the_registered_acs() {
    let b = Broker::new().await;
    let s = b.start("rs-f").await;
    // Signed by a key the connection does not trust: the ACS refuses, the app (our return)
    // gets an OAuth error, and the SP a signed SAML error Response.
    let forger = IdpSigner::generate(UP_ENTITY).unwrap();
    let saml = b.upstream_response(&forger, &s.upstream_request, "mallory@acme.test");
    let r = b.post_acs(&s, &saml).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let ret = location(&r);
    assert!(param(&ret, "error").is_some(), "{ret}");
    assert!(param(&ret, "code").is_none());
    let r = b.follow(&ret, &s.idp_cookie).await;
    let xml = posted_response(&r);
    assert!(xml.contains("status:Responder"), "{xml}");
    assert!(xml.contains("status:AuthnFailed"), "{xml}");
    assert!(xml.contains(&format!("InResponseTo=\"{}\"", s.request_id)));
    assert!(!xml.contains("mallory"));
    assert_eq!(hidden(&r.text, "RelayState"), "rs-f");
}

#[tokio::test]
async fn an_expired_login_session_gets_no_assertion() {
    let b = Broker::new().await;
    // The IdP settings change live: a 1 s login session.
    let r = b
        .env
        .api(
            "PATCH",
            "/admin/idp/settings",
            Some(json!({"login_session_ttl_secs": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = b.start("rs-e").await;
    let ret = b.upstream_done(&s).await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = b.follow(&ret, &s.idp_cookie).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(!r.text.contains("SAMLResponse"));
    // Without any cookie: the same.
    let r = b.follow(&ret, "other=1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn the_broker_connection_is_checked_when_configured() {
    let b = Broker::new().await;
    let other_org = b.env.org("Other").await;
    let foreign = Broker::saml_conn(&b.env, &other_org, &b.upstream).await;
    let create = |auth: Value| {
        json!({
            "organization_id": b.org,
            "entity_id": format!("https://sp{}.example.com", ulid::Ulid::new()),
            "acs_urls": ["https://sp.example.com/acs2"],
            "auth_source": auth,
        })
    };
    for (auth, field, code) in [
        (
            json!({"type": "broker", "connection_id": foreign}),
            "auth_source.connection_id",
            "not_of_the_organization",
        ),
        (
            json!({"type": "broker", "connection_id": "conn_01HZZZZZZZZZZZZZZZZZZZZZZZ"}),
            "auth_source.connection_id",
            "not_found",
        ),
        (
            json!({"type": "broker"}),
            "auth_source.connection_id",
            "required",
        ),
        (
            json!({"type": "broker", "connection_id": b.conn, "directory_id": "x"}),
            "auth_source.directory_id",
            "unknown_field",
        ),
        (
            json!({"type": "password"}),
            "auth_source.type",
            "must_be_directory_or_broker",
        ),
        (json!("broker"), "auth_source", "must_be_object_or_null"),
    ] {
        let r = b
            .env
            .api(
                "POST",
                "/admin/service_providers",
                Some(create(auth.clone())),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{auth}: {}",
            r.text
        );
        let errors = r.body["errors"].to_string();
        assert!(
            errors.contains(field) && errors.contains(code),
            "{auth}: {}",
            r.text
        );
    }
    // Changing an SP to another organization's connection is refused and changes nothing.
    let list = b.env.api("GET", "/admin/service_providers", None).await;
    let sp = list.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = b
        .env
        .api(
            "PUT",
            &format!("/admin/service_providers/{sp}"),
            Some(json!({"auth_source": {"type": "broker", "connection_id": foreign}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = b
        .env
        .api("GET", &format!("/admin/service_providers/{sp}"), None)
        .await;
    assert_eq!(r.body["auth_source"]["connection_id"], b.conn.as_str());
}

#[tokio::test]
async fn idp_initiated_start_only_for_sps_that_allow_it() {
    let b = Broker::new().await;
    let start = |sp: &str, rs: &str| {
        format!(
            "/idp/{}/saml/start?sp={}&RelayState={}",
            b.org,
            enc(sp),
            enc(rs)
        )
    };
    // Off by default.
    let r = b.env.get(&start(SP_ENTITY, "go")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("allow_idp_initiated"));
    assert!(r.headers.get(header::LOCATION).is_none());

    let list = b.env.api("GET", "/admin/service_providers", None).await;
    let sp = list.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = b
        .env
        .api(
            "PUT",
            &format!("/admin/service_providers/{sp}"),
            Some(json!({"allow_idp_initiated": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["allow_idp_initiated"], true);

    // Unknown SP, missing sp, RelayState too long: our page, never a redirect.
    let r = b.env.get(&start("https://nobody.example", "x")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = b.env.get(&format!("/idp/{}/saml/start", b.org)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = b.env.get(&start(&sp, &"x".repeat(1025))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.headers.get(header::LOCATION).is_none());
    // Another organization cannot start a login for this SP.
    let other = b.env.org("Other").await;
    let r = b.env.get(&format!("/idp/{other}/saml/start?sp={sp}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Allowed (by id here): the broker login runs and the answer is unsolicited.
    let r = b.env.get(&start(&sp, "https://evil.example/next")).await;
    let s = b.started(r, String::new());
    let ret = b.upstream_done(&s).await;
    let r = b.follow(&ret, &s.idp_cookie).await;
    let xml = posted_response(&r);
    assert!(!xml.contains("InResponseTo"), "{xml}");
    assert!(xml.contains("ada@acme.test"));
    // RelayState is echoed to the registered ACS only (never a Location).
    assert_eq!(hidden(&r.text, "RelayState"), "https://evil.example/next");
    assert!(r.headers.get(header::LOCATION).is_none());

    // A directory-source SP gets the login page.
    let dir = b.env.ldap_directory(&b.org).await;
    let r = b
        .env
        .api(
            "PUT",
            &format!("/admin/service_providers/{sp}"),
            Some(json!({"auth_source": {"type": "directory", "directory_id": dir}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = b.env.get(&start(SP_ENTITY, "x")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("name=\"password\""));
    let _ = cookie_of(&r);
}

#[tokio::test]
async fn idp_settings_are_read_and_changed_live() {
    let env = Env::new();
    let r = env.api("GET", "/admin/idp/settings", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["login_session_ttl_secs"], 900);
    assert_eq!(r.body["account_max_failures"], 5);
    assert_eq!(r.body["address_max_failures"], 50);
    assert_eq!(r.body["failure_delay_ms"], 300);
    assert_eq!(r.body["default_assertion_validity_secs"], 300);
    assert_eq!(r.body["trusted_proxies"], json!([]));

    for (body, field) in [
        (json!({"bogus": 1}), "bogus"),
        (json!({"account_max_failures": -1}), "account_max_failures"),
        (json!({"failure_delay_ms": "fast"}), "failure_delay_ms"),
        (json!({"failure_delay_ms": 600000}), "failure_delay_ms"),
        (
            json!({"login_session_ttl_secs": 0}),
            "login_session_ttl_secs",
        ),
        (
            json!({"trusted_proxies": ["10.0.0.0/8", "proxy.local"]}),
            "trusted_proxies[1]",
        ),
        (json!({"trusted_proxies": "10.0.0.1"}), "trusted_proxies"),
    ] {
        let r = env
            .api("PATCH", "/admin/idp/settings", Some(body.clone()))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert!(
            r.body["errors"].to_string().contains(field),
            "{body}: {}",
            r.text
        );
    }
    // Nothing changed by the refusals.
    let r = env.api("GET", "/admin/idp/settings", None).await;
    assert_eq!(r.body["failure_delay_ms"], 300);

    let r = env
        .api(
            "PATCH",
            "/admin/idp/settings",
            Some(json!({
                "account_max_failures": 3,
                "account_window_secs": 60,
                "default_assertion_validity_secs": 120,
                "trusted_proxies": ["10.0.0.0/8", "::1"],
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["account_max_failures"], 3);
    assert_eq!(r.body["trusted_proxies"], json!(["10.0.0.0/8", "::1"]));
    assert_eq!(
        r.body["login_session_ttl_secs"], 900,
        "untouched fields stay"
    );
    // Applied: a new SP gets the new default assertion lifetime.
    let org = env.org("Acme").await;
    let r = env
        .api(
            "POST",
            "/admin/service_providers",
            Some(json!({"organization_id": org, "metadata_xml": sp_metadata(false, None)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["assertion_validity_secs"], 120);
    // Without the API key: refused.
    let r = env
        .send(
            Request::builder()
                .method("PATCH")
                .uri("/admin/idp/settings")
                .header("content-type", "application/json")
                .body(Body::from("{\"failure_delay_ms\":0}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_service_provider_list_is_paged() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = env
            .api(
                "POST",
                "/admin/service_providers",
                Some(json!({
                    "organization_id": org,
                    "entity_id": format!("https://sp{i}.example.com"),
                    "acs_urls": [format!("https://sp{i}.example.com/acs")],
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let uri = match &after {
            Some(a) => format!(
                "/admin/service_providers?organization_id={org}&limit=2&order=asc&after={a}"
            ),
            None => format!("/admin/service_providers?organization_id={org}&limit=2&order=asc"),
        };
        let r = env.api("GET", &uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["object"], "list");
        let data = r.body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        match r.body["list_metadata"]["after"].as_str() {
            Some(a) => after = Some(a.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let r = env
        .api("GET", "/admin/service_providers?limit=101", None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = env
        .api("GET", "/admin/service_providers?after=org_123", None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
}

#[tokio::test]
async fn an_idp_initiated_upstream_failure_is_an_unsolicited_saml_error() {
    let b = Broker::new().await;
    let list = b.env.api("GET", "/admin/service_providers", None).await;
    let sp = list.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = b
        .env
        .api(
            "PUT",
            &format!("/admin/service_providers/{sp}"),
            Some(json!({"allow_idp_initiated": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = b
        .env
        .get(&format!("/idp/{}/saml/start?sp={sp}&RelayState=go", b.org))
        .await;
    let s = b.started(r, String::new());
    let forger = IdpSigner::generate(UP_ENTITY).unwrap();
    let saml = b.upstream_response(&forger, &s.upstream_request, "mallory@acme.test");
    let r = b.post_acs(&s, &saml).await;
    let r = b.follow(&location(&r), &s.idp_cookie).await;
    let xml = posted_response(&r);
    assert!(xml.contains("status:AuthnFailed"), "{xml}");
    // No request, so no InResponseTo (not an empty one).
    assert!(!xml.contains("InResponseTo"), "{xml}");
    assert_eq!(hidden(&r.text, "RelayState"), "go");
}
