//! Shared fixtures: a real SqliteStore (the default backend) in a temp dir, an organization, input builders.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use idbridge_directory::{
    DirectoryEngine, DirectorySettings, FixedOrganizations, GroupInput, UserInput,
};
use idbridge_model::tag::{OrganizationDomainTag, OrganizationTag};
use idbridge_model::{
    new_id, DomainState, IdPrefix, Organization, OrganizationDomain, Timestamp,
    VerificationStrategy,
};
use idbridge_store::{ExportRecord, SqliteStore, Store};
use serde_json::{json, Value};

pub struct Fx {
    _dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub engine: DirectoryEngine,
    pub org: Organization,
    pub orgs: Arc<FixedOrganizations>,
}

impl Fx {
    pub fn new() -> Self {
        // tmpfs when available: the real commit path, without paying for disk syncs.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
        let org = organization();
        let orgs = Arc::new(FixedOrganizations::new([org.clone()]));
        let engine = DirectoryEngine::new(store.clone(), orgs.clone());
        Fx {
            _dir: dir,
            store,
            engine,
            org,
            orgs,
        }
    }

    /// A SCIM directory with the given settings; returns (id, token).
    pub fn scim_dir(&self, settings: DirectorySettings) -> (String, String) {
        let (rec, token) = self
            .engine
            .create_directory(&self.org.id, "Okta", "okta scim v2.0", settings)
            .expect("create directory");
        (rec.directory.id, token.expect("scim token"))
    }

    /// An SFTP directory (pull-style tests).
    pub fn sftp_dir(&self, settings: DirectorySettings) -> String {
        let (rec, token) = self
            .engine
            .create_directory(&self.org.id, "HR feed", "sftp", settings)
            .expect("create directory");
        assert!(token.is_none(), "non-SCIM directories get no token");
        rec.directory.id
    }

    pub fn last_seq(&self) -> u64 {
        self.store.last_event_seq().expect("seq")
    }

    /// Event bodies after `seq`, parsed.
    pub fn events_after(&self, seq: u64) -> Vec<Value> {
        self.store
            .events_after(seq, 1_000_000)
            .expect("events")
            .into_iter()
            .map(|e| serde_json::from_slice(&e.body).expect("event json"))
            .collect()
    }

    /// Event names after `seq`.
    pub fn kinds_after(&self, seq: u64) -> Vec<String> {
        self.events_after(seq)
            .iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every table row (not events), for "unchanged" / "nothing left" checks: key-value
    /// entries as (table, key) → value, typed rows as (table, values as JSON) → empty.
    pub fn rows(&self) -> BTreeMap<(String, String), Vec<u8>> {
        let mut out = BTreeMap::new();
        self.store
            .export(&mut |r| {
                match r {
                    ExportRecord::Entry { table, key, value } => {
                        out.insert((table, key), value);
                    }
                    ExportRecord::Row { table, values } => {
                        let values = values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>();
                        out.insert((table, values.join("/")), Vec::new());
                    }
                    _ => {}
                }
                Ok(())
            })
            .expect("export");
        out
    }
}

/// An organization with one verified domain (`foo-corp.com`).
pub fn organization() -> Organization {
    let org_id = new_id(IdPrefix::Organization);
    let now = Timestamp::now();
    Organization {
        object: OrganizationTag,
        id: org_id.clone(),
        name: "Foo Corp".into(),
        domains: vec![OrganizationDomain {
            object: OrganizationDomainTag,
            id: new_id(IdPrefix::OrganizationDomain),
            organization_id: org_id.clone(),
            domain: "foo-corp.com".into(),
            state: DomainState::Verified,
            verification_strategy: VerificationStrategy::Manual,
            verification_token: None,
            verification_prefix: None,
            created_at: now,
            updated_at: now,
        }],
        metadata: BTreeMap::new(),
        external_id: None,
        stripe_customer_id: None,
        allow_profiles_outside_organization: false,
        created_at: now,
        updated_at: now,
    }
}

pub fn user(idp: &str, email: &str, first: &str) -> UserInput {
    let source = json!({
        "externalId": idp,
        "userName": email,
        "name": {"givenName": first, "familyName": "Doe"},
        "emails": [{"value": email, "type": "work", "primary": true}],
        "active": true,
    });
    UserInput {
        idp_id: idp.into(),
        email: Some(email.into()),
        first_name: Some(first.into()),
        last_name: Some("Doe".into()),
        name: Some(format!("{first} Doe")),
        emails: vec![idbridge_model::DirectoryUserEmail {
            primary: true,
            email_type: Some("work".into()),
            value: Some(email.into()),
        }],
        username: Some(email.into()),
        job_title: None,
        active: true,
        raw_attributes: source.as_object().cloned().unwrap_or_default(),
        source,
        unique_keys: vec![("scim.userName".into(), email.to_lowercase())],
    }
}

pub fn group(idp: &str, name: &str) -> GroupInput {
    let source = json!({"externalId": idp, "displayName": name});
    GroupInput {
        idp_id: idp.into(),
        name: name.into(),
        raw_attributes: source.as_object().cloned().unwrap_or_default(),
        source,
        unique_keys: vec![("scim.displayName".into(), name.to_lowercase())],
    }
}

/// A role (timestamps fixed: tests compare them).
pub fn role(slug: &str, priority: u32, is_default: bool) -> idbridge_model::Role {
    idbridge_model::Role {
        slug: slug.into(),
        name: slug.into(),
        description: None,
        priority,
        is_default,
        created_at: Timestamp::from_millis(0),
        updated_at: Timestamp::from_millis(0),
    }
}

/// Roles `member` (the default) and `eng`, given to members of a group named "Engineering".
pub fn eng_roles(fx: &Fx) {
    fx.engine
        .set_roles(
            &fx.org.id,
            vec![role("member", 100, true), role("eng", 10, false)],
        )
        .unwrap();
    fx.engine
        .set_role_mappings(
            &fx.org.id,
            vec![idbridge_model::RoleMapping {
                organization_id: fx.org.id.clone(),
                idp_group: "Engineering".into(),
                role_slug: "eng".into(),
            }],
        )
        .unwrap();
}
