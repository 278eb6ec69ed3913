//! Sign-in and sign-out of console operators.
//!
//! The sign-in form is protected against login CSRF by a double-submit token: a random value
//! in a short-lived cookie and in the form, compared in constant time. Failed attempts are
//! limited per account and per client address with the project's shared limiter.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use crate::web::{self, CsrfForm};
use crate::{blocking, now_ms, operators, sessions, Console, Operator, SESSION_COOKIE};

/// The double-submit cookie of the sign-in form.
const LOGIN_COOKIE: &str = "idbridge_console_login";

fn login_page(c: &Console, token: &str, message: Option<&str>) -> Markup {
    web::layout(
        c,
        "Sign in",
        html! { header class="top" { span class="brand" { "idbridge console" } } },
        html! {
            @if let Some(m) = message { p class="error" role="alert" { (m) } }
            form method="post" action=(c.url("/console/login")) class="card narrow" {
                (web::csrf_input(token))
                div class="field" {
                    label for="username" { "Username" }
                    input id="username" name="username" type="text" autocomplete="username" required autofocus;
                }
                div class="field" {
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="current-password" required;
                }
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn render_login(c: &Console, status: StatusCode, message: Option<&str>) -> Response {
    let token = idbridge_secrets::random_token(24);
    let cookie = web::set_cookie(c, LOGIN_COOKIE, &token, "/console/login", Some(600));
    (
        status,
        [(header::SET_COOKIE, cookie)],
        login_page(c, &token, message),
    )
        .into_response()
}

pub(crate) async fn form(State(c): State<Arc<Console>>) -> Response {
    render_login(&c, StatusCode::OK, None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    csrf: String,
    username: String,
    password: String,
}

pub(crate) async fn submit(State(c): State<Arc<Console>>, req: Request) -> Response {
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |ci| ci.0.ip().to_string());
    let cookie = web::cookie(req.headers(), LOGIN_COOKIE);
    let Ok(bytes) = Bytes::from_request(req, &()).await else {
        return render_login(
            &c,
            StatusCode::BAD_REQUEST,
            Some("The form could not be read; try again."),
        );
    };
    let Ok(f) = serde_urlencoded::from_bytes::<LoginForm>(&bytes) else {
        return render_login(
            &c,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("The form could not be read; try again."),
        );
    };
    if !cookie.is_some_and(|expected| web::same_token(&expected, &f.csrf)) {
        return web::csrf_refused();
    }
    let account = f.username.trim().to_lowercase();
    for (limiter, what) in [
        (&c.account_limiter, account.as_str()),
        (&c.address_limiter, address.as_str()),
    ] {
        if let Err(retry) = limiter.check(what) {
            let minutes = retry.secs().div_ceil(60);
            let msg = format!(
                "Too many failed sign-ins for this account or from this address. Try again in \
                 {minutes} minute(s), or ask another operator to reset the password \
                 (`idbridge console-user passwd`)."
            );
            return render_login(&c, StatusCode::TOO_MANY_REQUESTS, Some(&msg));
        }
    }
    let (store, user, password) = (c.store.clone(), account.clone(), f.password);
    let ok = match blocking(move || operators::verify(store.as_ref(), &user, &password)).await {
        Ok(ok) => ok,
        Err(e) => return crate::pages::store_error(&e),
    };
    if !ok {
        c.account_limiter.failed(&account);
        c.address_limiter.failed(&address);
        tracing::info!(account = %account, %address, "console sign-in failed");
        return render_login(
            &c,
            StatusCode::UNAUTHORIZED,
            Some("Wrong username or password."),
        );
    }
    c.account_limiter.succeeded(&account);
    let (store, policy) = (c.store.clone(), c.settings.sessions);
    let started =
        blocking(move || sessions::start(store.as_ref(), &account, policy, now_ms())).await;
    match started {
        Ok((id, _)) => {
            tracing::info!(operator = %f.username, "console sign-in");
            let session = web::set_cookie(&c, SESSION_COOKIE, &id, "/console", None);
            let clear = web::set_cookie(&c, LOGIN_COOKIE, "", "/console/login", Some(0));
            let mut res = web::redirect(&c, "/console/organizations");
            res.headers_mut().append(header::SET_COOKIE, session);
            res.headers_mut().append(header::SET_COOKIE, clear);
            res
        }
        Err(e) => crate::pages::store_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

pub(crate) async fn logout(
    State(c): State<Arc<Console>>,
    axum::Extension(op): axum::Extension<Operator>,
    headers: axum::http::HeaderMap,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Response {
    if let Some(id) = web::cookie(&headers, SESSION_COOKIE) {
        let store = c.store.clone();
        if let Err(e) = blocking(move || sessions::end(store.as_ref(), &id)).await {
            return crate::pages::store_error(&e);
        }
    }
    tracing::info!(operator = %op.username, "console sign-out");
    let mut res = web::redirect(&c, "/console/login");
    res.headers_mut().append(
        header::SET_COOKIE,
        web::set_cookie(&c, SESSION_COOKIE, "", "/console", Some(0)),
    );
    res
}
