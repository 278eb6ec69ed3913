//! Test fixtures: the private slapd from idbridge-testkit (with the settings these tests
//! connect with) and a directory engine over a real SQLite store.
// Each test binary (and the bench) uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub mod ber;

use std::collections::BTreeMap;
use std::sync::Arc;

use idbridge_directory::{
    DirectoryEngine, DirectorySettings, PageRequest, StoredGroup, StoredUser,
};
use idbridge_ldap::{Flavor, LdapSettings, LdapSource, NoProgress, SyncKind, Syncer};
use idbridge_model::tag::{OrganizationDomainTag, OrganizationTag};
use idbridge_model::{
    new_id, DomainState, IdPrefix, Organization, OrganizationDomain, Timestamp,
    VerificationStrategy,
};
use idbridge_store::{ChangeSet, ExportRecord, SqliteStore, Store};

pub use idbridge_testkit::slapd::{
    ldap_base_ldif as base_ldif, ldap_person as person, Slapd, SlapdTls, SyncProv,
    LDAP_ADMIN_DN as ADMIN_DN, LDAP_ADMIN_PW as ADMIN_PW, LDAP_SUFFIX as SUFFIX,
};

/// What the engine-level tests connect with: plain LDAP on loopback as the root DN, users under
/// `ou=People`, groups under `ou=Groups`, short timeouts.
pub trait SlapdSettings {
    fn settings(&self) -> LdapSettings;
}

impl SlapdSettings for Slapd {
    fn settings(&self) -> LdapSettings {
        let mut s = LdapSettings::new(
            self.url().to_owned(),
            Flavor::Openldap,
            format!("ou=People,{SUFFIX}"),
        );
        s.allow_plain = true;
        s.bind_dn = Some(ADMIN_DN.into());
        s.bind_password_file = Some(self.password_file().expect("password file"));
        s.group_base_dns = vec![format!("ou=Groups,{SUFFIX}")];
        s.timeouts.connect_secs = 3;
        s.timeouts.operation_secs = 5;
        s
    }
}

/// Ten people for seeding (`uid`, given name, surname); tests take the first few.
pub const PEOPLE: [(&str, &str, &str); 10] = [
    ("alice", "Alice", "Archer"),
    ("bob", "Bob", "Baker"),
    ("carol", "Carol", "Cook"),
    ("dave", "Dave", "Diaz"),
    ("erin", "Erin", "Evans"),
    ("frank", "Frank", "Fox"),
    ("gina", "Gina", "Gray"),
    ("hank", "Hank", "Hill"),
    ("ivy", "Ivy", "Irwin"),
    ("jack", "Jack", "Jones"),
];

/// LDIF for these people (see [`PEOPLE`]).
pub fn people_ldif(people: &[(&str, &str, &str)]) -> String {
    people.iter().map(|(uid, g, s)| person(uid, g, s)).collect()
}

/// Runs a delta that must succeed as a delta (not fall back to a full sync).
pub async fn run_delta(syncer: &Syncer, src: &LdapSource) -> idbridge_ldap::RunRecord {
    let rec = syncer
        .run(src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("delta");
    assert_eq!(rec.kind, Some(SyncKind::Delta), "{rec:?}");
    rec
}

/// How many of `kinds` are `k`.
pub fn count(kinds: &[String], k: &str) -> usize {
    kinds.iter().filter(|x| x.as_str() == k).count()
}

/// A slapd holding `n` people (`u00`, `u01`, ...) and a fresh engine after one full sync.
pub async fn people_after_full_sync(n: usize) -> (Slapd, Fx, LdapSource, Syncer) {
    let slapd = Slapd::start().expect("slapd");
    let mut ldif = String::new();
    for i in 0..n {
        ldif.push_str(&person(&format!("u{i:02}"), "U", &format!("N{i}")));
    }
    slapd.add(&ldif).expect("ldapmodify");
    let fx = Fx::new();
    let src = fx.ldap_dir(slapd.settings());
    let syncer = Syncer::new(fx.engine.clone());
    syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("initial full sync");
    (slapd, fx, src, syncer)
}

/// Engine + store fixture.
pub struct Fx {
    _dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub engine: Arc<DirectoryEngine>,
    pub org: Organization,
}

impl Fx {
    pub fn new() -> Fx {
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
        let org_id = new_id(IdPrefix::Organization);
        let now = Timestamp::now();
        let org = Organization {
            object: OrganizationTag,
            id: org_id.clone(),
            name: "Example".into(),
            domains: vec![OrganizationDomain {
                object: OrganizationDomainTag,
                id: new_id(IdPrefix::OrganizationDomain),
                organization_id: org_id.clone(),
                domain: "example.test".into(),
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
        };
        let orgs = Arc::new(idbridge_directory::FixedOrganizations::new([org.clone()]));
        let engine = Arc::new(DirectoryEngine::new(store.clone(), orgs));
        Fx {
            _dir: dir,
            store,
            engine,
            org,
        }
    }

    pub fn ldap_dir(&self, settings: LdapSettings) -> LdapSource {
        self.ldap_dir_with(settings, DirectorySettings::default())
    }

    /// [`Fx::ldap_dir`] with the directory's own settings (deactivation, attribute map...).
    pub fn ldap_dir_with(&self, settings: LdapSettings, dir: DirectorySettings) -> LdapSource {
        let (rec, _) = self
            .engine
            .create_directory(
                &self.org.id,
                "Corp LDAP",
                idbridge_ldap::DIRECTORY_TYPE,
                dir,
            )
            .expect("create directory");
        LdapSource {
            directory_id: rec.directory.id,
            settings,
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.store.last_event_seq().expect("seq")
    }

    /// Event names after `seq`.
    pub fn kinds_after(&self, seq: u64) -> Vec<String> {
        self.store
            .events_after(seq, 10_000_000)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    pub fn events_after(&self, seq: u64) -> Vec<serde_json::Value> {
        self.store
            .events_after(seq, 10_000_000)
            .expect("events")
            .into_iter()
            .map(|e| serde_json::from_slice(&e.body).expect("event json"))
            .collect()
    }

    /// The user ids of the `dsync.user.deleted` events after `seq`, sorted.
    pub fn deleted_user_ids(&self, seq: u64) -> Vec<String> {
        let mut ids: Vec<String> = self
            .events_after(seq)
            .into_iter()
            .filter(|e| e["event"] == "dsync.user.deleted")
            .filter_map(|e| e["data"]["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// The directory's user with this username (panics when there is none).
    pub fn user_named(&self, dir: &str, username: &str) -> StoredUser {
        self.users(dir)
            .into_iter()
            .find(|u| u.user.username.as_deref() == Some(username))
            .unwrap_or_else(|| panic!("no user {username}"))
    }

    pub fn users(&self, dir: &str) -> Vec<StoredUser> {
        let mut out = Vec::new();
        let mut page = PageRequest {
            limit: 100,
            order: idbridge_directory::Order::Asc,
            cursor: idbridge_directory::Cursor::None,
        };
        loop {
            let p = self
                .engine
                .list_users(dir, None, &page)
                .expect("list users");
            out.extend(p.data);
            match p.after {
                Some(a) => page.cursor = idbridge_directory::Cursor::After(a),
                None => return out,
            }
        }
    }

    pub fn groups(&self, dir: &str) -> Vec<StoredGroup> {
        self.engine
            .list_groups(
                dir,
                None,
                &PageRequest {
                    limit: 1000,
                    order: idbridge_directory::Order::Asc,
                    cursor: idbridge_directory::Cursor::None,
                },
            )
            .expect("list groups")
            .data
    }

    /// Usernames of a group's members, sorted (all pages).
    pub fn members(&self, dir: &str, group_name: &str) -> Vec<String> {
        let g = self
            .groups(dir)
            .into_iter()
            .find(|g| g.group.name == group_name)
            .unwrap_or_else(|| panic!("group {group_name} missing"));
        let mut names: Vec<String> = Vec::new();
        let mut page = PageRequest {
            limit: 100,
            order: idbridge_directory::Order::Asc,
            cursor: idbridge_directory::Cursor::None,
        };
        loop {
            let p = self
                .engine
                .list_users(dir, Some(&g.group.id), &page)
                .expect("members");
            names.extend(p.data.into_iter().filter_map(|u| u.user.username));
            match p.after {
                Some(a) => page.cursor = idbridge_directory::Cursor::After(a),
                None => break,
            }
        }
        names.sort();
        names
    }

    pub fn usernames(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .users(dir)
            .into_iter()
            .filter_map(|u| u.user.username)
            .collect();
        v.sort();
        v
    }

    /// Every engine row (sync state excluded), for "nothing changed" checks.
    pub fn rows(&self) -> BTreeMap<(String, String), Vec<u8>> {
        let mut out = BTreeMap::new();
        self.store
            .export(&mut |r| {
                if let ExportRecord::Entry { table, key, value } = r {
                    if table != idbridge_ldap::state::STATE_TABLE {
                        out.insert((table, key), value);
                    }
                }
                Ok(())
            })
            .expect("export");
        out
    }
}

/// The server certificate's parameters the TLS tests use: valid for 127.0.0.1 and localhost.
pub fn loopback_leaf() -> rcgen::CertificateParams {
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    leaf.subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    leaf
}

/// A fresh CA and a server certificate made from `leaf` signed by it (rcgen), for ldaps and
/// StartTLS: (CA PEM, server cert PEM, server key PEM).
pub fn pki_with(leaf: rcgen::CertificateParams) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "idbridge test CA");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("leaf cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// [`pki_with`] the [`loopback_leaf`].
pub fn pki() -> (String, String, String) {
    pki_with(loopback_leaf())
}

/// A slapd serving ldaps (and StartTLS) with a certificate of a fresh test CA, the base entries
/// added; the CA's PEM file and an unrelated CA's PEM file (to be refused) in its directory.
pub fn slapd_with_tls(sync: SyncProv) -> (Slapd, std::path::PathBuf, std::path::PathBuf) {
    let (ca, cert, key) = pki();
    let slapd = Slapd::start_with(
        Some(&SlapdTls {
            ca_pem: ca.clone(),
            cert_pem: cert,
            key_pem: key,
        }),
        sync,
    )
    .expect("slapd");
    let ca_path = slapd.dir().join("client-ca.pem");
    std::fs::write(&ca_path, &ca).expect("ca file");
    let (other_ca, _, _) = pki();
    let other_path = slapd.dir().join("other-ca.pem");
    std::fs::write(&other_path, other_ca).expect("other ca");
    (slapd, ca_path, other_path)
}

/// The `(objectGUID=\xx...)` filter that finds an AD entry by its canonical GUID string.
pub fn guid_filter(guid: &str) -> String {
    let raw = idbridge_ldap::ad::guid_to_bytes(guid).expect("a canonical GUID");
    let esc: String = raw.iter().map(|b| format!("\\{b:02x}")).collect();
    format!("(objectGUID={esc})")
}

/// A password check with the default login lookup.
pub async fn check_password(
    s: &LdapSettings,
    login: &str,
    pw: &str,
) -> Result<idbridge_ldap::BoundUser, idbridge_ldap::BindAuthError> {
    idbridge_ldap::authenticate(
        s,
        &idbridge_ldap::LoginLookup::default(),
        login,
        &idbridge_ldap::Password::new(pw),
    )
    .await
}

/// An AD user entry with a password (`unicodePwd`: the quoted password in UTF-16LE), for
/// loading offline into a Samba DC; `extra` is more LDIF lines.
pub fn ad_user_with_password(cn: &str, ou: &str, uac: u32, password: &str, extra: &str) -> String {
    use base64::Engine as _;
    let quoted: Vec<u8> = format!("\"{password}\"")
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    format!(
        "dn: CN={cn},{ou}\nobjectClass: user\nsAMAccountName: {cn}\nuserPrincipalName: {cn}@example.test\n\
         mail: {cn}.mail@example.test\ngivenName: {cn}\nsn: Tester\nuserAccountControl: {uac}\n\
         unicodePwd:: {}\n{extra}\n",
        base64::engine::general_purpose::STANDARD.encode(quoted)
    )
}
