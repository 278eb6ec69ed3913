//! SCIM targets: the filter and PATCH path grammars, PATCH application, resource validation.

use idbridge_scim::filter::{check_filter, matches, parse_filter, parse_path};
use idbridge_scim::schema::ResourceSchema;
use idbridge_scim::validate::{parse_body, validate_create, validate_replace, MAX_BODY_BYTES};
use idbridge_scim::{apply_patch, PatchRequest};
use serde_json::{json, Value};

/// A stored user as the engine keeps it (core and enterprise attributes, multi-valued ones).
pub fn stored_user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "id": "directory_user_01FUZZ",
        "externalId": "00u1",
        "userName": "alice@example.com",
        "name": {"givenName": "Alice", "familyName": "Liddell", "formatted": "Alice Liddell"},
        "displayName": "Alice",
        "active": true,
        "emails": [{"value": "alice@example.com", "type": "work", "primary": true},
                   {"value": "a@home.example", "type": "home"}],
        "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}],
        "groups": [],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
            {"department": "Engineering", "manager": {"value": "directory_user_01BOSS"}},
        "meta": {"resourceType": "User", "created": "2026-01-01T00:00:00.000Z",
                 "lastModified": "2026-01-01T00:00:00.000Z", "version": "W/\"1\""}
    })
}

/// A stored group with members.
pub fn stored_group() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "directory_group_01FUZZ",
        "displayName": "Engineering",
        "members": [{"value": "directory_user_01FUZZ", "display": "Alice"},
                    {"value": "directory_user_01BOB"}],
        "meta": {"resourceType": "Group", "created": "2026-01-01T00:00:00.000Z",
                 "lastModified": "2026-01-01T00:00:00.000Z", "version": "W/\"1\""}
    })
}

/// Filter and PATCH path grammars. Properties: no panic; a parsed filter or path prints to a
/// text that parses back to the same tree; checking and matching a parsed filter never panic.
pub fn scim_filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = parse_filter(text) {
        let printed = filter.to_string();
        match parse_filter(&printed) {
            Ok(again) => assert_eq!(again, filter, "{text:?} printed as {printed:?}"),
            Err(e) => panic!("{text:?} printed as {printed:?}, which does not parse: {e}"),
        }
        for (schema, resource) in [
            (ResourceSchema::user(), stored_user()),
            (ResourceSchema::group(), stored_group()),
        ] {
            if check_filter(&filter, schema).is_ok() {
                let _ = matches(&filter, &resource, schema);
            }
        }
    }
    if let Ok(path) = parse_path(text) {
        let printed = path.to_string();
        match parse_path(&printed) {
            Ok(again) => assert_eq!(again, path, "{text:?} printed as {printed:?}"),
            Err(e) => panic!("path {text:?} printed as {printed:?}, which does not parse: {e}"),
        }
    }
}

/// A PATCH body applied to a stored user and a stored group. Properties: no panic; a PATCH
/// that fails leaves the resource exactly as it was (PATCH is atomic); one that succeeds
/// leaves an object.
pub fn scim_patch(data: &[u8]) {
    let Ok(body) = parse_body(data, MAX_BODY_BYTES) else {
        return;
    };
    let Ok(req) = PatchRequest::from_json(&body) else {
        return;
    };
    for (schema, before) in [
        (ResourceSchema::user(), stored_user()),
        (ResourceSchema::group(), stored_group()),
    ] {
        let mut resource = before.clone();
        match apply_patch(&mut resource, &req, schema) {
            Ok(_) => assert!(resource.is_object(), "PATCH left a non-object: {resource}"),
            Err(_) => assert_eq!(resource, before, "a failed PATCH changed the resource"),
        }
    }
}

/// A POST/PUT body validated as a user and as a group. Properties: no panic; what validates
/// once validates again unchanged (validation is a normal form).
pub fn scim_resource(data: &[u8]) {
    let Ok(body) = parse_body(data, MAX_BODY_BYTES) else {
        return;
    };
    for (schema, existing) in [
        (ResourceSchema::user(), stored_user()),
        (ResourceSchema::group(), stored_group()),
    ] {
        if let Ok(valid) = validate_create(&body, schema) {
            match validate_create(&valid, schema) {
                Ok(again) => assert_eq!(again, valid, "validation is not idempotent"),
                Err(e) => panic!("a validated resource fails validation: {e:?}: {valid}"),
            }
        }
        let _ = validate_replace(&body, schema, &existing);
    }
}
