//! `idbridge api-key create|list|revoke`.

use idbridge_sso::api_keys as auth;

use crate::cli::ApiKeyCommand;
use crate::config::Config;

pub fn run(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let store = crate::open_store(config)?;
    match command {
        ApiKeyCommand::Create { name } => {
            let key = auth::create_api_key(store.as_ref(), &name)?;
            println!("{}", key.plaintext);
            eprintln!(
                "created {} ({}); store it now, it is not shown again",
                key.record.id, key.record.name
            );
        }
        ApiKeyCommand::List => {
            for k in auth::list_api_keys(store.as_ref())? {
                println!("{}\t{}\t...{}\t{}", k.id, k.name, k.last4, k.created_at);
            }
        }
        ApiKeyCommand::Revoke { key } => match auth::revoke_api_key(store.as_ref(), &key)? {
            Some(r) => println!("revoked {} ({})", r.id, r.name),
            None => anyhow::bail!("no single key matches {key:?}; use the id from `api-key list`"),
        },
    }
    Ok(())
}

/// The variable naming the operator-provided API key (a Kubernetes Secret); `…_FILE` names a
/// file holding it instead.
pub const API_KEY_ENV: &str = "IDBRIDGE_API_KEY";
/// The name the provided key is stored under (`api-key list` shows it).
pub const PROVISIONED_NAME: &str = "IDBRIDGE_API_KEY";

/// A secret given as `name` or, for secrets mounted as files, as a path in `name_FILE` (the
/// file's content, trimmed). Both set, an unreadable file or an empty file are errors: a
/// secret the operator meant to give must never silently fall back to a default. An empty
/// `name` counts as unset (as it always has for `IDBRIDGE_SECRET_KEY`).
pub fn env_or_file(
    name: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let file_var = format!("{name}_FILE");
    let direct = lookup(name).filter(|v| !v.trim().is_empty());
    match (direct, lookup(&file_var)) {
        (Some(_), Some(_)) => {
            anyhow::bail!("both {name} and {file_var} are set: set only one of them")
        }
        (Some(value), None) => Ok(Some(value.trim().to_owned())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{file_var}: cannot read {path}"))?;
            let value = text.trim();
            anyhow::ensure!(!value.is_empty(), "{file_var}: {path} is empty");
            Ok(Some(value.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// Provisions `IDBRIDGE_API_KEY` (or `IDBRIDGE_API_KEY_FILE`) when set: stored if new,
/// replacing the key an earlier value provisioned. Returns whether a key was provided.
pub fn provision_from_env(store: &dyn idbridge_store::Store) -> anyhow::Result<bool> {
    let Some(key) = env_or_file(API_KEY_ENV, |v| std::env::var(v).ok())? else {
        return Ok(false);
    };
    let done = auth::provision_api_key(store, PROVISIONED_NAME, &key)
        .map_err(|e| anyhow::anyhow!("{API_KEY_ENV}: {e}"))?;
    tracing::info!(
        created = done.created,
        revoked_previous = done.revoked,
        "API key provisioned from {API_KEY_ENV}"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_or_file_reads_either_and_refuses_both_empty_or_unreadable() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("key");
        std::fs::write(&file, "  from-file\n").unwrap_or_else(|e| panic!("{e}"));
        let path = file.display().to_string();
        let env = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        let got = |pairs: &[(&str, &str)]| env_or_file("X", env(pairs));
        assert_eq!(got(&[]).ok().flatten(), None);
        assert_eq!(got(&[("X", " v ")]).ok().flatten().as_deref(), Some("v"));
        assert_eq!(
            got(&[("X_FILE", &path)]).ok().flatten().as_deref(),
            Some("from-file")
        );
        let err = |pairs: &[(&str, &str)]| {
            got(pairs)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_else(|| panic!("accepted {pairs:?}"))
        };
        assert!(err(&[("X", "v"), ("X_FILE", &path)]).contains("both X and X_FILE"));
        assert_eq!(got(&[("X", "  ")]).ok().flatten(), None, "empty is unset");
        assert!(err(&[("X_FILE", "/nonexistent/key")]).contains("cannot read /nonexistent/key"));
        std::fs::write(&file, "\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(err(&[("X_FILE", &path)]).contains("is empty"));
    }
}
