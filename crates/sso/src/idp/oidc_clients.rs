//! OIDC clients (relying parties) registered with an organization's OpenID Provider (issue 16):
//! the one owner of [`OIDC_CLIENTS`].
//!
//! A record says who may ask for a code (the client id), where the code may go (its registered
//! redirect URIs, compared exactly), how it authenticates at the token endpoint (a generated
//! secret, sealed at rest and shown once; or none for a public client, which must use PKCE)
//! and how its users authenticate (the same [`AuthSource`] as a SAML service provider).

use std::sync::Arc;

use idbridge_model::{new_id, parse_id, IdPrefix, Timestamp};
use idbridge_oidc::op::{generate_client_secret, RegisteredClient};
use idbridge_oidc::Secret;
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::service_providers::AuthSource;
use crate::db::{self, to_json};
use crate::error::{FieldIssue, SsoError, SsoResult};
use crate::SsoService;

/// `oidc_client_…` → [`OidcClient`].
pub const OIDC_CLIENTS: &str = "idp_oidc_clients";
const MAX_NAME_LEN: usize = 512;
const MAX_REDIRECT_URIS: usize = 16;
const MAX_URI_LEN: usize = 2048;
/// Shortest client secret given from outside (a generated one is 43 characters).
pub const MIN_GIVEN_SECRET_LEN: usize = 32;

/// A registered OIDC client: the stored record (the secret sealed) and, with
/// [`OidcClient::wire`], the admin API's object (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcClient {
    /// Also the `client_id`.
    pub id: String,
    pub organization_id: String,
    pub name: String,
    /// Compared exactly (no prefix, no normalization).
    pub redirect_uris: Vec<String>,
    /// A public client has no secret and must use PKCE.
    pub public: bool,
    /// PKCE required of a confidential client too.
    pub require_pkce: bool,
    /// `groups` in the ID token and userinfo without the `groups` scope (WorkOS's Generic OIDC
    /// connection asks for `openid profile email` only).
    pub groups_without_scope: bool,
    pub auth_source: Option<AuthSource>,
    /// Extra ID token / userinfo claims: claim name → the user field it is taken from (as
    /// an SP's `custom_attributes`).
    #[serde(default)]
    pub custom_claims: std::collections::BTreeMap<String, String>,
    /// The client secret, sealed with the organization's context.
    pub secret_sealed: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl OidcClient {
    /// The admin API object: the record without the sealed secret, plus `object`, `client_id`
    /// and the provider's URLs to give the client's admin.
    pub fn wire(&self, issuer: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("secret_sealed");
            o.insert("object".into(), Value::String("oidc_client".into()));
            o.insert("client_id".into(), Value::String(self.id.clone()));
            o.insert(
                "token_endpoint_auth_method".into(),
                Value::String(
                    if self.public {
                        "none"
                    } else {
                        "client_secret_basic"
                    }
                    .into(),
                ),
            );
            o.insert(
                "provider".into(),
                serde_json::json!({
                    "issuer": issuer,
                    "discovery_url": format!("{issuer}/.well-known/openid-configuration"),
                }),
            );
        }
        v
    }
}

/// Settings an admin may set on create and change on update (`None` = default / unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OidcClientOptions {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub require_pkce: Option<bool>,
    pub groups_without_scope: Option<bool>,
    /// `Some(None)` removes the source.
    pub directory_id: Option<Option<String>>,
    /// Replaces the whole map.
    pub custom_claims: Option<std::collections::BTreeMap<String, String>>,
}

/// `POST /admin/oidc_clients`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewOidcClient {
    pub organization_id: String,
    /// No secret; PKCE required.
    pub public: bool,
    pub options: OidcClientOptions,
}

/// `PUT /admin/oidc_clients/{id}`: only what is given changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OidcClientUpdate {
    pub options: OidcClientOptions,
    /// Generate a new secret (shown once in the answer); the old one stops working.
    pub rotate_secret: bool,
}

/// What create (and a secret rotation) answers: the object and, once, the secret.
#[derive(Debug, Clone)]
pub struct IssuedClient {
    pub object: Value,
    pub client_secret: Option<Secret>,
}

/// The client registry over the store.
#[derive(Clone)]
pub struct OidcClients {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for OidcClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClients").finish_non_exhaustive()
    }
}

fn secret_context(org_id: &str, client_id: &str) -> String {
    format!("{org_id}/oidc_client_secret/{client_id}")
}

/// A redirect URI we accept: absolute https (http only on loopback), no fragment.
fn valid_redirect_uri(u: &str) -> bool {
    let Ok(url) = url::Url::parse(u) else {
        return false;
    };
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    u.len() <= MAX_URI_LEN
        && url.fragment().is_none()
        && url.host_str().is_some()
        && (url.scheme() == "https" || (url.scheme() == "http" && loopback))
}

impl OidcClients {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        OidcClients { store }
    }

    /// The record, if it exists (a malformed id cannot).
    pub fn get(&self, id: &str) -> Result<Option<OidcClient>, StoreError> {
        if parse_id(IdPrefix::OidcClient, id).is_err() {
            return Ok(None);
        }
        db::get_json(self.store.as_ref(), OIDC_CLIENTS, id)
    }

    /// The record, or `NotFound`.
    pub fn load(&self, id: &str) -> SsoResult<OidcClient> {
        self.get(id)?
            .ok_or_else(|| SsoError::not_found("OIDC Client", id))
    }

    /// Every record (optionally of one organization), in id order; at most `limit`.
    pub fn list(
        &self,
        organization_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OidcClient>, StoreError> {
        let mut out = Vec::new();
        for (id, bytes) in self.store.scan(OIDC_CLIENTS, "", None, usize::MAX)? {
            let r: OidcClient = db::decode(OIDC_CLIENTS, &id, &bytes)?;
            if organization_id.is_none_or(|o| o == r.organization_id) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl SsoService {
    /// The OIDC provider's issuer of an organization (discovery is under it).
    pub fn oidc_issuer(&self, org_id: &str) -> String {
        format!("{}/idp/{org_id}/oidc", self.public_url())
    }

    /// OIDC client records.
    pub fn idp_oidc_clients(&self) -> &OidcClients {
        &self.idp.oidc_clients
    }

    /// The registered client as the protocol library checks it (the secret unsealed).
    pub(crate) fn registered_oidc_client(&self, c: &OidcClient) -> SsoResult<RegisteredClient> {
        let secret = match &c.secret_sealed {
            Some(sealed) => {
                let plain = self
                    .secrets()?
                    .open(&secret_context(&c.organization_id, &c.id), sealed)?;
                Some(Secret::new(
                    String::from_utf8(plain).map_err(SsoError::internal)?,
                ))
            }
            None => None,
        };
        Ok(RegisteredClient {
            client_id: c.id.clone(),
            secret,
            redirect_uris: c.redirect_uris.clone(),
            require_pkce: c.require_pkce,
            groups_without_scope: c.groups_without_scope,
        })
    }

    /// Whether `directory_id` can be the directory source of a relying party of `org_id`: an
    /// LDAP/AD directory of that organization; or the field error code.
    pub(crate) fn check_directory_source(
        &self,
        org_id: &str,
        directory_id: &str,
    ) -> Result<(), &'static str> {
        match self.directory.get_directory(directory_id) {
            Ok(rec)
                if rec.directory.organization_id == org_id
                    && rec.directory.directory_type == "ldap" =>
            {
                Ok(())
            }
            Ok(_) => Err("not_an_ldap_directory_of_the_organization"),
            Err(_) => Err("not_found"),
        }
    }

    fn apply_client_options(&self, r: &mut OidcClient, o: &OidcClientOptions) -> SsoResult<()> {
        let mut issues = Vec::new();
        if let Some(n) = &o.name {
            if n.trim().is_empty() || n.len() > MAX_NAME_LEN {
                issues.push(FieldIssue::new("name", "invalid"));
            } else {
                r.name = n.trim().to_owned();
            }
        }
        if let Some(list) = &o.redirect_uris {
            if list.is_empty() || list.len() > MAX_REDIRECT_URIS {
                issues.push(FieldIssue::new(
                    "redirect_uris",
                    "between_1_and_16_required",
                ));
            }
            for (i, u) in list.iter().enumerate() {
                if !valid_redirect_uri(u) {
                    issues.push(FieldIssue::new(
                        format!("redirect_uris[{i}]"),
                        "must_be_https_url_without_fragment",
                    ));
                }
            }
            let mut l = list.clone();
            l.dedup();
            r.redirect_uris = l;
        }
        if let Some(b) = o.require_pkce {
            r.require_pkce = b;
        }
        if let Some(b) = o.groups_without_scope {
            r.groups_without_scope = b;
        }
        if let Some(map) = &o.custom_claims {
            let found = super::service_providers::check_custom_attributes(
                map,
                &idbridge_oidc::op::RESERVED_CLAIMS,
            );
            if found.is_empty() {
                r.custom_claims = map.clone();
            }
            issues.extend(found.into_iter().map(|i| {
                FieldIssue::new(
                    i.field.replacen("custom_attributes", "custom_claims", 1),
                    i.code,
                )
            }));
        }
        if let Some(dir) = &o.directory_id {
            match dir {
                None => r.auth_source = None,
                Some(d) => match self.check_directory_source(&r.organization_id, d) {
                    Ok(()) => {
                        r.auth_source = Some(AuthSource::Directory {
                            directory_id: d.clone(),
                        })
                    }
                    Err(code) => issues.push(FieldIssue::new("directory_id", code)),
                },
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(SsoError::Invalid(issues))
        }
    }

    fn seal_client_secret(&self, r: &mut OidcClient) -> SsoResult<Secret> {
        let secret = generate_client_secret().map_err(SsoError::internal)?;
        r.secret_sealed = Some(self.secrets()?.seal(
            &secret_context(&r.organization_id, &r.id),
            secret.expose().as_bytes(),
        )?);
        Ok(secret)
    }

    /// Registers an OIDC client; the answer carries its secret, the only time it is shown.
    #[tracing::instrument(name = "idp.create_oidc_client", skip_all, fields(org = %input.organization_id))]
    pub async fn create_oidc_client(&self, input: NewOidcClient) -> SsoResult<IssuedClient> {
        if self.organizations().get(&input.organization_id)?.is_none() {
            return Err(SsoError::invalid("organization_id", "not_found"));
        }
        if input.options.redirect_uris.is_none() {
            return Err(SsoError::invalid("redirect_uris", "required"));
        }
        let now = Timestamp::now();
        let mut r = OidcClient {
            id: new_id(IdPrefix::OidcClient),
            organization_id: input.organization_id.clone(),
            name: "OIDC client".into(),
            redirect_uris: Vec::new(),
            public: input.public,
            require_pkce: input.public,
            groups_without_scope: true,
            auth_source: None,
            custom_claims: Default::default(),
            secret_sealed: None,
            created_at: now,
            updated_at: now,
        };
        self.apply_client_options(&mut r, &input.options)?;
        if r.public && !r.require_pkce {
            return Err(SsoError::invalid(
                "require_pkce",
                "public_clients_must_use_pkce",
            ));
        }
        let client_secret = if r.public {
            None
        } else {
            Some(self.seal_client_secret(&mut r)?)
        };
        let mut cs = ChangeSet::new();
        cs.require_absent(OIDC_CLIENTS, &r.id);
        cs.put(OIDC_CLIENTS, &r.id, to_json(&r)?);
        db::commit(&self.store, cs).await?;
        tracing::info!(client = %r.id, "OIDC client registered");
        Ok(IssuedClient {
            object: r.wire(&self.oidc_issuer(&r.organization_id)),
            client_secret,
        })
    }

    /// Gives a confidential client a secret chosen outside idbridge (the config file's
    /// `client_secret_env` / `client_secret_file`), sealed like a generated one. At least
    /// [`MIN_GIVEN_SECRET_LEN`] characters: a guessable secret would be the client's password.
    #[tracing::instrument(name = "idp.set_oidc_client_secret", skip(self, secret))]
    pub async fn set_oidc_client_secret(&self, id: &str, secret: &Secret) -> SsoResult<()> {
        if secret.expose().chars().count() < MIN_GIVEN_SECRET_LEN {
            return Err(SsoError::invalid(
                "client_secret",
                format!("must_be_at_least_{MIN_GIVEN_SECRET_LEN}_characters"),
            ));
        }
        let old = self.idp.oidc_clients.load(id)?;
        if old.public {
            return Err(SsoError::invalid(
                "client_secret",
                "public_clients_have_no_secret",
            ));
        }
        let mut next = old.clone();
        next.secret_sealed = Some(self.secrets()?.seal(
            &secret_context(&next.organization_id, &next.id),
            secret.expose().as_bytes(),
        )?);
        next.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        cs.require_equals(OIDC_CLIENTS, &old.id, Some(to_json(&old)?));
        cs.put(OIDC_CLIENTS, &next.id, to_json(&next)?);
        db::commit(&self.store, cs).await.map_err(|e| match e {
            StoreError::Conflict { .. } => SsoError::concurrent("OIDC client"),
            other => other.into(),
        })?;
        Ok(())
    }

    /// The admin object of a client.
    pub fn idp_oidc_client(&self, id: &str) -> SsoResult<Value> {
        let r = self.idp.oidc_clients.load(id)?;
        Ok(r.wire(&self.oidc_issuer(&r.organization_id)))
    }

    /// Clients (of one organization), at most `limit`.
    pub fn list_oidc_clients(
        &self,
        organization_id: Option<&str>,
        limit: usize,
    ) -> SsoResult<Vec<Value>> {
        Ok(self
            .idp
            .oidc_clients
            .list(organization_id, limit)?
            .iter()
            .map(|r| r.wire(&self.oidc_issuer(&r.organization_id)))
            .collect())
    }

    /// Changes a client: one commit, on the condition that nobody changed it meanwhile.
    #[tracing::instrument(name = "idp.update_oidc_client", skip(self, update))]
    pub async fn update_oidc_client(
        &self,
        id: &str,
        update: OidcClientUpdate,
    ) -> SsoResult<IssuedClient> {
        let old = self.idp.oidc_clients.load(id)?;
        let mut next = old.clone();
        self.apply_client_options(&mut next, &update.options)?;
        if next.public && !next.require_pkce {
            return Err(SsoError::invalid(
                "require_pkce",
                "public_clients_must_use_pkce",
            ));
        }
        let client_secret = match (update.rotate_secret, next.public) {
            (true, true) => {
                return Err(SsoError::invalid(
                    "rotate_secret",
                    "public_clients_have_no_secret",
                ))
            }
            (true, false) => Some(self.seal_client_secret(&mut next)?),
            (false, _) => None,
        };
        next.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        cs.require_equals(OIDC_CLIENTS, &old.id, Some(to_json(&old)?));
        cs.put(OIDC_CLIENTS, &next.id, to_json(&next)?);
        db::commit(&self.store, cs).await.map_err(|e| match e {
            StoreError::Conflict { .. } => SsoError::concurrent("OIDC client"),
            other => other.into(),
        })?;
        Ok(IssuedClient {
            object: next.wire(&self.oidc_issuer(&next.organization_id)),
            client_secret,
        })
    }

    /// Removes a client: its logins in progress fail and its codes are no longer redeemed.
    #[tracing::instrument(name = "idp.delete_oidc_client", skip(self))]
    pub async fn delete_oidc_client(&self, id: &str) -> SsoResult<()> {
        let r = self.idp.oidc_clients.load(id)?;
        let mut cs = ChangeSet::new();
        cs.require_present(OIDC_CLIENTS, &r.id);
        cs.delete(OIDC_CLIENTS, &r.id);
        db::commit(&self.store, cs).await.map_err(|e| match e {
            StoreError::Conflict { .. } => SsoError::concurrent("OIDC client"),
            other => other.into(),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_https_or_loopback_http_without_fragment() {
        for ok in [
            "https://auth.workos.com/sso/oidc/callback",
            "https://app.test/cb?tenant=1",
            "http://127.0.0.1:9000/cb",
            "http://localhost/cb",
        ] {
            assert!(valid_redirect_uri(ok), "{ok}");
        }
        for bad in [
            "http://app.test/cb",
            "https://app.test/cb#frag",
            "/relative",
            "javascript:alert(1)",
            "https://",
        ] {
            assert!(!valid_redirect_uri(bad), "{bad}");
        }
    }
}
