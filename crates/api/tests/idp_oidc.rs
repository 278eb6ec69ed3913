//! idbridge's OpenID Provider driven in-process through the router, with the password checked
//! against a real slapd (directory mode): one refusal per rule of the authorize, token and
//! userinfo endpoints and of the client registry (the happy path with independent RPs —
//! openid-client and a second idbridge — is in tests/tests/idp_e2e.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_ldap::{Flavor, LdapSettings, LdapSource, Syncer};
use idbridge_sso::api_keys as auth;
use idbridge_sso::{SecretBox, SsoConfig};
use idbridge_store::{SqliteStore, Store};
use idbridge_testkit::slapd::{ldap_group, Slapd, LDAP_ADMIN_DN, LDAP_SUFFIX};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const REDIRECT: &str = "https://rp.example.test/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Resp {
    status: u16,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn location(&self) -> Option<String> {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    fn cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|c| c.starts_with("idbridge_idp_"))
            .map(|c| c.split(';').next().unwrap().to_owned())
    }
}

struct Env {
    app: Router,
    state: AppState,
    key: String,
    org: String,
    other_org: String,
    dir: String,
    _slapd: Slapd,
}

fn hidden(text: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = text.find(&marker).unwrap() + marker.len();
    text[at..].split('"').next().unwrap().to_owned()
}

impl Env {
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
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
        self.send(
            req.body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or(Body::empty()),
            )
            .unwrap(),
        )
        .await
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn form(&self, uri: &str, pairs: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let mut req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// A client of `org`; the create answer (with the secret).
    async fn client(&self, org: &str, extra: Value) -> Value {
        let mut body =
            json!({"organization_id": org, "redirect_uris": [REDIRECT], "directory_id": self.dir});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = self.api("POST", "/admin/oidc_clients", Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()
    }

    fn authorize_uri(&self, client_id: &str, extra: &str) -> String {
        format!(
            "/idp/{}/oidc/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid+email+profile&state=st-1&nonce=n-1{extra}",
            self.org,
            url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
        )
    }

    /// Authorize, then log in as alice: the redirect back to the client.
    async fn login(&self, client_id: &str, extra: &str) -> url::Url {
        let page = self.get(&self.authorize_uri(client_id, extra), &[]).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let cookie = page.cookie().unwrap();
        let done = self
            .form(
                &format!("/idp/{}/login", self.org),
                &[
                    ("k", &hidden(&page.text, "k")),
                    ("csrf", &hidden(&page.text, "csrf")),
                    ("login", "alice"),
                    ("password", "alice-pw"),
                ],
                &[("cookie", &cookie)],
            )
            .await;
        assert_eq!(done.status, 303, "{}", done.text);
        url::Url::parse(&done.location().unwrap()).unwrap()
    }

    async fn token(&self, pairs: &[(&str, &str)], basic: Option<(&str, &str)>) -> Resp {
        let auth = basic.map(|(id, s)| format!("Basic {}", STANDARD.encode(format!("{id}:{s}"))));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.form(&format!("/idp/{}/oidc/token", self.org), pairs, &headers)
            .await
    }
}

fn code_of(u: &url::Url) -> String {
    u.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {u}"))
}

fn jwt_part(token: &str, i: usize) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap(),
    )
    .unwrap()
}

async fn env() -> Env {
    let slapd = Slapd::start().expect("slapd (scripts/test-deps.sh installs it)");
    let mut ldif = format!(
        "dn: uid=alice,ou=People,{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: alice\ncn: Alice Archer\ngivenName: Alice\nsn: Archer\nmail: alice@example.test\nuserPassword: alice-pw\n\n"
    );
    ldif.push_str(&ldap_group("engineering", &["alice"]));
    slapd.add(&ldif).unwrap();
    let pw_file = slapd.password_file().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
    let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
    let state = AppState::new(store, ApiConfig::default())
        .with_sso(SsoConfig::default(), Some(SecretBox::generate().unwrap()));
    let mut env = Env {
        app: router(state.clone()),
        state: state.clone(),
        key: boot.api_key,
        org: String::new(),
        other_org: String::new(),
        dir: String::new(),
        _slapd: slapd,
    };
    for name in ["Acme", "Other"] {
        let r = env
            .api("POST", "/organizations", Some(json!({"name": name})))
            .await;
        let id = r.json()["id"].as_str().unwrap().to_owned();
        if env.org.is_empty() {
            env.org = id;
        } else {
            env.other_org = id;
        }
    }
    let r = env
        .api(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": env.org, "name": "LDAP", "type": "ldap"})),
        )
        .await;
    env.dir = r.json()["directory"]["id"].as_str().unwrap().to_owned();
    let mut settings = LdapSettings::new(
        env._slapd.url(),
        Flavor::Openldap,
        format!("ou=People,{LDAP_SUFFIX}"),
    );
    settings.allow_plain = true;
    settings.bind_dn = Some(LDAP_ADMIN_DN.into());
    settings.bind_password_file = Some(pw_file);
    settings.group_base_dns = vec![format!("ou=Groups,{LDAP_SUFFIX}")];
    state.ldap.install(
        Arc::new(Syncer::new(state.directory.clone())),
        [LdapSource {
            directory_id: env.dir.clone(),
            settings,
        }],
    );
    let run = env
        .api(
            "POST",
            &format!("/admin/directories/{}/sync", env.dir),
            Some(json!({"kind": "full"})),
        )
        .await;
    assert_eq!(run.json()["ok"], true, "{}", run.text);
    env
}

#[tokio::test]
async fn discovery_jwks_and_the_client_registry() {
    let e = env().await;
    let issuer = format!("http://127.0.0.1:8080/idp/{}/oidc", e.org);
    let d = e
        .get(
            &format!("/idp/{}/oidc/.well-known/openid-configuration", e.org),
            &[],
        )
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    let d = d.json();
    assert_eq!(d["issuer"], issuer.as_str(), "issuer exact");
    assert_eq!(d["token_endpoint"], format!("{issuer}/token").as_str());
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    let unknown = e
        .get(
            "/idp/org_01ZZZZZZZZZZZZZZZZZZZZZZZZ/oidc/.well-known/openid-configuration",
            &[],
        )
        .await;
    assert_eq!(unknown.status, 404);

    // The JWKS publishes the IdP key; after a rotation both.
    let jwks = e
        .get(&format!("/idp/{}/oidc/jwks", e.org), &[])
        .await
        .json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    let old_kid = jwks["keys"][0]["kid"].clone();
    let r = e
        .api(
            "POST",
            &format!("/admin/organizations/{}/idp/rotate_keys", e.org),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let jwks = e
        .get(&format!("/idp/{}/oidc/jwks", e.org), &[])
        .await
        .json();
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[1], &old_kid, "the previous key stays published");

    // Registry: unknown fields, bad values, another organization's directory: 422 naming them.
    let r = e
        .api(
            "POST",
            "/admin/oidc_clients",
            Some(json!({"organization_id": e.org, "redirect_uris": [REDIRECT], "response_types": ["token"]})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("response_types"), "{}", r.text);
    for (body, field) in [
        (json!({"organization_id": e.org}), "redirect_uris"),
        (
            json!({"organization_id": e.org, "redirect_uris": ["http://rp.example.test/cb"]}),
            "redirect_uris[0]",
        ),
        (
            json!({"organization_id": e.org, "redirect_uris": ["https://rp.example.test/cb#x"]}),
            "redirect_uris[0]",
        ),
        (
            json!({"organization_id": e.other_org, "redirect_uris": [REDIRECT], "directory_id": e.dir}),
            "directory_id",
        ),
        (
            json!({"organization_id": e.org, "redirect_uris": [REDIRECT], "public": true, "require_pkce": false}),
            "require_pkce",
        ),
    ] {
        let r = e
            .api("POST", "/admin/oidc_clients", Some(body.clone()))
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }
    // The secret: shown once, sealed at rest, never echoed; rotation replaces it.
    let c = e.client(&e.org, json!({})).await;
    let id = c["client_id"].as_str().unwrap();
    let secret = c["client_secret"].as_str().unwrap();
    assert_eq!(secret.len(), 43);
    let got = e
        .api("GET", &format!("/admin/oidc_clients/{id}"), None)
        .await;
    assert!(
        !got.text.contains(secret) && !got.text.contains("secret_sealed"),
        "{}",
        got.text
    );
    let raw = e.state.store.get("idp_oidc_clients", id).unwrap().unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains(secret),
        "the secret is stored in clear"
    );
    let r = e
        .api(
            "PUT",
            &format!("/admin/oidc_clients/{id}"),
            Some(json!({"name": "Renamed", "rotate_secret": true, "colour": "red"})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("colour"));
    let r = e
        .api(
            "PUT",
            &format!("/admin/oidc_clients/{id}"),
            Some(json!({"name": "Renamed", "rotate_secret": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_secret = r.json()["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let list = e
        .api(
            "GET",
            &format!("/admin/oidc_clients?organization_id={}", e.org),
            None,
        )
        .await;
    assert_eq!(list.json()["data"][0]["name"], "Renamed");
    assert!(!list.text.contains(&new_secret));
    let r = e
        .api("DELETE", &format!("/admin/oidc_clients/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = e
        .api("GET", &format!("/admin/oidc_clients/{id}"), None)
        .await;
    assert_eq!(r.status, 404);
    let no_key = e.get("/admin/oidc_clients", &[]).await;
    assert_eq!(no_key.status, 401);
}

#[tokio::test]
async fn authorize_refusals_never_redirect_to_an_untrusted_uri() {
    let e = env().await;
    let c = e.client(&e.org, json!({})).await;
    let id = c["client_id"].as_str().unwrap().to_owned();
    let other = e.client(&e.other_org, json!({"directory_id": null})).await;
    let other_id = other["client_id"].as_str().unwrap().to_owned();

    // Unknown client, another organization's client, an unregistered or near-miss redirect
    // URI: our own error page, never a redirect.
    let evil = "https%3A%2F%2Fevil.test%2Fcb";
    for uri in [
        e.authorize_uri("oidc_client_01ZZZZZZZZZZZZZZZZZZZZZZZZ", ""),
        e.authorize_uri(&other_id, ""),
        format!(
            "/idp/{}/oidc/authorize?response_type=code&client_id={id}&redirect_uri={evil}&scope=openid",
            e.org
        ),
        format!(
            "/idp/{}/oidc/authorize?response_type=code&client_id={id}&redirect_uri={}%2F&scope=openid",
            e.org,
            url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
        ),
        format!("/idp/{}/oidc/authorize?response_type=code&client_id={id}&scope=openid", e.org),
        format!("{}&client_id={id}", e.authorize_uri(&id, "")),
    ] {
        let r = e.get(&uri, &[]).await;
        assert_eq!(r.status, 400, "{uri}: {}", r.text);
        assert!(r.location().is_none(), "{uri} redirected");
        assert!(r.cookie().is_none());
        assert!(r.text.contains("Sign-in problem"), "{}", r.text);
    }

    // After the redirect URI is trusted: errors go back to it with state and iss.
    let public = e.client(&e.org, json!({"public": true})).await;
    let public_id = public["client_id"].as_str().unwrap().to_owned();
    assert!(public.get("client_secret").is_none(), "{public}");
    let no_source = e.client(&e.org, json!({"directory_id": null})).await;
    for (client, extra, error) in [
        (public_id.as_str(), "", "invalid_request"),
        (
            public_id.as_str(),
            &format!("&code_challenge={CHALLENGE}&code_challenge_method=plain")[..],
            "invalid_request",
        ),
        (id.as_str(), "&prompt=none", "login_required"),
        (id.as_str(), "&max_age=-1", "invalid_request"),
        (id.as_str(), "&request=eyJ", "request_not_supported"),
        (
            no_source["client_id"].as_str().unwrap(),
            "",
            "access_denied",
        ),
    ] {
        let r = e.get(&e.authorize_uri(client, extra), &[]).await;
        assert_eq!(r.status, 303, "{extra}: {}", r.text);
        let loc = url::Url::parse(&r.location().unwrap()).unwrap();
        assert!(loc.as_str().starts_with(REDIRECT), "{loc}");
        let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
        assert_eq!(
            q.get("error").map(String::as_str),
            Some(error),
            "{extra}: {loc}"
        );
        assert_eq!(q.get("state").map(String::as_str), Some("st-1"));
        assert!(q.get("iss").unwrap().ends_with("/oidc"));
        assert!(!q.contains_key("code"));
    }
}

#[tokio::test]
async fn token_and_userinfo_refusals() {
    let e = env().await;
    let c = e.client(&e.org, json!({})).await;
    let id = c["client_id"].as_str().unwrap().to_owned();
    let secret = c["client_secret"].as_str().unwrap().to_owned();
    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");

    // A login: the code comes back with state and iss; the nonce is echoed in the ID token.
    let back = e.login(&id, &pkce).await;
    assert!(back.as_str().starts_with(REDIRECT), "{back}");
    let q: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-1");
    let code = code_of(&back);
    let grant = |code: &str, verifier: Option<&str>, redirect: &str| {
        let mut v = vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.to_owned()),
            ("redirect_uri".to_owned(), redirect.to_owned()),
        ];
        if let Some(x) = verifier {
            v.push(("code_verifier".to_owned(), x.to_owned()));
        }
        v
    };
    let pairs = |v: &Vec<(String, String)>| -> Vec<(String, String)> { v.clone() };
    async fn send(e: &Env, v: &[(String, String)], basic: Option<(&str, &str)>) -> Resp {
        let refs: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        e.token(&refs, basic).await
    }
    // Wrong secret, another organization's client, no authentication: invalid_client, 401.
    let other = e.client(&e.other_org, json!({"directory_id": null})).await;
    for basic in [
        Some((id.as_str(), "wrong")),
        Some((
            other["client_id"].as_str().unwrap(),
            other["client_secret"].as_str().unwrap(),
        )),
        None,
    ] {
        let r = send(&e, &pairs(&grant(&code, Some(VERIFIER), REDIRECT)), basic).await;
        assert_eq!(r.status, 401, "{basic:?}: {}", r.text);
        assert_eq!(r.json()["error"], "invalid_client");
        if basic.is_some() {
            assert!(r.headers.get(header::WWW_AUTHENTICATE).is_some());
        }
    }
    // Missing or wrong verifier, another redirect URI: invalid_grant (the code survives).
    for v in [
        grant(&code, None, REDIRECT),
        grant(&code, Some(&"x".repeat(43)), REDIRECT),
        grant(&code, Some(VERIFIER), "https://rp.example.test/other"),
    ] {
        let r = send(&e, &v, Some((&id, &secret))).await;
        assert_eq!(r.status, 400, "{v:?}: {}", r.text);
        assert_eq!(r.json()["error"], "invalid_grant", "{v:?}");
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    }
    // client_secret_post works; the tokens carry nonce and the directory user's claims.
    let mut post = grant(&code, Some(VERIFIER), REDIRECT);
    post.push(("client_id".into(), id.clone()));
    post.push(("client_secret".into(), secret.clone()));
    let r = send(&e, &post, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let tokens = r.json();
    let id_token = tokens["id_token"].as_str().unwrap();
    let claims = jwt_part(id_token, 1);
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["aud"], id.as_str());
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["given_name"], "Alice");
    assert_eq!(claims["family_name"], "Archer");
    assert_eq!(claims["groups"], json!(["engineering"]));
    let jwks = e
        .get(&format!("/idp/{}/oidc/jwks", e.org), &[])
        .await
        .json();
    assert_eq!(jwt_part(id_token, 0)["kid"], jwks["keys"][0]["kid"]);
    let at_hash = URL_SAFE_NO_PAD
        .encode(&Sha256::digest(tokens["access_token"].as_str().unwrap().as_bytes())[..16]);
    assert_eq!(claims["at_hash"], at_hash.as_str());
    // The code is single use.
    let r = send(
        &e,
        &grant(&code, Some(VERIFIER), REDIRECT),
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text);

    // Userinfo: the bearer token; nothing, a wrong token, another organization's endpoint: 401.
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let ui = e
        .get(
            &format!("/idp/{}/oidc/userinfo", e.org),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(ui.status, 200, "{}", ui.text);
    assert_eq!(ui.json()["sub"], claims["sub"]);
    for (org, auth) in [
        (e.org.as_str(), None),
        (e.org.as_str(), Some("Bearer not-a-token")),
        (e.other_org.as_str(), Some(bearer.as_str())),
    ] {
        let h: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        let r = e.get(&format!("/idp/{org}/oidc/userinfo"), &h).await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text);
        assert_eq!(r.json()["error"], "invalid_token");
        assert!(r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }

    // The lifetimes are IdP settings: read, refused out of range (naming the field), and
    // changed live for the next tokens.
    let settings = e.api("GET", "/admin/idp/settings", None).await.json();
    assert_eq!(settings["oidc_code_ttl_secs"], 60, "{settings}");
    assert_eq!(settings["oidc_access_token_ttl_secs"], 600);
    assert_eq!(settings["oidc_id_token_ttl_secs"], 600);
    for (field, bad) in [
        ("oidc_code_ttl_secs", json!(601)),
        ("oidc_access_token_ttl_secs", json!(0)),
        ("oidc_id_token_ttl_secs", json!("1h")),
    ] {
        let r = e
            .api("PATCH", "/admin/idp/settings", Some(json!({ field: bad })))
            .await;
        assert_eq!(r.status, 422, "{field}: {}", r.text);
        assert!(r.text.contains(field), "{}", r.text);
    }
    let r = e
        .api(
            "PATCH",
            "/admin/idp/settings",
            Some(json!({"oidc_access_token_ttl_secs": 300, "oidc_id_token_ttl_secs": 120})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let code = code_of(&e.login(&id, &pkce).await);
    let r = send(
        &e,
        &grant(&code, Some(VERIFIER), REDIRECT),
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let tokens = r.json();
    assert_eq!(tokens["expires_in"], 300, "{tokens}");
    let claims = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );

    // An expired code.
    let r = e
        .api(
            "PATCH",
            "/admin/idp/settings",
            Some(json!({"oidc_code_ttl_secs": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let code = code_of(&e.login(&id, &pkce).await);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = send(
        &e,
        &grant(&code, Some(VERIFIER), REDIRECT),
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text);

    // A deleted client's codes are not redeemed.
    let r = e
        .api(
            "PATCH",
            "/admin/idp/settings",
            Some(json!({"oidc_code_ttl_secs": 60})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let code = code_of(&e.login(&id, &pkce).await);
    e.api("DELETE", &format!("/admin/oidc_clients/{id}"), None)
        .await;
    let r = send(
        &e,
        &grant(&code, Some(VERIFIER), REDIRECT),
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_client", "{}", r.text);

    // Events name the protocol and the client.
    let evs = e
        .api("GET", "/events?events=idp.login_succeeded", None)
        .await
        .json();
    let data = &evs["data"][0]["data"];
    assert_eq!(data["protocol"], "oidc", "{evs}");
    assert_eq!(data["client_id"], id.as_str());
}
