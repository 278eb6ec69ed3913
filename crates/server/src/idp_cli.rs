//! `idbridge idp sp|oidc-client add|list|show|remove`: idbridge-as-an-IdP's service providers
//! and OIDC clients without a running server (the store is single-process: stop the server
//! first), through the same validation as `POST /admin/service_providers` and
//! `POST /admin/oidc_clients`.

use std::path::PathBuf;

use clap::Subcommand;
use idbridge_model::{Cursor, PageRequest};
use idbridge_sso::SsoService;
use serde_json::Value;

use crate::config::Config;
use crate::connections::{api_err, read_body, service, sso_err};

#[derive(Debug, Subcommand)]
pub enum IdpCommand {
    /// SAML service providers of idbridge's IdP.
    Sp {
        #[command(subcommand)]
        command: IdpObjectCommand,
    },
    /// OIDC clients of idbridge's OpenID Provider.
    OidcClient {
        #[command(subcommand)]
        command: IdpObjectCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdpObjectCommand {
    /// Register from a JSON body shaped like the admin API's POST (a file, or `-` for stdin);
    /// `organization_id` may also be an organization's `external_id`. An OIDC client's secret
    /// is printed this once.
    Add { body: PathBuf },
    /// List them (id, organization, name, and the entity id or redirect URIs).
    List {
        /// Only this organization's (id or external_id).
        #[arg(long)]
        organization: Option<String>,
    },
    /// Show one (never secrets or private keys).
    Show { id: String },
    /// Remove one.
    Remove { id: String },
}

/// An organization id, or the id of the organization with this external_id.
fn organization_id(sso: &SsoService, given: &str) -> anyhow::Result<String> {
    Ok(sso
        .organizations()
        .resolve(given)?
        .ok_or_else(|| anyhow::anyhow!("no organization with id or external_id {given:?}"))?
        .id)
}

fn line(v: &Value, detail: &str) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    format!(
        "{}\t{}\t{}\t{detail}",
        s("id"),
        s("organization_id"),
        s("name")
    )
}

pub fn run(config: &Config, command: IdpCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sso = service(config)?;
    runtime.block_on(async move {
        let (sp, command) = match command {
            IdpCommand::Sp { command } => (true, command),
            IdpCommand::OidcClient { command } => (false, command),
        };
        match command {
            IdpObjectCommand::Add { body } => {
                let mut body = read_body(&body)?;
                if let Some(Value::String(org)) = body.get("organization_id").cloned() {
                    body.insert(
                        "organization_id".into(),
                        organization_id(&sso, &org)?.into(),
                    );
                }
                let out = if sp {
                    let input = idbridge_api::idp::admin::parse_new(&body).map_err(api_err)?;
                    sso.create_service_provider(input).await.map_err(sso_err)?
                } else {
                    let input = idbridge_api::idp::oidc_admin::parse_new(&body).map_err(api_err)?;
                    let issued = sso.create_oidc_client(input).await.map_err(sso_err)?;
                    let mut v = issued.object;
                    if let (Some(o), Some(secret)) = (v.as_object_mut(), issued.client_secret) {
                        o.insert("client_secret".into(), secret.expose().into());
                    }
                    v
                };
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            IdpObjectCommand::List { organization } => {
                let org = organization
                    .map(|o| organization_id(&sso, &o))
                    .transpose()?;
                if sp {
                    let mut page = PageRequest {
                        limit: 100,
                        ..PageRequest::default()
                    };
                    loop {
                        let got = sso
                            .list_service_providers(org.as_deref(), &page)
                            .map_err(sso_err)?;
                        for v in &got.data {
                            println!("{}", line(v, v["entity_id"].as_str().unwrap_or("-")));
                        }
                        match got.after {
                            Some(after) => page.cursor = Cursor::After(after),
                            None => break,
                        }
                    }
                } else {
                    let all = sso
                        .list_oidc_clients(org.as_deref(), usize::MAX)
                        .map_err(sso_err)?;
                    for v in &all {
                        let uris: Vec<&str> = v["redirect_uris"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        println!("{}", line(v, &uris.join(",")));
                    }
                }
            }
            IdpObjectCommand::Show { id } => {
                let v = if sp {
                    sso.service_provider(&id)
                } else {
                    sso.idp_oidc_client(&id)
                }
                .map_err(sso_err)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            IdpObjectCommand::Remove { id } => {
                if sp {
                    sso.delete_service_provider(&id).await
                } else {
                    sso.delete_oidc_client(&id).await
                }
                .map_err(sso_err)?;
                println!("removed {id}");
            }
        }
        Ok(())
    })
}
