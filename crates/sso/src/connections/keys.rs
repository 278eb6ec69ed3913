//! Connection secrets: SP key pairs and OIDC client secrets are sealed with the [`SecretBox`]
//! before they reach the store, each bound to its connection and purpose; they are opened only
//! in memory, for one request. SP key rotation lives here too.

use idbridge_model::Timestamp;
use idbridge_oidc::Secret;
use idbridge_saml::{IdpSettings, SpKeyPair, SpSettings};
use openssl::x509::X509;
use serde_json::Value;

use super::{OidcConnection, ProtocolSettings, SamlConnection, StoredKeyPair};
use crate::error::{SsoError, SsoResult};
use crate::{SecretBox, SsoService};

/// Validity of generated SP certificates. SAML peers pin them, so expiry is a formality, but
/// some IdPs refuse expired ones: rotate before then.
pub const SP_CERT_DAYS: u32 = 3650;
/// Keys kept per purpose: the current one and the previous one during a rollover.
pub const MAX_SP_KEYS: usize = 2;

pub(crate) const SP_SIGNING: &str = "sp_signing_key";
pub(crate) const SP_ENCRYPTION: &str = "sp_encryption_key";
const OIDC_CLIENT_SECRET: &str = "oidc_client_secret";
const PKCE: &str = "pkce";

/// The associated data binding a sealed value to its connection and purpose.
fn context(conn_id: &str, purpose: &str) -> String {
    format!("{conn_id}/{purpose}")
}

fn seal_pair(
    secrets: &SecretBox,
    conn_id: &str,
    purpose: &str,
    k: &SpKeyPair,
) -> SsoResult<StoredKeyPair> {
    let key_pem = k
        .key
        .private_key_to_pem_pkcs8()
        .map_err(SsoError::internal)?;
    let cert_pem = String::from_utf8(k.cert.to_pem().map_err(SsoError::internal)?)
        .map_err(SsoError::internal)?;
    Ok(StoredKeyPair {
        cert_pem,
        key_sealed: secrets.seal(&context(conn_id, purpose), &key_pem)?,
        created_at: Timestamp::now(),
    })
}

fn open_pair(
    secrets: &SecretBox,
    conn_id: &str,
    purpose: &str,
    k: &StoredKeyPair,
) -> SsoResult<SpKeyPair> {
    let pem = secrets
        .open(&context(conn_id, purpose), &k.key_sealed)
        .map_err(SsoError::internal)?;
    SpKeyPair::from_pem(&pem, k.cert_pem.as_bytes()).map_err(SsoError::internal)
}

/// A fresh signing and encryption pair for a connection, sealed (key generation runs off the
/// async runtime).
pub(crate) async fn generate_sp_pairs(
    secrets: &SecretBox,
    conn_id: &str,
) -> SsoResult<(StoredKeyPair, StoredKeyPair)> {
    let cn = format!("idbridge SP {conn_id}");
    let (s, e) = tokio::task::spawn_blocking(move || {
        Ok::<_, idbridge_saml::SamlError>((
            SpKeyPair::generate(&cn, SP_CERT_DAYS)?,
            SpKeyPair::generate(&cn, SP_CERT_DAYS)?,
        ))
    })
    .await
    .map_err(SsoError::internal)?
    .map_err(SsoError::internal)?;
    Ok((
        seal_pair(secrets, conn_id, SP_SIGNING, &s)?,
        seal_pair(secrets, conn_id, SP_ENCRYPTION, &e)?,
    ))
}

/// One fresh SP key pair for `purpose` (`SP_SIGNING` / `SP_ENCRYPTION`), sealed.
pub(crate) async fn generate_sp_pair(
    secrets: &SecretBox,
    conn_id: &str,
    purpose: &str,
) -> SsoResult<StoredKeyPair> {
    let cn = format!("idbridge SP {conn_id}");
    let pair = tokio::task::spawn_blocking(move || SpKeyPair::generate(&cn, SP_CERT_DAYS))
        .await
        .map_err(SsoError::internal)?
        .map_err(SsoError::internal)?;
    seal_pair(secrets, conn_id, purpose, &pair)
}

/// A tiny EC key used only to satisfy `SpKeyPair` when rendering metadata (never signs).
fn placeholder_key() -> SsoResult<openssl::pkey::PKey<openssl::pkey::Private>> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
        .map_err(SsoError::internal)?;
    let ec = openssl::ec::EcKey::generate(&group).map_err(SsoError::internal)?;
    openssl::pkey::PKey::from_ec_key(ec).map_err(SsoError::internal)
}

impl SamlConnection {
    /// Our SingleLogoutService for this connection (next to its ACS), when the IdP has one:
    /// only then is there a logout exchange to publish.
    pub fn sp_slo_url(&self) -> Option<String> {
        self.idp_slo_url.as_ref()?;
        let (base, conn) = self.acs_url.rsplit_once("/sso/saml/acs/")?;
        Some(format!("{base}/sso/saml/slo/{conn}"))
    }

    /// SP settings with the private keys unsealed (kept in memory only for one request);
    /// without `secrets`, settings without keys.
    pub fn sp_settings(&self, conn_id: &str, secrets: Option<&SecretBox>) -> SsoResult<SpSettings> {
        let mut sp = SpSettings::new(&self.sp_entity_id, &self.acs_url);
        sp.allow_idp_initiated = self.allow_idp_initiated;
        sp.clock_skew = std::time::Duration::from_secs(self.clock_skew_secs);
        sp.want_signed_requests = self.sign_requests;
        sp.slo_url = self.sp_slo_url();
        if let Some(secrets) = secrets {
            for k in &self.sp_signing_keys {
                sp.signing_keys
                    .push(open_pair(secrets, conn_id, SP_SIGNING, k)?);
            }
            for k in &self.sp_encryption_keys {
                sp.decryption_keys
                    .push(open_pair(secrets, conn_id, SP_ENCRYPTION, k)?);
            }
        }
        Ok(sp)
    }

    /// SP settings with certificates only (metadata needs no private key).
    pub fn public_sp_settings(&self) -> SsoResult<SpSettings> {
        let mut sp = SpSettings::new(&self.sp_entity_id, &self.acs_url);
        sp.want_signed_requests = self.sign_requests;
        sp.allow_idp_initiated = self.allow_idp_initiated;
        sp.slo_url = self.sp_slo_url();
        // Metadata only reads certificates, so an ephemeral key stands in for the private part.
        for (list, out) in [
            (&self.sp_signing_keys, &mut sp.signing_keys),
            (&self.sp_encryption_keys, &mut sp.decryption_keys),
        ] {
            for k in list {
                let cert = X509::from_pem(k.cert_pem.as_bytes()).map_err(SsoError::internal)?;
                out.push(SpKeyPair {
                    key: placeholder_key()?,
                    cert,
                });
            }
        }
        Ok(sp)
    }

    /// What we trust about the IdP.
    pub fn idp_settings(&self) -> SsoResult<IdpSettings> {
        let certs: Vec<&[u8]> = self
            .idp_signing_certs
            .iter()
            .map(|c| c.as_bytes())
            .collect();
        let mut idp = IdpSettings::new(&self.idp_entity_id, self.idp_sso_url.clone(), &certs)
            .map_err(SsoError::internal)?;
        idp.wants_signed_requests = self.idp_wants_signed_requests;
        Ok(idp)
    }
}

/// Seals an OIDC client secret for the record.
pub(crate) fn seal_client_secret(
    secrets: &SecretBox,
    conn_id: &str,
    secret: &str,
) -> SsoResult<String> {
    Ok(secrets.seal(&context(conn_id, OIDC_CLIENT_SECRET), secret.as_bytes())?)
}

/// The client secret: unsealed from the record, or read from the named environment variable.
pub(crate) fn client_secret(
    secrets: Option<&SecretBox>,
    conn_id: &str,
    o: &OidcConnection,
) -> SsoResult<Secret> {
    if let Some(var) = &o.client_secret_env {
        return Secret::from_env(var).map_err(SsoError::internal);
    }
    let sealed = o
        .client_secret_sealed
        .as_deref()
        .ok_or_else(|| SsoError::internal("OIDC connection has no client secret"))?;
    let secrets = secrets.ok_or_else(|| SsoError::internal("no secret key"))?;
    let plain = secrets
        .open(&context(conn_id, OIDC_CLIENT_SECRET), sealed)
        .map_err(SsoError::internal)?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(SsoError::internal)
}

/// Seals a login's PKCE verifier: even in a short-lived session it is a credential.
pub(crate) fn seal_pkce(secrets: &SecretBox, conn_id: &str, verifier: &str) -> SsoResult<String> {
    Ok(secrets.seal(&context(conn_id, PKCE), verifier.as_bytes())?)
}

/// Opens a login's PKCE verifier (empty when it cannot be opened: the IdP then refuses).
pub(crate) fn open_pkce(secrets: Option<&SecretBox>, conn_id: &str, sealed: &str) -> String {
    secrets
        .and_then(|b| b.open(&context(conn_id, PKCE), sealed).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default()
}

impl SsoService {
    /// Generates new SP signing and encryption keys; the previous ones stay published (and
    /// usable for decryption) until the next rotation, so IdPs can pick the new certificate up
    /// first. Returns the admin view.
    #[tracing::instrument(name = "connections.rotate_sp_keys", skip(self))]
    pub async fn rotate_sp_keys(&self, id: &str) -> SsoResult<Value> {
        let old = self.connections.load(id)?;
        let ProtocolSettings::Saml(saml) = &old.protocol else {
            return Err(SsoError::Refused {
                code: "not_a_saml_connection",
                message: "Only SAML connections have SP keys.".into(),
            });
        };
        let (signing, encryption) = generate_sp_pairs(self.secrets()?, id).await?;
        let mut next = saml.clone();
        next.sp_signing_keys.insert(0, signing);
        next.sp_signing_keys.truncate(MAX_SP_KEYS);
        next.sp_encryption_keys.insert(0, encryption);
        next.sp_encryption_keys.truncate(MAX_SP_KEYS);
        let record = self.replace_saml(&old, next).await?;
        self.admin_view(&record)
    }
}
