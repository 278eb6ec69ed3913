//! The browser's side of idbridge's IdP login page, for tests that drive it over plain HTTP:
//! a client that follows no redirects (cookies are passed by hand), and readers of the page's
//! cookie, hidden inputs and form action.

/// A browser: no redirects followed, cookies by hand.
pub fn browser() -> reqwest::Client {
    // Building fails only if the TLS backend cannot start; then no test could run anyway.
    #[allow(clippy::expect_used)]
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("an HTTP client without redirects")
}

/// `name=value` of the first Set-Cookie whose name starts with `prefix`.
pub fn cookie(resp: &reqwest::Response, prefix: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(prefix))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

/// The value of an HTML input named `name`.
pub fn input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker)? + marker.len();
    let raw = html[at..].split('"').next()?;
    Some(
        raw.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

pub fn form_action(html: &str) -> Option<String> {
    let at = html.find("action=\"")? + 8;
    Some(html[at..].split('"').next()?.replace("&amp;", "&"))
}

/// Opens `url` (an idbridge URL that answers with the IdP login page: an SSO request, an
/// IdP-initiated start or an OIDC authorization) and posts `login`/`password` with the page's
/// cookie, key and CSRF token to the form's action on `base_url`: the answer to that post.
pub async fn log_in_through_page(
    base_url: &str,
    url: &str,
    login: &str,
    password: &str,
) -> anyhow::Result<reqwest::Response> {
    use anyhow::Context as _;
    let http = browser();
    let r = http.get(url).send().await?;
    let status = r.status();
    let idp_cookie = cookie(&r, "idbridge_idp_");
    let page = r.text().await?;
    anyhow::ensure!(status == 200, "the login page: {status}: {page}");
    let action = form_action(&page).context("no form action on the login page")?;
    Ok(http
        .post(format!("{base_url}{action}"))
        .header("cookie", idp_cookie.context("no login cookie")?)
        .form(&[
            ("k", input(&page, "k").context("k")?),
            ("csrf", input(&page, "csrf").context("csrf")?),
            ("login", login.to_owned()),
            ("password", password.to_owned()),
        ])
        .send()
        .await?)
}
