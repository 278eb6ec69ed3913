//! Replays the request bodies Okta and Entra ID send (tests/fixtures/) through the protocol
//! layer, with a tiny in-memory directory standing in for the store, and checks the resources
//! that result. Also checks that every kind of bad request gets the right SCIM error and leaves
//! the directory unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use idbridge_scim::error::{ScimError, ScimType};
use idbridge_scim::etag::{check_if_match, resource_etag};
use idbridge_scim::filter::{check_filter, index_lookup, matches, parse_filter};
use idbridge_scim::list::{list_response, ListParams};
use idbridge_scim::patch::{apply_patch, PatchOutcome, PatchRequest};
use idbridge_scim::projection::Projection;
use idbridge_scim::resource::{stamp, Meta, Resource};
use idbridge_scim::schema::{
    ResourceSchema, DEFAULT_MAX_RESULTS, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA,
};
use idbridge_scim::validate::{parse_body, validate_create, validate_replace, MAX_BODY_BYTES};

const BASE: &str = "https://idbridge.test/scim/v2/directory_01";

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The least a store must do around the protocol layer: ids, versions, userName uniqueness.
#[derive(Debug, Clone, PartialEq, Default)]
struct Directory {
    users: Vec<Value>,
    groups: Vec<Value>,
    version: u64,
}

fn schema_of(kind: &str) -> &'static ResourceSchema {
    if kind == "Users" {
        ResourceSchema::user()
    } else {
        ResourceSchema::group()
    }
}

impl Directory {
    fn table(&mut self, kind: &str) -> &mut Vec<Value> {
        if kind == "Users" {
            &mut self.users
        } else {
            &mut self.groups
        }
    }

    fn stamp(&mut self, kind: &str, r: &mut Value, id: &str) {
        self.version += 1;
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let version = self.version.to_string();
        let meta = Meta {
            resource_type: &schema_of(kind).name,
            created: t,
            last_modified: t,
            location: format!("{BASE}/{kind}/{id}"),
            version: &version,
        };
        stamp(r, id, &meta);
    }

    fn create(&mut self, kind: &str, body: &[u8], id: &str) -> Result<Value, ScimError> {
        let schema = schema_of(kind);
        let mut r = validate_create(&parse_body(body, MAX_BODY_BYTES)?, schema)?;
        if let Some(name) = Resource(&r).user_name() {
            let taken = self.users.iter().any(|u| {
                Resource(u)
                    .user_name()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            });
            if taken {
                return Err(ScimError::uniqueness(format!(
                    "userName {name} already exists"
                )));
            }
        }
        self.stamp(kind, &mut r, id);
        self.table(kind).push(r.clone());
        Ok(r)
    }

    fn position(&mut self, kind: &str, id: &str) -> Result<usize, ScimError> {
        self.table(kind)
            .iter()
            .position(|r| Resource(r).id() == Some(id))
            .ok_or_else(|| ScimError::not_found(format!("{kind}/{id} not found")))
    }

    fn put(
        &mut self,
        kind: &str,
        id: &str,
        body: &[u8],
        if_match: Option<&str>,
    ) -> Result<Value, ScimError> {
        let i = self.position(kind, id)?;
        let existing = self.table(kind)[i].clone();
        check_if_match(if_match, resource_etag(&existing).unwrap_or_default())?;
        let mut r = validate_replace(
            &parse_body(body, MAX_BODY_BYTES)?,
            schema_of(kind),
            &existing,
        )?;
        self.stamp(kind, &mut r, id);
        self.table(kind)[i] = r.clone();
        Ok(r)
    }

    fn patch(
        &mut self,
        kind: &str,
        id: &str,
        body: &[u8],
        if_match: Option<&str>,
    ) -> Result<(Value, PatchOutcome), ScimError> {
        let i = self.position(kind, id)?;
        let mut r = self.table(kind)[i].clone();
        check_if_match(if_match, resource_etag(&r).unwrap_or_default())?;
        let req = PatchRequest::from_json(&parse_body(body, MAX_BODY_BYTES)?)?;
        let outcome = apply_patch(&mut r, &req, schema_of(kind))?;
        if outcome.changed {
            self.stamp(kind, &mut r, id);
            self.table(kind)[i] = r.clone();
        }
        Ok((r, outcome))
    }

    /// GET /{kind}?filter=...&excludedAttributes=... as Okta and Entra send it.
    fn list(&mut self, q: &Value) -> Result<Value, ScimError> {
        let kind = q["resource"].as_str().unwrap_or_default().to_string();
        let schema = schema_of(&kind);
        let filter = parse_filter(q["filter"].as_str().unwrap_or_default())?;
        check_filter(&filter, schema)?;
        // Both IdPs look resources up by an indexed attribute before they create them.
        assert!(index_lookup(&filter).is_some(), "not indexable: {filter}");
        let params = ListParams::from_query(
            q["startIndex"].as_str(),
            q["count"].as_str(),
            DEFAULT_MAX_RESULTS,
        )?;
        let projection =
            Projection::from_query(q["attributes"].as_str(), q["excludedAttributes"].as_str())?;
        let hits: Vec<Value> = self
            .table(&kind)
            .iter()
            .filter(|r| matches(&filter, r, schema))
            .cloned()
            .collect();
        let page = params
            .page(&hits)
            .iter()
            .map(|r| projection.apply(r, schema))
            .collect();
        Ok(list_response(page, hits.len(), params.start_index))
    }
}

fn ok<T>(r: Result<T, ScimError>) -> T {
    r.unwrap_or_else(|e| panic!("{}", e.to_json()))
}

fn filters(path: &str) -> Vec<Value> {
    serde_json::from_slice::<Vec<Value>>(&fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const OKTA_USER: &str = "6e9b5f0a-0f7e-4d6b-9b0e-2d1f3c4b5a61";
const OKTA_USER2: &str = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
const OKTA_USER3: &str = "9f8e7d6c-5b4a-4392-8a1b-0c9d8e7f6a5b";
const OKTA_GROUP: &str = "abf4dd94-a4c0-4f67-89c9-76b03340cb9b";

#[test]
fn okta_user_lifecycle() {
    let mut d = Directory::default();
    let lookups = filters("okta/filters.json");
    // Okta first checks whether the user exists.
    assert_eq!(ok(d.list(&lookups[0]))["totalResults"], 0);

    let u = ok(d.create("Users", &fixture("okta/01_create_user.json"), OKTA_USER));
    assert_eq!(u["userName"], "test.user@okta.local");
    assert_eq!(u["externalId"], "00ujl29u0le5T6Aj10h7");
    assert_eq!(u["active"], true);
    assert!(u.get("password").is_none(), "password must not be stored");
    assert!(u.get("groups").is_none(), "groups is readOnly");
    assert_eq!(u["meta"]["version"], "W/\"1\"");
    assert_eq!(u["meta"]["location"], format!("{BASE}/Users/{OKTA_USER}"));

    let found = ok(d.list(&lookups[0]));
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["id"], OKTA_USER);
    assert_eq!(found["startIndex"], 1);

    // Okta updates profiles with a PUT of the whole user.
    let etag = u["meta"]["version"].as_str().map(str::to_string);
    let u = ok(d.put(
        "Users",
        OKTA_USER,
        &fixture("okta/02_update_user_put.json"),
        etag.as_deref(),
    ));
    assert_eq!(
        u["name"],
        json!({"givenName": "Another", "middleName": "Test", "familyName": "User"})
    );
    assert_eq!(u["displayName"], "Another Test User");
    assert_eq!(u["id"], OKTA_USER);

    // ...and deactivates with PATCH replace {"active": false}.
    let (u, outcome) = ok(d.patch(
        "Users",
        OKTA_USER,
        &fixture("okta/03_deactivate_user.json"),
        None,
    ));
    assert_eq!(u["active"], false);
    assert!(outcome.changed);
    assert!(!Resource(&u).active());
    assert_eq!(
        u["userName"], "test.user@okta.local",
        "the rest of the user is untouched"
    );
}

#[test]
fn okta_group_push() {
    let mut d = Directory::default();
    let lookups = filters("okta/filters.json");
    assert_eq!(ok(d.list(&lookups[1]))["totalResults"], 0);
    let g = ok(d.create("Groups", &fixture("okta/04_create_group.json"), OKTA_GROUP));
    assert_eq!(g["displayName"], "Test SCIMv2");
    assert!(g.get("members").is_none(), "empty members means none");
    assert_eq!(ok(d.list(&lookups[1]))["totalResults"], 1);

    // Membership through a PUT of the whole group.
    let g = ok(d.put(
        "Groups",
        OKTA_GROUP,
        &fixture("okta/05_group_put_members.json"),
        None,
    ));
    assert_eq!(Resource(&g).member_values(), vec![OKTA_USER, OKTA_USER2]);

    // Rename: Okta sends the id back in the value object.
    let (g, outcome) = ok(d.patch(
        "Groups",
        OKTA_GROUP,
        &fixture("okta/06_group_patch_rename.json"),
        None,
    ));
    assert_eq!(g["displayName"], "Test SCIMv2 Renamed");
    assert_eq!(g["id"], OKTA_GROUP);
    assert!(outcome.members_added.is_empty() && outcome.members_removed.is_empty());

    let (g, outcome) = ok(d.patch(
        "Groups",
        OKTA_GROUP,
        &fixture("okta/07_group_patch_add_members.json"),
        None,
    ));
    assert_eq!(outcome.members_added, vec![OKTA_USER3]);
    assert_eq!(
        Resource(&g).member_values(),
        vec![OKTA_USER, OKTA_USER2, OKTA_USER3]
    );

    let (g, outcome) = ok(d.patch(
        "Groups",
        OKTA_GROUP,
        &fixture("okta/08_group_patch_remove_member.json"),
        None,
    ));
    assert_eq!(outcome.members_removed, vec![OKTA_USER]);
    assert_eq!(Resource(&g).member_values(), vec![OKTA_USER2, OKTA_USER3]);

    // Replaying the removal (Okta retries) is a no-op, not an error.
    let (_, outcome) = ok(d.patch(
        "Groups",
        OKTA_GROUP,
        &fixture("okta/08_group_patch_remove_member.json"),
        None,
    ));
    assert_eq!(outcome, PatchOutcome::default());

    let (g, outcome) = ok(d.patch(
        "Groups",
        OKTA_GROUP,
        &fixture("okta/09_group_patch_replace_members.json"),
        None,
    ));
    assert_eq!(outcome.members_removed, vec![OKTA_USER3]);
    assert!(outcome.members_added.is_empty());
    assert_eq!(
        g["members"],
        json!([{"value": OKTA_USER2, "display": "second.user@okta.local"}])
    );
}

const ENTRA_USER: &str = "b1f8e5a2-3c4d-4e6f-8a9b-0c1d2e3f4a5b";
const ENTRA_GROUP: &str = "c7d8e9f0-1a2b-4c3d-9e4f-5a6b7c8d9e0f";

#[test]
fn entra_user_create_then_update() {
    let mut d = Directory::default();
    let lookups = filters("entra/filters.json");
    assert_eq!(ok(d.list(&lookups[0]))["totalResults"], 0);

    let u = ok(d.create("Users", &fixture("entra/01_create_user.json"), ENTRA_USER));
    assert_eq!(u["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    assert_eq!(u["externalId"], "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    assert_eq!(
        u[ENTERPRISE_USER_SCHEMA],
        json!({"employeeNumber": "4711", "department": "Engineering"})
    );
    assert!(u.get("roles").is_none(), "empty roles is unassigned");
    assert_eq!(u["meta"]["resourceType"], "User");

    for q in &lookups[..2] {
        let found = ok(d.list(q));
        assert_eq!(found["totalResults"], 1, "{q}");
    }
    // userName is caseExact false; externalId is caseExact true.
    let lower = json!({"resource": "Users", "filter": format!("userName eq {}", json!(u["userName"].as_str().unwrap_or_default().to_lowercase()))});
    assert_eq!(ok(d.list(&lower))["totalResults"], 1);
    let upper = json!({"resource": "Users", "filter": "externalId eq \"0A21F0F2-8D2A-4F8E-BF98-7363C4AED4EF\""});
    assert_eq!(ok(d.list(&upper))["totalResults"], 0);

    // The second call: capitalized ops, a filtered path, the manager as a bare id, an
    // extension URN path, and an Add through a filter that matches nothing yet.
    let (u, _) = ok(d.patch(
        "Users",
        ENTRA_USER,
        &fixture("entra/02_update_user_multi.json"),
        None,
    ));
    assert_eq!(
        u["emails"],
        json!([{"value": "updatedEmail@microsoft.com", "type": "work", "primary": true}])
    );
    assert_eq!(u["name"]["familyName"], "updatedFamilyName");
    assert_eq!(u["name"]["givenName"], "givenName");
    assert_eq!(
        u[ENTERPRISE_USER_SCHEMA],
        json!({"employeeNumber": "4711", "department": "Research", "manager": {"value": "1e3b0d2c-7a4f-4c9e-9a51-2c6b7d8e9f01"}})
    );
    assert_eq!(
        u["phoneNumbers"],
        json!([{"type": "mobile", "value": "+1 425 555 0100"}])
    );
    assert_eq!(
        Resource(&u).primary_email(),
        Some("updatedEmail@microsoft.com")
    );

    let (u, _) = ok(d.patch(
        "Users",
        ENTRA_USER,
        &fixture("entra/03_update_user_no_path.json"),
        None,
    ));
    assert_eq!(u["name"]["givenName"], "updatedGivenName");
    assert_eq!(u["name"]["familyName"], "updatedFamilyName");
    assert_eq!(u["title"], "Principal Engineer");
    assert_eq!(u["displayName"], "Updated Name");

    // Booleans as strings.
    let (u, outcome) = ok(d.patch(
        "Users",
        ENTRA_USER,
        &fixture("entra/04_disable_user.json"),
        None,
    ));
    assert_eq!(u["active"], json!(false));
    assert!(outcome.changed);
}

#[test]
fn entra_group_membership() {
    let mut d = Directory::default();
    let lookups = filters("entra/filters.json");
    let g = ok(d.create(
        "Groups",
        &fixture("entra/05_create_group.json"),
        ENTRA_GROUP,
    ));
    assert_eq!(
        g["schemas"],
        json!([GROUP_SCHEMA]),
        "the ADSCIM schema is tolerated and dropped"
    );
    assert_eq!(
        g["members"],
        json!([{"value": "5d48a0a8-e3ab-4f6c-9c5e-6a0d2b3f4e01"}])
    );

    for q in &lookups[2..] {
        let found = ok(d.list(q));
        assert_eq!(found["totalResults"], 1, "{q}");
        let r = &found["Resources"][0];
        assert!(r.get("members").is_none(), "excludedAttributes=members");
        assert_eq!(r["displayName"], "Sales Team");
        assert_eq!(r["id"], ENTRA_GROUP);
    }

    let (_, outcome) = ok(d.patch(
        "Groups",
        ENTRA_GROUP,
        &fixture("entra/06_group_add_members.json"),
        None,
    ));
    assert_eq!(
        outcome.members_added,
        vec![
            "f648f8d5-ea4e-4cd3-8e9c-0a1b2c3d4e5f",
            "7c2e9a41-55b3-4d0e-a7f8-3b1c6d9e2f70"
        ]
    );

    let (g, outcome) = ok(d.patch(
        "Groups",
        ENTRA_GROUP,
        &fixture("entra/07_group_remove_members.json"),
        None,
    ));
    assert_eq!(
        outcome.members_removed,
        vec!["f648f8d5-ea4e-4cd3-8e9c-0a1b2c3d4e5f"]
    );
    assert_eq!(
        Resource(&g).member_values(),
        vec![
            "5d48a0a8-e3ab-4f6c-9c5e-6a0d2b3f4e01",
            "7c2e9a41-55b3-4d0e-a7f8-3b1c6d9e2f70"
        ]
    );
    assert!(
        g["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|x| x.get("$ref").is_none())),
        "null $ref not stored"
    );

    let (g, outcome) = ok(d.patch(
        "Groups",
        ENTRA_GROUP,
        &fixture("entra/08_group_remove_member_filter.json"),
        None,
    ));
    assert_eq!(
        outcome.members_removed,
        vec!["5d48a0a8-e3ab-4f6c-9c5e-6a0d2b3f4e01"]
    );
    assert_eq!(
        Resource(&g).member_values(),
        vec!["7c2e9a41-55b3-4d0e-a7f8-3b1c6d9e2f70"]
    );

    let (g, _) = ok(d.patch(
        "Groups",
        ENTRA_GROUP,
        &fixture("entra/09_group_rename.json"),
        None,
    ));
    assert_eq!(g["displayName"], "Sales Team EMEA");
    assert_eq!(
        Resource(&g).member_values(),
        vec!["7c2e9a41-55b3-4d0e-a7f8-3b1c6d9e2f70"]
    );
}

/// Every bad request gets its SCIM error and the directory stays exactly as it was.
#[test]
fn bad_requests_leave_the_directory_unchanged() {
    let mut d = Directory::default();
    let u = ok(d.create("Users", &fixture("okta/01_create_user.json"), OKTA_USER));
    let etag = u["meta"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let before = d.clone();

    let user = |extra: Value| {
        let mut body = json!({"schemas": [USER_SCHEMA], "userName": "new.user@okta.local"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body.to_string().into_bytes()
    };
    let oversized = {
        let mut body = json!({"schemas": [USER_SCHEMA], "userName": "big"});
        body["title"] = json!("x".repeat(MAX_BODY_BYTES));
        body.to_string().into_bytes()
    };
    type Case<'a> = (
        &'a str,
        Box<dyn Fn(&mut Directory) -> Result<(), ScimError>>,
        u16,
        Option<ScimType>,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Box::new(|d| d.create("Users", b"{\"schemas\": [", "x").map(drop)),
            400,
            Some(ScimType::InvalidSyntax),
        ),
        (
            "unknown schema",
            Box::new(move |d| {
                d.create(
                    "Users",
                    &user(json!({"schemas": [USER_SCHEMA, "urn:x:y"]})),
                    "x",
                )
                .map(drop)
            }),
            400,
            Some(ScimType::InvalidValue),
        ),
        (
            "wrong type",
            Box::new(move |d| {
                d.create("Users", &user(json!({"active": "maybe"})), "x")
                    .map(drop)
            }),
            400,
            Some(ScimType::InvalidValue),
        ),
        (
            "missing userName",
            Box::new(|d| {
                d.create(
                    "Users",
                    json!({"schemas": [USER_SCHEMA]}).to_string().as_bytes(),
                    "x",
                )
                .map(drop)
            }),
            400,
            Some(ScimType::InvalidValue),
        ),
        (
            "duplicate userName",
            Box::new(|d| {
                d.create("Users", &fixture("okta/01_create_user.json"), "x")
                    .map(drop)
            }),
            409,
            Some(ScimType::Uniqueness),
        ),
        (
            "invalid filter",
            Box::new(|d| {
                d.list(&json!({"resource": "Users", "filter": "userName eq"}))
                    .map(drop)
            }),
            400,
            Some(ScimType::InvalidFilter),
        ),
        (
            "oversized body",
            Box::new(move |d| d.create("Users", &oversized, "x").map(drop)),
            413,
            None,
        ),
        (
            "If-Match mismatch (PUT)",
            Box::new(|d| {
                d.put(
                    "Users",
                    OKTA_USER,
                    &fixture("okta/02_update_user_put.json"),
                    Some("W/\"999\""),
                )
                .map(drop)
            }),
            412,
            None,
        ),
        (
            "If-Match mismatch (PATCH)",
            Box::new(|d| {
                d.patch(
                    "Users",
                    OKTA_USER,
                    &fixture("okta/03_deactivate_user.json"),
                    Some("W/\"0\""),
                )
                .map(drop)
            }),
            412,
            None,
        ),
        (
            "PATCH wrong type",
            Box::new(|d| {
                d.patch("Users", OKTA_USER, br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"ok"},{"op":"replace","path":"active","value":"nope"}]}"#, None).map(drop)
            }),
            400,
            Some(ScimType::InvalidValue),
        ),
        (
            "PATCH readOnly id",
            Box::new(|d| {
                d.patch("Users", OKTA_USER, br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"id","value":"mine"}]}"#, None).map(drop)
            }),
            400,
            Some(ScimType::Mutability),
        ),
        (
            "PATCH malformed JSON",
            Box::new(|d| d.patch("Users", OKTA_USER, b"{", None).map(drop)),
            400,
            Some(ScimType::InvalidSyntax),
        ),
    ];
    for (name, run, status, scim_type) in cases {
        let e = match run(&mut d) {
            Ok(()) => panic!("{name}: accepted"),
            Err(e) => e,
        };
        assert_eq!(
            (e.status, e.scim_type),
            (status, scim_type),
            "{name}: {}",
            e.to_json()
        );
        assert_eq!(e.to_json()["status"], status.to_string(), "{name}");
        assert_eq!(d, before, "{name}: directory changed");
    }
    // The right ETag is accepted.
    assert!(d
        .patch(
            "Users",
            OKTA_USER,
            &fixture("okta/03_deactivate_user.json"),
            Some(&etag)
        )
        .is_ok());
}
