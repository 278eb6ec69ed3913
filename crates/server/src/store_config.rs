//! `[store]`: which store backend holds idbridge's data.
//!
//! ```toml
//! [store]
//! backend = "postgres"            # or "sqlite" (the default: <data_dir>/idbridge.sqlite3)
//! url_env = "IDBRIDGE_STORE_URL"  # or url = "postgresql://idbridge@db:5432/idbridge",
//!                                 # or url_file = "/run/secrets/idbridge-store-url"
//! pool_size = 16                  # PostgreSQL connections at most
//! ```
//!
//! `url_env` / `url_file` keep the password out of the config file. The keys are read at start
//! only; `backend` and the `url*` keys locate the store that holds the runtime settings, so
//! the file alone sets them (like `server.data_dir`); `pool_size` can be changed through the
//! admin API and applies from the next start.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use idbridge_store::{PgOptions, PgStore, Store};
use serde::{Deserialize, Serialize};

/// The store backends.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One SQLite file in the data directory (embedded; one node).
    #[default]
    Sqlite,
    /// A PostgreSQL database (several nodes can share it).
    Postgres,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub backend: StoreBackend,
    /// PostgreSQL connection string (`postgresql://user:pw@host:port/db` or `host=... dbname=...`).
    pub url: Option<String>,
    /// The environment variable holding the connection string.
    pub url_env: Option<String>,
    /// A file holding the connection string (a mounted secret).
    pub url_file: Option<PathBuf>,
    /// PostgreSQL connections at most.
    pub pool_size: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: StoreBackend::Sqlite,
            url: None,
            url_env: None,
            url_file: None,
            pool_size: 16,
        }
    }
}

impl StoreSection {
    /// Checks the section: (key, message) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let given = [
            self.url.is_some(),
            self.url_env.is_some(),
            self.url_file.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        match self.backend {
            StoreBackend::Sqlite if given > 0 => Err((
                "store.url".into(),
                "url, url_env and url_file are for backend = \"postgres\" (SQLite lives in \
                 server.data_dir)"
                    .into(),
            )),
            StoreBackend::Postgres if given != 1 => Err((
                "store.url".into(),
                "backend = \"postgres\" needs exactly one of url, url_env, url_file".into(),
            )),
            _ if !(1..=1000).contains(&self.pool_size) => Err((
                "store.pool_size".into(),
                "must be between 1 and 1000".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The PostgreSQL connection string, from `url`, the variable `url_env` or the file
    /// `url_file` (trimmed).
    pub fn resolve_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        if let Some(var) = &self.url_env {
            return std::env::var(var).with_context(|| {
                format!("[store] url_env names {var}, which is not set in the environment")
            });
        }
        if let Some(file) = &self.url_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading [store] url_file {}", file.display()))?;
            return Ok(text.trim().to_owned());
        }
        anyhow::bail!("[store] backend = \"postgres\" needs one of url, url_env, url_file")
    }

    /// Opens the PostgreSQL store (the database must exist; its schema is migrated).
    pub fn open_postgres(&self) -> anyhow::Result<Arc<dyn Store>> {
        let url = self.resolve_url()?;
        let store = PgStore::open(
            &url,
            PgOptions {
                pool_size: self.pool_size,
                ..PgOptions::default()
            },
        )
        .context("cannot open the PostgreSQL store ([store] in the config file)")?;
        tracing::info!(target = store.target(), "store: PostgreSQL");
        Ok(Arc::new(store))
    }

    /// The section as the admin API shows it: a password inside `url` is masked.
    pub fn redacted(&self) -> StoreSection {
        let mut shown = self.clone();
        if let Some(url) = &shown.url {
            shown.url = Some(redact_password(url));
        }
        shown
    }
}

/// `postgresql://user:secret@host` -> `postgresql://user:***@host`; `password=secret` ->
/// `password=***`.
fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_needs_exactly_one_url_source_and_sqlite_none() {
        let pg = |url: Option<&str>, env: Option<&str>| StoreSection {
            backend: StoreBackend::Postgres,
            url: url.map(str::to_owned),
            url_env: env.map(str::to_owned),
            ..StoreSection::default()
        };
        assert!(pg(None, None).validate().is_err());
        assert!(pg(Some("host=x"), Some("V")).validate().is_err());
        assert!(pg(Some("host=x"), None).validate().is_ok());
        assert!(pg(None, Some("V")).validate().is_ok());
        let sqlite_with_url = StoreSection {
            url: Some("host=x".into()),
            ..StoreSection::default()
        };
        assert_eq!(
            sqlite_with_url.validate().map_err(|e| e.0),
            Err("store.url".to_owned())
        );
        let zero_pool = StoreSection {
            pool_size: 0,
            ..pg(Some("host=x"), None)
        };
        assert_eq!(
            zero_pool.validate().map_err(|e| e.0),
            Err("store.pool_size".to_owned())
        );
    }

    #[test]
    fn passwords_are_masked_in_both_url_forms() {
        assert_eq!(
            redact_password("postgresql://app:s3cret@db:5432/idb"),
            "postgresql://app:***@db:5432/idb"
        );
        assert_eq!(
            redact_password("host=db password=s3cret dbname=idb"),
            "host=db password=*** dbname=idb"
        );
        assert_eq!(
            redact_password("postgresql://db/idb"),
            "postgresql://db/idb"
        );
    }

    #[test]
    fn the_url_comes_from_a_file_trimmed() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("url");
        std::fs::write(&file, "host=db dbname=idb\n").expect("write");
        let s = StoreSection {
            backend: StoreBackend::Postgres,
            url_file: Some(file),
            ..StoreSection::default()
        };
        assert_eq!(s.resolve_url().expect("url"), "host=db dbname=idb");
        let missing = StoreSection {
            url_env: Some("IDBRIDGE_TEST_UNSET_STORE_URL".into()),
            url_file: None,
            ..s
        };
        assert!(missing
            .resolve_url()
            .expect_err("unset")
            .to_string()
            .contains("IDBRIDGE_TEST_UNSET_STORE_URL"));
    }
}
