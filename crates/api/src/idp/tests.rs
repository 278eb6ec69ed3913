//! The IdP driven in-process: the service-provider admin API (create from metadata, XML or
//! explicit fields; unknown fields; update; delete), the IdP metadata, and every refusal of the
//! SSO endpoint and the login form that happens before a directory is asked (the password
//! itself is checked against a real slapd in tests/tests/idp_e2e.rs).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use idbridge_saml::{IdpSettings, SpKeyPair, SpSettings};
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{router, ApiConfig, AppState};
use idbridge_sso::api_keys as auth;
use idbridge_sso::{SecretBox, SsoConfig};

pub(super) const SP_ENTITY: &str = "https://sp.example.com/saml";
pub(super) const SP_ACS: &str = "https://sp.example.com/acs";
pub(super) const PUBLIC: &str = "http://127.0.0.1:8080";

pub(super) struct Resp {
    pub(super) status: StatusCode,
    pub(super) headers: axum::http::HeaderMap,
    pub(super) body: Value,
    pub(super) text: String,
}

pub(super) struct Env {
    app: Router,
    key: String,
    _store: Arc<dyn Store>,
}

impl Env {
    pub(super) fn new() -> Env {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
        let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
        let state = AppState::new(store.clone(), ApiConfig::default())
            .with_sso(SsoConfig::default(), Some(SecretBox::generate().unwrap()));
        Env {
            app: router(state),
            key: boot.api_key,
            _store: store,
        }
    }

    pub(super) async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    pub(super) async fn api(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.key));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        self.send(
            req.body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or(Body::empty()),
            )
            .unwrap(),
        )
        .await
    }

    pub(super) async fn get(&self, uri: &str) -> Resp {
        self.send(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
    }

    pub(super) async fn form(
        &self,
        uri: &str,
        pairs: &[(&str, &str)],
        cookie: Option<&str>,
    ) -> Resp {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let mut req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    pub(super) async fn org(&self, name: &str) -> String {
        let r = self
            .api("POST", "/organizations", Some(json!({"name": name})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    }

    pub(super) async fn ldap_directory(&self, org: &str) -> String {
        let r = self
            .api(
                "POST",
                "/admin/directories",
                Some(json!({"organization_id": org, "name": "Corp LDAP", "type": "ldap"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["directory"]["id"].as_str().unwrap().to_string()
    }
}

pub(super) fn sp_metadata(signed_requests: bool, cert: Option<&SpKeyPair>) -> String {
    let key_descriptor = cert
        .map(|k| {
            let der = base64::engine::general_purpose::STANDARD.encode(k.cert.to_der().unwrap());
            format!("<md:KeyDescriptor use=\"signing\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:X509Data><ds:X509Certificate>{der}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>")
        })
        .unwrap_or_default();
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"{SP_ENTITY}\"><md:SPSSODescriptor AuthnRequestsSigned=\"{signed_requests}\" WantAssertionsSigned=\"true\" protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{key_descriptor}<md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"{SP_ACS}\" index=\"0\" isDefault=\"true\"/></md:SPSSODescriptor></md:EntityDescriptor>"
    )
}

/// An unsigned AuthnRequest for the POST binding, with a chosen ACS and IssueInstant.
pub(super) fn post_request(
    org: &str,
    issuer: &str,
    acs: &str,
    issue_instant: &str,
) -> (String, String) {
    let id = format!("_{}", ulid::Ulid::new());
    let xml = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{issue_instant}\" Destination=\"{PUBLIC}/idp/{org}/saml/sso\" AssertionConsumerServiceURL=\"{acs}\" ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"><saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"
    );
    (id, base64::engine::general_purpose::STANDARD.encode(xml))
}

pub(super) fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The Redirect-binding query of an AuthnRequest built by idbridge's own SP code (signed when
/// `key` is given).
fn redirect_query(org: &str, key: Option<&SpKeyPair>, relay: Option<&str>) -> String {
    let mut sp = SpSettings::new(SP_ENTITY, SP_ACS);
    if let Some(k) = key {
        sp.signing_keys.push(k.clone());
        sp.want_signed_requests = true;
    }
    let idp = IdpSettings::new("x", Some(format!("{PUBLIC}/idp/{org}/saml/sso")), &[]);
    let idp = match idp {
        Ok(i) => i,
        Err(_) => {
            // IdpSettings wants a certificate; any will do for building a request.
            let k = SpKeyPair::generate("any", 1).unwrap();
            let pem = k.cert.to_pem().unwrap();
            IdpSettings::new("x", Some(format!("{PUBLIC}/idp/{org}/saml/sso")), &[&pem]).unwrap()
        }
    };
    let r = idbridge_saml::build_authn_request(&sp, &idp, relay, false).unwrap();
    r.url.split_once('?').unwrap().1.to_owned()
}

pub(super) fn cookie_of(r: &Resp) -> (String, String) {
    let c = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("idbridge_idp_"))
        .expect("a login cookie");
    let pair = c.split(';').next().unwrap().to_owned();
    (pair, c)
}

pub(super) fn hidden(text: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = text.find(&marker).expect("hidden field") + marker.len();
    text[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn service_providers_crud_and_unknown_fields() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let dir = env.ldap_directory(&org).await;

    // Unknown fields are named.
    let r = env
        .api(
            "POST",
            "/admin/service_providers",
            Some(json!({"organization_id": org, "metadata_xml": sp_metadata(false, None), "acs_url": "x", "colour": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"acs_url") && fields.contains(&"colour"),
        "{fields:?}"
    );

    // Bad metadata and no source at all.
    let r = env
        .api(
            "POST",
            "/admin/service_providers",
            Some(json!({"organization_id": org, "metadata_xml": "<x/>"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["errors"][0]["field"], "metadata_xml");
    let r = env
        .api(
            "POST",
            "/admin/service_providers",
            Some(json!({"organization_id": org})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // From metadata XML.
    let r = env
        .api(
            "POST",
            "/admin/service_providers",
            Some(json!({"organization_id": org, "metadata_xml": sp_metadata(false, None), "name": "WorkOS", "directory_id": dir})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let sp = r.body.clone();
    assert_eq!(sp["object"], "service_provider");
    assert_eq!(sp["entity_id"], SP_ENTITY);
    assert_eq!(sp["acs_urls"][0]["url"], SP_ACS);
    assert_eq!(sp["auth_source"]["directory_id"], dir.as_str());
    assert_eq!(
        sp["idp"]["metadata_url"],
        format!("{PUBLIC}/idp/{org}/saml/metadata")
    );
    let id = sp["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sp_"));

    // The same entity id twice in one organization: 409.
    let r = env
        .api(
            "POST",
            "/admin/service_providers",
            Some(json!({"organization_id": org, "entity_id": SP_ENTITY, "acs_urls": [SP_ACS]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // Another organization's directory is refused.
    let other = env.org("Other").await;
    let other_dir = env.ldap_directory(&other).await;
    let r = env
        .api(
            "PUT",
            &format!("/admin/service_providers/{id}"),
            Some(json!({"directory_id": other_dir})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // Update, read, list, delete.
    let r = env
        .api(
            "PUT",
            &format!("/admin/service_providers/{id}"),
            Some(json!({"name_id_format": "persistent", "released_attributes": ["id", "email"], "sign_response": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["name_id_format"],
        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    );
    let r = env
        .api(
            "PUT",
            &format!("/admin/service_providers/{id}"),
            Some(json!({"released_attributes": ["password"], "bogus": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = env
        .api("GET", &format!("/admin/service_providers/{id}"), None)
        .await;
    assert_eq!(r.body["released_attributes"], json!(["id", "email"]));
    let r = env
        .api(
            "GET",
            &format!("/admin/service_providers?organization_id={org}"),
            None,
        )
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = env
        .api("DELETE", &format!("/admin/service_providers/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = env
        .api("GET", &format!("/admin/service_providers/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Without an API key: 401.
    let r = env.get("/admin/service_providers").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metadata_publishes_a_stable_key_and_rotation_keeps_two() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let m1 = env.get(&format!("/idp/{org}/saml/metadata")).await;
    assert_eq!(m1.status, StatusCode::OK, "{}", m1.text);
    assert!(m1
        .text
        .contains(&format!("entityID=\"{PUBLIC}/idp/{org}/saml/metadata\"")));
    assert!(m1.text.contains("HTTP-Redirect") && m1.text.contains("HTTP-POST"));
    let m2 = env.get(&format!("/idp/{org}/saml/metadata")).await;
    assert_eq!(m1.text, m2.text, "the key is generated once");
    let r = env
        .api(
            "POST",
            &format!("/admin/organizations/{org}/idp/rotate_keys"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["signing_certs"].as_array().unwrap().len(), 2);
    let m3 = env.get(&format!("/idp/{org}/saml/metadata")).await;
    assert_eq!(
        m3.text.matches("<ds:X509Certificate>").count(),
        2,
        "{}",
        m3.text
    );
    // An unknown organization has no IdP.
    let r = env
        .get("/idp/org_01H0000000000000000000000/saml/metadata")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn registered(env: &Env, signed: Option<&SpKeyPair>) -> (String, String) {
    let org = env.org("Acme").await;
    let dir = env.ldap_directory(&org).await;
    let r = env
        .api(
            "POST",
            "/admin/service_providers",
            Some(json!({"organization_id": org, "metadata_xml": sp_metadata(signed.is_some(), signed), "directory_id": dir})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (org, r.body["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn sso_endpoint_refusals() {
    let env = Env::new();
    let sp_key = SpKeyPair::generate("sp", 30).unwrap();
    let (org, _) = registered(&env, Some(&sp_key)).await;
    let sso = format!("/idp/{org}/saml/sso");

    // Signed by the registered key: the login page, with a cookie and a CSRF token.
    let q = redirect_query(&org, Some(&sp_key), Some("https://evil.example/steal"));
    let r = env.get(&format!("{sso}?{q}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("name=\"password\""));
    assert!(!hidden(&r.text, "csrf").is_empty());
    let (_, full_cookie) = cookie_of(&r);
    assert!(full_cookie.contains("HttpOnly") && full_cookie.contains("SameSite=Lax"));
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    // RelayState never becomes a redirect.
    assert!(r.headers.get(header::LOCATION).is_none());
    assert!(!r.text.contains("evil.example"));

    // Replay of the same request.
    let r = env.get(&format!("{sso}?{q}")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("already used"), "{}", r.text);

    // Unsigned where signing is required.
    let q = redirect_query(&org, None, None);
    let r = env.get(&format!("{sso}?{q}")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("not signed"), "{}", r.text);

    // Signed by another key.
    let other = SpKeyPair::generate("other", 30).unwrap();
    let q = redirect_query(&org, Some(&other), None);
    let r = env.get(&format!("{sso}?{q}")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("signature"), "{}", r.text);

    // No SAMLRequest.
    let r = env.form(&sso, &[("RelayState", "x")], None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sso_refuses_unregistered_sp_acs_and_expired_requests() {
    let env = Env::new();
    let (org, _) = registered(&env, None).await;
    let sso = format!("/idp/{org}/saml/sso");

    // Unregistered SP.
    let (_, req) = post_request(&org, "https://stranger.example.com", SP_ACS, &now());
    let r = env.form(&sso, &[("SAMLRequest", &req)], None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("not registered"), "{}", r.text);

    // An ACS that is not registered: never posted to.
    let (_, req) = post_request(&org, SP_ENTITY, "https://evil.example/acs", &now());
    let r = env.form(&sso, &[("SAMLRequest", &req)], None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(!r.text.contains("evil.example"), "{}", r.text);

    // Expired IssueInstant.
    let old = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (_, req) = post_request(&org, SP_ENTITY, SP_ACS, &old);
    let r = env.form(&sso, &[("SAMLRequest", &req)], None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("too old"), "{}", r.text);

    // The registered SP on another organization's IdP.
    let other = env.org("Other").await;
    let (_, req) = post_request(&other, SP_ENTITY, SP_ACS, &now());
    let r = env
        .form(
            &format!("/idp/{other}/saml/sso"),
            &[("SAMLRequest", &req)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // A fresh, registered request: the login page.
    let (_, req) = post_request(&org, SP_ENTITY, SP_ACS, &now());
    let r = env.form(&sso, &[("SAMLRequest", &req)], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn login_form_refusals_before_the_directory() {
    let env = Env::new();
    let (org, _) = registered(&env, None).await;
    let other = env.org("Other").await;
    let sso = format!("/idp/{org}/saml/sso");
    let (_, req) = post_request(&org, SP_ENTITY, SP_ACS, &now());
    let page = env.form(&sso, &[("SAMLRequest", &req)], None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let (cookie, _) = cookie_of(&page);
    let k = hidden(&page.text, "k");
    let csrf = hidden(&page.text, "csrf");
    let login = format!("/idp/{org}/login");
    let creds = [("login", "alice"), ("password", "secret")];

    // Missing and wrong CSRF token.
    let mut f: Vec<(&str, &str)> = vec![("k", &k)];
    f.extend(creds);
    let r = env.form(&login, &f, Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let mut f: Vec<(&str, &str)> = vec![
        ("k", &k),
        ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ];
    f.extend(creds);
    let r = env.form(&login, &f, Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // No cookie: the page has expired.
    let mut f: Vec<(&str, &str)> = vec![("k", &k), ("csrf", &csrf)];
    f.extend(creds);
    let r = env.form(&login, &f, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // This organization's session on another organization's login page.
    let r = env
        .form(&format!("/idp/{other}/login"), &f, Some(&cookie))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Right session and token, but this server runs no LDAP source for the directory: 503,
    // never an assertion.
    let r = env.form(&login, &f, Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(!r.text.contains("SAMLResponse"));
}

#[tokio::test]
async fn a_trusted_request_that_cannot_be_honoured_gets_a_signed_saml_error_at_the_registered_acs()
{
    let env = Env::new();
    let (org, _) = registered(&env, None).await;
    // IsPassive: idbridge has no session to answer without showing a page.
    let id = format!("_{}", ulid::Ulid::new());
    let xml = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{PUBLIC}/idp/{org}/saml/sso\" IsPassive=\"true\"><saml:Issuer>{SP_ENTITY}</saml:Issuer></samlp:AuthnRequest>",
        now()
    );
    let req = base64::engine::general_purpose::STANDARD.encode(xml);
    let r = env
        .form(
            &format!("/idp/{org}/saml/sso"),
            &[("SAMLRequest", &req), ("RelayState", "rs-1")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.text.contains(&format!("action=\"{SP_ACS}\"")),
        "{}",
        r.text
    );
    let b64 = hidden(&r.text, "SAMLResponse");
    let xml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
    assert!(xml.contains("status:NoPassive"), "{xml}");
    assert!(xml.contains(&format!("InResponseTo=\"{id}\"")), "{xml}");
    assert!(
        xml.contains("<ds:Signature"),
        "the error Response is signed: {xml}"
    );
    assert!(!xml.contains("Assertion"), "{xml}");
    assert_eq!(hidden(&r.text, "RelayState"), "rs-1");
    // No login cookie: nothing to sign in to.
    assert!(r.headers.get(header::SET_COOKIE).is_none());
}
