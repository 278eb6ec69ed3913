//! A test OpenID Provider built only from `idbridge_oidc::op`, wired the way the SSO crate's
//! endpoints will be (in-memory maps stand in for the store; a fixed user stands in for the
//! login page). Independent relying parties log in against it in `tests/op_interop.rs`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use idbridge_oidc::op::{
    authenticate_client, bearer_token, client_credentials, discovery_document, issue_tokens,
    jwks_document, new_secret, parse_authorization, redeem, secret_key, userinfo, AccessGrant,
    AuthorizeError, CodeGrant, ErrorCode, OAuthError, OpEndpoints, OpSigningKey, OpUser,
    RegisteredClient, TokenRequest, DEFAULT_CODE_TTL_SECS, DEFAULT_TOKEN_TTL_SECS,
};
use idbridge_oidc::Secret;
use serde_json::Value;

pub const CLIENT_ID: &str = "workos-generic-oidc";
pub const CLIENT_SECRET: &str = "Zm9vYmFyLXNlY3JldC12YWx1ZS0wMTIzNDU2Nzg5";
pub const REDIRECT_URI: &str = "https://auth.workos.test/sso/oidc/callback";

/// Switches that make the provider misbehave, for the RPs' negative cases.
#[derive(Default, Clone, Copy)]
pub struct Tweaks {
    /// Flip a byte of every ID token's signature.
    pub tamper_signature: bool,
}

pub struct OpState {
    pub endpoints: OpEndpoints,
    pub keys: Vec<OpSigningKey>,
    pub clients: HashMap<String, RegisteredClient>,
    pub codes: Mutex<HashMap<String, CodeGrant>>,
    pub access: Mutex<HashMap<String, AccessGrant>>,
    pub user: OpUser,
    pub tweaks: Tweaks,
}

pub struct RunningOp {
    pub issuer: String,
    pub state: Arc<OpState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RunningOp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub fn test_user() -> OpUser {
    OpUser {
        sub: "9b2c4e1a-77d3-4f0e-a1b2-0c3d4e5f6a7b".into(),
        email: Some("zoë.o'brien@example.com".into()),
        email_verified: Some(true),
        given_name: Some("Zoë".into()),
        family_name: Some("O'Brien & Søn".into()),
        name: Some("Zoë O'Brien".into()),
        groups: vec!["R&D".into(), "Admins".into()],
        extra: Default::default(),
    }
}

pub fn client(groups_without_scope: bool) -> RegisteredClient {
    RegisteredClient {
        client_id: CLIENT_ID.into(),
        secret: Some(Secret::new(CLIENT_SECRET)),
        redirect_uris: vec![REDIRECT_URI.into()],
        require_pkce: false,
        groups_without_scope,
    }
}

/// Start the provider on 127.0.0.1 with `keys` (the first one signs).
pub async fn start(keys: Vec<OpSigningKey>, tweaks: Tweaks) -> RunningOp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let issuer = format!("http://127.0.0.1:{}/oidc/org_01", addr.port());
    let endpoints = OpEndpoints::under_issuer(&issuer).unwrap();
    let state = Arc::new(OpState {
        endpoints,
        keys,
        clients: HashMap::from([(CLIENT_ID.to_owned(), client(true))]),
        codes: Mutex::new(HashMap::new()),
        access: Mutex::new(HashMap::new()),
        user: test_user(),
        tweaks,
    });
    let app = Router::new()
        .route(
            "/oidc/org_01/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/oidc/org_01/jwks", get(jwks))
        .route("/oidc/org_01/authorize", get(authorize))
        .route("/oidc/org_01/token", post(token))
        .route("/oidc/org_01/userinfo", get(userinfo_endpoint))
        .with_state(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    RunningOp {
        issuer,
        state,
        server,
    }
}

fn oauth_error(e: &OAuthError, scheme: &str) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, Json(e.to_json())).into_response();
    if let Some(h) = e.www_authenticate(scheme) {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, h.parse().unwrap());
    }
    r
}

async fn discovery(State(s): State<Arc<OpState>>) -> Json<Value> {
    Json(discovery_document(&s.endpoints))
}

async fn jwks(State(s): State<Arc<OpState>>) -> Json<Value> {
    let keys: Vec<&OpSigningKey> = s.keys.iter().collect();
    Json(jwks_document(&keys))
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response()
}

async fn authorize(State(s): State<Arc<OpState>>, RawQuery(q): RawQuery) -> Response {
    let issuer = &s.endpoints.issuer;
    let result = parse_authorization(q.as_deref().unwrap_or("")).and_then(|unchecked| {
        match s.clients.get(unchecked.client_id()) {
            Some(c) => unchecked.validate(c).map(|req| (req, c.clone())),
            None => Err(AuthorizeError::NoRedirect(OAuthError::invalid_request(
                "unknown client_id",
            ))),
        }
    });
    let (req, client) = match result {
        Ok(v) => v,
        Err(e) => {
            return match e.redirect_url(issuer) {
                Some(u) => redirect(u.as_str()),
                // Our own error page: never a redirect to an unverified URI.
                None => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            };
        }
    };
    // The login page would run here; the test provider logs the fixed user in.
    let now = Utc::now();
    let code = new_secret().unwrap();
    let grant = CodeGrant::new(
        &req,
        s.user.clone(),
        now,
        now,
        DEFAULT_CODE_TTL_SECS,
        client.groups_without_scope,
    );
    s.codes.lock().unwrap().insert(secret_key(&code), grant);
    redirect(req.success_redirect(&code, issuer).unwrap().as_str())
}

async fn token(State(s): State<Arc<OpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let scheme = if auth.is_some() { "Basic" } else { "Bearer" };
    let result = (|| {
        let req = TokenRequest::parse_form(&body)?;
        let creds =
            client_credentials(auth, req.client_id.as_deref(), req.client_secret.as_deref())?;
        let client = s.clients.get(&creds.client_id).ok_or_else(|| {
            OAuthError::new(ErrorCode::InvalidClient, "client authentication failed")
        })?;
        authenticate_client(&creds, client)?;
        // Single use: the grant leaves the map whatever happens next.
        let grant = s
            .codes
            .lock()
            .unwrap()
            .remove(&req.code_key())
            .ok_or_else(|| OAuthError::new(ErrorCode::InvalidGrant, "unknown or used code"))?;
        let now = Utc::now();
        redeem(&grant, &req, &client.client_id, now)?;
        let mut issued = issue_tokens(
            &grant,
            &s.keys[0],
            &s.endpoints.issuer,
            now,
            DEFAULT_TOKEN_TTL_SECS,
            DEFAULT_TOKEN_TTL_SECS,
        )?;
        if s.tweaks.tamper_signature {
            // A character in the middle of the signature (the last one may hold padding bits).
            let t = &mut issued.response.id_token;
            let at = t.rfind('.').unwrap() + 20;
            let c = if &t[at..=at] == "A" { "B" } else { "A" };
            t.replace_range(at..=at, c);
        }
        s.access
            .lock()
            .unwrap()
            .insert(issued.access_key.clone(), issued.access_grant.clone());
        Ok::<_, OAuthError>(issued.response)
    })();
    match result {
        Ok(r) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::to_value(r).unwrap()),
        )
            .into_response(),
        Err(e) => oauth_error(&e, scheme),
    }
}

async fn userinfo_endpoint(State(s): State<Arc<OpState>>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let result = bearer_token(auth).and_then(|t| {
        let grant = s
            .access
            .lock()
            .unwrap()
            .get(&secret_key(t))
            .cloned()
            .ok_or_else(|| OAuthError::new(ErrorCode::InvalidToken, "unknown access token"))?;
        userinfo(&grant, Utc::now())
    });
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => oauth_error(&e, "Bearer"),
    }
}
