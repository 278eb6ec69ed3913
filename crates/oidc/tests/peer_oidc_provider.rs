//! End-to-end against a real OpenID Provider: the `oidc-provider` npm package (v9), started on
//! loopback by this test and driven through its devInteractions login and consent pages by a
//! cookie-keeping HTTP client. Install with `scripts/test-deps.d/oidc.sh`; set
//! `IDBRIDGE_SKIP_PEERS=1` to skip when Node or the package is unavailable (otherwise the tests
//! fail, loudly, so CI cannot silently lose coverage).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// libc calls on peer processes and C buffers of the test.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use idbridge_oidc::{
    default_http_client, map_idp_error, AuthMethod, BeginAuth, ConnectionType, FinishParams,
    Identity, OidcClient, OidcError, OidcSettings, Secret,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

const CLIENT_ID: &str = "idbridge-e2e";
const CLIENT_SECRET: &str = "e2e-client-secret-that-must-not-leak";
const REDIRECT_URI: &str = "https://app.example.com/sso/callback";

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer")
}

/// `true` when the peer is unavailable and skipping was explicitly allowed.
fn skip_or_panic() -> bool {
    let installed = peer_dir()
        .join("node_modules/oidc-provider/package.json")
        .exists()
        && std::process::Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if installed {
        return false;
    }
    if std::env::var("IDBRIDGE_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!("skipping: oidc-provider peer not installed and IDBRIDGE_SKIP_PEERS=1");
        return true;
    }
    panic!(
        "the oidc-provider peer is not installed: run scripts/test-deps.d/oidc.sh \
         (or set IDBRIDGE_SKIP_PEERS=1 to skip peer tests)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running oidc-provider in its own process group; the group is killed on stop and on drop
/// (a `node` launcher may run the real binary as a child, which must not outlive the test).
struct Peer {
    issuer: String,
    child: Child,
}

impl Peer {
    async fn start(port: u16, alg: &str, kid: &str, auth: AuthMethod) -> Self {
        let method = match auth {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        };
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(peer_dir())
            .env("OP_PORT", port.to_string())
            .env("OP_ALG", alg)
            .env("OP_KID", kid)
            .env("OP_CLIENT_ID", CLIENT_ID)
            .env("OP_CLIENT_SECRET", CLIENT_SECRET)
            .env("OP_REDIRECT_URI", REDIRECT_URI)
            .env("OP_AUTH_METHOD", method)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.trim() == "READY" {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "oidc-provider did not start");
        // Keep draining its stdout: a closed pipe kills node with EPIPE on its next log line.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[oidc-provider] {line}");
            }
        });
        Self {
            issuer: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    fn kill_group(&self) {
        // `id()` is `None` once the child has been reaped, so a recycled id is never signalled.
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the process group this test created; no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }

    async fn stop(mut self) {
        self.kill_group();
        self.child.wait().await.unwrap();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill_group();
    }
}

fn client(issuer: &str, auth: AuthMethod) -> OidcClient {
    let mut s = OidcSettings::new(
        ConnectionType::GenericOidc,
        issuer,
        CLIENT_ID,
        Secret::new(CLIENT_SECRET),
    );
    s.auth_method = auth;
    s.scopes = vec![
        "openid".into(),
        "email".into(),
        "profile".into(),
        "groups".into(),
    ];
    s.jwks_refetch_min_interval = Duration::from_millis(100);
    OidcClient::new(s, default_http_client().unwrap()).unwrap()
}

/// The callback query our redirect_uri received.
type Callback = HashMap<String, String>;

/// A minimal browser: no automatic redirects, a cookie jar keyed by name.
struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let resp = req
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            if let Some((k, val)) = pair.split_once('=') {
                self.jar.insert(k.trim().to_string(), val.to_string());
            }
        }
        resp
    }

    /// Follows redirects from `url` until the app's redirect_uri, submitting the login page
    /// (`login` as the account id) and the consent page; `abort` clicks "cancel" instead.
    async fn run(&mut self, url: Url, login: &str, abort: bool) -> Callback {
        let mut next = self.send(self.http.get(url.clone())).await;
        let mut base = url;
        for _ in 0..20 {
            let status = next.status();
            if status.is_redirection() {
                let loc = next.headers()[reqwest::header::LOCATION].to_str().unwrap();
                let target = base.join(loc).unwrap();
                if target.as_str().starts_with(REDIRECT_URI) {
                    return target.query_pairs().into_owned().collect();
                }
                base = target.clone();
                next = self.send(self.http.get(target)).await;
                continue;
            }
            assert_eq!(status, 200, "unexpected page at {base}");
            let html = next.text().await.unwrap();
            if abort {
                let href = attr_after(&html, "href=\"", "/abort").expect("abort link");
                let target = base.join(&href).unwrap();
                next = self.send(self.http.get(target)).await;
                continue;
            }
            let action = attr_after(&html, "action=\"", "").expect("a form");
            let target = base.join(&action).unwrap();
            let form: Vec<(&str, &str)> = if html.contains("name=\"prompt\" value=\"login\"") {
                vec![("prompt", "login"), ("login", login), ("password", "any")]
            } else {
                vec![("prompt", "consent")]
            };
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            base = target.clone();
            next = self
                .send(
                    self.http
                        .post(target)
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            "application/x-www-form-urlencoded",
                        )
                        .body(body),
                )
                .await;
        }
        panic!("too many steps without reaching the redirect_uri");
    }
}

/// The first `marker"…"` attribute value that contains `must_contain`.
fn attr_after(html: &str, marker: &str, must_contain: &str) -> Option<String> {
    html.match_indices(marker).find_map(|(i, _)| {
        let rest = &html[i + marker.len()..];
        let value = &rest[..rest.find('"')?];
        value
            .contains(must_contain)
            .then(|| value.replace("&amp;", "&"))
    })
}

struct Login {
    begin: BeginAuth,
    callback: Callback,
}

async fn authorize(client: &OidcClient, login: &str) -> Login {
    let redirect = Url::parse(REDIRECT_URI).unwrap();
    let begin = client.begin(&redirect, Some(login)).await.unwrap();
    let callback = Browser::new().run(begin.url.clone(), login, false).await;
    Login { begin, callback }
}

async fn finish(
    client: &OidcClient,
    l: &Login,
    nonce: Option<&str>,
) -> Result<Identity, OidcError> {
    let redirect = Url::parse(REDIRECT_URI).unwrap();
    client
        .finish(FinishParams {
            code: &l.callback["code"],
            returned_state: &l.callback["state"],
            expected_state: &l.begin.state,
            returned_iss: l.callback.get("iss").map(String::as_str),
            nonce: nonce.unwrap_or(&l.begin.nonce),
            pkce_verifier: l.begin.pkce_verifier.expose(),
            redirect_uri: &redirect,
        })
        .await
}

#[tokio::test]
async fn real_provider_basic_auth_rs256_and_negatives() {
    if skip_or_panic() {
        return;
    }
    let peer = Peer::start(free_port(), "RS256", "rs-1", AuthMethod::ClientSecretBasic).await;
    let client = client(&peer.issuer, AuthMethod::ClientSecretBasic);

    let l = authorize(&client, "grace").await;
    assert_eq!(
        l.callback.get("iss"),
        Some(&peer.issuer),
        "RFC 9207 iss on the callback"
    );
    let id = finish(&client, &l, None).await.unwrap();
    assert_eq!(id.idp_id, "grace");
    // email and groups are only in userinfo with oidc-provider's defaults: proves the merge.
    assert_eq!(id.email.as_deref(), Some("grace@example.com"));
    assert_eq!(id.groups, vec!["navy", "cobol"]);
    assert_eq!(id.first_name.as_deref(), Some("Grace"));
    assert_eq!(id.raw_attributes["iss"], serde_json::json!(peer.issuer));

    // The same code again: the provider refuses it, and so do we.
    let err = finish(&client, &l, None).await.unwrap_err();
    assert!(
        matches!(err, OidcError::TokenEndpoint { ref error, .. } if error == "invalid_grant"),
        "{err}"
    );

    // A nonce from another browser's login.
    let l = authorize(&client, "grace").await;
    let err = finish(&client, &l, Some("not-the-bound-nonce"))
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::InvalidNonce(_)), "{err}");

    // A state from another browser.
    let l = authorize(&client, "grace").await;
    let other = authorize(&client, "grace").await;
    let redirect = Url::parse(REDIRECT_URI).unwrap();
    let err = client
        .finish(FinishParams {
            code: &l.callback["code"],
            returned_state: &l.callback["state"],
            expected_state: &other.begin.state,
            returned_iss: None,
            nonce: &l.begin.nonce,
            pkce_verifier: l.begin.pkce_verifier.expose(),
            redirect_uri: &redirect,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::StateMismatch), "{err}");
    // ... and that code still works with the right binding (nothing was spent).
    assert!(finish(&client, &l, None).await.is_ok());

    // A wrong client secret is refused by the provider; neither secret shows in the error.
    let mut settings = client.settings().clone();
    settings.client_secret = Secret::new("wrong-secret-also-not-to-be-logged");
    let bad_client = OidcClient::new(settings, default_http_client().unwrap()).unwrap();
    let l = authorize(&bad_client, "grace").await;
    let err = finish(&bad_client, &l, None).await.unwrap_err();
    assert!(
        matches!(err, OidcError::TokenEndpoint { ref error, .. } if error == "invalid_client"),
        "{err}"
    );
    let shown = format!("{err} {err:?} {bad_client:?}");
    assert!(
        !shown.contains(CLIENT_SECRET) && !shown.contains("wrong-secret"),
        "{shown}"
    );
    peer.stop().await;
}

#[tokio::test]
async fn real_provider_post_auth_es256() {
    if skip_or_panic() {
        return;
    }
    let peer = Peer::start(free_port(), "ES256", "ec-1", AuthMethod::ClientSecretPost).await;
    let client = client(&peer.issuer, AuthMethod::ClientSecretPost);
    let l = authorize(&client, "hopper").await;
    let id = finish(&client, &l, None).await.unwrap();
    assert_eq!(id.idp_id, "hopper");
    assert_eq!(id.email.as_deref(), Some("hopper@example.com"));
    peer.stop().await;
}

#[tokio::test]
async fn real_provider_key_rotation_is_followed_without_restart() {
    if skip_or_panic() {
        return;
    }
    let port = free_port();
    let peer = Peer::start(
        port,
        "RS256",
        "before-rotation",
        AuthMethod::ClientSecretBasic,
    )
    .await;
    let client = client(&peer.issuer, AuthMethod::ClientSecretBasic);
    let l = authorize(&client, "grace").await;
    assert!(finish(&client, &l, None).await.is_ok());
    peer.stop().await;

    // Same issuer, new key (and a new kid, new algorithm family): the same client instance
    // must accept tokens signed with it after re-fetching the JWKS on the unknown kid.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peer = Peer::start(
        port,
        "ES256",
        "after-rotation",
        AuthMethod::ClientSecretBasic,
    )
    .await;
    let l = authorize(&client, "grace").await;
    let id = finish(&client, &l, None).await.unwrap();
    assert_eq!(id.idp_id, "grace");
    peer.stop().await;
}

#[tokio::test]
async fn real_provider_access_denied_maps_to_workos_error() {
    if skip_or_panic() {
        return;
    }
    let peer = Peer::start(free_port(), "RS256", "rs-1", AuthMethod::ClientSecretBasic).await;
    let client = client(&peer.issuer, AuthMethod::ClientSecretBasic);
    let redirect = Url::parse(REDIRECT_URI).unwrap();
    let begin = client.begin(&redirect, None).await.unwrap();
    let cb = Browser::new().run(begin.url.clone(), "grace", true).await;
    assert_eq!(cb.get("state"), Some(&begin.state));
    assert!(!cb.contains_key("code"));
    let (code, description) = map_idp_error(
        &cb["error"],
        cb.get("error_description").map(String::as_str),
    );
    assert_eq!(code, "access_denied");
    assert_eq!(description, "End-User aborted interaction");
    peer.stop().await;
}
