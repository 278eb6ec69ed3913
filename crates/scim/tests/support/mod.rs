//! Test support: an in-memory SCIM service built only from this crate's protocol functions,
//! plus a tiny blocking HTTP/1.1 front end (std only, one request per connection) so real
//! third-party clients (scim2-tester) can talk to it. This is not the product's router; it is
//! the least glue needed to exercise the protocol layer end to end.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use idbridge_scim::auth::{authenticate, hash_token, WWW_AUTHENTICATE};
use idbridge_scim::error::{ScimError, SCIM_CONTENT_TYPE};
use idbridge_scim::etag::{check_if_match, resource_etag};
use idbridge_scim::list::{list_response, ListQuery, QueryParams};
use idbridge_scim::patch::{apply_patch, PatchRequest};
use idbridge_scim::projection::Projection;
use idbridge_scim::resource::{stamp, Meta, Resource};
use idbridge_scim::schema::{
    resource_types_json, schemas_json, service_provider_config_json, ResourceSchema,
    DEFAULT_MAX_RESULTS,
};
use idbridge_scim::validate::{parse_body, validate_create, validate_replace, MAX_BODY_BYTES};

/// A response: status, extra headers, JSON body (None for 204).
pub type Reply = (u16, Vec<(String, String)>, Option<Value>);

fn error(e: ScimError) -> Reply {
    let mut headers = Vec::new();
    if e.status == 401 {
        headers.push(("WWW-Authenticate".to_string(), WWW_AUTHENTICATE.to_string()));
    }
    (e.status, headers, Some(e.to_json()))
}

/// One directory's SCIM state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Directory {
    pub base: String,
    pub users: Vec<Value>,
    pub groups: Vec<Value>,
    pub version: u64,
    pub next_id: u64,
}

fn schema_of(kind: &str) -> Option<&'static ResourceSchema> {
    match kind {
        "Users" => Some(ResourceSchema::user()),
        "Groups" => Some(ResourceSchema::group()),
        _ => None,
    }
}

impl Directory {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            ..Self::default()
        }
    }

    fn table(&mut self, kind: &str) -> &mut Vec<Value> {
        if kind == "Users" {
            &mut self.users
        } else {
            &mut self.groups
        }
    }

    fn stamp(&mut self, kind: &str, r: &mut Value, id: &str, created: Option<&Value>) {
        self.version += 1;
        let now = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
            + chrono::Duration::seconds(i64::try_from(self.version).unwrap_or(0));
        let created = created
            .and_then(Value::as_str)
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map_or(now, |c| c.with_timezone(&Utc));
        let version = self.version.to_string();
        let resource_type = if kind == "Users" { "User" } else { "Group" };
        let meta = Meta {
            resource_type,
            created,
            last_modified: now,
            location: format!("{}/{kind}/{id}", self.base),
            version: &version,
        };
        stamp(r, id, &meta);
    }

    fn find(&mut self, kind: &str, id: &str) -> Result<usize, ScimError> {
        self.table(kind)
            .iter()
            .position(|r| Resource(r).id() == Some(id))
            .ok_or_else(|| ScimError::not_found(format!("resource {id} not found")))
    }

    /// Users carry the read-only `groups` attribute, computed from group memberships.
    fn with_groups(&self, kind: &str, r: &Value) -> Value {
        let mut r = r.clone();
        if kind != "Users" {
            return r;
        }
        let id = Resource(&r).id().unwrap_or_default().to_string();
        let groups: Vec<Value> = self
            .groups
            .iter()
            .filter(|g| Resource(g).member_values().contains(&id.as_str()))
            .map(|g| {
                json!({"value": Resource(g).id(), "display": Resource(g).display_name(),
                       "$ref": g["meta"]["location"], "type": "direct"})
            })
            .collect();
        if let (Some(o), false) = (r.as_object_mut(), groups.is_empty()) {
            o.insert("groups".into(), Value::Array(groups));
        }
        r
    }

    fn unique(&self, kind: &str, r: &Value, except: Option<&str>) -> Result<(), ScimError> {
        let (table, key) = if kind == "Users" {
            (&self.users, "userName")
        } else {
            (&self.groups, "displayName")
        };
        let Some(name) = r.get(key).and_then(Value::as_str) else {
            return Ok(());
        };
        let clash = table.iter().any(|o| {
            Resource(o).id() != except
                && o.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
        });
        if clash {
            return Err(ScimError::uniqueness(format!("{key} is already taken")));
        }
        Ok(())
    }

    /// Handles one request. `path` is relative to the base URL, without the query string.
    pub fn handle(
        &mut self,
        method: &str,
        path: &str,
        query: &HashMap<String, String>,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Reply {
        match self.route(method, path, query, headers, body) {
            Ok(r) => r,
            Err(e) => error(e),
        }
    }

    fn route(
        &mut self,
        method: &str,
        path: &str,
        query: &HashMap<String, String>,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Result<Reply, ScimError> {
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let base = self.base.clone();
        let if_match = headers.get("if-match").map(String::as_str);
        let q = |k: &str| query.get(k).map(String::as_str);
        let projection = || Projection::from_query(q("attributes"), q("excludedAttributes"));
        let ok = |v: Value| Ok((200, Vec::new(), Some(v)));
        match (method, segments.as_slice()) {
            (m, ["ServiceProviderConfig" | "Schemas" | "ResourceTypes", ..]) if m != "GET" => Err(
                ScimError::method_not_allowed("discovery endpoints are read-only"),
            ),
            ("POST", [".search"]) => {
                // Root search: every resource type, each with its own schema.
                let body = parse_body(body, MAX_BODY_BYTES)?;
                let mut hits: Vec<(Value, &'static ResourceSchema)> = Vec::new();
                let mut paging = None;
                for kind in ["Users", "Groups"] {
                    let schema = schema_of(kind).ok_or_else(|| ScimError::internal("schema"))?;
                    let lq = ListQuery::from_search_body(&body, schema, DEFAULT_MAX_RESULTS)?;
                    let all: Vec<Value> = self
                        .table(kind)
                        .clone()
                        .iter()
                        .map(|r| self.with_groups(kind, r))
                        .collect();
                    for r in all {
                        if lq
                            .filter
                            .as_ref()
                            .is_none_or(|f| idbridge_scim::filter::matches(f, &r, schema))
                        {
                            hits.push((lq.projection.apply(&r, schema), schema));
                        }
                    }
                    paging = Some(lq.params);
                }
                let params = paging.ok_or_else(|| ScimError::internal("no resource types"))?;
                let page: Vec<Value> = params.page(&hits).iter().map(|(r, _)| r.clone()).collect();
                ok(list_response(page, hits.len(), params.start_index))
            }
            ("GET", ["ServiceProviderConfig"]) => {
                ok(service_provider_config_json(&base, DEFAULT_MAX_RESULTS))
            }
            ("GET", ["Schemas"]) => {
                let all = schemas_json(&base);
                let n = all.len();
                ok(list_response(all, n, 1))
            }
            ("GET", ["Schemas", id]) => schemas_json(&base)
                .into_iter()
                .find(|s| s["id"] == *id)
                .map_or_else(|| Err(ScimError::not_found("no such schema")), ok),
            ("GET", ["ResourceTypes"]) => {
                let all = resource_types_json(&base);
                let n = all.len();
                ok(list_response(all, n, 1))
            }
            ("GET", ["ResourceTypes", id]) => resource_types_json(&base)
                .into_iter()
                .find(|s| s["id"] == *id)
                .map_or_else(|| Err(ScimError::not_found("no such resource type")), ok),
            ("GET", [kind]) if schema_of(kind).is_some() => {
                let schema = schema_of(kind).ok_or_else(|| ScimError::internal("schema"))?;
                let params = QueryParams {
                    filter: q("filter"),
                    attributes: q("attributes"),
                    excluded_attributes: q("excludedAttributes"),
                    start_index: q("startIndex"),
                    count: q("count"),
                };
                let lq = ListQuery::from_params(&params, schema, DEFAULT_MAX_RESULTS)?;
                let all: Vec<Value> = self
                    .table(kind)
                    .clone()
                    .iter()
                    .map(|r| self.with_groups(kind, r))
                    .collect();
                ok(lq.respond(&all, schema))
            }
            ("POST", [kind, ".search"]) if schema_of(kind).is_some() => {
                let schema = schema_of(kind).ok_or_else(|| ScimError::internal("schema"))?;
                let lq = ListQuery::from_search_body(
                    &parse_body(body, MAX_BODY_BYTES)?,
                    schema,
                    DEFAULT_MAX_RESULTS,
                )?;
                let all: Vec<Value> = self
                    .table(kind)
                    .clone()
                    .iter()
                    .map(|r| self.with_groups(kind, r))
                    .collect();
                ok(lq.respond(&all, schema))
            }
            ("POST", [kind]) if schema_of(kind).is_some() => {
                let schema = schema_of(kind).ok_or_else(|| ScimError::internal("schema"))?;
                let mut r = validate_create(&parse_body(body, MAX_BODY_BYTES)?, schema)?;
                self.unique(kind, &r, None)?;
                self.next_id += 1;
                let id = format!("{}-{:04}", &kind[..1].to_lowercase(), self.next_id);
                self.stamp(kind, &mut r, &id, None);
                self.table(kind).push(r.clone());
                let out = projection()?.apply(&self.with_groups(kind, &r), schema);
                let headers = vec![
                    ("Location".to_string(), format!("{base}/{kind}/{id}")),
                    (
                        "ETag".to_string(),
                        resource_etag(&r).unwrap_or_default().to_string(),
                    ),
                ];
                Ok((201, headers, Some(out)))
            }
            (_, [kind]) if schema_of(kind).is_some() => {
                Err(ScimError::method_not_allowed("method not allowed"))
            }
            (method, [kind, id]) if schema_of(kind).is_some() => {
                let schema = schema_of(kind).ok_or_else(|| ScimError::internal("schema"))?;
                let i = self.find(kind, id)?;
                let current = self.table(kind)[i].clone();
                let etag = resource_etag(&current).unwrap_or_default().to_string();
                let reply = |d: &Directory, r: &Value| -> Result<Reply, ScimError> {
                    let out = projection()?.apply(&d.with_groups(kind, r), schema);
                    let tag = resource_etag(r).unwrap_or_default().to_string();
                    Ok((200, vec![("ETag".to_string(), tag)], Some(out)))
                };
                match method {
                    "GET" => reply(self, &current),
                    "PUT" => {
                        check_if_match(if_match, &etag)?;
                        let mut r =
                            validate_replace(&parse_body(body, MAX_BODY_BYTES)?, schema, &current)?;
                        self.unique(kind, &r, Some(id))?;
                        self.stamp(
                            kind,
                            &mut r,
                            id,
                            current.get("meta").and_then(|m| m.get("created")),
                        );
                        self.table(kind)[i] = r.clone();
                        reply(self, &r)
                    }
                    "PATCH" => {
                        check_if_match(if_match, &etag)?;
                        let req = PatchRequest::from_json(&parse_body(body, MAX_BODY_BYTES)?)?;
                        let mut r = current.clone();
                        let outcome = apply_patch(&mut r, &req, schema)?;
                        if outcome.changed {
                            self.unique(kind, &r, Some(id))?;
                            self.stamp(
                                kind,
                                &mut r,
                                id,
                                current.get("meta").and_then(|m| m.get("created")),
                            );
                            self.table(kind)[i] = r.clone();
                        }
                        reply(self, &r)
                    }
                    "DELETE" => {
                        check_if_match(if_match, &etag)?;
                        self.table(kind).remove(i);
                        if *kind == "Users" {
                            for g in &mut self.groups {
                                if let Some(Value::Array(m)) = g.get_mut("members") {
                                    m.retain(|x| {
                                        x.get("value").and_then(Value::as_str) != Some(id)
                                    });
                                }
                            }
                        }
                        Ok((204, Vec::new(), None))
                    }
                    _ => Err(ScimError::method_not_allowed("method not allowed")),
                }
            }
            _ => Err(ScimError::not_found(format!(
                "no endpoint at /{}",
                segments.join("/")
            ))),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A running test server; dropped with the test process.
pub struct Server {
    pub base_url: String,
    pub directory: Arc<Mutex<Directory>>,
}

/// Starts the server on a free loopback port, guarded by `token`.
pub fn start(token: &str) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let base_path = "/scim/v2/directory_01";
    let base_url = format!("http://127.0.0.1:{port}{base_path}");
    let directory = Arc::new(Mutex::new(Directory::new(&base_url)));
    let shared = Arc::clone(&directory);
    let token_hash = hash_token(token);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = Arc::clone(&shared);
            std::thread::spawn(move || {
                let _ = serve(stream, &dir, base_path, &token_hash);
            });
        }
    });
    Server {
        base_url,
        directory,
    }
}

fn serve(
    stream: TcpStream,
    dir: &Mutex<Directory>,
    base_path: &str,
    token_hash: &[u8],
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(MAX_BODY_BYTES + 1)];
    reader.read_exact(&mut body)?;
    let (path, query_string) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let query: HashMap<String, String> = query_string
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let reply = match (
        authenticate(headers.get("authorization").map(String::as_str), token_hash),
        path.strip_prefix(base_path),
    ) {
        (Err(e), _) => error(e),
        (Ok(()), None) => error(ScimError::not_found("not a SCIM endpoint")),
        (Ok(()), Some(rel)) => match dir.lock() {
            Ok(mut d) => d.handle(&method, &percent_decode(rel), &query, &headers, &body),
            Err(_) => error(ScimError::internal("lock poisoned")),
        },
    };
    let (status, extra, body) = reply;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )?;
    if status != 204 {
        write!(out, "Content-Type: {SCIM_CONTENT_TYPE}\r\n")?;
    }
    for (k, v) in extra {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(out, "\r\n{body}")?;
    out.flush()
}
