//! Validation and normalisation of POSTed / PUT resources (RFC 7643 §2, §3; RFC 7644 §3.3, §3.5.1).
//!
//! The output is the resource as idbridge stores it: known attributes only, under their
//! canonical names, with values of the schema's types. IdP quirks are absorbed here, once, for
//! every caller: Entra's `"True"`/`"False"` strings become booleans, a bare string for a complex
//! attribute with a `value` sub-attribute (Entra's `manager`) becomes `{"value": ...}`, and a
//! vendor schema URN Entra lists without sending attributes is accepted and dropped.
//!
//! idbridge's own custom-attributes extension ([`crate::schema::CUSTOM_ATTRIBUTES_SCHEMA`], what
//! another idbridge's SCIM push sends) keeps any attribute name with its value as sent; every
//! other extension URN not defined here is still refused when listed in `schemas`.
//!
//! What is dropped rather than rejected: readOnly attributes (`id`, `meta`, `groups`; the
//! server sets them), attributes no schema defines, extension objects whose URN is not listed in
//! `schemas` and not known, and `password` (idbridge never stores credentials).

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::get_ci;
use crate::schema::{
    AttrType, AttributeDef, Mutability, ResourceSchema, Schema, TOLERATED_SCHEMAS,
};

/// Largest request body accepted (matches WorkOS's 2,000 KB limit).
pub const MAX_BODY_BYTES: usize = 2_000 * 1024;

/// Parses a request body: 413 when over `max_bytes`, 400 `invalidSyntax` when it is not a JSON
/// object. Nothing has been touched yet when this fails, so the store stays unchanged.
pub fn parse_body(bytes: &[u8], max_bytes: usize) -> Result<Value, ScimError> {
    if bytes.len() > max_bytes {
        return Err(ScimError::payload_too_large(format!(
            "request body is larger than {max_bytes} bytes"
        )));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ScimError::invalid_syntax(
            "request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// Checks that a protocol message (PatchOp, SearchRequest) lists its schema URN in `schemas`,
/// as RFC 7644 requires; otherwise 400 `invalidSyntax`.
pub fn require_message_schema(body: &Value, urn: &str) -> Result<(), ScimError> {
    let listed = get_ci(body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|u| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(urn)))
        });
    if listed {
        Ok(())
    } else {
        Err(ScimError::invalid_syntax(format!(
            "schemas must contain {urn}"
        )))
    }
}

/// Validates a resource for create (POST) and returns its normalised form.
#[tracing::instrument(level = "debug", skip_all, fields(resource_type = %schema.name))]
pub fn validate_create(body: &Value, schema: &ResourceSchema) -> Result<Value, ScimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("resource must be a JSON object"))?;
    let listed = check_schemas(obj, schema)?;

    let mut out = Map::new();
    out.insert(
        "schemas".into(),
        Value::Array(vec![Value::String(schema.core.id.clone())]),
    );
    for (key, value) in obj {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(ext) = schema.extension(key) {
            let is_listed = listed.iter().any(|u| u.eq_ignore_ascii_case(&ext.id));
            if !is_listed {
                tracing::debug!(urn = %ext.id, "extension object present but not listed in schemas; accepting");
            }
            if let Some(v) = normalize_extension(ext, value)? {
                out.insert(ext.id.clone(), v);
            }
            continue;
        }
        let Some(def) = schema.core_attribute(key) else {
            tracing::debug!(attribute = %key, "dropping unknown attribute");
            continue;
        };
        if !accepts_input(def) {
            continue;
        }
        if let Some(v) = normalize_value(def, value, &def.name)? {
            out.insert(def.name.clone(), v);
        }
    }
    let mut out = Value::Object(out);
    sync_schemas(&mut out, schema);
    check_required(&out, schema)?;
    Ok(out)
}

/// Validates a full replacement (PUT) of `existing`: the create rules, plus immutable
/// attributes may not change once set. The result has no readOnly attributes; the caller
/// carries `id`, `meta` and `groups` over from `existing`.
pub fn validate_replace(
    body: &Value,
    schema: &ResourceSchema,
    existing: &Value,
) -> Result<Value, ScimError> {
    let out = validate_create(body, schema)?;
    for def in schema.core.attributes.iter().chain(&schema.common) {
        if def.mutability != Mutability::Immutable {
            continue;
        }
        if let (Some(old), Some(new)) = (get_ci(existing, &def.name), get_ci(&out, &def.name)) {
            if old != new {
                return Err(ScimError::mutability(format!(
                    "attribute {} is immutable",
                    def.name
                )));
            }
        }
    }
    Ok(out)
}

/// Whether a client may supply this attribute. readOnly values are ignored on input
/// (RFC 7643 §7) and passwords are never kept.
pub(crate) fn accepts_input(def: &AttributeDef) -> bool {
    def.mutability != Mutability::ReadOnly && def.mutability != Mutability::WriteOnly
}

/// Checks `schemas` and returns the URNs listed.
fn check_schemas(
    obj: &Map<String, Value>,
    schema: &ResourceSchema,
) -> Result<Vec<String>, ScimError> {
    let listed = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("schemas"))
        .map(|(_, v)| v)
        .ok_or_else(|| ScimError::invalid_syntax("the schemas attribute is required"))?;
    let listed = listed
        .as_array()
        .ok_or_else(|| ScimError::invalid_syntax("schemas must be an array of URIs"))?;
    let mut urns = Vec::with_capacity(listed.len());
    for u in listed {
        let u = u
            .as_str()
            .ok_or_else(|| ScimError::invalid_syntax("schemas must be an array of URIs"))?;
        let known = schema.schema_ids().any(|id| id.eq_ignore_ascii_case(u))
            || TOLERATED_SCHEMAS.iter().any(|t| t.eq_ignore_ascii_case(u));
        if !known {
            return Err(ScimError::invalid_value(format!(
                "schema {u:?} is not supported for {} resources",
                schema.name
            )));
        }
        urns.push(u.to_string());
    }
    if !urns.iter().any(|u| schema.is_core(u)) {
        return Err(ScimError::invalid_syntax(format!(
            "schemas must contain {}",
            schema.core.id
        )));
    }
    Ok(urns)
}

/// Rewrites `schemas` to the core URN plus the extensions actually present.
pub(crate) fn sync_schemas(resource: &mut Value, schema: &ResourceSchema) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let mut urns = vec![Value::String(schema.core.id.clone())];
    for (ext, _) in &schema.extensions {
        if obj
            .get(&ext.id)
            .is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        {
            urns.push(Value::String(ext.id.clone()));
        } else {
            obj.remove(&ext.id);
        }
    }
    obj.insert("schemas".into(), Value::Array(urns));
}

/// Required attributes (`userName`, group `displayName`) must be non-blank strings, and group
/// members must carry a `value`.
pub(crate) fn check_required(resource: &Value, schema: &ResourceSchema) -> Result<(), ScimError> {
    for def in schema.core.attributes.iter().filter(|d| d.required) {
        let ok = match get_ci(resource, &def.name) {
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(Value::Null) | None => false,
            Some(_) => true,
        };
        if !ok {
            return Err(ScimError::invalid_value(format!(
                "attribute {} is required",
                def.name
            )));
        }
    }
    if let Some(Value::Array(members)) = get_ci(resource, "members") {
        for m in members {
            match get_ci(m, "value") {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                _ => {
                    return Err(ScimError::invalid_value(
                        "each member must have a non-empty value",
                    ))
                }
            }
        }
    }
    Ok(())
}

fn normalize_extension(ext: &Schema, value: &Value) -> Result<Option<Value>, ScimError> {
    let obj = value
        .as_object()
        .ok_or_else(|| ScimError::invalid_value(format!("{} must be an object", ext.id)))?;
    let mut out = Map::new();
    if ext.open {
        // Any name, the value as sent (null = unassigned).
        for (k, v) in obj {
            if !v.is_null() {
                out.insert(k.clone(), v.clone());
            }
        }
        return Ok((!out.is_empty()).then_some(Value::Object(out)));
    }
    for (k, v) in obj {
        let Some(def) = ext.attribute(k) else {
            tracing::debug!(attribute = %k, urn = %ext.id, "dropping unknown extension attribute");
            continue;
        };
        if !accepts_input(def) {
            continue;
        }
        if let Some(v) = normalize_value(def, v, &def.name)? {
            out.insert(def.name.clone(), v);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// Normalises a value for `def` (handling multi-valued wrapping). `None` means "unassigned":
/// `null`, an empty array or an empty complex value.
pub fn normalize_value(
    def: &AttributeDef,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if !def.multi_valued {
        return normalize_element(def, value, path);
    }
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        // A single value for a multi-valued attribute: accept it as a one-element list.
        v => vec![v],
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(v) = normalize_element(def, item, path)? {
            out.push(v);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// Normalises one value of `def` (one element, for a multi-valued attribute).
pub fn normalize_element(
    def: &AttributeDef,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    let wrong = |what: &str| ScimError::invalid_value(format!("attribute {path} must be {what}"));
    let v = match (def.ty, value) {
        (_, Value::Null) => return Ok(None),
        (AttrType::String | AttrType::Reference | AttrType::Binary, Value::String(_)) => {
            value.clone()
        }
        (AttrType::String | AttrType::Reference | AttrType::Binary, _) => {
            return Err(wrong("a string"))
        }
        (AttrType::Boolean, Value::Bool(_)) => value.clone(),
        (AttrType::Boolean, Value::String(s)) => match parse_bool(s) {
            Some(b) => Value::Bool(b),
            None => return Err(wrong("a boolean")),
        },
        (AttrType::Boolean, _) => return Err(wrong("a boolean")),
        (AttrType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => value.clone(),
        (AttrType::Integer, _) => return Err(wrong("an integer")),
        (AttrType::Decimal, Value::Number(_)) => value.clone(),
        (AttrType::Decimal, _) => return Err(wrong("a number")),
        (AttrType::DateTime, Value::String(s))
            if chrono::DateTime::parse_from_rfc3339(s).is_ok() =>
        {
            value.clone()
        }
        (AttrType::DateTime, _) => return Err(wrong("an RFC 3339 date-time string")),
        (AttrType::Complex, Value::Object(obj)) => {
            let mut out = Map::new();
            for (k, v) in obj {
                let Some(sub) = def.sub_attribute(k) else {
                    tracing::debug!(attribute = %path, sub = %k, "dropping unknown sub-attribute");
                    continue;
                };
                if sub.mutability == Mutability::ReadOnly && def.mutability != Mutability::ReadOnly
                {
                    continue;
                }
                let sub_path = format!("{path}.{}", sub.name);
                if let Some(v) = normalize_element(sub, v, &sub_path)? {
                    out.insert(sub.name.clone(), v);
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            Value::Object(out)
        }
        // Entra sends the enterprise `manager` as a bare id string.
        (AttrType::Complex, Value::String(_) | Value::Number(_) | Value::Bool(_)) => {
            match def.sub_attribute("value") {
                Some(sub) => {
                    let inner = normalize_element(sub, value, &format!("{path}.value"))?;
                    match inner {
                        Some(v) => Value::Object(Map::from_iter([(sub.name.clone(), v)])),
                        None => return Ok(None),
                    }
                }
                None => return Err(wrong("an object")),
            }
        }
        (AttrType::Complex, _) => return Err(wrong("an object")),
    };
    Ok(Some(v))
}

/// Booleans as Entra sometimes sends them (`"True"`, `"False"`).
pub fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ScimType;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    fn user_ok(body: Value) -> Value {
        match validate_create(&body, ResourceSchema::user()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn user_err(body: Value) -> ScimError {
        match validate_create(&body, ResourceSchema::user()) {
            Ok(v) => panic!("accepted {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn normalises_a_user() {
        let out = user_ok(json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "client-chosen", "meta": {"resourceType": "User"}, "groups": [{"value": "g"}],
            "USERNAME": "a@b.c", "active": "False", "password": "hunter2", "unknownThing": 1,
            "emails": {"value": "a@b.c", "type": "work", "primary": "true"},
            "name": {"givenName": "A", "bogus": "x", "familyName": null},
            "roles": [],
            ENTERPRISE_USER_SCHEMA: {"department": "Eng", "manager": "m-1", "nope": 1},
            "urn:example:custom:2.0:User": {"x": 1}
        }));
        let want = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "userName": "a@b.c", "active": false,
            "emails": [{"value": "a@b.c", "type": "work", "primary": true}],
            "name": {"givenName": "A"},
            ENTERPRISE_USER_SCHEMA: {"department": "Eng", "manager": {"value": "m-1"}}
        });
        assert_eq!(out, want);
    }

    #[test]
    fn extension_schema_is_listed_only_when_present() {
        let out =
            user_ok(json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "userName": "x"}));
        assert_eq!(out["schemas"], json!([USER_SCHEMA]));
        let out = user_ok(
            json!({"schemas": [USER_SCHEMA], "userName": "x", ENTERPRISE_USER_SCHEMA: {"costCenter": "c"}}),
        );
        assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    }

    #[test]
    fn custom_attributes_extension_keeps_any_attribute_and_unknown_urns_stay_refused() {
        use crate::schema::CUSTOM_ATTRIBUTES_SCHEMA;
        let out = user_ok(json!({
            "schemas": [USER_SCHEMA, CUSTOM_ATTRIBUTES_SCHEMA],
            "userName": "x",
            CUSTOM_ATTRIBUTES_SCHEMA: {"license_tier": "gold", "start": "2024-01-02",
                "nested": {"a": [1, 2]}, "gone": null}
        }));
        assert_eq!(
            out[CUSTOM_ATTRIBUTES_SCHEMA],
            json!({"license_tier": "gold", "start": "2024-01-02", "nested": {"a": [1, 2]}})
        );
        assert_eq!(
            out["schemas"],
            json!([USER_SCHEMA, CUSTOM_ATTRIBUTES_SCHEMA])
        );
        // Only null values: the extension disappears.
        let out = user_ok(json!({"schemas": [USER_SCHEMA], "userName": "x",
            CUSTOM_ATTRIBUTES_SCHEMA: {"gone": null}}));
        assert!(out.get(CUSTOM_ATTRIBUTES_SCHEMA).is_none());
        assert_eq!(out["schemas"], json!([USER_SCHEMA]));
        // It must be an object.
        let e = user_err(json!({"schemas": [USER_SCHEMA], "userName": "x",
            CUSTOM_ATTRIBUTES_SCHEMA: "gold"}));
        assert_eq!(e.status, 400);
        // Another unknown extension is still refused when listed, dropped when not.
        let e = user_err(
            json!({"schemas": [USER_SCHEMA, "urn:example:custom:2.0:User"],
            "userName": "x", "urn:example:custom:2.0:User": {"a": 1}}),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let out = user_ok(json!({"schemas": [USER_SCHEMA], "userName": "x",
            "urn:example:custom:2.0:User": {"a": 1}}));
        assert!(out.get("urn:example:custom:2.0:User").is_none());
        // Groups do not have it.
        let e = match validate_create(
            &json!({"schemas": [GROUP_SCHEMA, CUSTOM_ATTRIBUTES_SCHEMA], "displayName": "g"}),
            ResourceSchema::group(),
        ) {
            Ok(v) => panic!("accepted {v}"),
            Err(e) => e,
        };
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn rejects_bad_schemas() {
        let cases = [
            (json!({"userName": "x"}), ScimType::InvalidSyntax),
            (
                json!({"schemas": USER_SCHEMA, "userName": "x"}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [1], "userName": "x"}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [ENTERPRISE_USER_SCHEMA], "userName": "x"}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [USER_SCHEMA, "urn:example:unknown"], "userName": "x"}),
                ScimType::InvalidValue,
            ),
            (
                json!({"schemas": [GROUP_SCHEMA], "userName": "x"}),
                ScimType::InvalidValue,
            ),
        ];
        for (body, t) in cases {
            let e = user_err(body.clone());
            assert_eq!((e.status, e.scim_type), (400, Some(t)), "{body}");
        }
        assert!(validate_create(&json!([1]), ResourceSchema::user()).is_err());
    }

    #[test]
    fn requires_user_name() {
        for body in [
            json!({"schemas": [USER_SCHEMA]}),
            json!({"schemas": [USER_SCHEMA], "userName": ""}),
            json!({"schemas": [USER_SCHEMA], "userName": "  "}),
            json!({"schemas": [USER_SCHEMA], "userName": null}),
        ] {
            let e = user_err(body);
            assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
            assert!(e.detail.contains("userName"));
        }
    }

    #[test]
    fn rejects_wrong_types() {
        for body in [
            json!({"schemas": [USER_SCHEMA], "userName": 5}),
            json!({"schemas": [USER_SCHEMA], "userName": "x", "active": "yes"}),
            json!({"schemas": [USER_SCHEMA], "userName": "x", "active": 1}),
            json!({"schemas": [USER_SCHEMA], "userName": "x", "name": "A B"}),
            json!({"schemas": [USER_SCHEMA], "userName": "x", "emails": [{"value": 1}]}),
            json!({"schemas": [USER_SCHEMA], "userName": "x", "emails": [{"value": "a", "primary": "maybe"}]}),
            json!({"schemas": [USER_SCHEMA], "userName": "x", "externalId": {"a": 1}}),
            json!({"schemas": [USER_SCHEMA], "userName": "x", ENTERPRISE_USER_SCHEMA: "Eng"}),
            json!({"schemas": [USER_SCHEMA], "userName": "x", ENTERPRISE_USER_SCHEMA: {"department": 3}}),
        ] {
            let e = user_err(body.clone());
            assert_eq!(
                (e.status, e.scim_type),
                (400, Some(ScimType::InvalidValue)),
                "{body}"
            );
        }
    }

    #[test]
    fn groups_need_display_name_and_member_values() {
        let g = ResourceSchema::group();
        let ok = validate_create(
            &json!({"schemas": [GROUP_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                    "displayName": "Eng", "externalId": "e1", "members": [{"value": "u1", "display": "U", "$ref": null}]}),
            g,
        );
        assert_eq!(
            ok.ok(),
            Some(
                json!({"schemas": [GROUP_SCHEMA], "displayName": "Eng", "externalId": "e1", "members": [{"value": "u1", "display": "U"}]})
            )
        );
        for body in [
            json!({"schemas": [GROUP_SCHEMA]}),
            json!({"schemas": [GROUP_SCHEMA], "displayName": ""}),
            json!({"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"display": "no value"}]}),
            json!({"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": ""}]}),
        ] {
            let e = validate_create(&body, g).err();
            assert_eq!(
                e.map(|e| e.scim_type),
                Some(Some(ScimType::InvalidValue)),
                "{body}"
            );
        }
    }

    #[test]
    fn replace_refuses_changing_immutable_values() {
        // No core attribute is immutable at top level in RFC 7643, so use a custom schema.
        let mut schema = ResourceSchema::user().clone();
        if let Some(a) = schema
            .core
            .attributes
            .iter_mut()
            .find(|a| a.name == "title")
        {
            a.mutability = Mutability::Immutable;
        }
        let existing = json!({"id": "1", "userName": "x", "title": "A"});
        let body = json!({"schemas": [USER_SCHEMA], "userName": "x", "title": "B"});
        let e = validate_replace(&body, &schema, &existing).err();
        assert_eq!(e.map(|e| e.scim_type), Some(Some(ScimType::Mutability)));
        let same = json!({"schemas": [USER_SCHEMA], "userName": "y", "title": "A"});
        assert!(validate_replace(&same, &schema, &existing).is_ok());
    }

    #[test]
    fn parse_body_errors() {
        let e = parse_body(b"{\"a\":", 100).err();
        assert_eq!(
            e.map(|e| (e.status, e.scim_type)),
            Some((400, Some(ScimType::InvalidSyntax)))
        );
        let e = parse_body(b"[1]", 100).err();
        assert_eq!(e.map(|e| e.scim_type), Some(Some(ScimType::InvalidSyntax)));
        let e = parse_body(&[b' '; 101], 100).err();
        assert_eq!(e.map(|e| e.status), Some(413));
        assert_eq!(parse_body(b"{\"a\":1}", 100).ok(), Some(json!({"a": 1})));
    }
}
