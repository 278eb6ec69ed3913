//! The SAML IdP endpoints of an organization:
//!
//! - `GET /idp/{org}/saml/metadata`: the IdP metadata (entityID, SingleSignOnService for
//!   HTTP-Redirect and HTTP-POST, signing certificates);
//! - `GET|POST /idp/{org}/saml/sso`: takes an AuthnRequest and shows the login page (with the
//!   login session's cookie), or a SAML error Response to the SP's registered ACS, or our own
//!   error page;
//! - `POST /idp/{org}/login`: the login form; answers the auto-submitting page that posts the
//!   signed assertion to the registered ACS, or the page again with one message;
//! - `GET /idp/{org}/saml/start?sp=…&RelayState=…`: IdP-initiated login (SPs that allow it);
//! - `GET /idp/{org}/broker/return`: where a broker-mode login's upstream SSO login ends (with
//!   a code, or an OAuth error); answers the assertion or a SAML error Response;
//! - `GET|POST /idp/{org}/saml/slo`: SAML single logout of idbridge's own browser session (a
//!   registered SP's signed LogoutRequest; answered with a signed LogoutResponse);
//! - `GET|POST /idp/{org}/logout`: the browser ends its own idbridge session.
//!
//! The "remember this browser" session (`idbridge_browser_session`, see
//! `idbridge_sso::idp::sessions`) lets a later login from the same browser skip the password.
//!
//! Pages are served with a strict CSP (nothing loads, the one style block by its hash), no
//! caching, no framing, no referrer.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use idbridge_ldap::Password;
use idbridge_saml::idp::PostForm;
use idbridge_sso::idp::{
    BrokerReturn, IdpPage, InitiatedStart, PasswordLogin, PasswordOutcome, RememberCookie,
    SloBinding, SloOutcome, SsoBinding, SsoOutcome, SsoRequest,
};
use sha2::{Digest, Sha256};

use crate::body::Query;
use crate::error::ApiError;
use crate::sso::client_info;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/idp/{org_id}/saml/metadata", get(metadata))
        .route("/idp/{org_id}/saml/sso", get(sso_redirect).post(sso_post))
        .route("/idp/{org_id}/login", post(login))
        .route("/idp/{org_id}/saml/start", get(initiated_start))
        .route("/idp/{org_id}/broker/return", get(broker_return))
        .route("/idp/{org_id}/saml/slo", get(slo_redirect).post(slo_post))
        .route("/idp/{org_id}/logout", get(logout_page).post(logout))
}

/// The "remember this browser" session's cookie (opaque; only its digest is stored).
const BROWSER_COOKIE: &str = "idbridge_browser_session";

/// Prefix of the IdP login cookie; the suffix is the login's key.
const COOKIE_PREFIX: &str = "idbridge_idp_";

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;background:#f4f5f7;color:#111}main{max-width:24rem;margin:10vh auto;background:#fff;padding:1.5rem;border-radius:8px;box-shadow:0 1px 4px #0002}h1{font-size:1.3rem;margin:0 0 1rem}label{display:block;margin:.8rem 0 .3rem;font-weight:600}input{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #888;border-radius:4px}input:focus,button:focus{outline:3px solid #2563eb;outline-offset:1px}button{margin-top:1.2rem;width:100%;padding:.7rem;font-size:1rem;background:#1d4ed8;color:#fff;border:0;border-radius:4px;cursor:pointer}p.error{color:#a00;background:#fee;padding:.6rem;border-radius:4px}label.remember{display:flex;align-items:center;gap:.5rem;font-weight:400}label.remember input{width:auto;margin:0}";

fn style_hash() -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()))
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}

fn page_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&format!(
            "default-src 'none'; style-src {}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            style_hash()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    page_headers(&mut resp);
    resp
}

/// The login page: usable with a keyboard and on a phone (labels, autocomplete, autofocus,
/// viewport), the message announced to screen readers.
pub(super) fn login_page(status: StatusCode, p: &IdpPage) -> Response {
    let message = p
        .message
        .as_deref()
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    let remember = if p.offer_remember {
        "<label class=\"remember\"><input type=\"checkbox\" id=\"remember\" name=\"remember\" value=\"1\">Remember this browser</label>"
    } else {
        ""
    };
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Sign in</title><style>{STYLE}</style></head><body><main><h1>Sign in to {sp}</h1>{message}<form method=\"post\" action=\"/idp/{org}/login\"><input type=\"hidden\" name=\"k\" value=\"{k}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><label for=\"login\">Username or email</label><input id=\"login\" name=\"login\" type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus value=\"{login}\"><label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>{remember}<button type=\"submit\">Sign in</button></form></main></body></html>\n",
        sp = escape(&p.service_provider),
        org = escape(&p.organization_id),
        k = escape(&p.key),
        csrf = escape(&p.csrf),
        login = escape(p.login.as_deref().unwrap_or("")),
    );
    html(status, body)
}

pub(super) fn error_page(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    html(
        status,
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Sign-in problem</title><style>{STYLE}</style></head><body><main><h1>Sign-in problem</h1><p class=\"error\" role=\"alert\">{}</p></main></body></html>\n",
            escape(message)
        ),
    )
}

fn post_page(form: PostForm) -> Response {
    let mut resp = (StatusCode::OK, form.html.clone()).into_response();
    for (name, value) in form.headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// A 303 to `location` (an OIDC authorization response: a registered redirect URI), not cached.
pub(super) fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            resp.headers_mut().insert(header::LOCATION, v);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            resp
        }
        Err(_) => error_page(500, "The answer to the application could not be built."),
    }
}

pub(super) fn cookie(
    state: &AppState,
    org_id: &str,
    key: &str,
    value: &str,
    max_age: u64,
) -> String {
    format!(
        "{COOKIE_PREFIX}{key}={value}; Path=/idp/{org_id}; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        if secure(state) { "; Secure" } else { "" }
    )
}

pub(super) fn form_field(body: &Bytes, name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The client address for attempt limits: the socket's peer, or what a trusted proxy says in
/// `X-Forwarded-For` (the IdP settings' `trusted_proxies`; from anyone else the header is
/// ignored, since a client could forge it).
fn client_address(
    state: &AppState,
    connect: Option<&ConnectInfo<SocketAddr>>,
    headers: &HeaderMap,
) -> Option<String> {
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    state.sso.idp_client_address(
        connect.map(|c| c.0.ip()),
        Some(forwarded.as_str()).filter(|f| !f.is_empty()),
    )
}

fn clear_idp_cookie(state: &AppState, org_id: &str, key: &str, resp: &mut Response) {
    if let Ok(v) = HeaderValue::from_str(&cookie(state, org_id, key, "", 0)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Sets (`Some`) or clears (`None`) the browser-session cookie: HttpOnly, SameSite=Lax,
/// Secure behind https, scoped to the organization's IdP paths.
fn browser_cookie(
    state: &AppState,
    org_id: &str,
    remember: Option<&RememberCookie>,
    resp: &mut Response,
) {
    let (value, max_age) = remember.map_or(("", 0), |r| (r.secret.as_str(), r.ttl.as_secs()));
    let c = format!(
        "{BROWSER_COOKIE}={value}; Path=/idp/{org_id}; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        if secure(state) { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn browser_session(headers: &HeaderMap) -> Option<String> {
    crate::sso::cookie(headers, BROWSER_COOKIE).filter(|c| !c.is_empty() && c.len() <= 64)
}

async fn metadata(State(state): State<AppState>, Path(org_id): Path<String>) -> Response {
    match state.sso.idp_metadata(&org_id).await {
        Ok(xml) => {
            let mut resp = xml.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            );
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn sso(state: AppState, req: SsoRequest) -> Response {
    let org_id = req.organization_id.clone();
    let had_browser_session = req.browser_session.is_some();
    let outcome = state.sso.idp_sso(req).await;
    // A browser session that did not answer the login is no longer good: drop its cookie.
    let forget = had_browser_session && matches!(outcome, SsoOutcome::Login { .. });
    let mut resp = render_outcome(&state, &org_id, outcome);
    if forget {
        browser_cookie(&state, &org_id, None, &mut resp);
    }
    resp
}

fn render_outcome(state: &AppState, org_id: &str, outcome: SsoOutcome) -> Response {
    match outcome {
        SsoOutcome::Upstream {
            key,
            session,
            ttl,
            upstream,
        } => {
            let upstream_cookie = crate::sso::session_cookie(
                state,
                &upstream.relay_key,
                &upstream.session_id,
                upstream.ttl,
            );
            let mut resp = crate::sso::found(&upstream.idp_url, Some(&upstream_cookie));
            if let Ok(v) =
                HeaderValue::from_str(&cookie(state, org_id, &key, &session, ttl.as_secs()))
            {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        SsoOutcome::Login { page, session, ttl } => {
            let mut resp = login_page(StatusCode::OK, &page);
            if let Ok(v) =
                HeaderValue::from_str(&cookie(state, org_id, &page.key, &session, ttl.as_secs()))
            {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        SsoOutcome::Post(form) => post_page(form),
        SsoOutcome::Error { status, message } => error_page(status, &message),
    }
}

async fn sso_redirect(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let req = SsoRequest {
        organization_id,
        binding: SsoBinding::Redirect {
            raw_query: q.unwrap_or_default(),
        },
        client: client_info(&headers),
        browser_session: browser_session(&headers),
    };
    sso(state, req).await
}

async fn sso_post(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = SsoRequest {
        organization_id,
        binding: SsoBinding::Post {
            saml_request: form_field(&body, "SAMLRequest"),
            relay_state: form_field(&body, "RelayState"),
        },
        client: client_info(&headers),
        browser_session: browser_session(&headers),
    };
    sso(state, req).await
}

async fn initiated_start(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    q: Query,
) -> Response {
    let req = InitiatedStart {
        organization_id: organization_id.clone(),
        sp: q.get("sp").map(str::to_owned),
        relay_state: q.get("RelayState").map(str::to_owned),
        client: client_info(&headers),
    };
    let outcome = state.sso.idp_initiated_start(req).await;
    render_outcome(&state, &organization_id, outcome)
}

async fn broker_return(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    q: Query,
) -> Response {
    let key = q.get("state").filter(|k| k.len() <= 64).map(str::to_owned);
    let session = key
        .as_deref()
        .and_then(|k| crate::sso::cookie(&headers, &format!("{COOKIE_PREFIX}{k}")));
    let req = BrokerReturn {
        organization_id: organization_id.clone(),
        state: key,
        session,
        code: q.get("code").map(str::to_owned),
        error: q.get("error").map(str::to_owned),
        error_description: q.get("error_description").map(str::to_owned),
        client: client_info(&headers),
    };
    let (outcome, clear) = state.sso.idp_broker_return(req).await;
    let mut resp = render_outcome(&state, &organization_id, outcome);
    if let Some(key) = clear {
        clear_idp_cookie(&state, &organization_id, &key, &mut resp);
    }
    resp
}

async fn login(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers().clone();
    let address = client_address(
        &state,
        req.extensions().get::<ConnectInfo<SocketAddr>>(),
        &headers,
    );
    let body = match crate::body::read_body(req, &state).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let key = form_field(&body, "k").filter(|k| k.len() <= 64);
    let session = key
        .as_deref()
        .and_then(|k| crate::sso::cookie(&headers, &format!("{COOKIE_PREFIX}{k}")));
    let mut client = client_info(&headers);
    client.ip_address = address;
    let req = PasswordLogin {
        organization_id: organization_id.clone(),
        key,
        session,
        csrf: form_field(&body, "csrf"),
        login: form_field(&body, "login").unwrap_or_default(),
        password: Password::new(form_field(&body, "password").unwrap_or_default()),
        client,
        remember: form_field(&body, "remember").is_some_and(|v| v == "1" || v == "on"),
    };
    let ldap = state.ldap.clone();
    let settings = move |dir: &str| ldap.settings(dir);
    match state.sso.idp_password_login(req, &settings).await {
        PasswordOutcome::Assertion {
            form,
            key,
            remember,
        } => {
            let mut resp = post_page(form);
            clear_idp_cookie(&state, &organization_id, &key, &mut resp);
            if remember.is_some() {
                browser_cookie(&state, &organization_id, remember.as_ref(), &mut resp);
            }
            resp
        }
        PasswordOutcome::Redirect {
            location,
            key,
            remember,
        } => {
            let mut resp = redirect(&location);
            clear_idp_cookie(&state, &organization_id, &key, &mut resp);
            if remember.is_some() {
                browser_cookie(&state, &organization_id, remember.as_ref(), &mut resp);
            }
            resp
        }
        PasswordOutcome::Retry { status, page } => login_page(
            StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
            &page,
        ),
        PasswordOutcome::Error { status, message } => error_page(status, &message),
    }
}

fn render_slo(state: &AppState, org_id: &str, outcome: SloOutcome) -> Response {
    match outcome {
        SloOutcome::Respond { location, ended } => {
            let mut resp = crate::sso::found(&location, None);
            if ended {
                browser_cookie(state, org_id, None, &mut resp);
            }
            resp
        }
        SloOutcome::Error { status, message } => error_page(status, &message),
    }
}

async fn slo_redirect(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let binding = SloBinding::Redirect {
        raw_query: q.unwrap_or_default(),
    };
    let outcome = state.sso.idp_single_logout(&organization_id, binding).await;
    render_slo(&state, &organization_id, outcome)
}

async fn slo_post(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    body: Bytes,
) -> Response {
    let binding = SloBinding::Post {
        saml_request: form_field(&body, "SAMLRequest"),
        relay_state: form_field(&body, "RelayState"),
    };
    let outcome = state.sso.idp_single_logout(&organization_id, binding).await;
    render_slo(&state, &organization_id, outcome)
}

fn message_page(title: &str, body_html: &str) -> Response {
    html(
        StatusCode::OK,
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title><style>{STYLE}</style></head><body><main><h1>{title}</h1>{body_html}</main></body></html>\n"
        ),
    )
}

/// `GET /idp/{org}/logout`: a button (a cross-site POST carries no SameSite=Lax cookie, so
/// another site cannot sign the browser out).
async fn logout_page(Path(organization_id): Path<String>) -> Response {
    message_page(
        "Sign out of idbridge",
        &format!(
            "<form method=\"post\" action=\"/idp/{}/logout\"><button type=\"submit\">Sign out</button></form>",
            escape(&organization_id)
        ),
    )
}

/// `POST /idp/{org}/logout`: ends this browser's idbridge session and drops its cookie.
async fn logout(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ended = state
        .sso
        .idp_logout(&organization_id, browser_session(&headers).as_deref())
        .await;
    let text = if ended {
        "You are signed out of idbridge. The next sign-in asks for your password."
    } else {
        "This browser had no idbridge session here. The next sign-in asks for your password."
    };
    let mut resp = message_page("Signed out", &format!("<p>{text}</p>"));
    browser_cookie(&state, &organization_id, None, &mut resp);
    resp
}
