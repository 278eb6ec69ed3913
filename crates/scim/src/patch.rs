//! PATCH (RFC 7644 §3.5.2): `add`, `replace` and `remove`, with and without `path`.
//!
//! Operations run on a copy of the resource; only when every operation succeeded (and the result
//! still has its required attributes) is the copy written back, so a failed PATCH leaves the
//! resource exactly as it was.
//!
//! Choices where the RFC is silent or IdPs disagree with it:
//! - Op names are case-insensitive (Entra sends `"Replace"`, `"Add"`, `"Remove"`).
//! - Values go through [`crate::validate::normalize_value`], so `"False"` becomes `false` and a
//!   bare `manager` id becomes `{"value": id}`.
//! - `replace`/`add` without `path` take an object whose keys may be attribute names, dotted
//!   sub-attribute paths (`"name.givenName"`, Entra), full extension attribute URNs, or an
//!   extension URN mapping to an object. Unknown keys there are ignored, like unknown attributes
//!   on create; an explicit unknown `path` is `invalidPath`.
//! - A readOnly attribute (`id`, `meta`) set to the value it already has is a no-op (Okta sends
//!   the group `id` back in its rename PATCH); any other change is `mutability`.
//! - `replace` with a value filter that matches nothing is `noTarget` (RFC 7644 §3.5.2.3);
//!   `add` with a filter that matches nothing creates the element from the filter's `eq` terms
//!   (Entra's `emails[type eq "work"].value` on a user without a work email); `remove` with a
//!   filter that matches nothing is a no-op, since Okta and Entra retry removals of members that
//!   are already gone and an error would make them flag the sync as failed.
//! - `remove` of a multi-valued attribute with a `value` list removes just those values (Entra
//!   removes group members this way); without a `value` it clears the attribute.
//! - `password` is accepted and discarded: idbridge never stores credentials.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::{self, get_ci, AttrPath, CompValue, CompareOp, Filter, PatchPath};
use crate::schema::{AttrType, AttributeDef, Mutability, ResourceSchema, PATCH_OP_SCHEMA};
use crate::validate::{
    check_required, normalize_element, normalize_value, require_message_schema, sync_schemas,
};

/// Most operations accepted in one PATCH request.
pub const MAX_PATCH_OPERATIONS: usize = 1000;

/// The three PATCH operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    /// `add`
    Add,
    /// `remove`
    Remove,
    /// `replace`
    Replace,
}

/// One parsed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    /// What to do.
    pub op: PatchOpKind,
    /// Where; `None` means the resource itself.
    pub path: Option<PatchPath>,
    /// The operand (absent for most removes).
    pub value: Option<Value>,
}

/// A parsed `PatchOp` message.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    /// The operations, applied in order.
    pub operations: Vec<PatchOperation>,
}

impl PatchRequest {
    /// Parses a PATCH body: `schemas` must list the PatchOp URN, `Operations` must be a
    /// non-empty array (key matched case-insensitively), each with a valid `op` and `path`.
    pub fn from_json(body: &Value) -> Result<Self, ScimError> {
        if !body.is_object() {
            return Err(ScimError::invalid_syntax(
                "PATCH body must be a JSON object",
            ));
        }
        require_message_schema(body, PATCH_OP_SCHEMA)?;
        let ops = get_ci(body, "Operations")
            .and_then(Value::as_array)
            .ok_or_else(|| ScimError::invalid_syntax("Operations must be an array"))?;
        if ops.is_empty() {
            return Err(ScimError::invalid_syntax("Operations must not be empty"));
        }
        if ops.len() > MAX_PATCH_OPERATIONS {
            return Err(ScimError::invalid_value(format!(
                "at most {MAX_PATCH_OPERATIONS} operations per request"
            )));
        }
        let operations = ops
            .iter()
            .enumerate()
            .map(|(i, op)| parse_operation(op).map_err(|e| prefix(e, i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { operations })
    }
}

fn prefix(mut e: ScimError, i: usize) -> ScimError {
    e.detail = format!("operation {i}: {}", e.detail);
    e
}

fn parse_operation(op: &Value) -> Result<PatchOperation, ScimError> {
    if !op.is_object() {
        return Err(ScimError::invalid_syntax(
            "each operation must be an object",
        ));
    }
    let kind = match get_ci(op, "op")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("add") => PatchOpKind::Add,
        Some("remove") => PatchOpKind::Remove,
        Some("replace") => PatchOpKind::Replace,
        _ => {
            return Err(ScimError::invalid_syntax(
                "op must be add, remove or replace",
            ))
        }
    };
    let path = match get_ci(op, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => {
            Some(filter::parse_path(s).map_err(|e| ScimError::invalid_path(e.to_string()))?)
        }
        Some(_) => return Err(ScimError::invalid_path("path must be a string")),
    };
    let value = get_ci(op, "value").cloned();
    if kind != PatchOpKind::Remove && value.is_none() {
        return Err(ScimError::invalid_value("add and replace need a value"));
    }
    if kind == PatchOpKind::Remove && path.is_none() {
        return Err(ScimError::no_target("remove needs a path"));
    }
    Ok(PatchOperation {
        op: kind,
        path,
        value,
    })
}

/// What a PATCH changed, for the directory engine's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchOutcome {
    /// Whether the resource differs from before.
    pub changed: bool,
    /// Group `members[].value`s present after but not before, in resource order.
    pub members_added: Vec<String>,
    /// Group `members[].value`s present before but not after, in resource order.
    pub members_removed: Vec<String>,
}

/// Applies `req` to `resource` atomically: on error `resource` is unchanged.
#[tracing::instrument(level = "debug", skip_all, fields(resource_type = %schema.name, ops = req.operations.len()))]
pub fn apply_patch(
    resource: &mut Value,
    req: &PatchRequest,
    schema: &ResourceSchema,
) -> Result<PatchOutcome, ScimError> {
    if !resource.is_object() {
        return Err(ScimError::internal("stored resource is not an object"));
    }
    let mut work = resource.clone();
    for (i, op) in req.operations.iter().enumerate() {
        apply_operation(&mut work, op, schema).map_err(|e| prefix(e, i))?;
    }
    sync_schemas(&mut work, schema);
    fix_primary(&mut work, schema);
    check_required(&work, schema)?;

    let outcome = compare_resources(resource, &work);
    *resource = work;
    Ok(outcome)
}

/// What changed between two versions of a resource: for a PUT, the engine calls this with the
/// stored and the replacing resource (PATCH calls it itself), so both report members alike.
/// `meta` is ignored, since the server restamps it on every write.
pub fn compare_resources(before: &Value, after: &Value) -> PatchOutcome {
    let without_meta = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| !k.eq_ignore_ascii_case("meta"));
        }
        v
    };
    let old = member_values(before);
    let new = member_values(after);
    let old_set: HashSet<&str> = old.iter().map(String::as_str).collect();
    let new_set: HashSet<&str> = new.iter().map(String::as_str).collect();
    PatchOutcome {
        changed: without_meta(before) != without_meta(after),
        members_added: new
            .iter()
            .filter(|v| !old_set.contains(v.as_str()))
            .cloned()
            .collect(),
        members_removed: old
            .iter()
            .filter(|v| !new_set.contains(v.as_str()))
            .cloned()
            .collect(),
    }
}

fn member_values(resource: &Value) -> Vec<String> {
    let mut seen = HashSet::new();
    get_ci(resource, "members")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| get_ci(m, "value").and_then(Value::as_str))
                .filter(|v| seen.insert(v.to_string()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn apply_operation(
    work: &mut Value,
    op: &PatchOperation,
    schema: &ResourceSchema,
) -> Result<(), ScimError> {
    match &op.path {
        Some(path) => apply_path(work, path, op.op, op.value.as_ref(), schema, false),
        None => {
            let value = op
                .value
                .as_ref()
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ScimError::invalid_value("add and replace without a path need an object value")
                })?;
            for (key, v) in value {
                if key.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let path = match filter::parse_path(key) {
                    Ok(p) => p,
                    Err(_) => {
                        tracing::debug!(key = %key, "ignoring unparseable key in PATCH value");
                        continue;
                    }
                };
                apply_path(work, &path, op.op, Some(v), schema, true)?;
            }
            Ok(())
        }
    }
}

/// Where a path points: the object holding the attribute, and the attribute's definition.
enum Resolved<'s> {
    /// An attribute in the root (`None`) or in an extension object (`Some(urn)`).
    Attr {
        ext: Option<&'s str>,
        def: &'s AttributeDef,
    },
    /// A whole extension object (`urn:...:enterprise:2.0:User`).
    Extension(&'s crate::schema::Schema),
}

fn resolve<'s>(path: &AttrPath, schema: &'s ResourceSchema) -> Option<Resolved<'s>> {
    match path.urn.as_deref() {
        None => schema
            .core_attribute(&path.name)
            .map(|def| Resolved::Attr { ext: None, def }),
        Some(u) if schema.is_core(u) => schema
            .core_attribute(&path.name)
            .map(|def| Resolved::Attr { ext: None, def }),
        Some(u) => match schema.extension(u) {
            Some(ext) => ext.attribute(&path.name).map(|def| Resolved::Attr {
                ext: Some(ext.id.as_str()),
                def,
            }),
            None => schema
                .extension(&format!("{u}:{}", path.name))
                .map(Resolved::Extension),
        },
    }
}

fn apply_path(
    work: &mut Value,
    path: &PatchPath,
    kind: PatchOpKind,
    value: Option<&Value>,
    schema: &ResourceSchema,
    lenient: bool,
) -> Result<(), ScimError> {
    let Some(resolved) = resolve(&path.attr, schema) else {
        if lenient {
            tracing::debug!(path = %path, "ignoring unknown attribute in PATCH value");
            return Ok(());
        }
        return Err(ScimError::invalid_path(format!("unknown attribute {path}")));
    };
    let (ext, def) = match resolved {
        Resolved::Attr { ext, def } => (ext, def),
        // Older Entra writes `urn:...:enterprise:2.0:User.department` (a dot, not a colon).
        Resolved::Extension(ext_schema) if path.attr.sub.is_some() => {
            let fixed = PatchPath {
                attr: AttrPath {
                    urn: Some(ext_schema.id.clone()),
                    name: path.attr.sub.clone().unwrap_or_default(),
                    sub: None,
                },
                filter: path.filter.clone(),
                sub_after_filter: path.sub_after_filter.clone(),
            };
            return apply_path(work, &fixed, kind, value, schema, lenient);
        }
        Resolved::Extension(ext_schema) => {
            return apply_extension(work, path, kind, value, ext_schema, schema)
        }
    };
    if def.mutability == Mutability::WriteOnly {
        // Passwords: accepted, never stored.
        return Ok(());
    }
    let unknown_sub = path
        .attr
        .sub
        .as_deref()
        .or(path.sub_after_filter.as_deref())
        .is_some_and(|s| def.sub_attribute(s).is_none());
    if unknown_sub && lenient {
        tracing::debug!(path = %path, "ignoring unknown sub-attribute in PATCH value");
        return Ok(());
    }
    let root = work
        .as_object_mut()
        .ok_or_else(|| ScimError::internal("resource is not an object"))?;
    let container = match ext {
        None => root,
        Some(urn) => {
            if kind == PatchOpKind::Remove && get_key(root, urn).is_none() {
                return Ok(());
            }
            let key = key_for(root, urn);
            let slot = root.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            slot.as_object_mut()
                .ok_or_else(|| ScimError::internal("extension is not an object"))?
        }
    };
    check_mutability(container, path, def, kind, value)?;
    if def.mutability == Mutability::ReadOnly {
        // check_mutability only lets through writes that change nothing.
        return Ok(());
    }
    let key = key_for(container, &def.name);
    match (&path.attr.sub, &path.filter) {
        (Some(sub), _) => apply_sub(container, &key, def, sub, kind, value, path),
        (None, Some(f)) => apply_filtered(
            container,
            &key,
            def,
            f,
            path.sub_after_filter.as_deref(),
            kind,
            value,
            path,
        ),
        (None, None) => apply_plain(container, &key, def, kind, value, path),
    }
}

/// readOnly: only a no-op write is allowed. immutable: only while unset.
fn check_mutability(
    container: &Map<String, Value>,
    path: &PatchPath,
    def: &AttributeDef,
    kind: PatchOpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let current = get_key(container, &def.name);
    match def.mutability {
        Mutability::ReadOnly => {
            let whole = path.attr.sub.is_none() && path.filter.is_none();
            let same =
                whole && kind != PatchOpKind::Remove && value.is_some_and(|v| Some(v) == current);
            if same {
                Ok(())
            } else {
                Err(ScimError::mutability(format!(
                    "attribute {} is readOnly",
                    def.name
                )))
            }
        }
        Mutability::Immutable => {
            let unset = current.is_none_or(Value::is_null);
            let same = kind != PatchOpKind::Remove && value.is_some_and(|v| Some(v) == current);
            if (unset && kind == PatchOpKind::Add) || same {
                Ok(())
            } else {
                Err(ScimError::mutability(format!(
                    "attribute {} is immutable",
                    def.name
                )))
            }
        }
        _ => Ok(()),
    }
}

fn apply_extension(
    work: &mut Value,
    path: &PatchPath,
    kind: PatchOpKind,
    value: Option<&Value>,
    ext: &crate::schema::Schema,
    schema: &ResourceSchema,
) -> Result<(), ScimError> {
    if path.attr.sub.is_some() || path.filter.is_some() {
        return Err(ScimError::invalid_path(format!("invalid path {path}")));
    }
    if kind == PatchOpKind::Remove {
        if let Some(root) = work.as_object_mut() {
            let key = key_for(root, &ext.id);
            root.remove(&key);
        }
        return Ok(());
    }
    let obj = value
        .and_then(Value::as_object)
        .ok_or_else(|| ScimError::invalid_value(format!("{} needs an object value", ext.id)))?;
    for (k, v) in obj {
        let Some(def) = ext.attribute(k) else {
            tracing::debug!(attribute = %k, "ignoring unknown extension attribute in PATCH");
            continue;
        };
        let sub_path = PatchPath {
            attr: AttrPath {
                urn: Some(ext.id.clone()),
                name: def.name.clone(),
                sub: None,
            },
            filter: None,
            sub_after_filter: None,
        };
        apply_path(work, &sub_path, kind, Some(v), schema, true)?;
    }
    Ok(())
}

/// `name.givenName`, or `emails.value` (every element) on a multi-valued attribute.
fn apply_sub(
    container: &mut Map<String, Value>,
    key: &str,
    def: &AttributeDef,
    sub: &str,
    kind: PatchOpKind,
    value: Option<&Value>,
    path: &PatchPath,
) -> Result<(), ScimError> {
    let sub_def = def
        .sub_attribute(sub)
        .ok_or_else(|| ScimError::invalid_path(format!("unknown sub-attribute {path}")))?;
    if sub_def.mutability == Mutability::ReadOnly {
        return Err(ScimError::mutability(format!(
            "attribute {path} is readOnly"
        )));
    }
    let new = match (kind, value) {
        (PatchOpKind::Remove, _) | (_, None) => None,
        (_, Some(v)) => normalize_element(sub_def, v, &path.to_string())?,
    };
    if def.multi_valued {
        if let Some(Value::Array(items)) = container.get_mut(key) {
            for item in items.iter_mut() {
                set_or_remove(item, &sub_def.name, new.clone());
            }
            items.retain(|i| i.as_object().is_some_and(|o| !o.is_empty()));
        }
        drop_if_empty(container, key);
        return Ok(());
    }
    let slot = container
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    set_or_remove(slot, &sub_def.name, new);
    drop_if_empty(container, key);
    Ok(())
}

/// `members[value eq "x"]`, `emails[type eq "work"].value`.
#[allow(clippy::too_many_arguments)]
fn apply_filtered(
    container: &mut Map<String, Value>,
    key: &str,
    def: &AttributeDef,
    filter: &Filter,
    sub: Option<&str>,
    kind: PatchOpKind,
    value: Option<&Value>,
    path: &PatchPath,
) -> Result<(), ScimError> {
    if !def.multi_valued || def.ty != AttrType::Complex {
        return Err(ScimError::invalid_path(format!(
            "{} is not a multi-valued complex attribute",
            def.name
        )));
    }
    let sub_def = match sub {
        Some(s) => Some(
            def.sub_attribute(s)
                .ok_or_else(|| ScimError::invalid_path(format!("unknown sub-attribute {path}")))?,
        ),
        None => None,
    };
    let locked = match sub_def.map(|d| d.mutability) {
        Some(Mutability::ReadOnly) => true,
        Some(Mutability::Immutable) => kind != PatchOpKind::Add,
        _ => false,
    };
    if locked {
        return Err(ScimError::mutability(format!(
            "attribute {path} cannot be changed"
        )));
    }
    // What to write: a sub-attribute value, or an object merged into each matching element.
    let new = match (kind, value, sub_def) {
        (PatchOpKind::Remove, _, _) | (_, None, _) => None,
        (_, Some(v), Some(sd)) => normalize_element(sd, v, &path.to_string())?,
        (_, Some(v), None) => normalize_element(def, v, &path.to_string())?,
    };
    let mut items = match container.remove(key) {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    };
    let hits: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, e)| filter::matches_element(filter, e, def))
        .map(|(i, _)| i)
        .collect();
    let result = (|| {
        match kind {
            PatchOpKind::Remove => {
                if let Some(sd) = sub_def {
                    for &i in &hits {
                        if let Some(item) = items.get_mut(i) {
                            set_or_remove(item, &sd.name, None);
                        }
                    }
                    items.retain(|i| i.as_object().is_some_and(|o| !o.is_empty()));
                } else {
                    let hit: HashSet<usize> = hits.iter().copied().collect();
                    let mut idx = 0;
                    items.retain(|_| {
                        let keep = !hit.contains(&idx);
                        idx += 1;
                        keep
                    });
                }
            }
            PatchOpKind::Replace | PatchOpKind::Add if hits.is_empty() => {
                if kind == PatchOpKind::Replace {
                    return Err(ScimError::no_target(format!("no value matches {path}")));
                }
                let mut element = element_from_filter(filter, def)
                    .ok_or_else(|| ScimError::no_target(format!("no value matches {path}")))?;
                write_into(&mut element, sub_def, new.clone());
                if element.as_object().is_some_and(|o| !o.is_empty()) {
                    items.push(element);
                }
            }
            PatchOpKind::Replace | PatchOpKind::Add => {
                for &i in &hits {
                    if let Some(item) = items.get_mut(i) {
                        write_into(item, sub_def, new.clone());
                    }
                }
            }
        }
        Ok(())
    })();
    if !items.is_empty() {
        container.insert(key.to_string(), Value::Array(items));
    }
    result
}

/// Sets a sub-attribute (`sub_def`) or merges an object (`None`) into one element.
fn write_into(element: &mut Value, sub_def: Option<&AttributeDef>, new: Option<Value>) {
    match sub_def {
        Some(sd) => set_or_remove(element, &sd.name, new),
        None => {
            if let (Some(target), Some(Value::Object(src))) = (element.as_object_mut(), new) {
                for (k, v) in src {
                    let key = key_for(target, &k);
                    target.insert(key, v);
                }
            }
        }
    }
}

/// Builds `{type: "work"}` from `type eq "work"` (and conjunctions of such terms), so an `add`
/// through a filter that matches nothing can create the element it describes.
fn element_from_filter(filter: &Filter, def: &AttributeDef) -> Option<Value> {
    fn collect(f: &Filter, def: &AttributeDef, out: &mut Map<String, Value>) -> bool {
        match f {
            Filter::And(a, b) => collect(a, def, out) && collect(b, def, out),
            Filter::Compare(p, CompareOp::Eq, lit) if p.urn.is_none() && p.sub.is_none() => {
                let Some(sub) = def.sub_attribute(&p.name) else {
                    return false;
                };
                let v = match lit {
                    CompValue::String(s) => Value::String(s.clone()),
                    CompValue::Bool(b) => Value::Bool(*b),
                    CompValue::Number(n) => Value::Number(n.clone()),
                    CompValue::Null => return false,
                };
                out.insert(sub.name.clone(), v);
                true
            }
            _ => false,
        }
    }
    let mut out = Map::new();
    collect(filter, def, &mut out).then_some(Value::Object(out))
}

/// A path naming the attribute itself.
fn apply_plain(
    container: &mut Map<String, Value>,
    key: &str,
    def: &AttributeDef,
    kind: PatchOpKind,
    value: Option<&Value>,
    path: &PatchPath,
) -> Result<(), ScimError> {
    let path_s = path.to_string();
    match kind {
        PatchOpKind::Remove => {
            let targets = match value {
                Some(v) if def.multi_valued && !v.is_null() => normalize_value(def, v, &path_s)?,
                _ => None,
            };
            match (targets, container.get_mut(key)) {
                (Some(Value::Array(targets)), Some(Value::Array(items))) => {
                    remove_elements(items, &targets);
                    drop_if_empty(container, key);
                }
                _ => {
                    container.remove(key);
                }
            }
        }
        PatchOpKind::Replace => match normalize_value(def, value.unwrap_or(&Value::Null), &path_s)?
        {
            None => {
                container.remove(key);
            }
            Some(new) if def.ty == AttrType::Complex && !def.multi_valued => {
                merge_complex(container, key, new)
            }
            Some(new) => {
                container.insert(key.to_string(), new);
            }
        },
        PatchOpKind::Add => match normalize_value(def, value.unwrap_or(&Value::Null), &path_s)? {
            None => {}
            Some(Value::Array(new)) if def.multi_valued => {
                let slot = container
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                if let Value::Array(items) = slot {
                    add_elements(items, new);
                }
            }
            Some(new) if def.ty == AttrType::Complex && !def.multi_valued => {
                merge_complex(container, key, new)
            }
            Some(new) => {
                container.insert(key.to_string(), new);
            }
        },
    }
    Ok(())
}

/// RFC 7644: replacing or adding a complex value sets the given sub-attributes and leaves the
/// others as they were.
fn merge_complex(container: &mut Map<String, Value>, key: &str, new: Value) {
    let slot = container
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    write_into(slot, None, Some(new));
}

/// The identity of an element of a multi-valued attribute: its `value` and (lowercased)
/// `type`. Two elements with the same identity are the same value, so adding an existing member
/// twice does not duplicate it. Elements without a `value` have no identity.
fn identity(v: &Value) -> Option<(String, Option<String>)> {
    let value = get_ci(v, "value")?.to_string();
    let ty = get_ci(v, "type")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    Some((value, ty))
}

/// Appends `new` elements, merging each into an existing element with the same identity.
/// Hash-indexed, because IdPs add members to groups of tens of thousands.
fn add_elements(items: &mut Vec<Value>, new: Vec<Value>) {
    let mut index: HashMap<(String, Option<String>), usize> = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| identity(v).map(|k| (k, i)))
        .collect();
    for n in new {
        let position = match identity(&n) {
            Some(k) => index.get(&k).copied().ok_or(Some(k)),
            None => items.iter().position(|i| *i == n).ok_or(None),
        };
        match position {
            Ok(i) => {
                if let Some(existing) = items.get_mut(i) {
                    write_into(existing, None, Some(n));
                }
            }
            Err(key) => {
                if let Some(k) = key {
                    index.insert(k, items.len());
                }
                items.push(n);
            }
        }
    }
}

/// Removes the elements `targets` name. A target with a `value` matches by `value` alone
/// (Entra sends `{"$ref": null, "value": id}`); one without matches by equality.
fn remove_elements(items: &mut Vec<Value>, targets: &[Value]) {
    let by_value: HashSet<String> = targets
        .iter()
        .filter_map(|t| get_ci(t, "value").map(Value::to_string))
        .collect();
    let whole: Vec<&Value> = targets
        .iter()
        .filter(|t| get_ci(t, "value").is_none())
        .collect();
    items.retain(|item| {
        let named = get_ci(item, "value").is_some_and(|v| by_value.contains(&v.to_string()));
        !named && !whole.contains(&item)
    });
}

fn set_or_remove(obj: &mut Value, name: &str, new: Option<Value>) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let key = key_for(map, name);
    match new {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

fn drop_if_empty(container: &mut Map<String, Value>, key: &str) {
    let empty = match container.get(key) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    if empty {
        container.remove(key);
    }
}

/// The existing key spelling for `name` (case-insensitive), else `name` itself.
fn key_for(map: &Map<String, Value>, name: &str) -> String {
    if map.contains_key(name) {
        return name.to_string();
    }
    map.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

fn get_key<'m>(map: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    map.get(&key_for(map, name))
}

/// At most one `primary: true` per multi-valued attribute (RFC 7643 §2.4): the last one set
/// wins, since PATCH appends new values at the end.
fn fix_primary(work: &mut Value, schema: &ResourceSchema) {
    let Some(root) = work.as_object_mut() else {
        return;
    };
    for def in schema
        .core
        .attributes
        .iter()
        .filter(|d| d.multi_valued && d.sub_attribute("primary").is_some())
    {
        let key = key_for(root, &def.name);
        let Some(Value::Array(items)) = root.get_mut(&key) else {
            continue;
        };
        let primaries: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| get_ci(i, "primary") == Some(&Value::Bool(true)))
            .map(|(n, _)| n)
            .collect();
        if let Some((_, earlier)) = primaries.split_last() {
            for &n in earlier {
                if let Some(item) = items.get_mut(n) {
                    set_or_remove(item, "primary", Some(Value::Bool(false)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ScimType;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    fn req(ops: Value) -> PatchRequest {
        match PatchRequest::from_json(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA],
            "id": "u1",
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "emails": [{"value": "b@work.com", "type": "work", "primary": true}, {"value": "b@home.org", "type": "home"}],
            "meta": {"resourceType": "User", "version": "W/\"1\""}
        })
    }

    fn group() -> Value {
        json!({"schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Eng",
               "members": [{"value": "u1"}, {"value": "u2"}]})
    }

    fn patch_user(ops: Value) -> Result<Value, ScimError> {
        let mut u = user();
        apply_patch(&mut u, &req(ops), ResourceSchema::user()).map(|_| u)
    }

    fn patch_err(resource: Value, schema: &ResourceSchema, ops: Value) -> ScimError {
        let mut r = resource.clone();
        match apply_patch(&mut r, &req(ops), schema) {
            Ok(_) => panic!("accepted: {r}"),
            Err(e) => {
                assert_eq!(r, resource, "resource changed on error");
                e
            }
        }
    }

    fn ok(r: Result<Value, ScimError>) -> Value {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_requests_and_rejects_malformed_ones() {
        let r = req(
            json!([{"op": "Replace", "path": "active", "value": "False"}, {"op": "REMOVE", "path": "title"}]),
        );
        assert_eq!(r.operations[0].op, PatchOpKind::Replace);
        assert_eq!(r.operations[1].op, PatchOpKind::Remove);
        let bad = [
            (
                json!({"Operations": [{"op": "add", "value": {}}]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": []}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "move", "path": "a", "value": 1}]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ["x"]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "add", "path": "emails[type eq", "value": 1}]}),
                ScimType::InvalidPath,
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "add", "path": 5, "value": 1}]}),
                ScimType::InvalidPath,
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "add", "path": "title"}]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "remove"}]}),
                ScimType::NoTarget,
            ),
            (json!([]), ScimType::InvalidSyntax),
        ];
        for (body, t) in bad {
            let e = PatchRequest::from_json(&body).err();
            assert_eq!(
                e.map(|e| (e.status, e.scim_type)),
                Some((400, Some(t))),
                "{body}"
            );
        }
        // Operations key is matched case-insensitively.
        assert!(PatchRequest::from_json(&json!({"schemas": [PATCH_OP_SCHEMA], "operations": [{"op": "add", "path": "title", "value": "x"}]})).is_ok());
    }

    #[test]
    fn simple_add_replace_remove() {
        let u = ok(patch_user(
            json!([{"op": "add", "path": "title", "value": "Boss"}]),
        ));
        assert_eq!(u["title"], "Boss");
        let u = ok(patch_user(
            json!([{"op": "replace", "path": "USERNAME", "value": "bj2"}]),
        ));
        assert_eq!(u["userName"], "bj2");
        assert!(u.get("USERNAME").is_none());
        let u = ok(patch_user(
            json!([{"op": "remove", "path": "name.familyName"}]),
        ));
        assert_eq!(u["name"], json!({"givenName": "Barbara"}));
        let u = ok(patch_user(
            json!([{"op": "replace", "path": "name.givenName", "value": "Babs"}]),
        ));
        assert_eq!(
            u["name"],
            json!({"givenName": "Babs", "familyName": "Jensen"})
        );
        let u = ok(patch_user(
            json!([{"op": "replace", "path": "name", "value": {"formatted": "B J"}}]),
        ));
        assert_eq!(
            u["name"],
            json!({"givenName": "Barbara", "familyName": "Jensen", "formatted": "B J"})
        );
        let u = ok(patch_user(json!([{"op": "remove", "path": "emails"}])));
        assert!(u.get("emails").is_none());
        let u = ok(patch_user(
            json!([{"op": "replace", "path": "emails", "value": [{"value": "x@y"}]}]),
        ));
        assert_eq!(u["emails"], json!([{"value": "x@y"}]));
        let u = ok(patch_user(
            json!([{"op": "replace", "path": "title", "value": null}]),
        ));
        assert!(u.get("title").is_none());
    }

    #[test]
    fn add_to_multi_valued_appends_and_dedupes() {
        let u = ok(patch_user(
            json!([{"op": "add", "path": "emails", "value": [{"value": "n@x", "type": "other", "primary": true}, {"value": "b@home.org", "type": "home", "display": "H"}]}]),
        ));
        let emails = u["emails"].as_array().cloned().unwrap_or_default();
        assert_eq!(emails.len(), 3);
        assert_eq!(
            emails[1],
            json!({"value": "b@home.org", "type": "home", "display": "H"})
        );
        // The newly added primary wins; the old one is demoted.
        assert_eq!(emails[0]["primary"], false);
        assert_eq!(emails[2]["primary"], true);
    }

    #[test]
    fn filtered_paths() {
        let u = ok(patch_user(
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@work.com"}]),
        ));
        assert_eq!(
            u["emails"][0],
            json!({"value": "new@work.com", "type": "work", "primary": true})
        );
        assert_eq!(u["emails"][1]["value"], "b@home.org");
        let u = ok(patch_user(
            json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
        ));
        assert_eq!(u["emails"].as_array().map(Vec::len), Some(1));
        let u = ok(patch_user(
            json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}]),
        ));
        assert_eq!(
            u["emails"][0],
            json!({"value": "b@work.com", "type": "work"})
        );
        let u = ok(patch_user(
            json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"display": "Home"}}]),
        ));
        assert_eq!(
            u["emails"][1],
            json!({"value": "b@home.org", "type": "home", "display": "Home"})
        );
        // add through a filter with no match creates the element from the filter's eq terms
        let u = ok(patch_user(
            json!([{"op": "add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555"}]),
        ));
        assert_eq!(
            u["phoneNumbers"],
            json!([{"type": "mobile", "value": "+1 555"}])
        );
        // remove through a filter with no match is a no-op
        let u = ok(patch_user(
            json!([{"op": "remove", "path": "emails[type eq \"other\"]"}]),
        ));
        assert_eq!(u, user());
    }

    #[test]
    fn replace_through_unmatched_filter_is_no_target() {
        let e = patch_err(
            user(),
            ResourceSchema::user(),
            json!([{"op": "replace", "path": "emails[type eq \"other\"].value", "value": "x"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        let e = patch_err(
            user(),
            ResourceSchema::user(),
            json!([{"op": "add", "path": "emails[value co \"x\"].value", "value": "x"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
    }

    #[test]
    fn no_path_values_with_dotted_keys_and_extensions() {
        let u = ok(patch_user(json!([{"op": "replace", "value": {
            "name.givenName": "Babs", "active": "False", "displayName": "BJ", "nonsense": 1, "name.bogus": "x",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Eng",
            ENTERPRISE_USER_SCHEMA: {"costCenter": "CC1", "manager": "m-9"}
        }}])));
        assert_eq!(u["name"]["givenName"], "Babs");
        assert_eq!(u["name"]["familyName"], "Jensen");
        assert_eq!(u["active"], false);
        assert_eq!(u["displayName"], "BJ");
        assert!(u.get("nonsense").is_none());
        assert_eq!(
            u[ENTERPRISE_USER_SCHEMA],
            json!({"department": "Eng", "costCenter": "CC1", "manager": {"value": "m-9"}})
        );
        assert_eq!(u["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    }

    #[test]
    fn extension_paths() {
        let dept = format!("{ENTERPRISE_USER_SCHEMA}:department");
        let u = ok(patch_user(
            json!([{"op": "add", "path": dept, "value": "Sales"}]),
        ));
        assert_eq!(u[ENTERPRISE_USER_SCHEMA]["department"], "Sales");
        let mut u2 = u.clone();
        ok(apply_patch(
            &mut u2,
            &req(json!([{"op": "remove", "path": dept}])),
            ResourceSchema::user(),
        )
        .map(|_| Value::Null));
        assert!(
            u2.get(ENTERPRISE_USER_SCHEMA).is_none(),
            "empty extension dropped"
        );
        assert_eq!(u2["schemas"], json!([USER_SCHEMA]));
        let mgr = format!("{ENTERPRISE_USER_SCHEMA}:manager");
        let u = ok(patch_user(
            json!([{"op": "Add", "path": mgr, "value": "boss-id"}]),
        ));
        assert_eq!(
            u[ENTERPRISE_USER_SCHEMA]["manager"],
            json!({"value": "boss-id"})
        );
        let dotted = format!("{ENTERPRISE_USER_SCHEMA}.costCenter");
        let u = ok(patch_user(
            json!([{"op": "Add", "path": dotted, "value": "CC"}]),
        ));
        assert_eq!(u[ENTERPRISE_USER_SCHEMA]["costCenter"], "CC");
        let u = ok(patch_user(
            json!([{"op": "replace", "path": ENTERPRISE_USER_SCHEMA, "value": {"division": "D"}}]),
        ));
        assert_eq!(u[ENTERPRISE_USER_SCHEMA], json!({"division": "D"}));
        let e = patch_err(
            user(),
            ResourceSchema::user(),
            json!([{"op": "add", "path": "urn:example:ext:1.0:User:x", "value": "v"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
    }

    #[test]
    fn mutability_rules() {
        let s = ResourceSchema::user();
        for ops in [
            json!([{"op": "replace", "path": "id", "value": "other"}]),
            json!([{"op": "remove", "path": "id"}]),
            json!([{"op": "replace", "value": {"id": "other"}}]),
            json!([{"op": "add", "path": "meta.version", "value": "x"}]),
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
        ] {
            let e = patch_err(user(), s, ops.clone());
            assert_eq!(e.scim_type, Some(ScimType::Mutability), "{ops}");
        }
        // Writing the same id is a no-op (Okta's group rename carries it).
        let u = ok(patch_user(
            json!([{"op": "replace", "value": {"id": "u1", "title": "T"}}]),
        ));
        assert_eq!(u["id"], "u1");
        assert_eq!(u["title"], "T");
        // Member value is immutable inside an element.
        let e = patch_err(
            group(),
            ResourceSchema::group(),
            json!([{"op": "replace", "path": "members[value eq \"u1\"].value", "value": "u9"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn errors_leave_resource_unchanged() {
        let s = ResourceSchema::user();
        let cases = [
            (
                json!([{"op": "replace", "path": "title", "value": "ok"}, {"op": "replace", "path": "active", "value": "nope"}]),
                ScimType::InvalidValue,
            ),
            (
                json!([{"op": "replace", "path": "title", "value": "ok"}, {"op": "remove", "path": "userName"}]),
                ScimType::InvalidValue,
            ),
            (
                json!([{"op": "replace", "path": "userName", "value": ""}]),
                ScimType::InvalidValue,
            ),
            (
                json!([{"op": "add", "path": "nosuch", "value": "x"}]),
                ScimType::InvalidPath,
            ),
            (
                json!([{"op": "add", "path": "name.nosuch", "value": "x"}]),
                ScimType::InvalidPath,
            ),
            (
                json!([{"op": "add", "path": "title[type eq \"x\"]", "value": "x"}]),
                ScimType::InvalidPath,
            ),
            (
                json!([{"op": "replace", "value": "not an object"}]),
                ScimType::InvalidValue,
            ),
            (
                json!([{"op": "replace", "path": "emails", "value": [{"value": 7}]}]),
                ScimType::InvalidValue,
            ),
        ];
        for (ops, t) in cases {
            let e = patch_err(user(), s, ops.clone());
            assert_eq!(e.scim_type, Some(t), "{ops}");
        }
    }

    #[test]
    fn group_member_outcomes() {
        let s = ResourceSchema::group();
        let mut g = group();
        let out = apply_patch(
            &mut g,
            &req(json!([
                {"op": "add", "path": "members", "value": [{"value": "u3", "display": "U3"}, {"value": "u1"}]},
                {"op": "remove", "path": "members[value eq \"u2\"]"}
            ])),
            s,
        );
        assert_eq!(
            out.ok(),
            Some(PatchOutcome {
                changed: true,
                members_added: vec!["u3".into()],
                members_removed: vec!["u2".into()]
            })
        );
        assert_eq!(
            g["members"],
            json!([{"value": "u1"}, {"value": "u3", "display": "U3"}])
        );
        // Entra: remove with a value list removes only those.
        let out = apply_patch(
            &mut g,
            &req(
                json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "u1"}]}]),
            ),
            s,
        );
        assert_eq!(
            out.map(|o| o.members_removed).ok(),
            Some(vec!["u1".to_string()])
        );
        assert_eq!(g["members"], json!([{"value": "u3", "display": "U3"}]));
        // Okta: replace the whole member list.
        let out = apply_patch(
            &mut g,
            &req(json!([{"op": "replace", "path": "members", "value": [{"value": "u4"}]}])),
            s,
        );
        assert_eq!(
            out.ok(),
            Some(PatchOutcome {
                changed: true,
                members_added: vec!["u4".into()],
                members_removed: vec!["u3".into()]
            })
        );
        // No-op patch reports no change.
        let out = apply_patch(
            &mut g,
            &req(json!([{"op": "add", "path": "members", "value": [{"value": "u4"}]}])),
            s,
        );
        assert_eq!(out.ok(), Some(PatchOutcome::default()));
        // remove all members
        let out = apply_patch(
            &mut g,
            &req(json!([{"op": "remove", "path": "members"}])),
            s,
        );
        assert_eq!(
            out.map(|o| o.members_removed).ok(),
            Some(vec!["u4".to_string()])
        );
        assert!(g.get("members").is_none());
        let e = patch_err(
            group(),
            s,
            json!([{"op": "add", "path": "members", "value": [{"display": "no value"}]}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = patch_err(group(), s, json!([{"op": "remove", "path": "displayName"}]));
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn large_groups_add_and_remove_by_value() {
        let s = ResourceSchema::group();
        let existing: Vec<Value> = (0..20_000)
            .map(|i| json!({"value": format!("u{i}")}))
            .collect();
        let mut g = json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "Big", "members": existing});
        // Half the added members are already there.
        let add: Vec<Value> = (15_000..25_000)
            .map(|i| json!({"value": format!("u{i}")}))
            .collect();
        let out = apply_patch(
            &mut g,
            &req(json!([{"op": "add", "path": "members", "value": add}])),
            s,
        );
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.members_added.len(), 5_000);
        assert_eq!(
            out.members_added.first().map(String::as_str),
            Some("u20000")
        );
        assert_eq!(g["members"].as_array().map(Vec::len), Some(25_000));
        let remove: Vec<Value> = (0..10_000)
            .map(|i| json!({"value": format!("u{}", i * 2)}))
            .collect();
        let out = apply_patch(
            &mut g,
            &req(json!([{"op": "remove", "path": "members", "value": remove}])),
            s,
        );
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.members_removed.len(), 10_000);
        assert_eq!(g["members"][0]["value"], "u1");
    }

    #[test]
    fn compare_resources_for_put() {
        let before = group();
        let mut after = group();
        after["members"] = json!([{"value": "u2"}, {"value": "u3"}, {"value": "u3"}]);
        after["meta"] = json!({"version": "W/\"9\""});
        let out = compare_resources(&before, &after);
        assert_eq!(
            out,
            PatchOutcome {
                changed: true,
                members_added: vec!["u3".into()],
                members_removed: vec!["u1".into()]
            }
        );
        let mut restamped = group();
        restamped["meta"] = json!({"version": "W/\"10\""});
        assert_eq!(
            compare_resources(&before, &restamped),
            PatchOutcome::default()
        );
    }

    #[test]
    fn hostile_requests_are_bounded() {
        let deep = format!(
            "emails[{}type eq \"x\"{}]",
            "(".repeat(100),
            ")".repeat(100)
        );
        let body =
            json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "remove", "path": deep}]});
        let e = PatchRequest::from_json(&body).err();
        assert_eq!(e.map(|e| e.scim_type), Some(Some(ScimType::InvalidPath)));
        let ops: Vec<Value> = (0..=MAX_PATCH_OPERATIONS)
            .map(|_| json!({"op": "add", "path": "title", "value": "x"}))
            .collect();
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
        let e = PatchRequest::from_json(&body).err();
        assert_eq!(e.map(|e| e.scim_type), Some(Some(ScimType::InvalidValue)));
        let ok_ops: Vec<Value> = (0..MAX_PATCH_OPERATIONS)
            .map(|_| json!({"op": "add", "path": "title", "value": "x"}))
            .collect();
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ok_ops});
        assert!(PatchRequest::from_json(&body).is_ok());
    }

    #[test]
    fn password_is_discarded() {
        let u = ok(patch_user(
            json!([{"op": "replace", "path": "password", "value": "s3cret"}, {"op": "replace", "value": {"password": "x"}}]),
        ));
        assert_eq!(u, user());
    }
}
