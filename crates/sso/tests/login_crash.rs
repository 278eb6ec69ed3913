//! Crash test of the login flow (own `main`, `harness = false`; built like the store's
//! crates/store/tests/crash.rs).
//!
//! Run by cargo the binary is the parent: it re-executes itself with `IDBRIDGE_SSO_CRASH_DIR`
//! set, and that child runs SAML logins through [`SsoService`] (authorize → a signed IdP
//! response → ACS) on a durable SQLite store, two at a time, printing `CODE <code> <email>` once
//! a login's code was handed out. The parent SIGKILLs it at a random moment, reopens the
//! store, and checks that every login left either both its code and its
//! `authentication.sso_succeeded` event, or neither (a login is one commit), and that every
//! code the child printed survived.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idbridge_directory::DirectoryEngine;
use idbridge_saml::testkit::{b64, AssertionSpec, IdpSigner, ResponseSpec, SignMode};
use idbridge_saml::{AttributeMap, SamlConnectionType};
use idbridge_sso::connections::create::{NewConnection, NewProtocol, NewSaml};
use idbridge_sso::login::{AcsRequest, AuthorizeRequest, LoginReply, CODES};
use idbridge_sso::organizations::{NewOrganization, Organizations};
use idbridge_sso::{SecretBox, SsoConfig, SsoService, SsoSettings};
use idbridge_store::{ExportRecord, SqliteStore, Store};

const CHILD_DIR: &str = "IDBRIDGE_SSO_CRASH_DIR";
const APP_CB: &str = "https://app.example.com/callback";
const IDP_ENTITY: &str = "https://idp.example.org/entity";
const IDP_SSO: &str = "https://idp.example.org/sso";
const PUBLIC_URL: &str = "http://127.0.0.1:8080";
const ROUNDS: u32 = 12;

type TestResult = Result<(), String>;

fn main() -> ExitCode {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        return match rt.block_on(child(Path::new(&dir))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("login crash child: {e}");
                ExitCode::from(2)
            }
        };
    }
    if std::env::args().any(|a| a == "--list") {
        println!("kill9_mid_login_leaves_code_and_event_together: test");
        return ExitCode::SUCCESS;
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter
        .as_deref()
        .is_some_and(|f| !"kill9_mid_login_leaves_code_and_event_together".contains(f))
    {
        println!("\ntest result: ok. 0 passed; 0 failed");
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    match kill9_mid_login_leaves_code_and_event_together() {
        Ok(()) => {
            println!(
                "test kill9_mid_login_leaves_code_and_event_together ... ok ({:.1?})",
                started.elapsed()
            );
            println!("\ntest result: ok. 1 passed; 0 failed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("test kill9_mid_login_leaves_code_and_event_together ... FAILED\n  {e}");
            println!("\ntest result: FAILED. 0 passed; 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn service(store: Arc<dyn Store>) -> Result<SsoService, String> {
    let orgs = Arc::new(Organizations::new(store.clone()));
    let directory = Arc::new(DirectoryEngine::new(store.clone(), orgs));
    Ok(SsoService::new(
        store,
        directory,
        SsoSettings {
            public_url: PUBLIC_URL.into(),
            config: SsoConfig {
                redirect_uris: vec![APP_CB.into()],
                ..SsoConfig::default()
            },
            secrets: Some(SecretBox::generate().map_err(|e| e.to_string())?),
        },
    ))
}

/// The child: set up an organization and a SAML connection, then log in forever.
async fn child(dir: &Path) -> Result<(), String> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).map_err(|e| e.to_string())?);
    let boot = idbridge_sso::api_keys::bootstrap(store.as_ref())
        .map_err(|e| e.to_string())?
        .ok_or("store already bootstrapped")?;
    let sso = Arc::new(service(store)?);
    let org = sso
        .organizations()
        .create(NewOrganization {
            name: "Acme".into(),
            domains: Vec::new(),
            external_id: None,
            metadata: Default::default(),
            allow_profiles_outside_organization: true,
        })
        .await
        .map_err(|e| e.to_string())?;
    let idp = Arc::new(IdpSigner::generate(IDP_ENTITY).map_err(|e| e.to_string())?);
    let cert = String::from_utf8(idp.keys.cert.to_pem().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let conn = sso
        .create_connection(NewConnection {
            organization_id: org.id.clone(),
            name: None,
            external_id: None,
            protocol: NewProtocol::Saml(NewSaml {
                connection_type: SamlConnectionType::OktaSAML,
                attribute_map: AttributeMap::preset(SamlConnectionType::OktaSAML),
                idp_metadata_xml: None,
                idp_metadata_url: None,
                idp_entity_id: Some(IDP_ENTITY.into()),
                idp_sso_url: Some(IDP_SSO.into()),
                idp_slo_url: None,
                idp_signing_certs: vec![cert],
                sp_entity_id: None,
                acs_url: None,
                sign_requests: false,
                allow_idp_initiated: false,
                clock_skew_secs: 60,
            }),
        })
        .await
        .map_err(|e| e.to_string())?;
    println!("READY");
    let mut workers = Vec::new();
    for worker in 0..2 {
        let (sso, idp, conn_id, client_id) = (
            sso.clone(),
            idp.clone(),
            conn.id.clone(),
            boot.client_id.clone(),
        );
        workers.push(tokio::spawn(async move {
            for n in 0u64.. {
                let email = format!("user{worker}-{n}@acme.example.com");
                login(&sso, &idp, &conn_id, &client_id, &email).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// One login; prints its code once the ACS answered with it.
async fn login(
    sso: &SsoService,
    idp: &IdpSigner,
    conn_id: &str,
    client_id: &str,
    email: &str,
) -> Result<(), String> {
    let auth = sso
        .authorize(AuthorizeRequest {
            client_id: Some(client_id.into()),
            redirect_uri: Some(APP_CB.into()),
            response_type: Some("code".into()),
            connection: Some(conn_id.into()),
            ..AuthorizeRequest::default()
        })
        .await
        .map_err(|e| format!("authorize: {e:?}"))?;
    let url = url::Url::parse(&auth.idp_url).map_err(|e| e.to_string())?;
    let saml_request = url
        .query_pairs()
        .find(|(k, _)| k == "SAMLRequest")
        .map(|(_, v)| v.into_owned())
        .ok_or("no SAMLRequest")?;
    let xml = idbridge_saml::decode_redirect_binding(&saml_request).map_err(|e| e.to_string())?;
    let request_id = xml
        .split("ID=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or("no request id")?
        .to_string();
    let acs = format!("{PUBLIC_URL}/sso/saml/acs/{conn_id}");
    let sp_entity = format!("{PUBLIC_URL}/sso/saml/{conn_id}");
    let now = chrono::Utc::now();
    let mut a = AssertionSpec::new(IDP_ENTITY, &sp_entity, &acs, email, Some(&request_id), now)
        .map_err(|e| e.to_string())?;
    a.attributes = vec![
        ("id".into(), vec![format!("idp-{email}")]),
        ("email".into(), vec![email.into()]),
    ];
    let r =
        ResponseSpec::new(IDP_ENTITY, &acs, Some(&request_id), now).map_err(|e| e.to_string())?;
    let response = b64(&idp
        .response(&r, &a, SignMode::Assertion)
        .map_err(|e| e.to_string())?);
    let outcome = sso
        .saml_acs(AcsRequest {
            connection_id: conn_id.into(),
            saml_response: Some(response),
            relay_state: Some(auth.relay_key.clone()),
            session_id: Some(auth.session_id.clone()),
            ..AcsRequest::default()
        })
        .await;
    let LoginReply::Redirect(to) = outcome.reply else {
        return Err(format!("ACS answered {:?}", outcome.reply));
    };
    let to = url::Url::parse(&to).map_err(|e| e.to_string())?;
    let code = to
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| format!("no code in {to}"))?;
    println!("CODE {code} {email}");
    Ok(())
}

/// A pseudo-random delay in `[lo, hi)` ms (no RNG dependency for one number per round).
fn jitter(lo: u64, hi: u64) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(lo + nanos % (hi - lo))
}

fn kill9_mid_login_leaves_code_and_event_together() -> TestResult {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut total_codes = 0usize;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = Command::new(&exe)
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if line.trim() != "READY" {
            let _ = child.kill();
            return Err(format!("round {round}: child did not start: {line:?}"));
        }
        let delay = jitter(30, 600);
        std::thread::sleep(delay);
        child.kill().map_err(|e| format!("kill: {e}"))?; // SIGKILL
        let mut out = String::new();
        reader
            .read_to_string(&mut out)
            .map_err(|e| format!("read: {e}"))?;
        let status = child.wait().map_err(|e| format!("wait: {e}"))?;
        if status.success() {
            return Err(format!("round {round}: the child exited by itself"));
        }
        // Complete lines only: a line cut by the kill was never fully reported.
        let complete = match out.rfind('\n') {
            Some(end) => &out[..end],
            None => "",
        };
        let acked: Vec<(String, String)> = complete
            .lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                match (it.next(), it.next(), it.next()) {
                    (Some("CODE"), Some(code), Some(email)) => {
                        Some((code.to_string(), email.to_string()))
                    }
                    _ => None,
                }
            })
            .collect();
        let codes = verify(dir.path(), &acked)
            .map_err(|e| format!("round {round} (killed after {delay:?}): {e}"))?;
        total_codes += codes;
    }
    if total_codes == 0 {
        return Err("no login finished in any round: the kills came too early".into());
    }
    println!("{ROUNDS} rounds, {total_codes} logins committed before the kills");
    Ok(())
}

/// Reopens the store: the emails with a stored code are exactly the emails with an
/// `authentication.sso_succeeded` event, and every printed code is stored. Returns the number
/// of codes.
fn verify(dir: &Path, acked: &[(String, String)]) -> Result<usize, String> {
    let store = SqliteStore::open(dir).map_err(|e| format!("reopen: {e}"))?;
    let mut code_emails = BTreeSet::new();
    let mut code_keys = BTreeSet::new();
    store
        .export(&mut |rec| {
            if let ExportRecord::Expiring {
                table, key, value, ..
            } = rec
            {
                if table == CODES {
                    let v: serde_json::Value = serde_json::from_slice(&value)
                        .map_err(|e| idbridge_store::StoreError::corrupt(CODES, e.to_string()))?;
                    code_emails.insert(v["profile"]["email"].as_str().unwrap_or("").to_string());
                    code_keys.insert(key);
                }
            }
            Ok(())
        })
        .map_err(|e| format!("export: {e}"))?;
    let mut event_emails = BTreeSet::new();
    for e in store
        .events_after(0, usize::MAX)
        .map_err(|e| format!("events: {e}"))?
    {
        if e.kind == "authentication.sso_succeeded" {
            let v: serde_json::Value =
                serde_json::from_slice(&e.body).map_err(|e| format!("event body: {e}"))?;
            event_emails.insert(v["data"]["email"].as_str().unwrap_or("").to_string());
        }
    }
    if code_emails != event_emails {
        let only_code: Vec<_> = code_emails.difference(&event_emails).collect();
        let only_event: Vec<_> = event_emails.difference(&code_emails).collect();
        return Err(format!(
            "a login left half its writes: code without event {only_code:?}, event without code {only_event:?}"
        ));
    }
    for (code, email) in acked {
        if !code_keys.contains(&idbridge_secrets::sha256_hex(code)) {
            return Err(format!("the acknowledged code of {email} is gone"));
        }
    }
    Ok(code_keys.len())
}
