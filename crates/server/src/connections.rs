//! `idbridge connection create|list|show|delete|rotate-keys`: the connection API without a
//! running server (the store is single-process, so stop the server first).
//!
//! `create` takes the same JSON body as `POST /connections` (WorkOS Python SDK 10.8 shape plus
//! our `idp_metadata_xml` and `oidc_options`), from a file or stdin.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use idbridge_api::{ApiConfig, AppState};

use crate::cli::ConnectionCommand;
use crate::config::Config;

fn state(config: &Config) -> anyhow::Result<AppState> {
    let store = crate::open_store(config)?;
    let key = idbridge_api::sso::SecretBox::load_or_create(
        std::env::var(idbridge_api::sso::secrets::SECRET_KEY_ENV)
            .ok()
            .as_deref(),
        &config.server.data_dir,
    )
    .context("loading the secret key for connection secrets")?;
    Ok(AppState::new(
        store,
        ApiConfig {
            public_url: config.public_url(),
            ..ApiConfig::default()
        },
    )
    .with_sso(config.sso.to_api(), Some(key)))
}

fn read_body(path: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    match serde_json::from_str(&text).context("the connection body is not JSON")? {
        serde_json::Value::Object(m) => Ok(m),
        _ => anyhow::bail!("the connection body must be a JSON object"),
    }
}

/// Turns API errors (with their field list) into a readable CLI error.
fn api_err(e: idbridge_api::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.body())
}

pub fn run(config: &Config, command: ConnectionCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let state = state(config)?;
    runtime.block_on(async move {
        match command {
            ConnectionCommand::Create { body } => {
                let body = read_body(&body)?;
                let c = idbridge_api::sso::connections::create_connection(&state, &body)
                    .await
                    .map_err(api_err)?;
                let record =
                    idbridge_api::sso::connections::load(&state, &c.id).map_err(api_err)?;
                let view =
                    idbridge_api::sso::connections::admin_json(&state, &record).map_err(api_err)?;
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            ConnectionCommand::List => {
                for (_, bytes) in state.db.store().scan(
                    idbridge_api::tables::CONNECTIONS,
                    "",
                    None,
                    usize::MAX,
                )? {
                    let r: idbridge_api::sso::connections::ConnectionRecord =
                        serde_json::from_slice(&bytes)?;
                    let c = &r.connection;
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        c.id,
                        c.connection_type,
                        c.organization_id.as_deref().unwrap_or("-"),
                        serde_json::to_value(c.state)?.as_str().unwrap_or("?"),
                        c.name
                    );
                }
            }
            ConnectionCommand::Show { id } => {
                let record = idbridge_api::sso::connections::load(&state, &id).map_err(api_err)?;
                let view =
                    idbridge_api::sso::connections::admin_json(&state, &record).map_err(api_err)?;
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            ConnectionCommand::Delete { id } => {
                let c = idbridge_api::sso::connections::delete_connection(&state, &id)
                    .await
                    .map_err(api_err)?;
                println!("deleted {} ({})", c.id, c.name);
            }
            ConnectionCommand::RotateKeys { id } => {
                let view = idbridge_api::sso::connections::rotate_keys(&state, &id)
                    .await
                    .map_err(api_err)?;
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
        }
        Ok(())
    })
}

/// Creates the `[[sso.connections]]` of the config that do not exist yet (keyed by
/// `external_id`, through the same validation as `POST /connections`).
pub async fn apply_declared(state: &AppState, config: &Config) -> anyhow::Result<()> {
    for c in &config.sso.connections {
        let org_id = if c.organization.starts_with("org_") {
            c.organization.clone()
        } else {
            state
                .db
                .get_raw(idbridge_api::tables::ORG_BY_EXTERNAL_ID, &c.organization)
                .map_err(api_err)?
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "declared connection {:?}: no organization with external_id {:?}",
                        c.external_id,
                        c.organization
                    )
                })?
        };
        let mut body = serde_json::Map::new();
        body.insert("organization_id".into(), org_id.into());
        body.insert("external_id".into(), c.external_id.clone().into());
        for (k, v) in [
            ("name", c.name.clone().map(serde_json::Value::from)),
            (
                "connection_type",
                c.connection_type.clone().map(serde_json::Value::from),
            ),
            ("attribute_maps", c.attribute_maps.clone()),
            ("saml_options", c.saml_options.clone()),
            ("oidc_options", c.oidc_options.clone()),
        ] {
            if let Some(v) = v {
                body.insert(k.into(), v);
            }
        }
        let conn = idbridge_api::sso::connections::create_connection(state, &body)
            .await
            .map_err(|e| {
                anyhow::anyhow!("declared connection {:?}: {}", c.external_id, e.body())
            })?;
        tracing::info!(id = %conn.id, external_id = %c.external_id, "declared connection applied");
    }
    Ok(())
}
