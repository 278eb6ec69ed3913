//! What every console and portal page shares: the security headers, cookies, the CSRF-checked
//! form extractor, the page layout and the error page.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::Console;

/// Content-Security-Policy of every page: no script at all, styles only from the served file,
/// forms only to this origin, never framed.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every console and portal response.
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, scoped to `path`, Secure behind https.
/// `max_age_secs = 0` deletes the cookie.
pub fn set_cookie(
    c: &Console,
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: Option<u64>,
) -> HeaderValue {
    let mut s = format!(
        "{name}={value}; Path={}{path}; HttpOnly; SameSite=Strict",
        c.base_path
    );
    if c.secure_cookies {
        s.push_str("; Secure");
    }
    if let Some(age) = max_age_secs {
        s.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// Constant-time comparison of a sent CSRF token with the session's.
pub fn same_token(expected: &str, sent: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(sent.as_bytes()))
}

/// The CSRF token of the current session (console operator or portal), put in the request's
/// extensions by the session middleware.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// A form body whose `csrf` field matched the session's token; the other fields are parsed
/// into `T` (unknown fields are refused when `T` denies them).
pub struct CsrfForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let expected = req.extensions().get::<CsrfToken>().cloned();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|e| form_refused(&e.to_string()))?;
        let sent = pairs
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str());
        let ok = matches!((&expected, sent), (Some(CsrfToken(e)), Some(s)) if same_token(e, s));
        if !ok {
            return Err(csrf_refused());
        }
        let rest: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "csrf").collect();
        let encoded =
            serde_urlencoded::to_string(&rest).map_err(|e| form_refused(&e.to_string()))?;
        serde_urlencoded::from_str(&encoded)
            .map(CsrfForm)
            .map_err(|e| form_refused(&e.to_string()))
    }
}

/// 403 for a form without the session's CSRF token.
pub fn csrf_refused() -> Response {
    bare_error(
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form was not sent from a page of this session (its security token is missing or \
         wrong). Reload the page and send the form again.",
    )
}

fn form_refused(detail: &str) -> Response {
    bare_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Form not understood",
        &format!("The form could not be read ({detail}). Reload the page and try again."),
    )
}

/// An error page without the console's navigation (no session needed).
pub fn bare_error(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1"; title { (title) } }
            body { main { h1 { (title) } p { (message) } } }
        }
    };
    (status, body).into_response()
}

/// The HTML skeleton of every page. `nav` is the console's navigation (with the logout form)
/// or the portal's header.
pub fn layout(c: &Console, title: &str, nav: Markup, content: Markup) -> Markup {
    layout_refreshing(c, title, nav, content, None)
}

/// [`layout`] of a page that reloads itself or moves on by itself: `refresh` is the
/// `<meta http-equiv="refresh">` content, e.g. `"2"` (live progress) or `"0; url=…"` (the
/// CSP allows no script).
pub fn layout_refreshing(
    c: &Console,
    title: &str,
    nav: Markup,
    content: Markup,
    refresh: Option<&str>,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(r) = refresh { meta http-equiv="refresh" content=(r); }
                title { (title) " · idbridge" }
                link rel="stylesheet" href=(c.url("/console/static/console.css"));
                // Served here, so the browser's own /favicon.ico request is not a 404.
                link rel="icon" href=(c.url("/console/static/favicon.svg"));
            }
            body {
                (nav)
                main id="main" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// A page that sends the browser on to `url` at once by a refresh (no script). Used where a
/// redirect cannot go: after a form, CSP `form-action 'self'` blocks a redirect chain that
/// leaves this origin; and a refresh is a same-site navigation, so SameSite=Strict cookies
/// are sent.
pub fn refresh_page(c: &Console, title: &str, url: &str, link_text: &str) -> Response {
    layout_refreshing(
        c,
        title,
        html! {},
        html! { p { a href=(url) { (link_text) } } },
        Some(&format!("0; url={url}")),
    )
    .into_response()
}

/// A see-other redirect to a path of this server (behind `public_url`).
pub fn redirect(c: &Console, path: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, c.url(path))]).into_response()
}

/// A text input with its label.
pub fn field(label: &str, name: &str, kind: &str, required: bool, hint: Option<&str>) -> Markup {
    let id = format!("f-{name}");
    html! {
        div class="field" {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(kind) required[required];
            @if let Some(h) = hint { small { (h) } }
        }
    }
}

/// A value the reader copies into another system, in a read-only field with its label.
pub fn copy_field(label: &str, id: &str, value: &str) -> Markup {
    html! {
        div class="field" {
            label for=(id) { (label) }
            input id=(id) type="text" readonly value=(value);
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_input(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}
