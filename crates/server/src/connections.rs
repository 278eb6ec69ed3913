//! `idbridge connection create|list|show|delete|rotate-keys`: the SSO service without a running
//! server (the store is single-process, so stop the server first).
//!
//! `create` takes the same JSON body as `POST /connections` (WorkOS Python SDK 10.8 shape plus
//! our `idp_metadata_xml` and `oidc_options`), from a file or stdin.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use idbridge_sso::{SsoError, SsoService, SsoSettings};

use crate::cli::ConnectionCommand;
use crate::config::Config;

/// The SSO service over the configured store, for the CLI.
pub(crate) fn service(config: &Config) -> anyhow::Result<SsoService> {
    let store = crate::open_store(config)?;
    let directory = Arc::new(crate::directory_engine(store.clone()));
    let settings = SsoSettings {
        public_url: config.public_url(),
        config: config.sso.to_api(),
        secrets: Some(crate::secret_key(config)?),
    };
    Ok(SsoService::new(store, directory, settings))
}

pub(crate) fn read_body(path: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    match serde_json::from_str(&text).context("the body is not JSON")? {
        serde_json::Value::Object(m) => Ok(m),
        _ => anyhow::bail!("the body must be a JSON object"),
    }
}

/// Turns API errors (with their field list) into a readable CLI error.
pub(crate) fn api_err(e: idbridge_api::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.body())
}

pub(crate) fn sso_err(e: SsoError) -> anyhow::Error {
    api_err(e.into())
}

pub fn run(config: &Config, command: ConnectionCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sso = service(config)?;
    runtime.block_on(async move {
        match command {
            ConnectionCommand::Create { body } => {
                let body = read_body(&body)?;
                let input =
                    idbridge_api::sso::connections::parse_new(&body, &sso.oidc_callback_url())
                        .map_err(api_err)?;
                let c = sso.create_connection(input).await.map_err(sso_err)?;
                let view = sso.connection_admin_view(&c.id).map_err(sso_err)?;
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            ConnectionCommand::List => {
                let (records, unreadable) = sso.connections().all()?;
                for r in records {
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
                for (id, e) in unreadable {
                    eprintln!("{id}: unreadable record: {e}");
                }
            }
            ConnectionCommand::Show { id } => {
                let view = sso.connection_admin_view(&id).map_err(sso_err)?;
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            ConnectionCommand::Delete { id } => {
                let c = sso.delete_connection(&id).await.map_err(sso_err)?;
                println!("deleted {} ({})", c.id, c.name);
            }
            ConnectionCommand::RotateKeys { id } => {
                let view = sso.rotate_sp_keys(&id).await.map_err(sso_err)?;
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
        }
        Ok(())
    })
}

/// Creates the `[[sso.connections]]` of the config that do not exist yet (keyed by
/// `external_id`, through the same validation as `POST /connections`), and applies an entry
/// that changed since it was last applied to its existing connection (as `PUT
/// /admin/connections/{id}`: id, state and SP keys kept). An unchanged entry leaves changes
/// made through the admin API alone.
pub async fn apply_declared(
    sso: &SsoService,
    store: &dyn idbridge_store::Store,
    config: &Config,
) -> anyhow::Result<()> {
    for c in &config.sso.connections {
        let org = sso
            .organizations()
            .resolve(&c.organization)?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "declared connection {:?}: no organization with id or external_id {:?}",
                    c.external_id,
                    c.organization
                )
            })?;
        let mut body = serde_json::Map::new();
        body.insert("organization_id".into(), org.id.into());
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
        let declared = |e: idbridge_api::ApiError| {
            anyhow::anyhow!("declared connection {:?}: {}", c.external_id, e.body())
        };
        let input = idbridge_api::sso::connections::parse_new(&body, &sso.oidc_callback_url())
            .map_err(declared)?;
        let seed = crate::declared::Seed::of("connection", &c.external_id, &body)?;
        let existing = sso.connections().by_external_id(&c.external_id)?;
        match existing {
            Some(_) if !seed.changed(store)? => continue,
            Some(record) => {
                let id = record.id().to_owned();
                let conn = sso
                    .reconfigure_connection(&id, input)
                    .await
                    .map_err(|e| declared(e.into()))?;
                tracing::info!(id = %conn.id, external_id = %c.external_id, "declared connection updated from the file");
            }
            None => {
                let conn = sso
                    .create_connection(input)
                    .await
                    .map_err(|e| declared(e.into()))?;
                tracing::info!(id = %conn.id, external_id = %c.external_id, "declared connection applied");
            }
        }
        seed.record(store)?;
    }
    Ok(())
}
