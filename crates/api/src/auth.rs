//! API keys (`sk_...`) and the environment's client id.
//!
//! Keys are stored only as SHA-256 digests and looked up by digest, then compared in constant
//! time; the plaintext is shown once, when created.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use idbridge_model::{new_id, IdPrefix, Timestamp};
use idbridge_store::{ChangeSet, Store};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::tables;
use crate::AppState;

/// What is stored for a key: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the full key (also the table key).
    pub digest: String,
    /// The last four characters, so admins can tell keys apart.
    pub last4: String,
    pub created_at: Timestamp,
}

/// A freshly minted key: the only moment the plaintext exists.
pub struct NewApiKey {
    pub plaintext: String,
    pub record: ApiKeyRecord,
}

pub fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random_token(len: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Creates and durably stores a new API key.
pub fn create_api_key(
    store: &dyn Store,
    name: &str,
) -> Result<NewApiKey, idbridge_store::StoreError> {
    let plaintext = format!("sk_{}", random_token(40));
    let id = new_id(IdPrefix::ApiKey);
    let record = ApiKeyRecord {
        created_at: Timestamp::now(),
        id,
        name: name.to_string(),
        digest: digest(&plaintext),
        last4: plaintext[plaintext.len() - 4..].to_string(),
    };
    let mut cs = ChangeSet::default();
    cs.put_json(tables::API_KEYS, &record.digest, &record)?;
    cs.require_absent(tables::API_KEYS, &record.digest);
    store.commit(cs)?;
    Ok(NewApiKey { plaintext, record })
}

pub fn list_api_keys(store: &dyn Store) -> Result<Vec<ApiKeyRecord>, idbridge_store::StoreError> {
    let mut keys: Vec<ApiKeyRecord> = store
        .scan(tables::API_KEYS, "", None, usize::MAX)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(keys)
}

/// Revokes by id (`key_...`) or by the last four characters when unambiguous. Returns the
/// revoked record, or None when nothing matched.
pub fn revoke_api_key(
    store: &dyn Store,
    id_or_last4: &str,
) -> Result<Option<ApiKeyRecord>, idbridge_store::StoreError> {
    let matches: Vec<ApiKeyRecord> = list_api_keys(store)?
        .into_iter()
        .filter(|k| k.id == id_or_last4 || k.last4 == id_or_last4)
        .collect();
    let [record] = matches.as_slice() else {
        return Ok(None);
    };
    let mut cs = ChangeSet::default();
    cs.delete(tables::API_KEYS, &record.digest);
    store.commit(cs)?;
    Ok(Some(record.clone()))
}

/// Looks a presented key up by digest and confirms it in constant time.
pub fn verify_api_key(
    store: &dyn Store,
    presented: &str,
) -> Result<Option<ApiKeyRecord>, idbridge_store::StoreError> {
    if !presented.starts_with("sk_") || presented.len() > 200 {
        return Ok(None);
    }
    let d = digest(presented);
    let Some(bytes) = store.get(tables::API_KEYS, &d)? else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_slice::<ApiKeyRecord>(&bytes) else {
        return Ok(None);
    };
    if bool::from(record.digest.as_bytes().ct_eq(d.as_bytes())) {
        Ok(Some(record))
    } else {
        Ok(None)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClientIdRecord {
    client_id: String,
}

const CLIENT_ID_KEY: &str = "client_id";

pub fn client_id(store: &dyn Store) -> Result<Option<String>, idbridge_store::StoreError> {
    Ok(store
        .get(tables::ENVIRONMENT, CLIENT_ID_KEY)?
        .and_then(|b| serde_json::from_slice::<ClientIdRecord>(&b).ok())
        .map(|r| r.client_id))
}

/// What the first start of a fresh data directory creates and prints once.
pub struct Bootstrap {
    pub api_key: String,
    pub client_id: String,
}

/// Creates the client id and a first API key if the environment has neither. Idempotent: a
/// store that already has a client id is left alone (returns None).
pub fn bootstrap(store: &dyn Store) -> Result<Option<Bootstrap>, idbridge_store::StoreError> {
    if client_id(store)?.is_some() {
        return Ok(None);
    }
    let client_id = format!("client_{}", ulid::Ulid::new());
    let mut cs = ChangeSet::default();
    cs.put_json(
        tables::ENVIRONMENT,
        CLIENT_ID_KEY,
        &ClientIdRecord {
            client_id: client_id.clone(),
        },
    )?;
    cs.require_absent(tables::ENVIRONMENT, CLIENT_ID_KEY);
    store.commit(cs)?;
    let key = create_api_key(store, "default")?;
    Ok(Some(Bootstrap {
        api_key: key.plaintext,
        client_id,
    }))
}

/// The bearer token of a request, if any.
pub fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: every REST route but health and the browser-facing SSO ones needs an API key.
pub async fn require_api_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let limiters = &state.api_limiters;
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    if let Err(wait) = limiters.failed_auth.check(&client) {
        return Err(ApiError::RateLimited {
            message: "Too many failed authentications from this address",
            retry_after_secs: wait.secs(),
        });
    }
    let record = match bearer(&req) {
        Some(token) => verify_api_key(state.db.store().as_ref(), token)?,
        None => None,
    };
    let Some(record) = record else {
        limiters.failed_auth.failed(&client);
        return Err(ApiError::Unauthorized);
    };
    if let Err(wait) = limiters.rate.check(&record.id) {
        return Err(ApiError::RateLimited {
            message: "Too many requests for this API key",
            retry_after_secs: wait.secs(),
        });
    }
    Ok(next.run(req).await)
}
