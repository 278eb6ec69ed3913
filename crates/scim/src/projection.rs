//! `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9).
//!
//! `id`, `schemas` and `meta` are always returned; `returned: never` attributes (`password`)
//! never are, whatever the client asks; `returned: request` attributes only when named in
//! `attributes`. When both parameters are given, `attributes` wins (the RFC says clients send
//! one or the other).

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::AttrPath;
use crate::schema::{AttributeDef, ResourceSchema, Returned, Schema};

/// A parsed projection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// Only these (plus always-returned ones).
    pub attributes: Vec<AttrPath>,
    /// Everything but these.
    pub excluded: Vec<AttrPath>,
}

impl Projection {
    /// Parses the comma-separated query parameters; a malformed name is 400 `invalidValue`.
    pub fn from_query(attributes: Option<&str>, excluded: Option<&str>) -> Result<Self, ScimError> {
        Ok(Self {
            attributes: parse_list(attributes)?,
            excluded: parse_list(excluded)?,
        })
    }

    /// Applies the projection to one resource.
    pub fn apply<'s>(&'s self, resource: &Value, schema: &ResourceSchema) -> Value {
        let Some(obj) = resource.as_object() else {
            return resource.clone();
        };
        let mut out = Map::new();
        for (key, value) in obj {
            if key.eq_ignore_ascii_case("schemas") {
                out.insert(key.clone(), value.clone());
                continue;
            }
            if let Some(ext) = schema.extension(key) {
                if let Some(v) = self.project_extension(value, ext) {
                    out.insert(key.clone(), v);
                }
                continue;
            }
            let Some(def) = schema.core_attribute(key) else {
                // Unknown stored keys are returned unless a projection narrows the output.
                if self.attributes.is_empty()
                    && !self.excluded.iter().any(|p| p.is_core_simple(key))
                {
                    out.insert(key.clone(), value.clone());
                }
                continue;
            };
            let naming = |list: &'s [AttrPath]| -> Vec<&'s AttrPath> {
                list.iter()
                    .filter(|p| is_core_path(p, schema) && p.name.eq_ignore_ascii_case(&def.name))
                    .collect()
            };
            let paths = naming(&self.attributes);
            let excluded = naming(&self.excluded);
            if let Some(v) = self.project_attr(value, def, &paths, &excluded) {
                out.insert(key.clone(), v);
            }
        }
        Value::Object(out)
    }

    /// Projects an extension object; `None` drops it.
    fn project_extension(&self, value: &Value, ext: &Schema) -> Option<Value> {
        let urn = ext.id.as_str();
        let names_whole = |p: &AttrPath| {
            p.sub.is_none()
                && p.urn
                    .as_deref()
                    .is_some_and(|u| format!("{u}:{}", p.name).eq_ignore_ascii_case(urn))
        };
        let in_ext = |p: &&AttrPath| {
            p.urn
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(urn))
        };
        if self.excluded.iter().any(names_whole) && self.attributes.is_empty() {
            return None;
        }
        let whole_requested = self.attributes.iter().any(names_whole);
        let obj = value.as_object()?;
        let mut out = Map::new();
        for (k, v) in obj {
            let Some(def) = ext.attribute(k) else {
                // An open extension (idbridge's custom attributes): its names are not defined,
                // so they are returned like unknown stored keys, unless narrowed or excluded.
                if ext.open {
                    let named = |p: &AttrPath| in_ext(&p) && p.name.eq_ignore_ascii_case(k);
                    let requested = whole_requested
                        || self.attributes.is_empty()
                        || self.attributes.iter().any(named);
                    if requested && !self.excluded.iter().any(named) {
                        out.insert(k.clone(), v.clone());
                    }
                }
                continue;
            };
            let paths: Vec<&AttrPath> = if whole_requested {
                vec![]
            } else {
                self.attributes
                    .iter()
                    .filter(in_ext)
                    .filter(|p| p.name.eq_ignore_ascii_case(&def.name))
                    .collect()
            };
            let excluded: Vec<&AttrPath> = self
                .excluded
                .iter()
                .filter(in_ext)
                .filter(|p| p.name.eq_ignore_ascii_case(&def.name))
                .collect();
            let projected = if whole_requested {
                Projection::default().project_attr(v, def, &[], &[])
            } else {
                self.project_attr(v, def, &paths, &excluded)
            };
            if let Some(v) = projected {
                out.insert(k.clone(), v);
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }

    /// Projects one attribute given the request paths naming it (`paths`) and the excluded
    /// paths naming it (`excluded`).
    fn project_attr(
        &self,
        value: &Value,
        def: &AttributeDef,
        paths: &[&AttrPath],
        excluded: &[&AttrPath],
    ) -> Option<Value> {
        match def.returned {
            Returned::Never => return None,
            Returned::Always => return Some(value.clone()),
            Returned::Request if paths.is_empty() => return None,
            _ => {}
        }
        if !self.attributes.is_empty() {
            if paths.is_empty() {
                return None;
            }
            if paths.iter().any(|p| p.sub.is_none()) {
                return strip_never(value, def);
            }
            let subs: Vec<&str> = paths.iter().filter_map(|p| p.sub.as_deref()).collect();
            return select_subs(value, def, |name| {
                subs.iter().any(|s| s.eq_ignore_ascii_case(name))
            });
        }
        if excluded.iter().any(|p| p.sub.is_none()) {
            return None;
        }
        let subs: Vec<&str> = excluded.iter().filter_map(|p| p.sub.as_deref()).collect();
        if subs.is_empty() {
            return strip_never(value, def);
        }
        select_subs(value, def, |name| {
            !subs.iter().any(|s| s.eq_ignore_ascii_case(name))
        })
    }
}

fn is_core_path(p: &AttrPath, schema: &ResourceSchema) -> bool {
    p.urn.as_deref().is_none_or(|u| schema.is_core(u))
}

fn parse_list(list: Option<&str>) -> Result<Vec<AttrPath>, ScimError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| AttrPath::parse(s).map_err(|e| ScimError::invalid_value(e.to_string())))
        .collect()
}

/// Removes `returned: never` sub-attributes.
fn strip_never(value: &Value, def: &AttributeDef) -> Option<Value> {
    if def
        .sub_attributes
        .iter()
        .all(|s| s.returned != Returned::Never)
    {
        return Some(value.clone());
    }
    select_subs(value, def, |_| true)
}

/// Keeps the sub-attributes `keep` accepts (and always-returned ones; never-returned ones
/// never), in every element of a multi-valued attribute.
fn select_subs(value: &Value, def: &AttributeDef, keep: impl Fn(&str) -> bool) -> Option<Value> {
    let pick = |v: &Value| -> Option<Value> {
        let obj = v.as_object()?;
        let out: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| match def.sub_attribute(k).map(|s| s.returned) {
                Some(Returned::Never) => false,
                Some(Returned::Always) => true,
                _ => keep(k),
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!out.is_empty()).then_some(Value::Object(out))
    };
    match value {
        Value::Array(items) => {
            let out: Vec<Value> = items.iter().filter_map(pick).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        v => pick(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "u1",
            "externalId": "e1",
            "userName": "bjensen",
            "password": "must-never-leak",
            "name": {"givenName": "B", "familyName": "J"},
            "emails": [{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}],
            "meta": {"resourceType": "User"},
            ENTERPRISE_USER_SCHEMA: {"department": "Eng", "costCenter": "C"}
        })
    }

    fn proj(a: Option<&str>, e: Option<&str>) -> Value {
        match Projection::from_query(a, e) {
            Ok(p) => p.apply(&user(), ResourceSchema::user()),
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn open_extension_is_returned_unless_narrowed_or_excluded() {
        use crate::schema::CUSTOM_ATTRIBUTES_SCHEMA as C;
        let u = json!({"schemas": [USER_SCHEMA, C], "id": "u1", "userName": "x",
            C: {"license_tier": "gold", "start": "2024"}});
        let apply = |a: Option<&str>, e: Option<&str>| match Projection::from_query(a, e) {
            Ok(p) => p.apply(&u, ResourceSchema::user()),
            Err(err) => panic!("{err}"),
        };
        assert_eq!(
            apply(None, None)[C],
            json!({"license_tier": "gold", "start": "2024"})
        );
        assert_eq!(
            apply(None, Some(&format!("{C}:start")))[C],
            json!({"license_tier": "gold"})
        );
        assert!(apply(None, Some(C)).get(C).is_none());
        assert!(apply(Some("userName"), None).get(C).is_none());
        assert_eq!(
            apply(Some(&format!("{C}:start")), None)[C],
            json!({"start": "2024"})
        );
        assert_eq!(
            apply(Some(C), None)[C],
            json!({"license_tier": "gold", "start": "2024"})
        );
    }

    #[test]
    fn default_projection_hides_password_only() {
        let mut want = user();
        if let Some(o) = want.as_object_mut() {
            o.remove("password");
        }
        assert_eq!(proj(None, None), want);
    }

    #[test]
    fn attributes_select_with_always_returned() {
        let got = proj(Some("userName, name.givenName,emails.value,password"), None);
        assert_eq!(
            got,
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
                "id": "u1",
                "userName": "bjensen",
                "name": {"givenName": "B"},
                "emails": [{"value": "a@x"}, {"value": "b@x"}],
                "meta": {"resourceType": "User"}
            })
        );
        let got = proj(Some(&format!("{ENTERPRISE_USER_SCHEMA}:department")), None);
        assert_eq!(got[ENTERPRISE_USER_SCHEMA], json!({"department": "Eng"}));
        assert!(got.get("userName").is_none());
        let got = proj(Some(ENTERPRISE_USER_SCHEMA), None);
        assert_eq!(
            got[ENTERPRISE_USER_SCHEMA],
            json!({"department": "Eng", "costCenter": "C"})
        );
        let got = proj(
            Some("urn:ietf:params:scim:schemas:core:2.0:User:userName"),
            None,
        );
        assert_eq!(got["userName"], "bjensen");
        assert!(got.get("externalId").is_none());
    }

    #[test]
    fn excluded_attributes() {
        let got = proj(None, Some("emails,name.familyName,id,meta,password"));
        assert!(got.get("emails").is_none());
        assert_eq!(got["name"], json!({"givenName": "B"}));
        assert_eq!(got["id"], "u1", "id is always returned");
        assert!(got.get("meta").is_some(), "meta is always returned");
        assert!(got.get("password").is_none());
        let got = proj(None, Some(ENTERPRISE_USER_SCHEMA));
        assert!(got.get(ENTERPRISE_USER_SCHEMA).is_none());
        let got = proj(None, Some(&format!("{ENTERPRISE_USER_SCHEMA}:costCenter")));
        assert_eq!(got[ENTERPRISE_USER_SCHEMA], json!({"department": "Eng"}));
    }

    #[test]
    fn entra_excludes_members() {
        let g = json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "G", "members": [{"value": "u"}]});
        let p = Projection::from_query(None, Some("members")).unwrap_or_default();
        assert_eq!(
            p.apply(&g, ResourceSchema::group()),
            json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "G"})
        );
    }

    #[test]
    fn rejects_malformed_names() {
        assert!(Projection::from_query(Some("userName,9bad"), None).is_err());
        assert!(Projection::from_query(None, Some("a.b.c")).is_err());
    }
}
