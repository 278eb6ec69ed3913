//! Custom attributes from attribute-map paths, and the `previous_attributes` diff.

use serde_json::{Map, Value};

use crate::types::{DirectorySettings, UserInput};

/// Resolves a source path against `source`.
///
/// Paths are dotted (`customSchemas.license_tier`); an object key may itself contain dots or
/// colons (the SCIM extension key `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`,
/// LDAP or CSV names), so at each level the longest key that is the whole rest of the path or
/// is followed by `.` or `:` wins. That accepts both `...:2.0:User.department` and
/// `...:2.0:User:department`. Keys match case-insensitively (SCIM and LDAP names are), an exact
/// match preferred. Arrays on the way pick the `primary` element, else the first; a one-element
/// array at the end is unwrapped (LDAP attributes are lists).
pub fn resolve_path<'a>(source: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = source;
    let mut rest = path;
    loop {
        current = pick_element(current)?;
        if rest.is_empty() {
            break;
        }
        let obj = current.as_object()?;
        let (key, remainder) = best_key(obj, rest)?;
        current = obj.get(key)?;
        rest = remainder;
    }
    match current {
        Value::Null => None,
        Value::Array(items) if items.len() == 1 => items.first().filter(|v| !v.is_null()),
        v => Some(v),
    }
}

/// Arrays on the way to a deeper path: the element marked primary, else the first.
fn pick_element(v: &Value) -> Option<&Value> {
    match v {
        Value::Array(items) => items
            .iter()
            .find(|e| is_primary(e))
            .or_else(|| items.first()),
        other => Some(other),
    }
}

fn is_primary(v: &Value) -> bool {
    match v.get("primary") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The longest key of `obj` that is `path` itself or a prefix of it followed by `.`/`:`, and the
/// rest of the path after the separator.
fn best_key<'k, 'p>(obj: &'k Map<String, Value>, path: &'p str) -> Option<(&'k str, &'p str)> {
    let mut best: Option<(&str, &str, bool)> = None;
    for k in obj.keys() {
        let Some(head) = path.get(..k.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(k) {
            continue;
        }
        let tail = &path[k.len()..];
        let remainder = if tail.is_empty() {
            ""
        } else if let Some(r) = tail.strip_prefix('.').or_else(|| tail.strip_prefix(':')) {
            r
        } else {
            continue;
        };
        let exact = head == k;
        let better = match best {
            None => true,
            Some((b, _, b_exact)) => k.len() > b.len() || (k.len() == b.len() && exact && !b_exact),
        };
        if better {
            best = Some((k, remainder, exact));
        }
    }
    best.map(|(k, r, _)| (k, r))
}

/// WorkOS's predefined custom attributes and where the common sources keep them: the SCIM
/// enterprise extension, WorkOS CSV columns, LDAP/AD attribute names.
const PREDEFINED: &[(&str, &[&str])] = &[
    (
        "department_name",
        &[
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.department",
            "department_name",
            "department",
        ],
    ),
    (
        "cost_center_name",
        &[
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.costCenter",
            "cost_center_name",
        ],
    ),
    (
        "division_name",
        &[
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.division",
            "division_name",
            "division",
        ],
    ),
    (
        "employee_number",
        &[
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.employeeNumber",
            "employee_number",
            "employeeNumber",
            "employeeID",
        ],
    ),
    (
        "organization",
        &[
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.organization",
            "organization",
            "company",
        ],
    ),
    (
        "employee_type",
        &["userType", "employee_type", "employeeType"],
    ),
    ("employment_start_date", &["employment_start_date"]),
    ("manager_email", &["manager_email"]),
];

/// The user's `custom_attributes`: predefined ones found in the source (when enabled), then
/// every mapped attribute (`null` when the path resolves to nothing, as WorkOS does).
pub fn custom_attributes(settings: &DirectorySettings, input: &UserInput) -> Map<String, Value> {
    let mut out = Map::new();
    if settings.predefined_attributes {
        for (name, paths) in PREDEFINED {
            if let Some(v) = paths.iter().find_map(|p| resolve_path(&input.source, p)) {
                out.insert((*name).to_owned(), v.clone());
            }
        }
        if !input.emails.is_empty() {
            if let Ok(v) = serde_json::to_value(&input.emails) {
                out.insert("emails".to_owned(), v);
            }
        }
        if let Some(u) = &input.username {
            out.insert("username".to_owned(), Value::String(u.clone()));
        }
        if let Some(t) = &input.job_title {
            out.insert("job_title".to_owned(), Value::String(t.clone()));
        }
    }
    for (name, path) in &settings.attribute_map {
        let v = resolve_path(&input.source, path)
            .cloned()
            .unwrap_or(Value::Null);
        out.insert(name.clone(), v);
    }
    out
}

/// Root keys never reported in `previous_attributes`: identity, bookkeeping, and the deprecated
/// raw record (it changes with every IdP-side touch and would make every update noisy).
const NOT_DIFFED: &[&str] = &[
    "object",
    "id",
    "directory_id",
    "organization_id",
    "created_at",
    "updated_at",
    "raw_attributes",
    "custom_attributes",
];

/// WorkOS `previous_attributes`: for each root property that changed, its old value; for
/// `custom_attributes`, a nested object of the changed keys' old values (`null` for new ones).
/// A change between `null` and absent is no change. Empty when nothing visible changed.
pub fn previous_attributes(old: &Value, new: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return out;
    };
    for (k, nv) in new {
        if NOT_DIFFED.contains(&k.as_str()) {
            continue;
        }
        let ov = old.get(k).unwrap_or(&Value::Null);
        if ov != nv {
            out.insert(k.clone(), ov.clone());
        }
    }
    let empty = Map::new();
    let old_custom = old
        .get("custom_attributes")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if let Some(new_custom) = new.get("custom_attributes").and_then(Value::as_object) {
        let mut custom = Map::new();
        for (k, nv) in new_custom {
            let ov = old_custom.get(k).unwrap_or(&Value::Null);
            if ov != nv {
                custom.insert(k.clone(), ov.clone());
            }
        }
        for (k, ov) in old_custom {
            if !new_custom.contains_key(k) && !ov.is_null() {
                custom.insert(k.clone(), ov.clone());
            }
        }
        if !custom.is_empty() {
            out.insert("custom_attributes".to_owned(), Value::Object(custom));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_urn_both_forms_arrays_and_case() {
        let src = json!({
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng",
                "manager": {"value": "m1"}},
            "emails": [{"value": "a@x"}, {"value": "b@x", "primary": "true"}],
            "customSchemas": {"license_tier": "gold"},
            "memberOf": ["cn=only"],
        });
        let p = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        assert_eq!(
            resolve_path(&src, &format!("{p}.department")),
            Some(&json!("Eng"))
        );
        assert_eq!(
            resolve_path(&src, &format!("{p}:department")),
            Some(&json!("Eng"))
        );
        assert_eq!(
            resolve_path(&src, &format!("{p}.manager.value")),
            Some(&json!("m1"))
        );
        assert_eq!(resolve_path(&src, "emails.value"), Some(&json!("b@x")));
        assert_eq!(
            resolve_path(&src, "CUSTOMSCHEMAS.License_Tier"),
            Some(&json!("gold"))
        );
        assert_eq!(resolve_path(&src, "memberOf"), Some(&json!("cn=only")));
        assert_eq!(resolve_path(&src, "customSchemas.missing"), None);
        assert_eq!(resolve_path(&src, "customSchemasX"), None);
    }

    #[test]
    fn diff_reports_old_values_and_new_custom_as_null() {
        let old = json!({"id": "u", "first_name": "A", "last_name": "B", "updated_at": "1",
            "custom_attributes": {"dept": "x", "gone": "g"}});
        let new = json!({"id": "u", "first_name": "C", "last_name": "B", "updated_at": "2",
            "custom_attributes": {"dept": "y", "new": 1}});
        let d = previous_attributes(&old, &new);
        assert_eq!(
            Value::Object(d),
            json!({"first_name": "A", "custom_attributes": {"dept": "x", "new": null, "gone": "g"}})
        );
        assert!(previous_attributes(&old, &old).is_empty());
    }
}
