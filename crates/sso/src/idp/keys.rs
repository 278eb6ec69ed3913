//! The IdP's signing keys, one set per organization: the one owner of [`IDP_KEYS`].
//!
//! Generated on first use (metadata or a login), the private key sealed with the
//! [`crate::SecretBox`] bound to the organization and purpose. The first key signs; every key
//! is published in the metadata, so a rotation keeps the previous certificate announced until
//! the next one (two certificates during a rollover, the same pattern as SP keys).

use idbridge_model::Timestamp;
use idbridge_saml::idp::{IdpSigningKey, RsaBits};
use idbridge_store::{ChangeSet, StoreError};
use serde::{Deserialize, Serialize};

use crate::connections::StoredKeyPair;
use crate::db::{self, to_json};
use crate::error::{SsoError, SsoResult};
use crate::SsoService;

/// `<organization id>` → [`IdpKeySet`].
pub const IDP_KEYS: &str = "idp_signing_keys";
/// Validity of generated IdP certificates (SPs pin them; rotate before expiry).
pub const IDP_CERT_DAYS: u32 = 3650;
/// Keys kept: the current one and the previous one during a rollover.
pub const MAX_IDP_KEYS: usize = 2;
const PURPOSE: &str = "idp_signing_key";

/// The stored keys of one organization's IdP (first = current).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdpKeySet {
    pub keys: Vec<StoredKeyPair>,
}

fn context(org_id: &str) -> String {
    format!("{org_id}/{PURPOSE}")
}

async fn generate(org_id: &str) -> SsoResult<IdpSigningKey> {
    let cn = format!("idbridge IdP {org_id}");
    tokio::task::spawn_blocking(move || {
        IdpSigningKey::generate(&cn, RsaBits::Rsa2048, IDP_CERT_DAYS)
    })
    .await
    .map_err(SsoError::internal)?
    .map_err(SsoError::internal)
}

impl SsoService {
    fn seal_idp_key(&self, org_id: &str, k: &IdpSigningKey) -> SsoResult<StoredKeyPair> {
        let key_pem = k.private_key_pem().map_err(SsoError::internal)?;
        let cert_pem = String::from_utf8(k.cert_pem().map_err(SsoError::internal)?)
            .map_err(SsoError::internal)?;
        Ok(StoredKeyPair {
            cert_pem,
            key_sealed: self.secrets()?.seal(&context(org_id), &key_pem)?,
            created_at: Timestamp::now(),
        })
    }

    fn stored_idp_keys(&self, org_id: &str) -> Result<Option<IdpKeySet>, StoreError> {
        db::get_json(self.store.as_ref(), IDP_KEYS, org_id)
    }

    /// The organization's IdP key set, generated (and stored) on first use. Two first uses at
    /// once: one commit wins and both use its keys.
    pub async fn idp_key_set(&self, org_id: &str) -> SsoResult<IdpKeySet> {
        if let Some(set) = self.stored_idp_keys(org_id)? {
            return Ok(set);
        }
        let fresh = generate(org_id).await?;
        let set = IdpKeySet {
            keys: vec![self.seal_idp_key(org_id, &fresh)?],
        };
        let mut cs = ChangeSet::new();
        cs.require_absent(IDP_KEYS, org_id);
        cs.put(IDP_KEYS, org_id, to_json(&set)?);
        match db::commit(&self.store, cs).await {
            Ok(_) => {
                tracing::info!(organization_id = %org_id, "IdP signing key generated");
                Ok(set)
            }
            Err(StoreError::Conflict { .. }) => self
                .stored_idp_keys(org_id)?
                .ok_or_else(|| SsoError::internal("IdP key set vanished")),
            Err(e) => Err(e.into()),
        }
    }

    /// The current signing key, unsealed for one use.
    pub(crate) fn open_idp_key(&self, org_id: &str, set: &IdpKeySet) -> SsoResult<IdpSigningKey> {
        let k = set
            .keys
            .first()
            .ok_or_else(|| SsoError::internal("IdP key set is empty"))?;
        let pem = self
            .secrets()?
            .open(&context(org_id), &k.key_sealed)
            .map_err(SsoError::internal)?;
        IdpSigningKey::from_pem(&pem, k.cert_pem.as_bytes()).map_err(SsoError::internal)
    }

    /// Generates a new IdP signing key; the previous certificate stays in the metadata until
    /// the next rotation so SPs can pick the new one up first. Returns the certificates (PEM),
    /// current first.
    #[tracing::instrument(name = "idp.rotate_keys", skip(self))]
    pub async fn rotate_idp_keys(&self, org_id: &str) -> SsoResult<Vec<String>> {
        if self.organizations().get(org_id)?.is_none() {
            return Err(SsoError::not_found("Organization", org_id));
        }
        let old = self.idp_key_set(org_id).await?;
        let fresh = generate(org_id).await?;
        let mut next = old.clone();
        next.keys.insert(0, self.seal_idp_key(org_id, &fresh)?);
        next.keys.truncate(MAX_IDP_KEYS);
        let mut cs = ChangeSet::new();
        cs.require_equals(IDP_KEYS, org_id, Some(to_json(&old)?));
        cs.put(IDP_KEYS, org_id, to_json(&next)?);
        db::commit(&self.store, cs).await.map_err(|e| match e {
            StoreError::Conflict { .. } => SsoError::concurrent("IdP key set"),
            other => other.into(),
        })?;
        Ok(next.keys.iter().map(|k| k.cert_pem.clone()).collect())
    }

    /// Every key of the set, unsealed (current first): the OIDC provider's JWKS publishes
    /// them all.
    pub(crate) fn open_idp_keys(
        &self,
        org_id: &str,
        set: &IdpKeySet,
    ) -> SsoResult<Vec<IdpSigningKey>> {
        set.keys
            .iter()
            .map(|k| {
                let pem = self
                    .secrets()?
                    .open(&context(org_id), &k.key_sealed)
                    .map_err(SsoError::internal)?;
                IdpSigningKey::from_pem(&pem, k.cert_pem.as_bytes()).map_err(SsoError::internal)
            })
            .collect()
    }
}
