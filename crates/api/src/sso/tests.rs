//! The SSO flow driven in-process: connections CRUD, `/sso/authorize` validation and every
//! error redirect, a full SAML login with the idbridge-saml test IdP, codes, tokens, PKCE,
//! IdP-initiated login, replay, roles and secrecy of connection secrets.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use idbridge_saml::idp::{b64, AssertionSpec, IdpSigner, ResponseSpec, SignMode};
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use sha2::Digest;
use tower::ServiceExt;

use crate::{router, ApiConfig, AppState};
use idbridge_sso::api_keys as auth;
use idbridge_sso::{SecretBox, SsoConfig};

const APP_CB: &str = "https://app.example.com/callback";
const IDP_SSO: &str = "https://idp.example.org/sso";
const IDP_ENTITY: &str = "https://idp.example.org/entity";

struct Resp {
    status: StatusCode,
    location: Option<String>,
    cookies: Vec<String>,
    body: Value,
    text: String,
}

impl Resp {
    fn query(&self) -> Vec<(String, String)> {
        let loc = self.location.as_deref().expect("a Location header");
        let url = url::Url::parse(loc).expect("absolute Location");
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
    fn param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

struct Env {
    app: Router,
    store: Arc<dyn Store>,
    key: String,
    client_id: String,
    idp: IdpSigner,
    state: AppState,
}

impl Env {
    fn with(config: SsoConfig) -> Env {
        Env::with_store(config, Arc::new(SqliteStore::open_ephemeral().unwrap()))
    }

    fn with_store(config: SsoConfig, store: Arc<dyn Store>) -> Env {
        let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
        let state = AppState::new(store.clone(), ApiConfig::default())
            .with_sso(config, Some(SecretBox::generate().unwrap()));
        Env {
            app: router(state.clone()),
            store,
            key: boot.api_key,
            client_id: boot.client_id,
            idp: IdpSigner::generate(IDP_ENTITY).unwrap(),
            state,
        }
    }

    fn new() -> Env {
        Env::with(SsoConfig {
            redirect_uris: vec![APP_CB.into(), "https://*.tenants.example.com/cb".into()],
            ..SsoConfig::default()
        })
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let cookies = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            location,
            cookies,
            body,
            text,
        }
    }

    async fn api(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.key));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or(Body::empty()),
            )
            .unwrap();
        self.send(req).await
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> Resp {
        let mut req = Request::builder().method("GET").uri(uri);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn org(&self, name: &str) -> String {
        let r = self.api("POST", "/organizations", Some(json!({"name": name, "domain_data": [{"domain": format!("{}.example.com", name.to_lowercase()), "state": "verified"}]}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    }

    fn cert_pem(&self) -> String {
        String::from_utf8(self.idp.keys.cert.to_pem().unwrap()).unwrap()
    }

    async fn saml_conn(&self, org: &str, extra: Value) -> Value {
        let mut opts = json!({
            "idp_entity_id": IDP_ENTITY,
            "idp_sso_url": IDP_SSO,
            "idp_signing_certs": [self.cert_pem()],
        });
        if let (Some(o), Some(e)) = (opts.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        let r = self
            .api(
                "POST",
                "/connections",
                Some(json!({
                    "organization_id": org,
                    "name": "Acme SAML",
                    "connection_type": "OktaSAML",
                    "attribute_maps": {"custom_attributes": {"department": "dept"}},
                    "saml_options": opts,
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body
    }

    fn authorize_url(&self, extra: &str) -> String {
        format!(
            "/sso/authorize?client_id={}&redirect_uri={}&response_type=code{extra}",
            self.client_id,
            urlencode(APP_CB)
        )
    }

    /// A signed IdP response for `conn` answering `request_id`.
    fn saml_response(&self, conn_id: &str, request_id: Option<&str>, name_id: &str) -> String {
        let acs = format!("http://127.0.0.1:8080/sso/saml/acs/{conn_id}");
        let sp_entity = format!("http://127.0.0.1:8080/sso/saml/{conn_id}");
        let now = chrono::Utc::now();
        let mut a =
            AssertionSpec::new(IDP_ENTITY, &sp_entity, &acs, name_id, request_id, now).unwrap();
        a.attributes = vec![
            ("id".into(), vec![format!("idp-{name_id}")]),
            ("email".into(), vec![name_id.into()]),
            ("firstName".into(), vec!["Ada".into()]),
            ("lastName".into(), vec!["Lovelace".into()]),
            ("groups".into(), vec!["g-admins".into(), "g-eng".into()]),
            ("dept".into(), vec!["R&D".into()]),
        ];
        let r = ResponseSpec::new(IDP_ENTITY, &acs, request_id, now).unwrap();
        b64(&self.idp.response(&r, &a, SignMode::Assertion).unwrap())
    }

    async fn post_acs(
        &self,
        conn_id: &str,
        saml: &str,
        relay: Option<&str>,
        cookie: Option<&str>,
    ) -> Resp {
        let mut body = format!("SAMLResponse={}", urlencode(saml));
        if let Some(rs) = relay {
            body.push_str(&format!("&RelayState={}", urlencode(rs)));
        }
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("/sso/saml/acs/{conn_id}"))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// authorize → IdP → ACS; returns the final redirect.
    async fn login(&self, conn_id: &str, extra: &str, email: &str) -> Resp {
        let (saml, relay, cookie) = self.authorize_at_idp(conn_id, extra, email).await;
        self.post_acs(conn_id, &saml, Some(&relay), Some(&cookie))
            .await
    }

    /// authorize → the IdP's signed answer: `(SAMLResponse, RelayState, session cookie)`, for
    /// the browser to post to the ACS.
    async fn authorize_at_idp(
        &self,
        conn_id: &str,
        extra: &str,
        email: &str,
    ) -> (String, String, String) {
        let r = self
            .get(
                &self.authorize_url(&format!("&connection={conn_id}&state=st-1{extra}")),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
        assert!(r.location.as_deref().unwrap().starts_with(IDP_SSO));
        let req = r.param("SAMLRequest").unwrap();
        let relay = r.param("RelayState").unwrap();
        let xml = idbridge_saml::decode_redirect_binding(&req).unwrap();
        let id = xml
            .split("ID=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let cookie = r.cookies[0].split(';').next().unwrap().to_string();
        assert!(r.cookies[0].contains("HttpOnly"));
        let saml = self.saml_response(conn_id, Some(&id), email);
        (saml, relay, cookie)
    }

    async fn token(&self, body: Value) -> Resp {
        let req = Request::builder()
            .method("POST")
            .uri("/sso/token")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    async fn token_form(&self, form: &str) -> Resp {
        let req = Request::builder()
            .method("POST")
            .uri("/sso/token")
            .header(
                "content-type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(Body::from(form.to_string()))
            .unwrap();
        self.send(req).await
    }

    fn event_kinds(&self) -> Vec<String> {
        self.store
            .events_after(0, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn pkce_pair() -> (String, String) {
    let verifier = "v".repeat(20) + &"x".repeat(30);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[tokio::test]
async fn connections_crud_filters_and_events() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let other = env.org("Other").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["object"], "connection");
    assert_eq!(c["connection_type"], "OktaSAML");
    assert_eq!(c["state"], "draft");
    assert_eq!(c["domains"][0]["domain"], "acme.example.com");
    assert_eq!(c["domains"][0]["object"], "connection_domain");
    for forbidden in ["PRIVATE KEY", "key_sealed", "sp_signing_keys", "v1:"] {
        assert!(!c.to_string().contains(forbidden), "{forbidden} leaked");
    }
    env.saml_conn(&other, json!({})).await;

    let r = env.api("GET", &format!("/connections/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], id);
    assert!(!r.text.contains("PRIVATE KEY"));

    let all = env.api("GET", "/connections", None).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(all.body["object"], "list");
    for (q, n) in [
        (format!("organization_id={org}"), 1),
        ("connection_type=OktaSAML".into(), 2),
        ("connection_type=GenericOIDC".into(), 0),
        ("domain=acme.example.com".into(), 1),
        ("domain=nope.example.com".into(), 0),
        ("search=acme".into(), 2),
        ("search=zzz".into(), 0),
        ("limit=1".into(), 1),
    ] {
        let r = env.api("GET", &format!("/connections?{q}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
        assert_eq!(r.body["data"].as_array().unwrap().len(), n, "{q}");
    }

    // SP metadata is public and carries our entity id and ACS.
    let md = env.get(&format!("/sso/saml/metadata/{id}"), None).await;
    assert_eq!(md.status, StatusCode::OK);
    assert!(md
        .text
        .contains(&format!("entityID=\"http://127.0.0.1:8080/sso/saml/{id}\"")));
    assert!(md.text.contains(&format!("/sso/saml/acs/{id}")));
    assert!(!md.text.contains("PRIVATE"));

    // Rotation keeps the previous key published.
    let rot = env
        .api(
            "POST",
            &format!("/admin/connections/{id}/rotate_sp_keys"),
            None,
        )
        .await;
    assert_eq!(rot.status, StatusCode::OK, "{}", rot.text);
    assert_eq!(
        rot.body["settings"]["sp_signing_certs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(!rot.text.contains("PRIVATE KEY"));
    let rot2 = env
        .api(
            "POST",
            &format!("/admin/connections/{id}/rotate_sp_keys"),
            None,
        )
        .await;
    assert_eq!(
        rot2.body["settings"]["sp_encryption_certs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let md2 = env.get(&format!("/sso/saml/metadata/{id}"), None).await;
    assert_eq!(md2.text.matches("use=\"signing\"").count(), 2);

    let d = env.api("DELETE", &format!("/connections/{id}"), None).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    assert_eq!(
        env.api("GET", &format!("/connections/{id}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.api("DELETE", &format!("/connections/{id}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.api("GET", "/connections/conn_garbage", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let kinds = env.event_kinds();
    assert!(
        kinds.contains(&"connection.deleted".to_string()),
        "{kinds:?}"
    );

    // The connection API needs an API key.
    let anon = env.get("/connections", None).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn connection_validation_errors() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let cases = [
        (
            json!({"saml_options": {"idp_entity_id": "x", "idp_sso_url": IDP_SSO, "idp_signing_certs": [env.cert_pem()]}}),
            "organization_id",
        ),
        (
            json!({"organization_id": "org_01HZZZZZZZZZZZZZZZZZZZZZZZ", "saml_options": {"idp_entity_id": "x", "idp_sso_url": IDP_SSO, "idp_signing_certs": [env.cert_pem()]}}),
            "organization_id",
        ),
        (
            json!({"organization_id": org, "saml_options": {"idp_entity_id": "x", "idp_sso_url": IDP_SSO}}),
            "saml_options.idp_signing_certs",
        ),
        (
            json!({"organization_id": org, "saml_options": {"idp_entity_id": "x", "idp_sso_url": IDP_SSO, "idp_signing_certs": ["not a cert"]}}),
            "saml_options.idp_signing_certs[0]",
        ),
        (
            json!({"organization_id": org, "saml_options": {"idp_sso_url": IDP_SSO, "idp_signing_certs": [env.cert_pem()]}}),
            "saml_options.idp_entity_id",
        ),
        (
            json!({"organization_id": org, "saml_options": {"idp_entity_id": "x", "idp_sso_url": "javascript:alert(1)", "idp_signing_certs": [env.cert_pem()]}}),
            "saml_options.idp_sso_url",
        ),
        (
            json!({"organization_id": org, "saml_options": {"idp_metadata_xml": "<nope/>"}}),
            "saml_options.idp_metadata_xml",
        ),
        (
            json!({"organization_id": org, "connection_type": "MagicLink", "saml_options": {}}),
            "connection_type",
        ),
        (
            json!({"organization_id": org, "saml_options": {"idp_entity_id": "x", "idp_sso_url": IDP_SSO, "idp_signing_certs": [env.cert_pem()], "clock_skew_secs": 100000}}),
            "saml_options.clock_skew_secs",
        ),
        (
            json!({"organization_id": org, "saml_options": {"idp_entity_id": "x", "idp_sso_url": IDP_SSO, "idp_signing_certs": [env.cert_pem()], "acs_url": "https://evil.example/acs"}}),
            "saml_options.acs_url",
        ),
        (json!({"organization_id": org}), "saml_options"),
        (
            json!({"organization_id": org, "connection_type": "GenericOIDC", "oidc_options": {"issuer": "https://op.example.com"}}),
            "oidc_options.client_id",
        ),
        (
            json!({"organization_id": org, "connection_type": "GenericOIDC", "oidc_options": {"issuer": "https://op.example.com", "client_id": "c"}}),
            "oidc_options.client_secret",
        ),
        // Issue 19: every unknown field is named, at every level; py10 options idbridge does
        // not implement are refused, never dropped.
        (
            json!({"organization_id": org, "colour": "red", "saml_options": {"idp_entity_id": "x", "idp_sso_url": IDP_SSO, "idp_signing_certs": [env.cert_pem()]}}),
            "colour",
        ),
        (
            json!({"organization_id": org, "saml_options": {"idp_entity_id": "x", "idp_sso_url": IDP_SSO, "idp_signing_certs": [env.cert_pem()], "want_encrypted": true}}),
            "saml_options.want_encrypted",
        ),
        (
            json!({"organization_id": org, "connection_type": "GenericOIDC", "oidc_options": {"issuer": "https://op.example.com", "client_id": "c", "client_secret": "s", "fetch_user_info": true}}),
            "oidc_options.fetch_user_info",
        ),
        (
            json!({"organization_id": org, "connection_type": "GenericOIDC", "oidc_options": {"issuer": "https://op.example.com", "client_id": "c", "client_secret": "s", "prompt": "login"}}),
            "oidc_options.prompt",
        ),
        (
            json!({"organization_id": org, "connection_type": "GenericOIDC", "attribute_maps": {"custom": {}}, "oidc_options": {"issuer": "https://op.example.com", "client_id": "c", "client_secret": "s"}}),
            "attribute_maps.custom",
        ),
        (
            json!({"organization_id": org, "connection_type": "GenericOIDC", "attribute_maps": {"standard_attributes": {"nickname": "nick"}}, "oidc_options": {"issuer": "https://op.example.com", "client_id": "c", "client_secret": "s"}}),
            "attribute_maps.standard_attributes.nickname",
        ),
    ];
    for (body, field) in cases {
        let r = env.api("POST", "/connections", Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        let fields: Vec<&str> = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{body}: wanted {field}, got {fields:?}"
        );
    }
    assert_eq!(
        env.api("GET", "/connections", None).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// Issue 19: `attribute_maps` on an OIDC connection (the Python SDK sends it) was accepted and
/// dropped; it now sets the claim map (standard claims first, custom attributes added).
#[tokio::test]
async fn oidc_attribute_maps_set_the_claim_map() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let r = env
        .api(
            "POST",
            "/connections",
            Some(json!({"organization_id": org, "connection_type": "GenericOIDC",
                "attribute_maps": {"standard_attributes": {"email": "upn", "name": null},
                    "custom_attributes": {"department": "dept", "employee": "ext.employee_id"}},
                "oidc_options": {"issuer": "https://op.example.com", "client_id": "c", "client_secret": "s"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap();
    let view = env
        .api("GET", &format!("/admin/connections/{id}"), None)
        .await;
    let map = &view.body["settings"]["claim_map"];
    assert_eq!(map["email"][0], "upn", "{}", view.text);
    assert_eq!(
        map["email"][1], "email",
        "the type's claim stays a fallback"
    );
    assert_eq!(map["custom"]["department"], "dept", "{}", view.text);
    assert_eq!(map["custom"]["employee"], "ext.employee_id");
}

#[tokio::test]
async fn inline_metadata_is_accepted() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let cert =
        base64::engine::general_purpose::STANDARD.encode(env.idp.keys.cert.to_der().unwrap());
    let xml = format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{IDP_ENTITY}\"><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{IDP_SSO}\"/></md:IDPSSODescriptor></md:EntityDescriptor>"
    );
    let r = env
        .api(
            "POST",
            "/connections",
            Some(json!({"organization_id": org, "saml_options": {"idp_metadata_xml": xml}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["connection_type"], "GenericSAML");
    let id = r.body["id"].as_str().unwrap().to_string();
    let view = env
        .api("GET", &format!("/admin/connections/{id}"), None)
        .await;
    assert_eq!(view.body["settings"]["idp_entity_id"], IDP_ENTITY);
    assert_eq!(view.body["settings"]["idp_sso_url"], IDP_SSO);
    // And it logs in.
    let done = env.login(&id, "", "ada@acme.example.com").await;
    assert!(done.param("code").is_some(), "{:?}", done.location);
}

#[tokio::test]
async fn oidc_client_secret_is_sealed_and_never_shown() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let secret = "very-secret-client-secret-123";
    let r = env
        .api(
            "POST",
            "/connections",
            Some(
                json!({"organization_id": org, "connection_type": "OktaOIDC", "oidc_options": {
                "issuer": "https://op.example.com", "client_id": "abc", "client_secret": secret}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(!r.text.contains(secret));
    let id = r.body["id"].as_str().unwrap().to_string();
    for uri in [
        format!("/connections/{id}"),
        "/connections".into(),
        format!("/admin/connections/{id}"),
    ] {
        let g = env.api("GET", &uri, None).await;
        assert_eq!(g.status, StatusCode::OK);
        assert!(!g.text.contains(secret), "{uri}");
    }
    // Not in the store in clear, not in events, not in Debug output.
    let raw = env
        .store
        .get(idbridge_sso::connections::CONNECTIONS, &id)
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(secret));
    for e in env.store.events_after(0, 100).unwrap() {
        assert!(!String::from_utf8_lossy(&e.body).contains(secret));
    }
    let record = env.state.sso.connections().load(&id).unwrap();
    assert!(!format!("{record:?}").contains(secret));
    assert!(format!("{:?}", env.state.sso).contains("[redacted]"));
    // It decrypts with the right context only.
    let idbridge_sso::connections::ProtocolSettings::Oidc(o) = &record.protocol else {
        panic!()
    };
    let sealed = o.client_secret_sealed.as_deref().unwrap();
    let b = env.state.sso.secret_box().unwrap();
    assert_eq!(
        b.open(&format!("{id}/oidc_client_secret"), sealed).unwrap(),
        secret.as_bytes()
    );
    assert!(b.open("conn_other/oidc_client_secret", sealed).is_err());

    // A server without a secret key refuses to store secrets.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
    let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
    let bare = router(AppState::new(store, ApiConfig::default()));
    let org_req = Request::builder()
        .method("POST")
        .uri("/organizations")
        .header("authorization", format!("Bearer {}", boot.api_key))
        .header("content-type", "application/json")
        .body(Body::from(json!({"name": "X"}).to_string()))
        .unwrap();
    let org_resp = bare.clone().oneshot(org_req).await.unwrap();
    let org_v: Value =
        serde_json::from_slice(&org_resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let req = Request::builder().method("POST").uri("/connections").header("authorization", format!("Bearer {}", boot.api_key)).header("content-type", "application/json")
        .body(Body::from(json!({"organization_id": org_v["id"], "connection_type": "GenericOIDC", "oidc_options": {"issuer": "https://op.example.com", "client_id": "abc", "client_secret": secret}}).to_string())).unwrap();
    let resp = bare.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).to_string();
    assert!(text.contains("secret_key_not_configured") && !text.contains(secret));
}

#[tokio::test]
async fn authorize_rejects_unvetted_clients_and_redirects_without_redirecting() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap();
    for uri in [
        format!("/sso/authorize?client_id=client_wrong&redirect_uri={}&response_type=code&connection={id}", urlencode(APP_CB)),
        format!("/sso/authorize?redirect_uri={}&response_type=code&connection={id}", urlencode(APP_CB)),
        format!("/sso/authorize?client_id={}&redirect_uri={}&response_type=code&connection={id}", env.client_id, urlencode("https://evil.example.com/callback")),
        format!("/sso/authorize?client_id={}&response_type=code&connection={id}", env.client_id),
        format!("/sso/authorize?client_id={}&redirect_uri={}&response_type=code&connection={id}", env.client_id, urlencode("https://a.b.tenants.example.com/cb")),
    ] {
        let r = env.get(&uri, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(r.location.is_none(), "{uri} must not redirect");
        assert!(r.cookies.is_empty());
    }
    // A wildcard-allowed redirect URI is accepted.
    let ok = env
        .get(
            &format!(
                "/sso/authorize?client_id={}&redirect_uri={}&response_type=code&connection={id}",
                env.client_id,
                urlencode("https://t1.tenants.example.com/cb")
            ),
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.text);
    assert!(ok.location.unwrap().starts_with(IDP_SSO));
}

#[tokio::test]
async fn authorize_error_redirects() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let empty_org = env.org("Empty").await;
    let two = env.org("Two").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    env.saml_conn(&two, json!({})).await;
    env.saml_conn(&two, json!({})).await;
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "invalid_connection_selector"),
        (
            format!("&connection={id}&organization={org}"),
            "invalid_connection_selector",
        ),
        (
            "&domain=acme.example.com".into(),
            "domain_connection_selector_not_allowed",
        ),
        (
            "&provider=GoogleOAuth".into(),
            "connection_strategy_invalid",
        ),
        (
            "&connection=conn_01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            "connection_invalid",
        ),
        ("&connection=garbage".into(), "connection_invalid"),
        (
            "&organization=org_01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            "organization_invalid",
        ),
        (format!("&organization={empty_org}"), "organization_invalid"),
        (
            format!("&organization={two}"),
            "ambiguous_connection_selector",
        ),
        (
            format!("&connection={id}&code_challenge=abc&code_challenge_method=plain"),
            "invalid_request",
        ),
        (
            format!("&connection={id}&code_challenge=short&code_challenge_method=S256"),
            "invalid_request",
        ),
    ];
    for (extra, code) in cases {
        let r = env
            .get(&env.authorize_url(&format!("&state=s%201{extra}")), None)
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{extra}: {}", r.text);
        assert!(
            r.location.as_deref().unwrap().starts_with(APP_CB),
            "{extra}"
        );
        assert_eq!(r.param("error").as_deref(), Some(code), "{extra}");
        assert!(r.param("error_description").is_some());
        assert_eq!(r.param("state").as_deref(), Some("s 1"), "{extra}");
        assert!(r.param("code").is_none());
    }
    // response_type must be code.
    let r = env
        .get(
            &format!(
                "/sso/authorize?client_id={}&redirect_uri={}&response_type=token&connection={id}",
                env.client_id,
                urlencode(APP_CB)
            ),
            None,
        )
        .await;
    assert_eq!(r.param("error").as_deref(), Some("invalid_request"));
    // organization selector with one connection goes to the IdP.
    let r = env
        .get(&env.authorize_url(&format!("&organization={org}")), None)
        .await;
    assert!(r.location.unwrap().starts_with(IDP_SSO));
    assert!(env
        .event_kinds()
        .contains(&"authentication.sso_started".to_string()));
}

#[tokio::test]
async fn full_saml_login_code_token_profile() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();

    let done = env
        .login(
            &id,
            "&login_hint=ada%40acme.example.com",
            "ada@acme.example.com",
        )
        .await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.text);
    assert!(done.location.as_deref().unwrap().starts_with(APP_CB));
    assert_eq!(done.param("state").as_deref(), Some("st-1"));
    assert!(done.param("error").is_none(), "{:?}", done.location);
    let code = done.param("code").unwrap();

    // The code is bound to this client: a wrong secret fails without burning it.
    let bad = env.token(json!({"client_id": env.client_id, "client_secret": "sk_wrong", "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"], "invalid_client");
    let bad = env.token(json!({"client_id": "client_other", "client_secret": env.key, "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(bad.body["error"], "invalid_client");
    let bad = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "password", "code": code})).await;
    assert_eq!(bad.body["error"], "unsupported_grant_type");
    let bad = env
        .token(
            json!({"client_id": env.client_id, "grant_type": "authorization_code", "code": code}),
        )
        .await;
    assert_eq!(bad.body["error"], "invalid_client");

    let t = env
        .token_form(&format!(
            "client_id={}&client_secret={}&grant_type=authorization_code&code={}",
            env.client_id,
            env.key,
            urlencode(&code)
        ))
        .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.text);
    assert_eq!(t.body["token_type"], "Bearer");
    assert_eq!(t.body["expires_in"], 600);
    let p = &t.body["profile"];
    assert_eq!(p["object"], "profile");
    assert!(p["id"].as_str().unwrap().starts_with("prof_"));
    assert_eq!(p["idp_id"], "idp-ada@acme.example.com");
    assert_eq!(p["email"], "ada@acme.example.com");
    assert_eq!(p["first_name"], "Ada");
    assert_eq!(p["last_name"], "Lovelace");
    assert_eq!(p["name"], "Ada Lovelace");
    assert_eq!(p["connection_id"], id.as_str());
    assert_eq!(p["connection_type"], "OktaSAML");
    assert_eq!(p["organization_id"], org.as_str());
    assert_eq!(p["groups"], json!(["g-admins", "g-eng"]));
    assert_eq!(p["custom_attributes"], json!({"department": "R&D"}));
    assert_eq!(p["raw_attributes"], json!({}));
    assert!(p["role"].is_null());

    // Single use.
    let again = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.body["error"], "invalid_grant");
    let unknown = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": "nope"})).await;
    assert_eq!(unknown.body["error"], "invalid_grant");

    // /sso/profile with the access token; 401 otherwise.
    let token = t.body["access_token"].as_str().unwrap();
    let req = Request::builder()
        .uri("/sso/profile")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let prof = env.send(req).await;
    assert_eq!(prof.status, StatusCode::OK);
    assert_eq!(prof.body, *p);
    for auth in [
        None,
        Some("Bearer nope".to_string()),
        Some(format!("Bearer {}", env.key)),
        Some(format!("Basic {token}")),
    ] {
        let mut req = Request::builder().uri("/sso/profile");
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = env.send(req.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.body, json!({"error": "Unauthorized"}));
    }

    // Stable profile id across logins; events and activation.
    let second = env.login(&id, "", "ada@acme.example.com").await;
    let t2 = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": second.param("code").unwrap()})).await;
    assert_eq!(t2.body["profile"]["id"], p["id"]);
    let third = env.login(&id, "", "bob@acme.example.com").await;
    let t3 = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": third.param("code").unwrap()})).await;
    assert_ne!(t3.body["profile"]["id"], p["id"]);
    let kinds = env.event_kinds();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "connection.activated")
            .count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "authentication.sso_succeeded")
            .count(),
        3
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "authentication.sso_started")
            .count(),
        3
    );
    let conn = env.api("GET", &format!("/connections/{id}"), None).await;
    assert_eq!(conn.body["state"], "active");
    assert_eq!(conn.body["status"], "linked");
}

#[tokio::test]
async fn acs_rejects_replays_foreign_sessions_and_forgeries() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let r = env
        .get(
            &env.authorize_url(&format!("&connection={id}&state=abc")),
            None,
        )
        .await;
    let relay = r.param("RelayState").unwrap();
    let xml = idbridge_saml::decode_redirect_binding(&r.param("SAMLRequest").unwrap()).unwrap();
    let req_id = xml
        .split("ID=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let cookie = r.cookies[0].split(';').next().unwrap().to_string();

    // Signed by another key: rejected, error redirect to the app, generic description.
    let forger = IdpSigner::generate(IDP_ENTITY).unwrap();
    let acs = format!("http://127.0.0.1:8080/sso/saml/acs/{id}");
    let now = chrono::Utc::now();
    let a = AssertionSpec::new(
        IDP_ENTITY,
        &format!("http://127.0.0.1:8080/sso/saml/{id}"),
        &acs,
        "eve@x.com",
        Some(&req_id),
        now,
    )
    .unwrap();
    let resp = ResponseSpec::new(IDP_ENTITY, &acs, Some(&req_id), now).unwrap();
    let forged = b64(&forger.response(&resp, &a, SignMode::Assertion).unwrap());
    let f = env
        .post_acs(&id, &forged, Some(&relay), Some(&cookie))
        .await;
    assert_eq!(f.status, StatusCode::FOUND);
    assert_eq!(f.param("error").as_deref(), Some("server_error"));
    assert_eq!(f.param("state").as_deref(), Some("abc"));
    assert!(f.param("code").is_none());
    assert!(env
        .event_kinds()
        .contains(&"authentication.sso_failed".to_string()));

    // The session was single-use: even a genuine response now has no session, and IdP-initiated
    // is off → idp_initiated_sso_disabled to the default redirect URI.
    let genuine = env.saml_response(&id, Some(&req_id), "ada@acme.example.com");
    let g = env
        .post_acs(&id, &genuine, Some(&relay), Some(&cookie))
        .await;
    assert_eq!(g.status, StatusCode::FOUND);
    assert_eq!(
        g.param("error").as_deref(),
        Some("idp_initiated_sso_disabled")
    );
    assert_eq!(g.param("connection").as_deref(), Some(id.as_str()));
    assert!(g.param("code").is_none());

    // Garbage and unknown connections never 500.
    let junk = env.post_acs(&id, "!!!notbase64", None, None).await;
    assert!(junk.status.is_redirection() || junk.status.is_client_error());
    let missing = env
        .post_acs("conn_01HZZZZZZZZZZZZZZZZZZZZZZZ", &genuine, None, None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let req = Request::builder()
        .method("POST")
        .uri(format!("/sso/saml/acs/{id}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("nothing=here"))
        .unwrap();
    assert_eq!(env.send(req).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn idp_initiated_login_on_off_relay_state_and_replay() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let off = env.saml_conn(&org, json!({})).await;
    let on = env
        .saml_conn(&org, json!({"allow_idp_initiated": true}))
        .await;
    let off_id = off["id"].as_str().unwrap();
    let on_id = on["id"].as_str().unwrap();

    let r = env
        .post_acs(
            off_id,
            &env.saml_response(off_id, None, "ada@acme.example.com"),
            None,
            None,
        )
        .await;
    assert_eq!(
        r.param("error").as_deref(),
        Some("idp_initiated_sso_disabled")
    );
    assert!(r.location.as_deref().unwrap().starts_with(APP_CB));

    let saml = env.saml_response(on_id, None, "ada@acme.example.com");
    let r = env.post_acs(on_id, &saml, None, None).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert!(r.location.as_deref().unwrap().starts_with(APP_CB));
    let code = r.param("code").expect("a code");
    let t = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.text);

    // Replaying the same response fails.
    let replay = env.post_acs(on_id, &saml, None, None).await;
    assert_eq!(replay.param("error").as_deref(), Some("server_error"));

    // RelayState redirect_uri: an allowed exact URI is honoured, anything else is discarded.
    let r = env
        .post_acs(
            on_id,
            &env.saml_response(on_id, None, "a@acme.example.com"),
            Some(&format!("redirect_uri={}", urlencode(APP_CB))),
            None,
        )
        .await;
    assert!(r.location.as_deref().unwrap().starts_with(APP_CB));
    let r = env
        .post_acs(
            on_id,
            &env.saml_response(on_id, None, "b@acme.example.com"),
            Some("redirect_uri=https%3A%2F%2Fevil.example.com%2Fcb"),
            None,
        )
        .await;
    let loc = r.location.unwrap();
    assert!(loc.starts_with(APP_CB) && !loc.contains("evil"), "{loc}");
}

#[tokio::test]
async fn pkce_codes_need_the_verifier() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let (verifier, challenge) = pkce_pair();
    let extra = format!("&code_challenge={challenge}&code_challenge_method=S256");

    let done = env.login(&id, &extra, "ada@acme.example.com").await;
    let code = done.param("code").unwrap();
    let wrong = env.token(json!({"client_id": env.client_id, "grant_type": "authorization_code", "code": code, "code_verifier": "w".repeat(50)})).await;
    assert_eq!(wrong.body["error"], "invalid_grant");
    // The code is burnt by a failed verifier (RFC 7636).
    let right = env.token(json!({"client_id": env.client_id, "grant_type": "authorization_code", "code": code, "code_verifier": verifier})).await;
    assert_eq!(right.body["error"], "invalid_grant");

    let done = env.login(&id, &extra, "ada@acme.example.com").await;
    let code = done.param("code").unwrap();
    // An API key does not replace the verifier of a PKCE login.
    let no_verifier = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(no_verifier.body["error"], "invalid_grant");

    let done = env.login(&id, &extra, "ada@acme.example.com").await;
    let code = done.param("code").unwrap();
    let ok = env.token(json!({"client_id": env.client_id, "grant_type": "authorization_code", "code": code, "code_verifier": verifier})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    // A verifier for a non-PKCE code without the API key is refused.
    let done = env.login(&id, "", "ada@acme.example.com").await;
    let code = done.param("code").unwrap();
    let r = env.token(json!({"client_id": env.client_id, "grant_type": "authorization_code", "code": code, "code_verifier": verifier})).await;
    assert_eq!(r.body["error"], "invalid_grant");
    // redirect_uri, when sent, must match.
    let done = env.login(&id, "", "ada@acme.example.com").await;
    let code = done.param("code").unwrap();
    let r = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code, "redirect_uri": "https://other.example.com/cb"})).await;
    assert_eq!(r.body["error"], "invalid_grant");
}

#[tokio::test]
async fn codes_and_tokens_expire() {
    let env = Env::with(SsoConfig {
        redirect_uris: vec![APP_CB.into()],
        code_ttl: Duration::from_secs(1),
        access_token_ttl: Duration::from_secs(1),
        ..SsoConfig::default()
    });
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let a = env
        .login(&id, "", "ada@acme.example.com")
        .await
        .param("code")
        .unwrap();
    let b = env
        .login(&id, "", "ada@acme.example.com")
        .await
        .param("code")
        .unwrap();
    let t = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": a})).await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.body["expires_in"], 1);
    let token = t.body["access_token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let late = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": b})).await;
    assert_eq!(late.body["error"], "invalid_grant");
    let req = Request::builder()
        .uri("/sso/profile")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(req).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn profile_roles_come_from_org_role_mappings() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    // Roles live in the directory engine: the same settings give directory users their roles.
    let engine = idbridge_directory::DirectoryEngine::new(
        env.store.clone(),
        Arc::new(idbridge_sso::organizations::Organizations::new(
            env.store.clone(),
        )),
    );
    let ts = idbridge_model::Timestamp::now();
    let roles = [
        ("member", 100, true),
        ("admin", 1, false),
        ("eng", 10, false),
    ]
    .into_iter()
    .map(|(slug, prio, default)| idbridge_model::Role {
        slug: slug.into(),
        name: slug.into(),
        description: None,
        priority: prio,
        is_default: default,
        created_at: ts,
        updated_at: ts,
    })
    .collect();
    engine.set_roles(&org, roles).unwrap();
    let mappings = [("g-admins", "admin"), ("g-eng", "eng")]
        .into_iter()
        .map(|(g, slug)| idbridge_model::RoleMapping {
            organization_id: org.clone(),
            idp_group: g.into(),
            role_slug: slug.into(),
        })
        .collect();
    engine.set_role_mappings(&org, mappings).unwrap();
    let code = env
        .login(&id, "", "ada@acme.example.com")
        .await
        .param("code")
        .unwrap();
    let t = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(t.body["profile"]["role"], json!({"slug": "admin"}));
    assert_eq!(t.body["profile"]["roles"], json!([{"slug": "admin"}]));

    engine
        .set_role_mode(&org, idbridge_model::RoleMode::Multiple)
        .unwrap();
    let code = env
        .login(&id, "", "ada@acme.example.com")
        .await
        .param("code")
        .unwrap();
    let t = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(
        t.body["profile"]["roles"],
        json!([{"slug": "admin"}, {"slug": "eng"}])
    );
}

#[tokio::test]
async fn oidc_idp_errors_and_unreachable_provider() {
    let env = Env::new();
    let org = env.org("Acme").await;
    // A provider on a closed loopback port: discovery fails → server_error redirect.
    let r = env
        .api(
            "POST",
            "/connections",
            Some(
                json!({"organization_id": org, "connection_type": "GenericOIDC", "oidc_options": {
                "issuer": "http://127.0.0.1:9", "client_id": "abc", "client_secret": "s3cret"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let a = env
        .get(
            &env.authorize_url(&format!("&connection={id}&state=x")),
            None,
        )
        .await;
    assert_eq!(a.param("error").as_deref(), Some("server_error"));
    assert_eq!(a.param("state").as_deref(), Some("x"));

    // Callback without a session: 400, no redirect.
    let cb = env.get("/sso/oidc/callback?state=abc&code=def", None).await;
    assert_eq!(cb.status, StatusCode::BAD_REQUEST);
    assert!(cb.location.is_none());

    // A session whose IdP answered error=access_denied → access_denied to the app.
    let state_param = "oidc-state-value";
    let key = idbridge_sso::login::relay_key_for_state(state_param);
    let sid = "session-id-value-0123456789";
    let session = idbridge_sso::login::LoginSession {
        connection_id: id.clone(),
        organization_id: Some(org.clone()),
        client_id: env.client_id.clone(),
        redirect_uri: APP_CB.into(),
        state: Some("app-state".into()),
        code_challenge: None,
        saml_request_id: None,
        relay_key: key.clone(),
        oidc_state: Some(state_param.into()),
        oidc_nonce: Some("n".into()),
        oidc_verifier_sealed: None,
        ip_address: None,
        user_agent: None,
    };
    env.state
        .sso
        .put_login_session(sid, &session, Duration::from_secs(60))
        .unwrap();
    let cookie = format!("{}{key}={sid}", super::COOKIE_PREFIX);
    let cb = env
        .get(
            &format!(
                "/sso/oidc/callback?state={state_param}&error=access_denied&error_description=nope"
            ),
            Some(&cookie),
        )
        .await;
    assert_eq!(cb.status, StatusCode::FOUND);
    assert_eq!(cb.param("error").as_deref(), Some("access_denied"));
    assert_eq!(cb.param("state").as_deref(), Some("app-state"));
    // Single-use session.
    let again = env
        .get(
            &format!("/sso/oidc/callback?state={state_param}&error=access_denied"),
            Some(&cookie),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn create_is_idempotent_on_external_id_within_an_organization() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let other = env.org("Other").await;
    let body = |org: &str| {
        json!({"organization_id": org, "external_id": "ext-1", "saml_options": {
            "idp_entity_id": IDP_ENTITY, "idp_sso_url": IDP_SSO, "idp_signing_certs": [env.cert_pem()]}})
    };
    let a = env.api("POST", "/connections", Some(body(&org))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let b = env.api("POST", "/connections", Some(body(&org))).await;
    assert_eq!(b.body["id"], a.body["id"]);
    assert_eq!(
        env.api("GET", "/connections", None).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The same external id in another organization is refused.
    let c = env.api("POST", "/connections", Some(body(&other))).await;
    assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", c.text);
    // py10's OIDC shape (`discovery_endpoint`) is accepted.
    let o = env
        .api("POST", "/connections", Some(json!({"organization_id": org, "connection_type": "EntraIdOIDC", "oidc_options": {
            "discovery_endpoint": "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
            "client_id": "abc", "client_secret": "s"}})))
        .await;
    assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
    let id = o.body["id"].as_str().unwrap();
    let view = env
        .api("GET", &format!("/admin/connections/{id}"), None)
        .await;
    assert_eq!(
        view.body["settings"]["issuer"],
        "https://login.example.com/tenant/v2.0"
    );
}

fn metadata_xml(signer: &IdpSigner) -> String {
    let cert = base64::engine::general_purpose::STANDARD.encode(signer.keys.cert.to_der().unwrap());
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{IDP_ENTITY}\"><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{IDP_SSO}\"/></md:IDPSSODescriptor></md:EntityDescriptor>"
    )
}

#[tokio::test]
async fn metadata_url_refresh_picks_up_new_certs_and_announces_expiry() {
    let mut env = Env::new();
    let served = Arc::new(std::sync::Mutex::new(metadata_xml(&env.idp)));
    let s = served.clone();
    let app = axum::Router::new().route(
        "/metadata",
        axum::routing::get(move || {
            let s = s.clone();
            async move { s.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let org = env.org("Acme").await;
    let r = env
        .api("POST", "/connections", Some(json!({"organization_id": org, "saml_options": {"idp_metadata_url": format!("http://{addr}/metadata")}})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(env
        .login(&id, "", "a@acme.example.com")
        .await
        .param("code")
        .is_some());

    // Nothing changed: nothing happens.
    let rep = env.state.sso.refresh_metadata().await.unwrap();
    assert_eq!(
        (rep.checked, rep.renewed, rep.renewal_required, rep.failed),
        (1, 0, 0, 0)
    );

    // The IdP rolls its key: the refresh trusts the new certificate (and only it).
    let old = std::mem::replace(&mut env.idp, IdpSigner::generate(IDP_ENTITY).unwrap());
    *served.lock().unwrap() = metadata_xml(&env.idp);
    let rep = env.state.sso.refresh_metadata().await.unwrap();
    assert_eq!(rep.renewed, 1);
    assert!(env
        .event_kinds()
        .contains(&"connection.saml_certificate_renewed".to_string()));
    assert!(env
        .login(&id, "", "a@acme.example.com")
        .await
        .param("code")
        .is_some());
    env.idp = old;
    assert_eq!(
        env.login(&id, "", "a@acme.example.com")
            .await
            .param("error")
            .as_deref(),
        Some("server_error")
    );

    // An unreachable URL counts as failed and changes nothing.
    *served.lock().unwrap() = "<garbage/>".into();
    let rep = env.state.sso.refresh_metadata().await.unwrap();
    assert_eq!((rep.renewed, rep.failed), (0, 1));

    // A certificate close to expiry is announced once.
    let short = IdpSigner {
        entity_id: IDP_ENTITY.into(),
        keys: idbridge_saml::SpKeyPair::generate("short", 10).unwrap(),
    };
    let pem = String::from_utf8(short.keys.cert.to_pem().unwrap()).unwrap();
    let r = env
        .api("POST", "/connections", Some(json!({"organization_id": org, "saml_options": {"idp_entity_id": IDP_ENTITY, "idp_sso_url": IDP_SSO, "idp_signing_certs": [pem]}})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let rep = env.state.sso.refresh_metadata().await.unwrap();
    assert_eq!(rep.renewal_required, 1);
    let rep = env.state.sso.refresh_metadata().await.unwrap();
    assert_eq!(rep.renewal_required, 0);
    let n = env
        .event_kinds()
        .iter()
        .filter(|k| *k == "connection.saml_certificate_renewal_required")
        .count();
    assert_eq!(n, 1);
    // Both payloads as `/events` serves them, against @workos/openapi-spec's EventSchema.
    let page = env
        .api(
            "GET",
            "/events?events=connection.saml_certificate_renewed,connection.saml_certificate_renewal_required&limit=100",
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(
        page.body["data"].as_array().map(Vec::len),
        Some(2),
        "{}",
        page.text
    );
    matches_workos_spec("/events", "get", 200, &page.text);
}

/// Validates a raw body with tests/js/openapi_check.mjs (the validator the SDK tests use). Needs
/// Node and tests/js/node_modules (`scripts/test-deps.sh`); `IDBRIDGE_SKIP_PEERS=1` turns their
/// absence into a skip, as for the SDK tests.
fn matches_workos_spec(path: &str, method: &str, status: u16, body: &str) {
    use std::io::Write as _;
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    if !js.join("node_modules/@workos/openapi-spec").exists()
        && std::env::var("IDBRIDGE_SKIP_PEERS").as_deref() == Ok("1")
    {
        eprintln!("skipped: no tests/js/node_modules (IDBRIDGE_SKIP_PEERS=1)");
        return;
    }
    let mut child = std::process::Command::new("node")
        .arg(js.join("openapi_check.mjs"))
        .args([path, method, &status.to_string()])
        .current_dir(&js)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (scripts/test-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{method} {path} {status} does not match the spec:\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn emails_outside_the_organizations_domains_are_refused() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let r = env.login(&id, "", "mallory@evil.example.net").await;
    assert_eq!(
        r.param("error").as_deref(),
        Some("profile_not_allowed_outside_organization")
    );
    assert!(r.param("code").is_none());
    // Subdomains are not the domain.
    let r = env.login(&id, "", "x@sub.acme.example.com").await;
    assert_eq!(
        r.param("error").as_deref(),
        Some("profile_not_allowed_outside_organization")
    );
    // Allowed once the organization says so.
    let u = env
        .api(
            "PUT",
            &format!("/organizations/{org}"),
            Some(json!({"allow_profiles_outside_organization": true})),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.text);
    assert!(env
        .login(&id, "", "mallory@evil.example.net")
        .await
        .param("code")
        .is_some());
}

/// Starts a login and returns (request id, RelayState, cookie, IdP URL).
async fn start(env: &Env, conn_id: &str, extra: &str) -> (String, String, String, String) {
    let r = env
        .get(
            &env.authorize_url(&format!("&connection={conn_id}{extra}")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let xml = idbridge_saml::decode_redirect_binding(&r.param("SAMLRequest").unwrap()).unwrap();
    let id = xml
        .split("ID=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let cookie = r.cookies[0].split(';').next().unwrap().to_string();
    (
        id,
        r.param("RelayState").unwrap(),
        cookie,
        r.location.unwrap(),
    )
}

#[tokio::test]
async fn signed_requests_force_authn_and_encrypted_assertions_across_rotation() {
    use idbridge_saml::idp::{DataEnc, KeyEnc};
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({"sign_requests": true})).await;
    let id = c["id"].as_str().unwrap().to_string();

    // Signed AuthnRequest (Redirect binding) and prompt=login → ForceAuthn.
    let r = env
        .get(
            &env.authorize_url(&format!("&connection={id}&prompt=login")),
            None,
        )
        .await;
    assert!(
        r.param("Signature").is_some() && r.param("SigAlg").is_some(),
        "{:?}",
        r.location
    );
    let xml = idbridge_saml::decode_redirect_binding(&r.param("SAMLRequest").unwrap()).unwrap();
    assert!(xml.contains("ForceAuthn=\"true\""), "{xml}");
    let plain = env
        .get(&env.authorize_url(&format!("&connection={id}")), None)
        .await;
    let xml = idbridge_saml::decode_redirect_binding(&plain.param("SAMLRequest").unwrap()).unwrap();
    assert!(!xml.contains("ForceAuthn"));

    // An assertion encrypted to our published encryption certificate is accepted.
    let view = env
        .api("GET", &format!("/admin/connections/{id}"), None)
        .await;
    let old_pem = view.body["settings"]["sp_encryption_certs"][0]
        .as_str()
        .unwrap()
        .to_string();
    let encrypted = |pem: &str, req_id: &str| {
        let cert = openssl::x509::X509::from_pem(pem.as_bytes()).unwrap();
        let acs = format!("http://127.0.0.1:8080/sso/saml/acs/{id}");
        let now = chrono::Utc::now();
        let mut a = AssertionSpec::new(
            IDP_ENTITY,
            &format!("http://127.0.0.1:8080/sso/saml/{id}"),
            &acs,
            "enc@acme.example.com",
            Some(req_id),
            now,
        )
        .unwrap();
        a.attributes = vec![("email".into(), vec!["enc@acme.example.com".into()])];
        let resp = ResponseSpec::new(IDP_ENTITY, &acs, Some(req_id), now).unwrap();
        b64(&env
            .idp
            .encrypted_response(
                &resp,
                &a,
                &cert,
                DataEnc::Aes256Gcm,
                KeyEnc::OaepSha1,
                true,
                false,
            )
            .unwrap())
    };
    let (req, relay, cookie, _) = start(&env, &id, "").await;
    let done = env
        .post_acs(&id, &encrypted(&old_pem, &req), Some(&relay), Some(&cookie))
        .await;
    assert!(done.param("code").is_some(), "{:?}", done.location);

    // After a rotation, the previous key still decrypts; the new one too.
    let rot = env
        .api(
            "POST",
            &format!("/admin/connections/{id}/rotate_sp_keys"),
            None,
        )
        .await;
    let new_pem = rot.body["settings"]["sp_encryption_certs"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_pem, old_pem);
    for pem in [&old_pem, &new_pem] {
        let (req, relay, cookie, _) = start(&env, &id, "").await;
        let done = env
            .post_acs(&id, &encrypted(pem, &req), Some(&relay), Some(&cookie))
            .await;
        assert!(done.param("code").is_some(), "{:?}", done.location);
    }
    // Encrypted to a key we never had: refused.
    let stranger = idbridge_saml::SpKeyPair::generate("stranger", 1).unwrap();
    let stranger_pem = String::from_utf8(stranger.cert.to_pem().unwrap()).unwrap();
    let (req, relay, cookie, _) = start(&env, &id, "").await;
    let done = env
        .post_acs(
            &id,
            &encrypted(&stranger_pem, &req),
            Some(&relay),
            Some(&cookie),
        )
        .await;
    assert_eq!(done.param("error").as_deref(), Some("server_error"));
}

/// A store that records every change set it commits (the expiring-entry helpers commit
/// change sets too, so nothing escapes the count).
struct CountingStore {
    inner: SqliteStore,
    commits: std::sync::Mutex<Vec<idbridge_store::ChangeSet>>,
}

impl CountingStore {
    fn take(&self) -> Vec<idbridge_store::ChangeSet> {
        std::mem::take(&mut *self.commits.lock().unwrap())
    }
}

impl Store for CountingStore {
    fn commit_applied(
        &self,
        changes: idbridge_store::ChangeSet,
    ) -> idbridge_store::Result<(idbridge_store::CommitReceipt, idbridge_store::PendingSync)> {
        self.commits.lock().unwrap().push(changes.clone());
        self.inner.commit_applied(changes)
    }
    fn wait_durable(&self, pending: idbridge_store::PendingSync) -> idbridge_store::Result<()> {
        self.inner.wait_durable(pending)
    }
    fn get(&self, table: &str, key: &str) -> idbridge_store::Result<Option<Vec<u8>>> {
        self.inner.get(table, key)
    }
    fn scan(
        &self,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> idbridge_store::Result<Vec<(String, Vec<u8>)>> {
        self.inner.scan(table, prefix, after, limit)
    }
    fn scan_rev(
        &self,
        table: &str,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> idbridge_store::Result<Vec<(String, Vec<u8>)>> {
        self.inner.scan_rev(table, prefix, before, limit)
    }
    fn count_prefix(&self, table: &str, prefix: &str) -> idbridge_store::Result<u64> {
        self.inner.count_prefix(table, prefix)
    }
    fn events_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> idbridge_store::Result<Vec<idbridge_store::StoredEvent>> {
        self.inner.events_after(after_seq, limit)
    }
    fn event_seq(&self, event_id: &str) -> idbridge_store::Result<Option<u64>> {
        self.inner.event_seq(event_id)
    }
    fn last_event_seq(&self) -> idbridge_store::Result<u64> {
        self.inner.last_event_seq()
    }
    fn compact_events_before(&self, cutoff_ms: i64) -> idbridge_store::Result<u64> {
        self.inner.compact_events_before(cutoff_ms)
    }
    fn get_expiring(
        &self,
        table: &str,
        key: &str,
        now_ms: i64,
    ) -> idbridge_store::Result<Option<Vec<u8>>> {
        self.inner.get_expiring(table, key, now_ms)
    }
    fn purge_expired(&self, now_ms: i64) -> idbridge_store::Result<u64> {
        self.inner.purge_expired(now_ms)
    }
    fn export(
        &self,
        sink: &mut dyn FnMut(idbridge_store::ExportRecord) -> idbridge_store::Result<()>,
    ) -> idbridge_store::Result<()> {
        self.inner.export(sink)
    }
    fn import(
        &self,
        records: &mut dyn Iterator<Item = idbridge_store::Result<idbridge_store::ExportRecord>>,
    ) -> idbridge_store::Result<u64> {
        self.inner.import(records)
    }
    fn stats(&self) -> idbridge_store::StoreStats {
        self.inner.stats()
    }
}

/// Issue 18: the ACS step of a login is ONE store commit holding the session take, the SAML
/// replay entry, the profile id, the code, `authentication.sso_succeeded` and the first-login
/// activation; the token exchange is one commit too (code take + token).
#[tokio::test]
async fn a_login_is_one_commit() {
    let counting = Arc::new(CountingStore {
        inner: SqliteStore::open_ephemeral().unwrap(),
        commits: std::sync::Mutex::new(Vec::new()),
    });
    let env = Env::with_store(
        SsoConfig {
            redirect_uris: vec![APP_CB.into()],
            ..SsoConfig::default()
        },
        counting.clone(),
    );
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["state"], "draft");

    counting.take();
    let (saml, relay, cookie) = env.authorize_at_idp(&id, "", "ada@acme.example.com").await;
    let authorize = counting.take();
    assert_eq!(authorize.len(), 1, "authorize: the session and its event");

    let done = env.post_acs(&id, &saml, Some(&relay), Some(&cookie)).await;
    let code = done.param("code").expect("a code");
    let commits = counting.take();
    assert_eq!(commits.len(), 1, "the ACS is one commit: {commits:#?}");
    let cs = &commits[0];
    let kinds: Vec<&str> = cs.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["authentication.sso_succeeded", "connection.activated"],
        "the first login activates the connection in the same commit"
    );
    assert_eq!(cs.expiring_deletes.len(), 1, "the session is taken");
    let puts_to = |table: &str| cs.expiring_puts.iter().filter(|p| p.table == table).count();
    assert_eq!(puts_to(idbridge_sso::login::CODES), 1, "the code");
    assert!(
        puts_to(idbridge_sso::login::SAML_REPLAY) >= 1,
        "the replay entries"
    );
    // The profile's logout session (NameID, SessionIndex) is kept by the same commit.
    assert_eq!(
        puts_to(idbridge_sso::login::logout::LOGOUT_SESSIONS),
        1,
        "the logout session"
    );
    assert_eq!(
        cs.expiring_puts.len(),
        puts_to(idbridge_sso::login::CODES)
            + puts_to(idbridge_sso::login::SAML_REPLAY)
            + puts_to(idbridge_sso::login::logout::LOGOUT_SESSIONS)
    );
    assert!(cs
        .conditions
        .iter()
        .any(|c| matches!(c, idbridge_store::Condition::ExpiringLive { .. })));
    assert!(cs
        .conditions
        .iter()
        .any(|c| matches!(c, idbridge_store::Condition::ExpiringVacant { .. })));
    // The profile id and the activated connection record (plus nothing else).
    assert_eq!(
        cs.puts.len(),
        2,
        "{:?}",
        cs.puts.iter().map(|p| &p.table).collect::<Vec<_>>()
    );
    let conn = env.api("GET", &format!("/connections/{id}"), None).await;
    assert_eq!(conn.body["state"], "active");

    let t = env
        .token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code}))
        .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.text);
    assert_eq!(counting.take().len(), 1, "the token exchange is one commit");

    // A second login of the same user on the now active connection: still one commit, and
    // it neither re-activates nor mints a new profile id.
    let (saml, relay, cookie) = env.authorize_at_idp(&id, "", "ada@acme.example.com").await;
    counting.take();
    let again = env.post_acs(&id, &saml, Some(&relay), Some(&cookie)).await;
    assert!(again.param("code").is_some());
    let commits = counting.take();
    assert_eq!(commits.len(), 1);
    assert!(
        commits[0].puts.is_empty(),
        "nothing but expiring entries and the event"
    );
    let kinds: Vec<&str> = commits[0].events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["authentication.sso_succeeded"]);

    // A replayed response is refused in one commit too (the session take and sso_failed),
    // and leaves no code.
    let (_, relay2, cookie2) = env.authorize_at_idp(&id, "", "ada@acme.example.com").await;
    counting.take();
    let replay = env
        .post_acs(&id, &saml, Some(&relay2), Some(&cookie2))
        .await;
    assert!(replay.param("code").is_none(), "{:?}", replay.location);
    let commits = counting.take();
    assert!(commits.len() <= 1, "{commits:#?}");
    for cs in &commits {
        assert!(cs.expiring_puts.is_empty(), "no code for a replay");
        assert!(cs
            .events
            .iter()
            .all(|e| e.kind != "authentication.sso_succeeded"));
    }
}

const IDP_SLO: &str = "https://idp.example.org/slo";

/// `(signed octets, signature)` of a Redirect-binding URL as an IdP splits it.
fn redirect_signature(location: &str) -> (String, Vec<u8>) {
    let query = location.split_once('?').unwrap().1;
    let (signed, sig) = query.rsplit_once("&Signature=").unwrap();
    let sig = url::form_urlencoded::parse(format!("s={sig}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    (
        signed.to_string(),
        base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap(),
    )
}

/// The SP signing certificate our metadata publishes for `conn_id`.
async fn sp_signing_cert(env: &Env, conn_id: &str) -> (openssl::x509::X509, String) {
    let md = env
        .get(&format!("/sso/saml/metadata/{conn_id}"), None)
        .await;
    assert_eq!(md.status, StatusCode::OK);
    let b64 = md
        .text
        .split("<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    (openssl::x509::X509::from_der(&der).unwrap(), md.text)
}

async fn profile_id_after_login(env: &Env, conn_id: &str, email: &str) -> String {
    let done = env.login(conn_id, "", email).await;
    let code = done.param("code").unwrap();
    let t = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.text);
    t.body["profile"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn single_logout_sends_a_signed_logout_request_once() {
    let env = Env::new();
    let org = env.org("Slo").await;
    let c = env.saml_conn(&org, json!({"idp_slo_url": IDP_SLO})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let (cert, md) = sp_signing_cert(&env, &id).await;
    assert!(
        md.contains(&format!("<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"http://127.0.0.1:8080/sso/saml/slo/{id}\"/>")),
        "{md}"
    );
    assert!(
        md.contains(&format!("<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"http://127.0.0.1:8080/sso/saml/slo/{id}\"/>")),
        "the POST endpoint is published beside Redirect: {md}"
    );
    let profile_id = profile_id_after_login(&env, &id, "ada@slo.example.com").await;

    let auth = env
        .api(
            "POST",
            "/sso/logout/authorize",
            Some(json!({"profile_id": profile_id})),
        )
        .await;
    assert_eq!(auth.status, StatusCode::OK, "{}", auth.text);
    let token = auth.body["logout_token"].as_str().unwrap().to_string();
    assert!(token.len() >= 32);
    assert_eq!(
        auth.body["logout_url"],
        format!("http://127.0.0.1:8080/sso/logout?token={token}")
    );
    assert_eq!(auth.body.as_object().unwrap().len(), 2, "{}", auth.text);

    let out = env.get(&format!("/sso/logout?token={token}"), None).await;
    assert_eq!(out.status, StatusCode::FOUND, "{}", out.text);
    let location = out.location.clone().unwrap();
    assert!(
        location.starts_with(&format!("{IDP_SLO}?SAMLRequest=")),
        "{location}"
    );
    assert_eq!(
        out.param("SigAlg").as_deref(),
        Some("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
    );
    // Signed with the connection's SP signing key, over the query as sent.
    let (signed, sig) = redirect_signature(&location);
    let key = cert.public_key().unwrap();
    let verify = |data: &str| {
        let mut v =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        v.update(data.as_bytes()).unwrap();
        v.verify(&sig).unwrap_or(false)
    };
    assert!(verify(&signed));
    assert!(!verify(&signed.replace("SigAlg=", "SigAlg=x")));
    let xml = idbridge_saml::decode_redirect_binding(&out.param("SAMLRequest").unwrap()).unwrap();
    assert!(xml.starts_with("<samlp:LogoutRequest "), "{xml}");
    assert!(xml.contains(&format!("Destination=\"{IDP_SLO}\"")));
    assert!(xml.contains(&format!(
        "<saml:Issuer>http://127.0.0.1:8080/sso/saml/{id}</saml:Issuer>"
    )));
    assert!(xml.contains("<saml:NameID Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\">ada@slo.example.com</saml:NameID>"), "{xml}");
    assert!(
        xml.contains("<samlp:SessionIndex>_session1</samlp:SessionIndex>"),
        "{xml}"
    );

    // Single use; the login session is ended, so no new token either.
    let again = env.get(&format!("/sso/logout?token={token}"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text);
    assert!(again.body["message"].as_str().unwrap().contains("logout"));
    let gone = env
        .api(
            "POST",
            "/sso/logout/authorize",
            Some(json!({"profile_id": profile_id})),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text);
    // A new login can be logged out again.
    let again_id = profile_id_after_login(&env, &id, "ada@slo.example.com").await;
    assert_eq!(again_id, profile_id);
    let auth = env
        .api(
            "POST",
            "/sso/logout/authorize",
            Some(json!({"profile_id": profile_id})),
        )
        .await;
    assert_eq!(auth.status, StatusCode::OK, "{}", auth.text);
}

#[tokio::test]
async fn logout_refuses_bad_input_unknown_profiles_and_connections_without_slo() {
    let env = Env::new();
    let org = env.org("NoSlo").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let (_, md) = sp_signing_cert(&env, &id).await;
    assert!(!md.contains("SingleLogoutService"), "{md}");
    let profile_id = profile_id_after_login(&env, &id, "bob@noslo.example.com").await;

    let r = env
        .api(
            "POST",
            "/sso/logout/authorize",
            Some(json!({"profile_id": profile_id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"], "connection_invalid");
    assert!(r.body["error_description"]
        .as_str()
        .unwrap()
        .contains("SingleLogoutService"));

    let r = env
        .api(
            "POST",
            "/sso/logout/authorize",
            Some(json!({"profile_id": "prof_01HZZZZZZZZZZZZZZZZZZZZZZZ"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("Profile"));

    let r = env
        .api(
            "POST",
            "/sso/logout/authorize",
            Some(json!({"profile_id": profile_id, "return_to": "https://x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("return_to"), "{}", r.text);
    let r = env
        .api("POST", "/sso/logout/authorize", Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("profile_id"), "{}", r.text);

    // The API key is required.
    let req = Request::builder()
        .method("POST")
        .uri("/sso/logout/authorize")
        .header("content-type", "application/json")
        .body(Body::from(json!({"profile_id": profile_id}).to_string()))
        .unwrap();
    assert_eq!(env.send(req).await.status, StatusCode::UNAUTHORIZED);

    for uri in [
        "/sso/logout",
        "/sso/logout?token=",
        "/sso/logout?token=nope",
    ] {
        let r = env.get(uri, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}: {}", r.text);
        assert!(r.body["message"].is_string(), "{uri}");
        assert!(r.location.is_none());
    }
}

/// An IdP's logout message for our SLO endpoint, signed with `key` (or not signed at all).
fn idp_logout_message(
    conn_id: &str,
    root: &str,
    issuer: &str,
    destination: &str,
    extra_attrs: &str,
    children: &str,
    key: Option<&openssl::pkey::PKey<openssl::pkey::Private>>,
) -> String {
    let id = format!("_idp{}", &idbridge_saml::sp::new_id().unwrap()[1..]);
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let xml = format!(
        "<samlp:{root} xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{destination}\"{extra_attrs}><saml:Issuer>{issuer}</saml:Issuer>{children}</samlp:{root}>"
    );
    let param = if root == "LogoutResponse" {
        "SAMLResponse"
    } else {
        "SAMLRequest"
    };
    let base = format!("http://127.0.0.1:8080/sso/saml/slo/{conn_id}");
    let throwaway = SecretlessKey::rsa();
    let url =
        idbridge_saml::slo::signed_redirect(&base, param, &xml, None, key.unwrap_or(&throwaway))
            .unwrap();
    // Unsigned: the same message without SigAlg and Signature.
    let url = match key {
        Some(_) => url,
        None => url.split("&SigAlg=").next().unwrap().to_string(),
    };
    url.trim_start_matches("http://127.0.0.1:8080").to_string()
}

/// A throwaway RSA key (for messages whose signature is then removed).
struct SecretlessKey;

impl SecretlessKey {
    fn rsa() -> openssl::pkey::PKey<openssl::pkey::Private> {
        openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
    }
}

/// Starts a logout and returns the LogoutRequest id we sent.
async fn started_logout(env: &Env, conn_id: &str, email: &str) -> String {
    let profile_id = profile_id_after_login(env, conn_id, email).await;
    let auth = env
        .api(
            "POST",
            "/sso/logout/authorize",
            Some(json!({"profile_id": profile_id})),
        )
        .await;
    let url = auth.body["logout_url"].as_str().unwrap();
    let out = env
        .get(url.trim_start_matches("http://127.0.0.1:8080"), None)
        .await;
    assert_eq!(out.status, StatusCode::FOUND, "{}", out.text);
    let xml = idbridge_saml::decode_redirect_binding(&out.param("SAMLRequest").unwrap()).unwrap();
    xml.split("ID=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

const SUCCESS: &str =
    "<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>";

#[tokio::test]
async fn logout_responses_are_accepted_only_signed_by_the_idp_and_once() {
    let env = Env::new();
    let org = env.org("SloResp").await;
    let c = env.saml_conn(&org, json!({"idp_slo_url": IDP_SLO})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let dest = format!("http://127.0.0.1:8080/sso/saml/slo/{id}");
    let request_id = started_logout(&env, &id, "eve@sloresp.example.com").await;
    let irt = format!(" InResponseTo=\"{request_id}\"");
    let idp_key = env.idp.keys.key.clone();
    let attacker = IdpSigner::generate(IDP_ENTITY).unwrap();
    let refused = |r: &Resp, what: &str| {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_logout_message", "{what}");
        assert!(r.location.is_none(), "{what}");
    };
    // Each rule on its own: unsigned, forged (another key), wrong issuer, wrong destination,
    // unknown InResponseTo, a LogoutRequest where a response is expected (and vice versa).
    let cases = [
        (
            "unsigned",
            idp_logout_message(
                &id,
                "LogoutResponse",
                IDP_ENTITY,
                &dest,
                &irt,
                SUCCESS,
                None,
            ),
        ),
        (
            "forged",
            idp_logout_message(
                &id,
                "LogoutResponse",
                IDP_ENTITY,
                &dest,
                &irt,
                SUCCESS,
                Some(&attacker.keys.key),
            ),
        ),
        (
            "wrong issuer",
            idp_logout_message(
                &id,
                "LogoutResponse",
                "https://evil.example/idp",
                &dest,
                &irt,
                SUCCESS,
                Some(&idp_key),
            ),
        ),
        (
            "wrong destination",
            idp_logout_message(
                &id,
                "LogoutResponse",
                IDP_ENTITY,
                "https://elsewhere.example/slo",
                &irt,
                SUCCESS,
                Some(&idp_key),
            ),
        ),
        (
            "unknown InResponseTo",
            idp_logout_message(
                &id,
                "LogoutResponse",
                IDP_ENTITY,
                &dest,
                " InResponseTo=\"_nope\"",
                SUCCESS,
                Some(&idp_key),
            ),
        ),
        (
            "no InResponseTo",
            idp_logout_message(
                &id,
                "LogoutResponse",
                IDP_ENTITY,
                &dest,
                "",
                SUCCESS,
                Some(&idp_key),
            ),
        ),
    ];
    for (what, uri) in &cases {
        refused(&env.get(uri, None).await, what);
    }
    // A signed message whose bytes were changed after signing.
    let good = idp_logout_message(
        &id,
        "LogoutResponse",
        IDP_ENTITY,
        &dest,
        &irt,
        SUCCESS,
        Some(&idp_key),
    );
    let tampered = good.replacen("SAMLResponse=", "SAMLResponse=A", 1);
    refused(&env.get(&tampered, None).await, "tampered");
    // Another connection's SLO endpoint does not take it.
    let other = env.saml_conn(&org, json!({"idp_slo_url": IDP_SLO})).await;
    let other_id = other["id"].as_str().unwrap();
    refused(
        &env.get(&good.replace(&id, other_id), None).await,
        "other connection",
    );

    // The genuine one: signed by the IdP, answering our request → the default redirect.
    let ok = env.get(&good, None).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.text);
    assert_eq!(ok.location.as_deref(), Some(APP_CB));
    // Replayed: refused (the request it answered is consumed).
    refused(&env.get(&good, None).await, "replayed");
}

#[tokio::test]
async fn idp_initiated_logout_requests_need_the_idp_signature_and_are_single_use() {
    let env = Env::new();
    let org = env.org("SloReq").await;
    let c = env.saml_conn(&org, json!({"idp_slo_url": IDP_SLO})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let (sp_cert, _) = sp_signing_cert(&env, &id).await;
    let dest = format!("http://127.0.0.1:8080/sso/saml/slo/{id}");
    let subject = "<saml:NameID>eve@sloreq.example.com</saml:NameID><samlp:SessionIndex>_session1</samlp:SessionIndex>";
    let idp_key = env.idp.keys.key.clone();
    let attacker = IdpSigner::generate(IDP_ENTITY).unwrap();
    // Past by more than the connection's clock skew.
    let past = (chrono::Utc::now() - chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M:%SZ");
    let future = (chrono::Utc::now() + chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M:%SZ");
    for (what, uri) in [
        (
            "unsigned",
            idp_logout_message(&id, "LogoutRequest", IDP_ENTITY, &dest, "", subject, None),
        ),
        (
            "forged",
            idp_logout_message(
                &id,
                "LogoutRequest",
                IDP_ENTITY,
                &dest,
                "",
                subject,
                Some(&attacker.keys.key),
            ),
        ),
        (
            "wrong issuer",
            idp_logout_message(
                &id,
                "LogoutRequest",
                "https://evil.example/idp",
                &dest,
                "",
                subject,
                Some(&idp_key),
            ),
        ),
        (
            "wrong destination",
            idp_logout_message(
                &id,
                "LogoutRequest",
                IDP_ENTITY,
                "https://elsewhere.example/slo",
                "",
                subject,
                Some(&idp_key),
            ),
        ),
        (
            "no NameID",
            idp_logout_message(
                &id,
                "LogoutRequest",
                IDP_ENTITY,
                &dest,
                "",
                "",
                Some(&idp_key),
            ),
        ),
        (
            "NotOnOrAfter passed",
            idp_logout_message(
                &id,
                "LogoutRequest",
                IDP_ENTITY,
                &dest,
                &format!(" NotOnOrAfter=\"{past}\""),
                subject,
                Some(&idp_key),
            ),
        ),
        (
            "NotOnOrAfter unreadable",
            idp_logout_message(
                &id,
                "LogoutRequest",
                IDP_ENTITY,
                &dest,
                " NotOnOrAfter=\"soon\"",
                subject,
                Some(&idp_key),
            ),
        ),
    ] {
        let r = env.get(&uri, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_logout_message", "{what}");
    }
    // A NotOnOrAfter still ahead is fine.
    let good = idp_logout_message(
        &id,
        "LogoutRequest",
        IDP_ENTITY,
        &dest,
        &format!(" NotOnOrAfter=\"{future}\""),
        subject,
        Some(&idp_key),
    );
    let r = env.get(&good, None).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let location = r.location.clone().unwrap();
    assert!(
        location.starts_with(&format!("{IDP_SLO}?SAMLResponse=")),
        "{location}"
    );
    // Our LogoutResponse is signed with the SP key, answers the IdP's request, says Success.
    let (signed, sig) = redirect_signature(&location);
    let key = sp_cert.public_key().unwrap();
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    v.update(signed.as_bytes()).unwrap();
    assert!(v.verify(&sig).unwrap());
    let xml = idbridge_saml::decode_redirect_binding(&r.param("SAMLResponse").unwrap()).unwrap();
    let idp_request_id = idbridge_saml::decode_redirect_binding(
        &url::Url::parse(&format!("http://x{good}"))
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "SAMLRequest")
            .unwrap()
            .1,
    )
    .unwrap()
    .split("ID=\"")
    .nth(1)
    .unwrap()
    .split('"')
    .next()
    .unwrap()
    .to_string();
    assert!(
        xml.contains(&format!("InResponseTo=\"{idp_request_id}\"")),
        "{xml}"
    );
    assert!(xml.contains("urn:oasis:names:tc:SAML:2.0:status:Success"));
    assert!(xml.contains(&format!("Destination=\"{IDP_SLO}\"")));
    // Replayed: refused.
    let again = env.get(&good, None).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.text);

    // A connection without single logout has no SLO endpoint to speak of.
    let plain = env.saml_conn(&org, json!({})).await;
    let plain_id = plain["id"].as_str().unwrap();
    let r = env.get(&good.replace(&id, plain_id), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// A PEM certificate for `key`, valid from `from_days` to `to_days` from now.
fn cert_for(
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
    from_days: i64,
    to_days: i64,
) -> String {
    use openssl::asn1::Asn1Time;
    let mut b = openssl::x509::X509Builder::new().unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "test idp").unwrap();
    let name = name.build();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    let now = chrono::Utc::now().timestamp();
    b.set_not_before(&Asn1Time::from_unix(now + from_days * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + to_days * 86_400).unwrap())
        .unwrap();
    b.sign(key, openssl::hash::MessageDigest::sha256()).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

fn rsa_key(bits: u32) -> openssl::pkey::PKey<openssl::pkey::Private> {
    openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(bits).unwrap()).unwrap()
}

#[tokio::test]
async fn idp_signing_certificates_are_imported_validated_and_deleted() {
    let mut env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let path = format!("/connections/{id}/saml_idp_signing_certs");
    let first_pem = env.cert_pem();

    let list = env.api("GET", &path, None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["object"], "list");
    let data = list.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let first = &data[0];
    assert_eq!(first["object"], "saml_idp_signing_certificate");
    assert_eq!(first["value"].as_str().unwrap().trim(), first_pem.trim());
    assert!(first["id"].as_str().unwrap().starts_with("cert_"));
    let not_after = first["not_after"].as_str().unwrap();
    assert!(not_after > first["not_before"].as_str().unwrap());
    assert!(not_after > chrono::Utc::now().to_rfc3339().as_str());
    let first_id = first["id"].as_str().unwrap().to_string();

    // Bad input: each a 422 naming `value`, each changing nothing.
    let not_pem = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA";
    let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
    let key_pem = String::from_utf8(rsa_key(2048).private_key_to_pem_pkcs8().unwrap()).unwrap();
    let expired = cert_for(&rsa_key(2048), -10, -1);
    let weak = cert_for(&rsa_key(1024), -1, 30);
    for (value, code) in [
        (json!(not_pem), "not_a_pem_certificate"),
        (json!(key_pem), "not_a_pem_certificate"),
        (json!(garbage), "invalid_certificate"),
        (json!(expired), "certificate_expired"),
        (json!(weak), "unsupported_certificate_key"),
        (json!(42), "invalid_type"),
    ] {
        let r = env
            .api("POST", &path, Some(json!({ "value": value })))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{code}: {}",
            r.text
        );
        assert_eq!(r.body["code"], "invalid_request_parameters");
        assert_eq!(r.body["errors"][0]["field"], "value", "{}", r.text);
        if code != "invalid_type" {
            assert_eq!(r.body["errors"][0]["code"], code, "{}", r.text);
            assert!(r.body["errors"][0]["message"].is_string(), "{}", r.text);
        }
    }
    let r = env.api("POST", &path, Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = env
        .api("POST", &path, Some(json!({"value": first_pem, "pem": "x"})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"][0]["field"], "pem", "{}", r.text);
    let dup = env
        .api("POST", &path, Some(json!({ "value": first_pem })))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.text);
    assert_eq!(dup.body["code"], "certificate_already_exists");
    let missing = env
        .api(
            "POST",
            "/connections/conn_01ARZ3NDEKTSV4RRFFQ69G5FAV/saml_idp_signing_certs",
            Some(json!({ "value": first_pem })),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        env.api("GET", &path, None).await.body["data"],
        list.body["data"]
    );

    // The IdP rotates: its new certificate is imported ahead, then responses signed with the
    // new key verify; after the old one is deleted, the old key's responses are refused.
    let old_signer = std::mem::replace(&mut env.idp, IdpSigner::generate(IDP_ENTITY).unwrap());
    let new_pem = env.cert_pem();
    let before = env.login(&id, "", "ada@acme.example.com").await;
    assert!(before.param("code").is_none(), "{:?}", before.location);
    let created = env
        .api("POST", &path, Some(json!({ "value": new_pem })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["object"], "saml_idp_signing_certificate");
    let new_id = created.body["id"].as_str().unwrap().to_string();
    let list = env.api("GET", &path, None).await;
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first_id.as_str(), new_id.as_str()], "oldest first");
    let done = env.login(&id, "", "ada@acme.example.com").await;
    assert!(done.param("code").is_some(), "{:?}", done.location);

    let gone = env.api("DELETE", &format!("{path}/{first_id}"), None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.text);
    let unknown = env.api("DELETE", &format!("{path}/{first_id}"), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let last = env.api("DELETE", &format!("{path}/{new_id}"), None).await;
    assert_eq!(last.status, StatusCode::BAD_REQUEST, "{}", last.text);
    assert_eq!(last.body["code"], "last_certificate");
    let new_signer = std::mem::replace(&mut env.idp, old_signer);
    let refused = env.login(&id, "", "ada@acme.example.com").await;
    assert!(refused.param("code").is_none(), "{:?}", refused.location);
    env.idp = new_signer;
    let ok = env.login(&id, "", "ada@acme.example.com").await;
    assert!(ok.param("code").is_some(), "{:?}", ok.location);

    // OIDC connections have none.
    let oidc = env
        .api(
            "POST",
            "/connections",
            Some(
                json!({"organization_id": org, "connection_type": "OktaOIDC", "oidc_options": {
                "issuer": "https://op.example.com", "client_id": "abc", "client_secret": "s"}}),
            ),
        )
        .await;
    assert_eq!(oidc.status, StatusCode::CREATED, "{}", oidc.text);
    let oid = oidc.body["id"].as_str().unwrap();
    let r = env
        .api(
            "GET",
            &format!("/connections/{oid}/saml_idp_signing_certs"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["code"], "not_a_saml_connection");
}

#[tokio::test]
async fn sp_certificates_are_generated_listed_and_deleted() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({"sign_requests": true})).await;
    let id = c["id"].as_str().unwrap().to_string();

    // Encryption: one from creation; a second one beside it; a third is a 409.
    let enc = format!("/connections/{id}/saml_sp_encryption_certs");
    let list = env.api("GET", &enc, None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        list.body["data"][0]["object"],
        "saml_sp_encryption_certificate"
    );
    let first_enc = list.body["data"][0]["id"].as_str().unwrap().to_string();
    let r = env.api("POST", &enc, Some(json!({"value": "x"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let added = env.api("POST", &enc, None).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert!(added.body["value"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let second_enc = added.body["id"].as_str().unwrap().to_string();
    let full = env.api("POST", &enc, None).await;
    assert_eq!(full.status, StatusCode::CONFLICT, "{}", full.text);
    let list = env.api("GET", &enc, None).await;
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first_enc.as_str(), second_enc.as_str()]);
    // Both are published in the SP metadata; after a delete only the other one.
    let md = env.get(&format!("/sso/saml/metadata/{id}"), None).await;
    assert_eq!(
        md.text.matches("use=\"encryption\"").count(),
        2,
        "{}",
        md.text
    );
    let del = env.api("DELETE", &format!("{enc}/{first_enc}"), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.text);
    let md = env.get(&format!("/sso/saml/metadata/{id}"), None).await;
    assert_eq!(
        md.text.matches("use=\"encryption\"").count(),
        1,
        "{}",
        md.text
    );
    let del = env.api("DELETE", &format!("{enc}/{first_enc}"), None).await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);

    // Signing: one at a time; delete → requests unsigned and GET is a 404; create → signed
    // with the new key, which the metadata publishes.
    let sig = format!("/connections/{id}/saml_sp_signing_cert");
    let cur = env.api("GET", &sig, None).await;
    assert_eq!(cur.status, StatusCode::OK, "{}", cur.text);
    assert_eq!(cur.body["object"], "saml_sp_signing_certificate");
    let cur_id = cur.body["id"].as_str().unwrap().to_string();
    let again = env.api("POST", &sig, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    let del = env.api("DELETE", &format!("{sig}/cert_NOPE"), None).await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);
    let del = env.api("DELETE", &format!("{sig}/{cur_id}"), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.text);
    assert_eq!(
        env.api("GET", &sig, None).await.status,
        StatusCode::NOT_FOUND
    );
    let unsigned = env
        .get(&env.authorize_url(&format!("&connection={id}")), None)
        .await;
    assert_eq!(unsigned.status, StatusCode::FOUND, "{}", unsigned.text);
    assert!(
        unsigned.param("Signature").is_none(),
        "{:?}",
        unsigned.location
    );
    let new = env.api("POST", &sig, None).await;
    assert_eq!(new.status, StatusCode::CREATED, "{}", new.text);
    assert_ne!(new.body["id"], cur.body["id"]);
    assert_eq!(env.api("GET", &sig, None).await.body, new.body);
    let signed = env
        .get(&env.authorize_url(&format!("&connection={id}")), None)
        .await;
    let (data, signature) = redirect_signature(signed.location.as_deref().unwrap());
    let (published, _) = sp_signing_cert(&env, &id).await;
    let new_cert =
        openssl::x509::X509::from_pem(new.body["value"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(published.to_der().unwrap(), new_cert.to_der().unwrap());
    let key = new_cert.public_key().unwrap();
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    v.update(data.as_bytes()).unwrap();
    assert!(v.verify(&signature).unwrap(), "signed with the new SP key");
}

#[tokio::test]
async fn abandoned_logins_time_out_once_finished_ones_never() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let c = env.saml_conn(&org, json!({})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let ttl_ms = i64::try_from(env.state.sso.config().login_ttl.as_millis()).unwrap();
    let later = || chrono::Utc::now().timestamp_millis() + ttl_ms + 1_000;
    let timed_out = || {
        env.store
            .events_after(0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "authentication.sso_timed_out")
            .collect::<Vec<_>>()
    };

    // One login abandoned at the IdP, one that succeeds, one that fails (forged response).
    let abandoned = env
        .get(
            &env.authorize_url(&format!("&connection={id}&state=gone")),
            None,
        )
        .await;
    assert_eq!(abandoned.status, StatusCode::FOUND, "{}", abandoned.text);
    let ok = env.login(&id, "", "ada@acme.example.com").await;
    assert!(ok.param("code").is_some(), "{:?}", ok.location);
    let (_, relay, cookie) = env.authorize_at_idp(&id, "", "bob@acme.example.com").await;
    let bad = env
        .post_acs(
            &id,
            &b64("<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"/>"),
            Some(&relay),
            Some(&cookie),
        )
        .await;
    assert!(bad.param("error").is_some(), "{:?}", bad.location);
    assert!(env
        .event_kinds()
        .contains(&"authentication.sso_failed".to_string()));

    // Nothing is due yet; once the lifetime has passed, exactly the abandoned one is
    // announced, once — also by a second node (or a restart) over the same store.
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(env.state.sso.sweep_timed_out_logins(now).await.unwrap(), 0);
    assert!(timed_out().is_empty());
    assert_eq!(
        env.state.sso.sweep_timed_out_logins(later()).await.unwrap(),
        1
    );
    assert_eq!(
        env.state.sso.sweep_timed_out_logins(later()).await.unwrap(),
        0
    );
    let other = AppState::new(env.store.clone(), ApiConfig::default())
        .with_sso(SsoConfig::default(), Some(SecretBox::generate().unwrap()));
    assert_eq!(other.sso.sweep_timed_out_logins(later()).await.unwrap(), 0);
    let events = timed_out();
    assert_eq!(events.len(), 1);
    let body: Value = serde_json::from_slice(&events[0].body).unwrap();
    let data = &body["data"];
    // Every field the spec's EventSchema requires for authentication.sso_timed_out.
    assert_eq!(data["type"], "sso");
    assert_eq!(data["status"], "timed_out");
    for key in ["ip_address", "user_agent", "user_id", "email"] {
        assert!(data.get(key).is_some(), "{key} missing: {data}");
    }
    assert_eq!(data["sso"]["connection_id"], id.as_str());
    assert_eq!(data["sso"]["organization_id"], org.as_str());
    assert!(data["sso"].get("session_id").is_some());
    assert_eq!(data["error"]["code"], "sso_timed_out");
    assert!(data["error"]["message"].is_string());

    assert_eq!(
        env.state.sso.sweep_timed_out_logins(later()).await.unwrap(),
        0
    );
}

/// `PUT /admin/connections/{id}` replaces the declaration: a new IdP key and name apply at
/// once, while the id, organization and SP keys (what the IdP trusts) stay; the protocol,
/// organization and external id cannot change, unknown fields are refused, and a refused
/// request changes nothing.
#[tokio::test]
async fn reconfigure_replaces_the_declaration_and_keeps_id_and_sp_keys() {
    let mut env = Env::new();
    let org = env.org("Acme").await;
    let r = env
        .api(
            "POST",
            "/connections",
            Some(json!({"organization_id": org, "external_id": "acme-sso",
                "saml_options": {"idp_metadata_xml": metadata_xml(&env.idp)}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let uri = format!("/admin/connections/{id}");
    assert!(env
        .login(&id, "", "a@acme.example.com")
        .await
        .param("code")
        .is_some());
    let before = env.api("GET", &uri, None).await;

    // Refused, each by name, and nothing changes.
    let other = env.org("Other").await;
    for (body, field) in [
        (
            json!({"saml_options": {"idp_metadata_xml": metadata_xml(&env.idp)}, "colour": 1}),
            "colour",
        ),
        (
            json!({"organization_id": other, "saml_options": {"idp_metadata_xml": metadata_xml(&env.idp)}}),
            "organization_id",
        ),
        (
            json!({"external_id": "another", "saml_options": {"idp_metadata_xml": metadata_xml(&env.idp)}}),
            "external_id",
        ),
        (
            json!({"connection_type": "GenericOIDC", "oidc_options": {"issuer": "https://op.example.com", "client_id": "c", "client_secret": "s"}}),
            "oidc_options",
        ),
        (
            json!({"saml_options": {"idp_metadata_xml": "<garbage/>"}}),
            "saml_options.idp_metadata_xml",
        ),
    ] {
        let r = env.api("PUT", &uri, Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }
    let unchanged = env.api("GET", &uri, None).await;
    assert_eq!(before.body, unchanged.body);

    // The IdP moved to a new key: the new declaration applies at once, the SP keys stay.
    let old_idp = std::mem::replace(&mut env.idp, IdpSigner::generate(IDP_ENTITY).unwrap());
    let r = env
        .api(
            "PUT",
            &uri,
            Some(
                json!({"name": "Acme (new IdP key)", "connection_type": "OktaSAML",
                "saml_options": {"idp_metadata_xml": metadata_xml(&env.idp)}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let c = &r.body["connection"];
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["name"], "Acme (new IdP key)");
    assert_eq!(c["connection_type"], "OktaSAML");
    assert_eq!(c["organization_id"], org.as_str());
    assert_eq!(c["state"], "active", "the state is kept");
    for k in [
        "sp_signing_certs",
        "sp_encryption_certs",
        "sp_entity_id",
        "acs_url",
    ] {
        assert_eq!(
            r.body["settings"][k], before.body["settings"][k],
            "{k} must not change"
        );
    }
    assert!(env
        .login(&id, "", "a@acme.example.com")
        .await
        .param("code")
        .is_some());
    // The old IdP key is no longer trusted.
    env.idp = old_idp;
    assert_eq!(
        env.login(&id, "", "a@acme.example.com")
            .await
            .param("error")
            .as_deref(),
        Some("server_error")
    );
    // Unknown connection: 404.
    let r = env
        .api(
            "PUT",
            "/admin/connections/conn_01J00000000000000000000000",
            Some(json!({"saml_options": {"idp_metadata_xml": "x"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

/// An HTTP-POST logout message: `<samlp:{root}>` with an enveloped signature by `signer`
/// (after the Issuer, as the schema orders it), or unsigned; `tamper` edits it after signing.
fn idp_logout_post(
    root: &str,
    destination: &str,
    extra_attrs: &str,
    children: &str,
    signer: Option<&IdpSigner>,
    tamper: Option<(&str, &str)>,
) -> String {
    let id = format!("_idp{}", &idbridge_saml::sp::new_id().unwrap()[1..]);
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let signature = match signer {
        Some(s) => s.template(&id).unwrap(),
        None => String::new(),
    };
    let xml = format!(
        "<samlp:{root} xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{destination}\"{extra_attrs}><saml:Issuer>{IDP_ENTITY}</saml:Issuer>{signature}{children}</samlp:{root}>"
    );
    let mut xml = match signer {
        Some(s) => s.sign_template(&xml).unwrap(),
        None => xml,
    };
    if let Some((from, to)) = tamper {
        assert!(xml.contains(from));
        xml = xml.replace(from, to);
    }
    b64(&xml)
}

#[tokio::test]
async fn logout_messages_over_http_post_need_the_idps_xml_signature() {
    let env = Env::new();
    let org = env.org("SloPost").await;
    let c = env.saml_conn(&org, json!({"idp_slo_url": IDP_SLO})).await;
    let id = c["id"].as_str().unwrap().to_string();
    let dest = format!("http://127.0.0.1:8080/sso/saml/slo/{id}");
    let post = |param: &'static str, message: String| {
        let body = format!("{param}={}&RelayState=rs-1", urlencode(&message));
        Request::builder()
            .method("POST")
            .uri(format!("/sso/saml/slo/{id}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let subject = "<saml:NameID>eve@slopost.example.com</saml:NameID><samlp:SessionIndex>_s1</samlp:SessionIndex>";
    let attacker = IdpSigner::generate(IDP_ENTITY).unwrap();
    let past = (chrono::Utc::now() - chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M:%SZ");
    let future = (chrono::Utc::now() + chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M:%SZ");
    for (what, message) in [
        (
            "unsigned",
            idp_logout_post("LogoutRequest", &dest, "", subject, None, None),
        ),
        (
            "forged",
            idp_logout_post("LogoutRequest", &dest, "", subject, Some(&attacker), None),
        ),
        (
            "tampered after signing",
            idp_logout_post(
                "LogoutRequest",
                &dest,
                "",
                subject,
                Some(&env.idp),
                Some(("eve@slopost", "mallory@slopost")),
            ),
        ),
        (
            "wrong destination",
            idp_logout_post(
                "LogoutRequest",
                "https://elsewhere.example/slo",
                "",
                subject,
                Some(&env.idp),
                None,
            ),
        ),
        (
            "NotOnOrAfter passed",
            idp_logout_post(
                "LogoutRequest",
                &dest,
                &format!(" NotOnOrAfter=\"{past}\""),
                subject,
                Some(&env.idp),
                None,
            ),
        ),
    ] {
        let r = env.send(post("SAMLRequest", message)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_logout_message", "{what}");
    }
    // A LogoutRequest sent as a SAMLResponse field is not a response.
    let good = idp_logout_post(
        "LogoutRequest",
        &dest,
        &format!(" NotOnOrAfter=\"{future}\""),
        subject,
        Some(&env.idp),
        None,
    );
    let r = env.send(post("SAMLResponse", good.clone())).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // Signed by the IdP: answered with our signed LogoutResponse on the IdP's SLO; once.
    let r = env.send(post("SAMLRequest", good.clone())).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert!(r
        .location
        .as_deref()
        .unwrap()
        .starts_with(&format!("{IDP_SLO}?SAMLResponse=")));
    let again = env.send(post("SAMLRequest", good)).await;
    assert_eq!(
        again.status,
        StatusCode::BAD_REQUEST,
        "replay: {}",
        again.text
    );

    // Our LogoutRequest answered by a POSTed, XML-signed LogoutResponse: accepted once.
    let request_id = started_logout(&env, &id, "eve@slopost.example.com").await;
    let irt = format!(" InResponseTo=\"{request_id}\"");
    let forged = idp_logout_post(
        "LogoutResponse",
        &dest,
        &irt,
        SUCCESS,
        Some(&attacker),
        None,
    );
    let r = env.send(post("SAMLResponse", forged)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let answer = idp_logout_post("LogoutResponse", &dest, &irt, SUCCESS, Some(&env.idp), None);
    let r = env.send(post("SAMLResponse", answer.clone())).await;
    assert!(
        r.status == StatusCode::FOUND || r.status == StatusCode::OK,
        "{}",
        r.text
    );
    let again = env.send(post("SAMLResponse", answer)).await;
    assert_eq!(
        again.status,
        StatusCode::BAD_REQUEST,
        "replay: {}",
        again.text
    );
}

/// A login's profile (code exchanged at once).
async fn profile_after_login(env: &Env, conn_id: &str, email: &str) -> Value {
    let done = env.login(conn_id, "", email).await;
    let Some(code) = done.param("code") else {
        panic!("no code: {:?}", done.location);
    };
    let t = env.token(json!({"client_id": env.client_id, "client_secret": env.key, "grant_type": "authorization_code", "code": code})).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.text);
    t.body["profile"].clone()
}

/// py10 `update_connection` with attribute maps and SAML options: only what is sent changes,
/// a `null` goes back to the default, every refused field is named and changes nothing (also
/// not the valid fields beside it), and the next login uses the merged settings.
#[tokio::test]
async fn patch_merges_attribute_maps_and_saml_options() {
    let mut env = Env::new();
    let org = env.org("Acme").await;
    let c = env
        .saml_conn(&org, json!({"idp_slo_url": "https://idp.example.org/slo"}))
        .await;
    let id = c["id"].as_str().unwrap().to_string();
    let uri = format!("/connections/{id}");
    let admin = format!("/admin/connections/{id}");
    let p = profile_after_login(&env, &id, "ada@acme.example.com").await;
    assert_eq!(p["first_name"], "Ada");
    assert_eq!(p["custom_attributes"], json!({"department": "R&D"}));
    let before = env.api("GET", &admin, None).await;

    let other_idp = IdpSigner::generate(IDP_ENTITY).unwrap();
    for (body, field) in [
        (json!({"saml_options": {"foo": 1}}), "saml_options.foo"),
        (
            json!({"attribute_maps": {"standard_attributes": {"nickname": "n"}}}),
            "attribute_maps.standard_attributes.nickname",
        ),
        (
            json!({"attribute_maps": {"extra": {}}}),
            "attribute_maps.extra",
        ),
        (
            json!({"attribute_maps": {"custom_attributes": {"team": 5}}}),
            "attribute_maps.custom_attributes.team",
        ),
        (
            json!({"attribute_maps": {"standard_attributes": {"email": 7}}}),
            "attribute_maps.standard_attributes.email",
        ),
        (json!({"oidc_options": {"client_id": "x"}}), "oidc_options"),
        (
            json!({"saml_options": {}, "oidc_options": {}}),
            "oidc_options",
        ),
        (
            json!({"saml_options": {"idp_sso_url": "not a url"}}),
            "saml_options.idp_sso_url",
        ),
        (
            json!({"saml_options": {"idp_slo_url": "ftp://idp.example.org/slo"}}),
            "saml_options.idp_slo_url",
        ),
        (
            json!({"saml_options": {"idp_signing_certs": ["garbage"]}}),
            "saml_options.idp_signing_certs[0]",
        ),
        (
            json!({"saml_options": {"idp_signing_certs": []}}),
            "saml_options.idp_signing_certs",
        ),
        (
            json!({"saml_options": {"acs_url": "https://elsewhere.example/acs"}}),
            "saml_options.acs_url",
        ),
        (
            json!({"saml_options": {"idp_entity_id": null}}),
            "saml_options.idp_entity_id",
        ),
        (
            json!({"saml_options": {"idp_sso_url": ""}}),
            "saml_options.idp_sso_url",
        ),
        (
            json!({"saml_options": {"clock_skew_secs": 100000}}),
            "saml_options.clock_skew_secs",
        ),
        (
            json!({"saml_options": {"sign_requests": "yes"}}),
            "saml_options.sign_requests",
        ),
        (
            json!({"saml_options": {"sp_signing_key_pair": {"private_key": "k"}}}),
            "saml_options.sp_signing_key_pair",
        ),
        (
            json!({"name": "half applied?", "saml_options": {"idp_metadata_xml": "<garbage/>"}}),
            "saml_options.idp_metadata_xml",
        ),
        (
            json!({"saml_options": {"idp_metadata_xml": metadata_xml(&other_idp), "idp_entity_id": "https://x.example"}}),
            "saml_options.idp_entity_id",
        ),
        (
            json!({"state": "inactive", "attribute_maps": {"standard_attributes": {"idp_id": "uid", "colour": "x"}}}),
            "attribute_maps.standard_attributes.colour",
        ),
    ] {
        let r = env.api("PATCH", &uri, Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        let fields: Vec<&str> = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body}: {}", r.text);
        assert_eq!(
            env.api("GET", &admin, None).await.body,
            before.body,
            "{body} changed something"
        );
    }
    assert!(
        !env.event_kinds()
            .contains(&"connection.deactivated".to_string()),
        "a refused PATCH announces nothing"
    );

    // Attribute maps: first_name from another attribute, a custom attribute added, one removed;
    // `groups: null` / `name: null` (what the SDK always sends) leave the type's defaults.
    let r = env
        .api(
            "PATCH",
            &uri,
            Some(json!({"attribute_maps": {
                "standard_attributes": {"first_name": "lastName", "groups": null, "name": null},
                "custom_attributes": {"team": "dept", "department": null}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["name"], "Acme SAML");
    assert_eq!(r.body["state"], "active");
    let p = profile_after_login(&env, &id, "ada@acme.example.com").await;
    assert_eq!(p["first_name"], "Lovelace", "{p}");
    assert_eq!(p["last_name"], "Lovelace");
    assert_eq!(p["groups"], json!(["g-admins", "g-eng"]));
    assert_eq!(p["custom_attributes"], json!({"team": "R&D"}));
    let view = env.api("GET", &admin, None).await;
    let map = &view.body["settings"]["attribute_map"];
    assert_eq!(map["first_name"][0], "lastName", "{}", view.text);
    assert_eq!(
        map["first_name"][1], "firstName",
        "the preset stays a fallback"
    );
    // A null puts the type's default back.
    let r = env
        .api(
            "PATCH",
            &uri,
            Some(json!({"attribute_maps": {"standard_attributes": {"first_name": null}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let p = profile_after_login(&env, &id, "ada@acme.example.com").await;
    assert_eq!(p["first_name"], "Ada");
    assert_eq!(p["custom_attributes"], json!({"team": "R&D"}), "untouched");

    // SAML options in the SDK's shape (it always sends these three nulls): the SSO URL moves,
    // the SLO URL, the SP entity id and the SP keys stay; the organization, state, external id too.
    let r = env
        .api(
            "PATCH",
            &uri,
            Some(json!({"name": "Acme (moved)", "saml_options": {"idp_metadata_url": null, "acs_url": null,
                "sp_entity_id": null, "idp_sso_url": "https://idp2.example.org/sso"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "Acme (moved)");
    let view = env.api("GET", &admin, None).await;
    let s = &view.body["settings"];
    assert_eq!(s["idp_sso_url"], "https://idp2.example.org/sso");
    assert_eq!(s["idp_slo_url"], "https://idp.example.org/slo");
    assert_eq!(s["idp_entity_id"], IDP_ENTITY);
    for k in [
        "sp_signing_certs",
        "sp_encryption_certs",
        "sp_entity_id",
        "acs_url",
        "idp_signing_certs",
    ] {
        assert_eq!(s[k], before.body["settings"][k], "{k} must not change");
    }
    let go = env
        .get(
            &env.authorize_url(&format!("&connection={id}&state=s")),
            None,
        )
        .await;
    assert!(
        go.location
            .as_deref()
            .unwrap()
            .starts_with("https://idp2.example.org/sso?"),
        "{:?}",
        go.location
    );

    // A custom SP entity id, then back to the default; SLO off; the IdP's new key replaces the old.
    let r = env
        .api(
            "PATCH",
            &uri,
            Some(json!({"saml_options": {"sp_entity_id": "urn:acme:sp"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let view = env.api("GET", &admin, None).await;
    assert_eq!(view.body["settings"]["sp_entity_id"], "urn:acme:sp");
    let new_idp = IdpSigner::generate(IDP_ENTITY).unwrap();
    let new_cert = String::from_utf8(new_idp.keys.cert.to_pem().unwrap()).unwrap();
    let r = env
        .api(
            "PATCH",
            &uri,
            Some(
                json!({"saml_options": {"sp_entity_id": null, "idp_slo_url": null,
                "idp_sso_url": IDP_SSO, "idp_signing_certs": [new_cert]}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let view = env.api("GET", &admin, None).await;
    let s = &view.body["settings"];
    assert_eq!(s["sp_entity_id"], before.body["settings"]["sp_entity_id"]);
    assert_eq!(s["idp_slo_url"], Value::Null);
    assert_eq!(
        env.login(&id, "", "ada@acme.example.com")
            .await
            .param("error")
            .as_deref(),
        Some("server_error"),
        "the replaced key is no longer trusted"
    );
    env.idp = new_idp;
    assert_eq!(
        profile_after_login(&env, &id, "ada@acme.example.com").await["first_name"],
        "Ada"
    );

    // New metadata re-imports the IdP settings.
    let moved = IdpSigner::generate(IDP_ENTITY).unwrap();
    let r = env
        .api(
            "PATCH",
            &uri,
            Some(json!({"saml_options": {"idp_metadata_xml": metadata_xml(&moved)}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    env.idp = moved;
    assert_eq!(
        profile_after_login(&env, &id, "ada@acme.example.com").await["first_name"],
        "Ada"
    );
    // Unknown connection: 404 before the body is judged.
    let r = env
        .api(
            "PATCH",
            "/connections/conn_01J00000000000000000000000",
            Some(json!({"saml_options": {"foo": 1}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

/// PATCH of an OIDC connection's options and claim maps: typed merge, secret re-sealed,
/// unsupported py10 options named, the protocol cannot change.
#[tokio::test]
async fn patch_merges_oidc_options() {
    let env = Env::new();
    let org = env.org("Acme").await;
    let r = env
        .api(
            "POST",
            "/connections",
            Some(json!({"organization_id": org, "connection_type": "GenericOIDC",
                "oidc_options": {"issuer": "https://op.example.com", "client_id": "c", "client_secret": "s1"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let uri = format!("/connections/{id}");
    let admin = format!("/admin/connections/{id}");
    let before = env.api("GET", &admin, None).await;
    for (body, field) in [
        (json!({"oidc_options": {"pkce": true}}), "oidc_options.pkce"),
        (json!({"oidc_options": {"bogus": 1}}), "oidc_options.bogus"),
        (
            json!({"oidc_options": {"redirect_uri": "https://evil.example/cb"}}),
            "oidc_options.redirect_uri",
        ),
        (
            json!({"oidc_options": {"discovery_endpoint": "nope"}}),
            "oidc_options.discovery_endpoint",
        ),
        (
            json!({"oidc_options": {"client_id": null}}),
            "oidc_options.client_id",
        ),
        (
            json!({"oidc_options": {"client_secret": "a", "client_secret_env": "B"}}),
            "oidc_options.client_secret_env",
        ),
        (
            json!({"oidc_options": {"claim_map": {"shoe_size": "s"}}}),
            "oidc_options.claim_map.shoe_size",
        ),
        (
            json!({"saml_options": {"idp_sso_url": IDP_SSO}}),
            "saml_options",
        ),
    ] {
        let r = env.api("PATCH", &uri, Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert!(r.text.contains(field), "{body}: {}", r.text);
        assert_eq!(env.api("GET", &admin, None).await.body, before.body);
    }
    // py10's shape: `redirect_uri: null` always sent.
    let r = env
        .api(
            "PATCH",
            &uri,
            Some(json!({"attribute_maps": {"standard_attributes": {"email": "upn", "groups": null, "name": null},
                    "custom_attributes": {"team": "dept"}},
                "oidc_options": {"discovery_endpoint": "https://op2.example.com/.well-known/openid-configuration",
                    "client_id": "c2", "client_secret": "s2", "redirect_uri": null, "scopes": ["openid", "email"],
                    "claim_map": {"name": "display_name"}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let view = env.api("GET", &admin, None).await;
    let s = &view.body["settings"];
    assert_eq!(s["issuer"], "https://op2.example.com", "{}", view.text);
    assert_eq!(s["client_id"], "c2");
    assert_eq!(s["client_secret_stored"], true);
    assert!(!view.text.contains("s2"), "the secret is never shown");
    assert_eq!(s["scopes"], json!(["openid", "email"]));
    assert_eq!(s["claim_map"]["email"][0], "upn");
    assert_eq!(s["claim_map"]["name"][0], "display_name");
    assert_eq!(s["claim_map"]["custom"]["team"], "dept");
    // Scopes back to the type's default.
    let r = env
        .api(
            "PATCH",
            &uri,
            Some(json!({"oidc_options": {"scopes": null}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let view = env.api("GET", &admin, None).await;
    assert_eq!(
        view.body["settings"]["scopes"],
        json!(["openid", "profile", "email"])
    );
    assert_eq!(view.body["settings"]["client_id"], "c2", "untouched");
}
