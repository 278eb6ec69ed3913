//! What the config file declared the last time an entry was applied, so a start can tell an
//! edited entry from an unchanged one. Owner of the table `declared_seeds`.
//!
//! The rule for every declared entry (`[[organizations]]`, `[[directories]]`,
//! `[[sso.connections]]`): absent → created; present and its file entry **changed** since it
//! was last applied → the file's values are applied to it; present and unchanged → left as it
//! is, so a change made through the API survives restarts. Only a SHA-256 of the entry is kept
//! (an entry may hold a secret).

use idbridge_store::{ChangeSet, Store};
use serde::Serialize;

/// `<kind>/<key>` → SHA-256 hex of the entry as last applied.
pub const TABLE: &str = "declared_seeds";

/// One declared entry's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    key: String,
    digest: String,
}

impl Seed {
    /// The digest of `entry`, declared under `kind` (`organization`, `directory`,
    /// `connection`) with its stable `key`.
    pub fn of(kind: &str, key: &str, entry: &impl Serialize) -> anyhow::Result<Seed> {
        Ok(Seed {
            key: format!("{kind}/{key}"),
            digest: idbridge_secrets::sha256_hex(&serde_json::to_string(entry)?),
        })
    }

    /// Whether the entry differs from the one last applied (or was never recorded).
    pub fn changed(&self, store: &dyn Store) -> anyhow::Result<bool> {
        let last = store.get(TABLE, &self.key)?;
        Ok(last.as_deref() != Some(self.digest.as_bytes()))
    }

    /// Stages the record of this entry as applied (in the commit that applies it, when one
    /// owner's commit can carry it).
    pub fn stage(&self, cs: &mut ChangeSet) {
        cs.put(TABLE, self.key.clone(), self.digest.as_bytes().to_vec());
    }

    /// Records this entry as applied, in its own commit (after another owner's commit: a crash
    /// in between only applies the same entry once more at the next start).
    pub fn record(&self, store: &dyn Store) -> anyhow::Result<()> {
        let mut cs = ChangeSet::new();
        self.stage(&mut cs);
        store.commit(cs)?;
        Ok(())
    }
}

/// Applies `[[organizations]]` by the rule above (keyed by `external_id`): created when
/// absent, brought to the entry's name, domains and metadata when the entry changed, left alone
/// otherwise.
pub async fn apply_organizations(
    orgs: &idbridge_sso::organizations::Organizations,
    store: &dyn Store,
    declared: &[crate::config::DeclaredOrganization],
) -> anyhow::Result<()> {
    for org in declared {
        let seed = Seed::of(
            "organization",
            &org.external_id,
            &serde_json::json!({"name": org.name, "domains": org.domains, "metadata": org.metadata}),
        )?;
        if orgs.by_external_id(&org.external_id)?.is_some() && !seed.changed(store)? {
            continue;
        }
        let (applied, changed) = orgs
            .upsert_declared(&org.external_id, &org.name, &org.domains, &org.metadata)
            .await
            .map_err(|e| anyhow::anyhow!("declared organization {:?}: {e}", org.external_id))?;
        seed.record(store)?;
        tracing::info!(id = %applied.id, external_id = %org.external_id, changed, "declared organization applied");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_changed_until_recorded_and_again_when_the_entry_changes() {
        let store = idbridge_store::SqliteStore::open_ephemeral().unwrap_or_else(|e| panic!("{e}"));
        let a = Seed::of("directory", "acme", &serde_json::json!({"name": "A"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a.changed(&store).unwrap_or_else(|e| panic!("{e}")));
        a.record(&store).unwrap_or_else(|e| panic!("{e}"));
        assert!(!a.changed(&store).unwrap_or_else(|e| panic!("{e}")));
        let b = Seed::of("directory", "acme", &serde_json::json!({"name": "B"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(b.changed(&store).unwrap_or_else(|e| panic!("{e}")));
        // Another kind with the same key is another entry.
        let c = Seed::of("connection", "acme", &serde_json::json!({"name": "A"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.changed(&store).unwrap_or_else(|e| panic!("{e}")));
    }
}
