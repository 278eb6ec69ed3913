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
