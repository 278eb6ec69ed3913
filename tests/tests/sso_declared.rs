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

fn config_with(name: &str, client_id: &str) -> String {
    config()
        .replace("name = \"Acme\"\n", &format!("name = \"{name} Inc.\"\n"))
        .replace("name = \"Acme OIDC\"", &format!("name = \"{name}\""))
        .replace(
            "client_id = \"acme-client\"",
            &format!("client_id = \"{client_id}\""),
        )
}

/// Which wins between the file and the admin API: a change made through `PUT
/// /admin/connections/{id}` survives restarts while the file entry stays the same; an edited
/// entry is applied to the same connection (same id) at the next start.
#[tokio::test]
async fn edited_entries_update_their_connection_and_organization_and_unchanged_ones_keep_api_changes(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("idbridge.toml");
    std::fs::write(&path, config_with("Acme OIDC", "acme-client"))?;
    let mut server = TestServer::builder().config_file(&path).start().await?;
    let list = connections(&server).await?;
    let id = list[0]["id"].as_str().unwrap_or_default().to_string();
    let admin = format!("/admin/connections/{id}");

    // Changed through the admin API (the secret is write-only: sent again).
    let r = server
        .put(&admin)
        .json(&serde_json::json!({"connection_type": "GenericOIDC", "name": "Renamed by an admin",
            "oidc_options": {"discovery_endpoint": "https://op.acme.example/.well-known/openid-configuration",
                "client_id": "admin-client", "client_secret": SECRET}}))
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains(SECRET), "{text}");

    // The declared organization, renamed through the API too.
    let org_id = list[0]["organization_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = server
        .put(&format!("/organizations/{org_id}"))
        .json(&serde_json::json!({"name": "Acme (renamed by an admin)"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);

    // Same file: the admin's changes stay.
    server.restart().await?;
    let org: Value = server
        .get(&format!("/organizations/{org_id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(org["name"], "Acme (renamed by an admin)", "{org}");
    let v: Value = server.get(&admin).send().await?.json().await?;
    assert_eq!(v["connection"]["name"], "Renamed by an admin", "{v}");
    assert_eq!(v["settings"]["client_id"], "admin-client", "{v}");

    // The file entry changes: its values are applied to the same connection.
    std::fs::write(&path, config_with("Acme OIDC (file v2)", "file-client-2"))?;
    server.restart().await?;
    let list = connections(&server).await?;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    let v: Value = server.get(&admin).send().await?.json().await?;
    assert_eq!(v["connection"]["name"], "Acme OIDC (file v2)", "{v}");
    assert_eq!(v["settings"]["client_id"], "file-client-2", "{v}");
    let org: Value = server
        .get(&format!("/organizations/{org_id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(org["name"], "Acme OIDC (file v2) Inc.", "{org}");
    assert!(!server.stderr().contains(SECRET));
    Ok(())
}
