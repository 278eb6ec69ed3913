//! Validates the discovery documents, a stamped User and Group, a ListResponse, an error body
//! and a PATCH body with scim2-models (Python; the library scim2-tester is built on), and
//! compares our schema attributes with its definitions of RFC 7643. Needs
//! `pip install scim2-models` (scripts/test-deps.d/scim.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use idbridge_scim::error::ScimError;
use idbridge_scim::list::list_response;
use idbridge_scim::resource::{stamp, Meta};
use idbridge_scim::schema::{
    resource_types_json, schemas_json, service_provider_config_json, ResourceSchema,
    ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, PATCH_OP_SCHEMA, USER_SCHEMA,
};
use idbridge_scim::validate::validate_create;

const BASE: &str = "https://idbridge.test/scim/v2/directory_01";

fn stamped(kind: &str, body: Value, id: &str) -> Value {
    let schema = if kind == "User" {
        ResourceSchema::user()
    } else {
        ResourceSchema::group()
    };
    let mut r = validate_create(&body, schema).unwrap_or_else(|e| panic!("{e}"));
    let t = Utc
        .with_ymd_and_hms(2026, 3, 4, 5, 6, 7)
        .single()
        .unwrap_or_default();
    let location = format!("{BASE}/{kind}s/{id}");
    stamp(
        &mut r,
        id,
        &Meta {
            resource_type: kind,
            created: t,
            last_modified: t,
            location,
            version: "3",
        },
    );
    r
}

#[test]
fn documents_validate_with_scim2_models() {
    let user = stamped(
        "User",
        json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "userName": "bjensen@example.com", "active": "True",
               "name": {"givenName": "Barbara", "familyName": "Jensen"},
               "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
               ENTERPRISE_USER_SCHEMA: {"department": "Tours", "manager": "m-1"}}),
        "u-1",
    );
    let group = stamped(
        "Group",
        json!({"schemas": [GROUP_SCHEMA], "displayName": "Tour Guides", "members": [{"value": "u-1", "type": "User"}]}),
        "g-1",
    );
    let docs = json!({
        "schemas": schemas_json(BASE),
        "resource_types": resource_types_json(BASE),
        "spc": service_provider_config_json(BASE, 200),
        "user": user,
        "group": group,
        "list": list_response(vec![user.clone()], 1, 1),
        "error": ScimError::uniqueness("userName bjensen@example.com already exists").to_json(),
        "patch": {"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": false}]},
    });
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("docs.json");
    std::fs::write(&file, docs.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let script = format!(
        "{}/tests/py/check_scim2_models.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'scim2_models'"),
        "scim2-models is not installed: run scripts/test-deps.d/scim.sh"
    );
    assert!(
        out.status.success(),
        "scim2-models found problems:\n{stderr}"
    );
}
