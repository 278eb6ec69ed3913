//! Connections declared in the config file (`[[sso.connections]]`) are created at start-up,
//! once (a restart changes nothing), and the `idbridge connection` CLI lists, shows and
//! deletes them on the stopped server's data directory without ever printing the secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::TestServer;
use serde_json::Value;

const SECRET: &str = "declared-oidc-secret-never-printed";

fn config() -> String {
    format!(
        r#"
[sso]
redirect_uris = ["http://127.0.0.1:9/callback"]

[[organizations]]
external_id = "acme"
name = "Acme"

[[sso.connections]]
external_id = "acme-oidc"
organization = "acme"
connection_type = "GenericOIDC"
name = "Acme OIDC"
[sso.connections.oidc_options]
discovery_endpoint = "https://op.acme.example/.well-known/openid-configuration"
client_id = "acme-client"
client_secret = "{SECRET}"
"#
    )
}

async fn connections(server: &TestServer) -> anyhow::Result<Vec<Value>> {
    let v: Value = server.get("/connections").send().await?.json().await?;
    Ok(v["data"].as_array().cloned().unwrap_or_default())
}

fn cli(server: &TestServer, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(server.binary())
        .args(args)
        .env("IDBRIDGE_DATA_DIR", server.data_dir())
        .output()?)
}

#[tokio::test]
async fn declared_connections_are_created_once_and_managed_by_the_cli() -> anyhow::Result<()> {
    let mut server = TestServer::builder().config_toml(config()).start().await?;
    let list = connections(&server).await?;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "Acme OIDC");
    assert_eq!(list[0]["connection_type"], "GenericOIDC");
    let id = list[0]["id"].as_str().unwrap_or_default().to_string();

    server.restart().await?;
    let again = connections(&server).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["id"], id.as_str());
    assert!(!server.stderr().contains(SECRET));

    server.stop()?;
    let out = cli(&server, &["connection", "list"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let out = cli(&server, &["connection", "show", &id])?;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(shown.contains("\"client_secret_stored\": true"), "{shown}");
    assert!(!shown.contains(SECRET));
    let out = cli(&server, &["connection", "delete", &id])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&server, &["connection", "show", &id])?;
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
    Ok(())
}
