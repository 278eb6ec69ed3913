//! `[[idp.service_providers]]` and `[[idp.oidc_clients]]` in the config file, on the real
//! binary: created at start through the admin API's validation, listed by the admin API, the
//! SP's AuthnRequest accepted by the SSO endpoint and the client's secret (from the
//! environment) accepted by the token endpoint; an edited entry updates the same SP / client at
//! the next restart; an unknown key stops the start, naming it; the secret is never shown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use idbridge_tests::TestServer;
use serde_json::Value;

const SECRET: &str = "declared-idp-client-secret-0123456789-never-shown";
const SECRET_ENV: &str = "IDP_DECLARED_TEST_SECRET";
const ENTITY: &str = "https://sp.declared.test/saml";

fn config(name: &str, acs: &str, extra_sp_key: &str) -> String {
    format!(
        r#"
[[organizations]]
external_id = "acme"
name = "Acme"

[[idp.service_providers]]
key = "declared-sp"
organization = "acme"
name = "{name}"
entity_id = "{ENTITY}"
acs_urls = ["{acs}"]
{extra_sp_key}

[[idp.oidc_clients]]
key = "declared-client"
organization = "acme"
name = "{name} OIDC"
redirect_uris = ["{acs}/oidc"]
client_secret_env = "{SECRET_ENV}"
"#
    )
}

async fn list(server: &TestServer, path: &str) -> Vec<Value> {
    let v: Value = server.get(path).send().await.unwrap().json().await.unwrap();
    v["data"].as_array().cloned().unwrap_or_default()
}

/// An AuthnRequest of the declared SP (HTTP-POST binding) for `acs`: (status, body).
async fn authn_request(server: &TestServer, org: &str, acs: &str) -> (u16, String) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let id = format!("_{}", chrono::Utc::now().timestamp_nanos_opt().unwrap());
    let xml = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{now}\" AssertionConsumerServiceURL=\"{acs}\" ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"><saml:Issuer>{ENTITY}</saml:Issuer></samlp:AuthnRequest>"
    );
    let req = base64::engine::general_purpose::STANDARD.encode(xml);
    let r = server
        .http()
        .post(server.endpoint(&format!("/idp/{org}/saml/sso")))
        .form(&[("SAMLRequest", req.as_str())])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The token endpoint's answer to a made-up code with this client secret: `invalid_grant`
/// means the client authenticated, `invalid_client` that the secret is wrong.
async fn token_error(server: &TestServer, org: &str, client_id: &str, secret: &str) -> String {
    let r = server
        .http()
        .post(server.endpoint(&format!("/idp/{org}/oidc/token")))
        .basic_auth(client_id, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "made-up-code"),
            ("redirect_uri", "https://sp.declared.test/acs/oidc"),
        ])
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn declared_sps_and_clients_are_applied_updated_and_checked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("idbridge.toml");
    let acs1 = "https://sp.declared.test/acs";
    std::fs::write(&path, config("Declared", acs1, ""))?;
    let mut server = TestServer::builder()
        .config_file(&path)
        .env(SECRET_ENV, SECRET)
        .start()
        .await?;
    let orgs = list(&server, "/organizations").await;
    let org = orgs[0]["id"].as_str().unwrap().to_owned();

    // Listed by the admin API, as the file says.
    let sps = list(&server, "/admin/service_providers").await;
    assert_eq!(sps.len(), 1, "{sps:?}");
    let sp_id = sps[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sps[0]["name"], "Declared");
    assert_eq!(sps[0]["entity_id"], ENTITY);
    let clients = list(&server, "/admin/oidc_clients").await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    let client_id = clients[0]["id"].as_str().unwrap().to_owned();
    assert!(!serde_json::to_string(&clients)?.contains(SECRET));

    // The SSO endpoint accepts the SP's AuthnRequest for its registered ACS (no source is
    // configured, so the answer is a signed RequestDenied Response posted to that ACS) and
    // refuses an ACS the file does not register.
    let (status, page) = authn_request(&server, &org, acs1).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("SAMLResponse") && page.contains(acs1),
        "{page}"
    );
    let acs2 = "https://sp2.declared.test/acs";
    let (status, page) = authn_request(&server, &org, acs2).await;
    assert_eq!(status, 400, "{page}");
    // The client secret from the environment is the client's secret.
    assert_eq!(
        token_error(&server, &org, &client_id, SECRET).await,
        "invalid_grant"
    );
    assert_eq!(
        token_error(
            &server,
            &org,
            &client_id,
            "wrong-secret-wrong-secret-wrong-secret"
        )
        .await,
        "invalid_client"
    );

    // Same file: nothing changes (an admin's rename stays).
    let r = server
        .put(&format!("/admin/service_providers/{sp_id}"))
        .json(&serde_json::json!({"name": "Renamed by an admin"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    server.restart().await?;
    let sps = list(&server, "/admin/service_providers").await;
    assert_eq!(sps.len(), 1);
    assert_eq!(sps[0]["name"], "Renamed by an admin");

    // The entry changes: applied to the same SP and client at the next start.
    std::fs::write(&path, config("Declared v2", acs2, ""))?;
    server.restart().await?;
    let sps = list(&server, "/admin/service_providers").await;
    assert_eq!(sps.len(), 1, "{sps:?}");
    assert_eq!(sps[0]["id"], sp_id.as_str());
    assert_eq!(sps[0]["name"], "Declared v2");
    let clients = list(&server, "/admin/oidc_clients").await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0]["id"], client_id.as_str());
    assert_eq!(clients[0]["name"], "Declared v2 OIDC");
    assert_eq!(clients[0]["redirect_uris"][0], format!("{acs2}/oidc"));
    let (status, page) = authn_request(&server, &org, acs2).await;
    assert_eq!(status, 200, "{page}");
    let (status, page) = authn_request(&server, &org, acs1).await;
    assert_eq!(status, 400, "the old ACS is no longer registered: {page}");
    assert!(!server.stderr().contains(SECRET));

    // An unknown key stops the start and is named; nothing is half-applied.
    std::fs::write(&path, config("Declared v3", acs1, "sign_responses = true"))?;
    let err = server
        .restart()
        .await
        .expect_err("an unknown key must stop the start");
    let text = err.to_string();
    assert!(
        text.contains("sign_responses") && text.contains("declared-sp"),
        "{text}"
    );
    Ok(())
}

/// A confidential client without a secret reference, a too-short secret, and a secret in the
/// file's text are each refused at start with a message saying what to do.
#[tokio::test]
async fn declared_client_secrets_must_come_from_env_or_file_and_be_long() -> anyhow::Result<()> {
    let base = "[[organizations]]\nexternal_id = \"acme\"\nname = \"Acme\"\n\n[[idp.oidc_clients]]\nkey = \"c\"\norganization = \"acme\"\nredirect_uris = [\"https://rp.test/cb\"]\n";
    for (extra, env, expected) in [
        ("", None, "client_secret_env or client_secret_file"),
        (
            "client_secret_env = \"IDP_DECLARED_SHORT\"\n",
            Some("short"),
            "must_be_at_least_32_characters",
        ),
        (
            "client_secret = \"inline-secret-inline-secret-inline-secret\"\n",
            None,
            "client_secret: not allowed here",
        ),
    ] {
        let mut b = TestServer::builder().config_toml(format!("{base}{extra}"));
        if let Some(v) = env {
            b = b.env("IDP_DECLARED_SHORT", v);
        }
        let err = match b.start().await {
            Ok(_) => panic!("started with {extra:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(!err.contains("inline-secret-inline"), "{err}");
    }
    Ok(())
}
