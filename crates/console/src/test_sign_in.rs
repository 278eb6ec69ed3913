//! "Test sign-in" of an SSO connection: a real login through the connection that lands back
//! in the console and shows the profile it produced (never the assertion, the code or the
//! access token). The one owner of the expiring [`TEST_SIGN_INS`] table.
//!
//! The operator's form starts the login: the console stores a random `state` with a PKCE
//! verifier, bound to the operator's session, and sends the browser to `/sso/authorize` with
//! the console's callback as redirect URI (`idbridge_sso::login::CONSOLE_TEST_CALLBACK_PATH`,
//! allowed only with a `code_challenge`). The IdP login, the ACS and the code are the ones any
//! app gets. The callback takes the pending record (single use), exchanges the code with the
//! verifier and keeps only the profile, then hands over to the result page, which needs the
//! same operator session.
//!
//! The callback itself needs no console cookie: a cross-site IdP's POST to the ACS makes the
//! redirect chain cross-site, so the SameSite=Strict session cookie is not sent there. The
//! callback answers with a same-origin refresh to the result page, where it is.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use idbridge_secrets::{random_token, sha256_hex};
use idbridge_sso::login::{pkce_challenge, TokenRequest, CONSOLE_TEST_CALLBACK_PATH};
use idbridge_sso::SsoError;
use idbridge_store::{ChangeSet, StoreError};
use maud::html;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::login::Empty;
use crate::pages::connections::text;
use crate::pages::{not_found, page, store_error};
use crate::web::{self, CsrfForm};
use crate::{blocking, now_ms, Console, Operator};

/// Expiring: `p/<sha256 hex of state>` → a started test ([`Pending`], single use);
/// `r/<sha256 hex of state>` → its [`Outcome`].
pub const TEST_SIGN_INS: &str = "console_test_sign_ins";

/// How long a started test and then its result are kept.
const TTL_MS: i64 = 15 * 60 * 1000;

/// A started test sign-in.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// Binds the test to the operator session that started it (digest of its CSRF token).
    session: String,
    connection_id: String,
    verifier: String,
}

/// How a test sign-in ended.
#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    session: String,
    connection_id: String,
    /// The profile the login produced (the fields an app gets from `getProfileAndToken`).
    profile: Option<Value>,
    /// The OAuth error the login ended with, and what it says.
    error: Option<(String, String)>,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Backend(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(TEST_SIGN_INS, e.to_string()))
}

fn session_binding(op: &Operator) -> String {
    sha256_hex(&op.csrf)
}

/// `POST /console/connections/{id}/test-sign-in`: starts a login through the connection.
pub(crate) async fn start(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Response {
    if let Err(SsoError::NotFound { .. }) = c.sso.connection_admin_view(&id) {
        return not_found(&c, &op, &format!("Connection {id}"));
    }
    let client_id = match c.sso.client_id() {
        Ok(Some(cid)) => cid,
        Ok(None) => {
            return web::bare_error(
                StatusCode::CONFLICT,
                "No client id yet",
                "This environment has no client id yet; start the server once with an API key.",
            )
        }
        Err(e) => return store_error(&e),
    };
    let state = random_token(32);
    let verifier = random_token(48);
    let pending = Pending {
        session: session_binding(&op),
        connection_id: id.clone(),
        verifier: verifier.clone(),
    };
    let store = c.store.clone();
    let key = format!("p/{}", sha256_hex(&state));
    let stored = blocking(move || {
        let mut cs = ChangeSet::new();
        cs.put_expiring(TEST_SIGN_INS, key, encode(&pending)?, now_ms() + TTL_MS);
        store.commit(cs).map(|_| ())
    })
    .await;
    if let Err(e) = stored {
        return store_error(&e);
    }
    tracing::info!(operator = %op.username, connection = %id, "console: test sign-in started");
    let query = serde_urlencoded::to_string([
        ("client_id", client_id.as_str()),
        ("redirect_uri", &c.absolute_url(CONSOLE_TEST_CALLBACK_PATH)),
        ("response_type", "code"),
        ("state", &state),
        ("code_challenge", &pkce_challenge(&verifier)),
        ("code_challenge_method", "S256"),
        ("connection", &id),
    ])
    .unwrap_or_default();
    // Not a redirect: after this form, CSP form-action would block the chain to the IdP.
    web::refresh_page(
        &c,
        "Opening the identity provider",
        &c.url(&format!("/sso/authorize?{query}")),
        "Continue to the identity provider",
    )
}

/// What the login sends back to the callback.
#[derive(Debug, Deserialize)]
pub(crate) struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /console/test-sign-in/callback`: exchanges the code and keeps only the profile.
pub(crate) async fn callback(
    State(c): State<Arc<Console>>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let unknown = || {
        web::bare_error(
            StatusCode::BAD_REQUEST,
            "Unknown test sign-in",
            "This test sign-in was already completed, has expired (15 minutes) or was not \
             started from the console. Start it again from the connection's page.",
        )
    };
    let Some(state) = q.state.filter(|s| !s.is_empty() && s.len() <= 128) else {
        return unknown();
    };
    let digest = sha256_hex(&state);
    let store = c.store.clone();
    let key = format!("p/{digest}");
    let taken = blocking(move || store.take_expiring(TEST_SIGN_INS, &key, now_ms())).await;
    let pending: Pending = match taken.and_then(|b| b.as_deref().map(decode).transpose()) {
        Ok(Some(p)) => p,
        Ok(None) => return unknown(),
        Err(e) => return store_error(&e),
    };
    let (profile, error) = match (q.code, q.error) {
        (Some(code), None) => {
            let exchanged = match c.sso.client_id() {
                Ok(client_id) => {
                    c.sso
                        .exchange_code(TokenRequest {
                            grant_type: Some("authorization_code".into()),
                            client_id,
                            client_secret: None,
                            code: Some(code),
                            code_verifier: Some(pending.verifier.clone()),
                            redirect_uri: Some(c.absolute_url(CONSOLE_TEST_CALLBACK_PATH)),
                        })
                        .await
                }
                Err(e) => Err(e.into()),
            };
            match exchanged {
                // The access token is dropped here: the console never shows or uses it.
                Ok(grant) => (serde_json::to_value(&grant.profile).ok(), None),
                Err(SsoError::OAuth { error, description }) => {
                    (None, Some((error.to_string(), description)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "console: test sign-in code exchange failed");
                    (
                        None,
                        Some((
                            "server_error".into(),
                            "The code could not be exchanged; the server's log says why.".into(),
                        )),
                    )
                }
            }
        }
        (_, Some(err)) => (None, Some((err, q.error_description.unwrap_or_default()))),
        (None, None) => (
            None,
            Some((
                "invalid_request".into(),
                "The login came back with neither a code nor an error.".into(),
            )),
        ),
    };
    let outcome = Outcome {
        session: pending.session,
        connection_id: pending.connection_id,
        profile,
        error,
    };
    let store = c.store.clone();
    let key = format!("r/{digest}");
    let stored = blocking(move || {
        let mut cs = ChangeSet::new();
        cs.put_expiring(TEST_SIGN_INS, key, encode(&outcome)?, now_ms() + TTL_MS);
        store.commit(cs).map(|_| ())
    })
    .await;
    if let Err(e) = stored {
        return store_error(&e);
    }
    let result = c.url(&format!("/console/test-sign-in/results/{digest}"));
    // The result page needs the SameSite=Strict session cookie, which the IdP's cross-site
    // redirect chain did not carry: a refresh from this page is same-site.
    web::refresh_page(&c, "Test sign-in finished", &result, "See the result")
}

/// `GET /console/test-sign-in/results/{id}`: the profile (or error) of a test sign-in started
/// by this operator session.
pub(crate) async fn result(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return not_found(&c, &op, "This test sign-in");
    }
    let store = c.store.clone();
    let key = format!("r/{id}");
    let read = blocking(move || store.get_expiring(TEST_SIGN_INS, &key, now_ms())).await;
    let outcome = match read.and_then(|b| b.as_deref().map(decode::<Outcome>).transpose()) {
        Ok(Some(o)) if web::same_token(&o.session, &session_binding(&op)) => o,
        Ok(_) => return not_found(&c, &op, "This test sign-in"),
        Err(e) => return store_error(&e),
    };
    let conn_path = format!("/console/connections/{}", outcome.connection_id);
    page(
        &c,
        &op,
        "/console/organizations",
        "Test sign-in",
        html! {
            @if let Some(p) = &outcome.profile {
                p class="notice" role="status" { "The sign-in worked. This is the profile an app gets for this user:" }
                dl class="facts" id="profile" {
                    dt { "Profile id" } dd { code { (text(p, "id")) } }
                    dt { "Email" } dd { (text(p, "email")) }
                    dt { "First name" } dd { (text(p, "first_name")) }
                    dt { "Last name" } dd { (text(p, "last_name")) }
                    dt { "IdP id" } dd { code { (text(p, "idp_id")) } }
                    dt { "Groups" } dd { (p["groups"].as_array().map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                    dt { "Role" } dd { (p["role"]["slug"].as_str().unwrap_or("—")) }
                    dt { "Organization" } dd { code { (text(p, "organization_id")) } }
                    dt { "Connection type" } dd { (text(p, "connection_type")) }
                    @if let Some(custom) = p["custom_attributes"].as_object().filter(|m| !m.is_empty()) {
                        @for (k, v) in custom {
                            dt { (k) } dd { (v.as_str().map_or_else(|| v.to_string(), str::to_string)) }
                        }
                    }
                }
            }
            @if let Some((code, description)) = &outcome.error {
                p class="error" role="alert" { "The sign-in failed: " code { (code) } }
                p { (description) }
                p { "The connection's settings or the IdP's configuration need a look; the server's log has the details." }
            }
            p { a href=(c.url(&conn_path)) { "Back to the connection" } }
        },
    )
}
