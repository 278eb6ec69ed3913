//! Concurrent writes to ONE directory share the store's sync rounds: the engine releases its
//! per-directory lock once a commit has applied, before waiting for the fdatasync. (Holding
//! it across the sync made every SCIM write in a directory pay a sync of its own.) Run on
//! SQLite (COMMIT, then a group fdatasync of the WAL).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::user;
use idbridge_directory::{DirectoryEngine, DirectorySettings};
use idbridge_model::tag::OrganizationTag;
use idbridge_model::{new_id, IdPrefix, Organization, Timestamp};
use idbridge_store::{DurabilityProbe, SqliteOptions, SqliteStore, Store};

/// Makes every sync round slow, so writers that can queue behind one round do.
struct SlowSync;

impl DurabilityProbe for SlowSync {
    fn before_sync(&self, _covers_through: u64) -> std::io::Result<()> {
        std::thread::sleep(Duration::from_millis(15));
        Ok(())
    }
}

#[test]
fn concurrent_writes_to_one_directory_share_sync_rounds_sqlite() {
    let tmp = tempdir();
    let options = SqliteOptions {
        probe: Some(Arc::new(SlowSync)),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(tmp.path(), options).expect("open");
    concurrent_writes_to_one_directory_share_sync_rounds(Arc::new(store));
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir")
}

fn concurrent_writes_to_one_directory_share_sync_rounds(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let org = Organization {
        object: OrganizationTag,
        id: new_id(IdPrefix::Organization),
        name: "Foo Corp".into(),
        domains: Vec::new(),
        metadata: Default::default(),
        external_id: None,
        stripe_customer_id: None,
        allow_profiles_outside_organization: false,
        created_at: now,
        updated_at: now,
    };
    let orgs = Arc::new(idbridge_directory::FixedOrganizations::new([org.clone()]));
    let engine = Arc::new(DirectoryEngine::new(store.clone(), orgs));
    let (rec, _) = engine
        .create_directory(
            &org.id,
            "scim",
            "okta scim v2.0",
            DirectorySettings::default(),
        )
        .unwrap();
    let dir = rec.directory.id;

    const WRITERS: usize = 8;
    const EACH: usize = 6;
    let before = store.stats();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (engine, dir) = (engine.clone(), dir.clone());
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let idp = format!("w{w}-{i}");
                    engine
                        .upsert_user(
                            &dir,
                            None,
                            user(&idp, &format!("{idp}@foo-corp.com"), "A"),
                            None,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let after = store.stats();
    let commits = after.commits - before.commits;
    let rounds = after.sync_groups - before.sync_groups;
    assert_eq!(engine.counts(&dir).unwrap().active, (WRITERS * EACH) as u64);
    assert!(commits >= (WRITERS * EACH) as u64, "{after:?}");
    // Serialized through the sync, every commit is a round of its own (48 rounds).
    assert!(
        rounds * 2 <= commits,
        "{rounds} sync rounds for {commits} commits: writers did not share syncs"
    );
}
