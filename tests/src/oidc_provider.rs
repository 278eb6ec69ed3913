//! A real OpenID Provider for end-to-end tests: the certified `oidc-provider` library
//! (`crates/oidc/tests/peer/provider.mjs`, installed by `scripts/test-deps.d/oidc.sh`) on a
//! free loopback port, in its own process group, killed when dropped.
//!
//! It has one confidential client and the `devInteractions` login and consent pages, which
//! accept any login name (the account id) with any password; `users` overrides the claims of
//! named logins (e.g. their `groups`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::error::HarnessError;
use crate::server::free_port;

/// How long node may take to load oidc-provider and generate its key.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The provider's client and signing settings.
#[derive(Debug, Clone)]
pub struct OidcProviderOptions {
    pub client_id: String,
    pub client_secret: String,
    /// The only redirect URI the client may use (idbridge's `/sso/oidc/callback`).
    pub redirect_uri: String,
    /// `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
    /// ID token signing algorithm (`RS256`, `ES256`, `PS256`).
    pub alg: String,
    pub kid: String,
    /// Claim overrides per login name, e.g. `{"ada": {"groups": ["analysts"]}}`.
    pub users: Value,
}

impl OidcProviderOptions {
    /// RS256, `client_secret_basic`, default claims for every login.
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        OidcProviderOptions {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uri: redirect_uri.into(),
            auth_method: "client_secret_basic".into(),
            alg: "RS256".into(),
            kid: "e2e".into(),
            users: Value::Object(serde_json::Map::new()),
        }
    }
}

/// A running provider; `issuer` is `http://127.0.0.1:<port>`.
pub struct OidcProvider {
    pub issuer: String,
    child: Child,
}

impl OidcProvider {
    /// The directory holding `provider.mjs` and its `node_modules`.
    pub fn peer_dir() -> PathBuf {
        crate::repo_root().join("crates/oidc/tests/peer")
    }

    /// Whether oidc-provider is installed. When it is not, this fails with a message naming
    /// the install script, unless `IDBRIDGE_SKIP_PEERS=1` asks to skip (then `Ok(false)`).
    pub fn installed() -> Result<bool, HarnessError> {
        if Self::peer_dir()
            .join("node_modules/oidc-provider/package.json")
            .exists()
        {
            return Ok(true);
        }
        if std::env::var("IDBRIDGE_SKIP_PEERS").as_deref() == Ok("1") {
            eprintln!("SKIPPED: oidc-provider not installed and IDBRIDGE_SKIP_PEERS=1");
            return Ok(false);
        }
        Err(HarnessError::PeerMissing {
            tool: "oidc-provider (scripts/test-deps.d/oidc.sh)".into(),
            detail: format!(
                "{} has no node_modules/oidc-provider",
                Self::peer_dir().display()
            ),
        })
    }

    /// Starts the provider and waits until it listens.
    pub async fn start(opts: &OidcProviderOptions) -> Result<OidcProvider, HarnessError> {
        let port = free_port()?;
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(Self::peer_dir())
            .env("OP_PORT", port.to_string())
            .env("OP_ALG", &opts.alg)
            .env("OP_KID", &opts.kid)
            .env("OP_CLIENT_ID", &opts.client_id)
            .env("OP_CLIENT_SECRET", &opts.client_secret)
            .env("OP_REDIRECT_URI", &opts.redirect_uri)
            .env("OP_AUTH_METHOD", &opts.auth_method)
            .env("OP_USERS", opts.users.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                what: "node provider.mjs (oidc-provider)".into(),
                source,
            })?;
        let stdout = child.stdout.take().ok_or_else(|| HarnessError::Spawn {
            what: "node provider.mjs (oidc-provider)".into(),
            source: std::io::Error::other("no stdout pipe"),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "READY" {
                    return true;
                }
            }
            false
        })
        .await;
        let provider = OidcProvider {
            issuer: format!("http://127.0.0.1:{port}"),
            child,
        };
        if ready != Ok(true) {
            return Err(HarnessError::Mismatch(
                "oidc-provider did not print READY (its stderr is above)".into(),
            ));
        }
        // Keep draining stdout: a closed pipe would kill node on its next log line.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(provider)
    }

    /// The discovery document's URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }
}

impl Drop for OidcProvider {
    #[allow(unsafe_code)] // kill(2) on the provider's process group
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the process group this helper created; no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
