//! `/connections` (workos-api.md §2.1, §8.2), the admin view, SP key rotation and the SP
//! metadata document: bodies are parsed into `idbridge_sso::connections::create::NewConnection`
//! (every shape problem in one 422); the service does the rest.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_model::{Connection, IdPrefix, List};
use idbridge_oidc::ClaimMap;
use idbridge_saml::{AttributeMap, SamlConnectionType};
use idbridge_sso::connections::create::{
    NewConnection, NewOidc, NewProtocol, NewSaml, OidcSecretInput,
};
use idbridge_sso::connections::{saml_type, ConnectionFilter};
use openssl::x509::X509;
use serde_json::{Map, Value};

use crate::body::{Fields, JsonObject, Query};
use crate::error::{ApiError, ApiResult};
use crate::pagination::page_request;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connections", get(list).post(create))
        .route("/connections/{id}", get(get_one).delete(delete))
        .route("/admin/connections/{id}", get(admin_view).put(reconfigure))
        .route(
            "/admin/connections/{id}/rotate_sp_keys",
            post(rotate_sp_keys),
        )
}

const MAX_NAME_LEN: usize = 512;

/// Parses one certificate given as PEM or base64 DER; returns PEM.
fn cert_to_pem(text: &str) -> Option<String> {
    use base64::Engine as _;
    let t = text.trim();
    let cert = if t.starts_with("-----BEGIN") {
        X509::from_pem(t.as_bytes()).ok()?
    } else {
        let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()?;
        X509::from_der(&der).ok()?
    };
    String::from_utf8(cert.to_pem().ok()?).ok()
}

/// `attribute_maps` as read: `(field, source name)` of the given standard attributes and the
/// custom attributes (profile key → source name).
struct AttributeMaps {
    standard: Vec<(&'static str, String)>,
    custom: std::collections::BTreeMap<String, String>,
}

/// `attribute_maps` (py10 shape); `name` is derived from first and last name and ignored; every
/// unknown key is a field error.
fn read_attribute_maps(f: &mut Fields<'_>) -> Option<AttributeMaps> {
    let obj = f.opt_object("attribute_maps")?;
    for k in obj.keys() {
        if !["standard_attributes", "custom_attributes"].contains(&k.as_str()) {
            f.error(&format!("attribute_maps.{k}"), "unknown_field");
        }
    }
    let mut standard = Vec::new();
    if let Some(std_attrs) = obj.get("standard_attributes") {
        match std_attrs {
            Value::Object(m) => {
                for (k, v) in m {
                    let Some(src) = v.as_str().filter(|s| !s.trim().is_empty()) else {
                        if !v.is_null() {
                            f.error(
                                &format!("attribute_maps.standard_attributes.{k}"),
                                "must_be_string",
                            );
                        }
                        continue;
                    };
                    let field = match k.as_str() {
                        "idp_id" => "idp_id",
                        "email" => "email",
                        "first_name" => "first_name",
                        "last_name" => "last_name",
                        "groups" => "groups",
                        "name" => continue,
                        _ => {
                            f.error(
                                &format!("attribute_maps.standard_attributes.{k}"),
                                "unknown_attribute",
                            );
                            continue;
                        }
                    };
                    standard.push((field, src.to_string()));
                }
            }
            Value::Null => {}
            _ => f.error("attribute_maps.standard_attributes", "must_be_object"),
        }
    }
    Some(AttributeMaps {
        standard,
        custom: parse_custom(f, obj),
    })
}

/// Puts `src` first in a candidate list.
fn prefer(list: &mut Vec<String>, src: &str) {
    list.retain(|s| s != src);
    list.insert(0, src.to_string());
}

/// The attribute map: the type's preset, with `attribute_maps` (py10 shape) taking precedence.
fn parse_attribute_map(f: &mut Fields<'_>, kind: SamlConnectionType) -> AttributeMap {
    let mut map = AttributeMap::preset(kind);
    let Some(AttributeMaps { standard, custom }) = read_attribute_maps(f) else {
        return map;
    };
    for (field, src) in standard {
        let list = match field {
            "idp_id" => &mut map.idp_id,
            "email" => &mut map.email,
            "first_name" => &mut map.first_name,
            "last_name" => &mut map.last_name,
            _ => &mut map.groups,
        };
        prefer(list, &src);
    }
    map.custom = custom;
    map
}

/// `attribute_maps` on an OIDC connection: claim names taking precedence over the type's and
/// `oidc_options.claim_map`'s, custom attributes added to the claim map's.
fn apply_attribute_maps_to_claims(f: &mut Fields<'_>, claims: &mut ClaimMap) {
    let Some(AttributeMaps { standard, custom }) = read_attribute_maps(f) else {
        return;
    };
    for (field, src) in standard {
        let list = match field {
            "idp_id" => &mut claims.idp_id,
            "email" => &mut claims.email,
            "first_name" => &mut claims.first_name,
            "last_name" => &mut claims.last_name,
            _ => &mut claims.groups,
        };
        prefer(list, &src);
    }
    claims.custom.extend(custom);
}

/// Every key of `obj` not in `known` is a field error naming it (`{prefix}.{key}`).
fn refuse_unknown(f: &mut Fields<'_>, obj: &Map<String, Value>, prefix: &str, known: &[&str]) {
    for k in obj.keys() {
        if !known.contains(&k.as_str()) {
            let field = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            f.error(&field, "unknown_field");
        }
    }
}

/// Keys `POST /connections` understands (py10 shape plus ours).
const CONNECTION_FIELDS: [&str; 7] = [
    "organization_id",
    "name",
    "external_id",
    "connection_type",
    "saml_options",
    "oidc_options",
    "attribute_maps",
];
const SAML_OPTION_FIELDS: [&str; 13] = [
    "idp_metadata_url",
    "idp_metadata_xml",
    "idp_entity_id",
    "idp_sso_url",
    "idp_slo_url",
    "idp_signing_certs",
    "sp_entity_id",
    "acs_url",
    "sp_signing_key_pair",
    "sp_encryption_key_pairs",
    "allow_idp_initiated",
    "sign_requests",
    "clock_skew_secs",
];
const OIDC_OPTION_FIELDS: [&str; 9] = [
    "issuer",
    "discovery_endpoint",
    "discovery_url",
    "redirect_uri",
    "client_id",
    "client_secret",
    "client_secret_env",
    "scopes",
    "claim_map",
];

fn parse_custom(
    f: &mut Fields<'_>,
    obj: &Map<String, Value>,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    match obj.get("custom_attributes") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if !s.trim().is_empty() && !k.is_empty() => {
                        out.insert(k.clone(), s.to_string());
                    }
                    _ => f.error(
                        &format!("attribute_maps.custom_attributes.{k}"),
                        "must_be_string",
                    ),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => f.error("attribute_maps.custom_attributes", "must_be_object"),
    }
    out
}

fn opt_str(
    f: &mut Fields<'_>,
    obj: &Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => {
            f.error(&format!("{prefix}.{key}"), "must_be_string");
            None
        }
    }
}

fn opt_bool(f: &mut Fields<'_>, obj: &Map<String, Value>, prefix: &str, key: &str) -> bool {
    match obj.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            f.error(&format!("{prefix}.{key}"), "must_be_boolean");
            false
        }
    }
}

pub(crate) fn valid_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A `POST /connections` body (WorkOS Python SDK 10.8 shape plus our `idp_metadata_xml` and
/// `oidc_options`) as the service's input; `callback_url` is the OIDC redirect URI every
/// provider must be registered with.
pub fn parse_new(body: &Map<String, Value>, callback_url: &str) -> ApiResult<NewConnection> {
    let mut f = Fields::new(body);
    refuse_unknown(&mut f, body, "", &CONNECTION_FIELDS);
    let org_id = f.required_string("organization_id");
    if org_id
        .as_deref()
        .is_some_and(|id| idbridge_model::parse_id(IdPrefix::Organization, id).is_err())
    {
        f.error("organization_id", "invalid_id");
    }
    let name = f.opt_string("name");
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        f.error("name", "too_long");
    }
    let external_id = f.opt_string("external_id");
    let ctype = f.opt_string("connection_type");
    let saml_opts = f.opt_object("saml_options");
    let oidc_opts = f.opt_object("oidc_options");
    if let Some(o) = saml_opts {
        refuse_unknown(&mut f, o, "saml_options", &SAML_OPTION_FIELDS);
    }
    if let Some(o) = oidc_opts {
        // py10 options idbridge does not implement: refused by name, never dropped.
        let unsupported = [
            "pkce",
            "token_authentication_method",
            "jwt_signing_key_pair",
            "id_token_signature_algorithm",
            "fetch_user_info",
        ];
        for k in unsupported {
            if o.get(k).is_some_and(|v| !v.is_null()) {
                f.error(&format!("oidc_options.{k}"), "not_supported");
            }
        }
        let known: Vec<&str> = OIDC_OPTION_FIELDS
            .iter()
            .chain(&unsupported)
            .copied()
            .collect();
        refuse_unknown(&mut f, o, "oidc_options", &known);
    }
    let is_oidc = match (ctype.as_deref(), oidc_opts) {
        (Some(t), _) if saml_type(t).is_some() => false,
        (Some(t), _) if t.parse::<idbridge_oidc::ConnectionType>().is_ok() => true,
        (Some(_), _) => {
            f.error("connection_type", "unsupported_connection_type");
            false
        }
        (None, Some(_)) => true,
        (None, None) => false,
    };
    let protocol = if is_oidc {
        let t: idbridge_oidc::ConnectionType = ctype
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(idbridge_oidc::ConnectionType::GenericOidc);
        match oidc_opts {
            Some(o) => parse_oidc(&mut f, o, t, callback_url).map(NewProtocol::Oidc),
            None => {
                f.error("oidc_options", "required");
                None
            }
        }
    } else {
        let t = ctype
            .as_deref()
            .and_then(saml_type)
            .unwrap_or(SamlConnectionType::GenericSAML);
        let map = parse_attribute_map(&mut f, t);
        match saml_opts {
            Some(o) => Some(NewProtocol::Saml(parse_saml(&mut f, o, t, map))),
            None => {
                f.error("saml_options", "required");
                None
            }
        }
    };
    f.finish()?;
    match (org_id, protocol) {
        (Some(organization_id), Some(protocol)) => Ok(NewConnection {
            organization_id,
            name,
            external_id,
            protocol,
        }),
        // Every way to get here reported a field error above.
        _ => Err(ApiError::invalid("organization_id", "required")),
    }
}

fn parse_oidc(
    f: &mut Fields<'_>,
    o: &Map<String, Value>,
    t: idbridge_oidc::ConnectionType,
    callback_url: &str,
) -> Option<NewOidc> {
    let p = "oidc_options";
    let issuer = opt_str(f, o, p, "issuer");
    // py10 sends `discovery_endpoint`; `discovery_url` is accepted too.
    let discovery_url =
        opt_str(f, o, p, "discovery_endpoint").or(opt_str(f, o, p, "discovery_url"));
    if opt_str(f, o, p, "redirect_uri").is_some_and(|r| r != callback_url) {
        // Our callback is fixed; the IdP must be registered with it.
        f.error(
            "oidc_options.redirect_uri",
            "must_be_the_default_redirect_uri",
        );
    }
    let client_id = opt_str(f, o, p, "client_id");
    let secret = opt_str(f, o, p, "client_secret");
    let secret_env = opt_str(f, o, p, "client_secret_env");
    if issuer.is_none() && discovery_url.is_none() {
        f.error("oidc_options.discovery_endpoint", "required");
    }
    for (k, v) in [("issuer", &issuer), ("discovery_endpoint", &discovery_url)] {
        if v.as_deref().is_some_and(|u| !valid_http_url(u)) {
            f.error(&format!("oidc_options.{k}"), "invalid_url");
        }
    }
    if client_id.is_none() {
        f.error("oidc_options.client_id", "required");
    }
    let client_secret = match (secret, secret_env) {
        (None, None) => {
            f.error("oidc_options.client_secret", "required");
            None
        }
        (Some(_), Some(_)) => {
            f.error(
                "oidc_options.client_secret_env",
                "exclusive_with_client_secret",
            );
            None
        }
        (Some(s), None) => Some(OidcSecretInput::Value(s)),
        (None, Some(var)) => Some(OidcSecretInput::Env(var)),
    };
    let mut scopes = t.default_scopes();
    match o.get("scopes") {
        Some(Value::Array(a)) => {
            let parsed: Vec<String> = a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if parsed.len() != a.len() {
                f.error("oidc_options.scopes", "must_be_array_of_strings");
            }
            scopes = parsed;
        }
        Some(Value::String(s)) => scopes = s.split_whitespace().map(str::to_string).collect(),
        None | Some(Value::Null) => {}
        Some(_) => f.error("oidc_options.scopes", "must_be_array"),
    }
    let mut claim_map = parse_claim_map(f, o, t);
    apply_attribute_maps_to_claims(f, &mut claim_map);
    Some(NewOidc {
        connection_type: t,
        issuer,
        discovery_url,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes,
        claim_map,
    })
}

fn parse_claim_map(
    f: &mut Fields<'_>,
    o: &Map<String, Value>,
    t: idbridge_oidc::ConnectionType,
) -> ClaimMap {
    let mut claim_map = t.claim_map();
    if let Some(Value::Object(m)) = o.get("claim_map") {
        for (k, v) in m {
            let list = match k.as_str() {
                "idp_id" => &mut claim_map.idp_id,
                "email" => &mut claim_map.email,
                "first_name" => &mut claim_map.first_name,
                "last_name" => &mut claim_map.last_name,
                "name" => &mut claim_map.name,
                "groups" => &mut claim_map.groups,
                "custom_attributes" => {
                    claim_map.custom = parse_custom(f, m);
                    continue;
                }
                _ => {
                    f.error(&format!("oidc_options.claim_map.{k}"), "unknown_attribute");
                    continue;
                }
            };
            match v.as_str() {
                Some(s) if !s.trim().is_empty() => {
                    list.retain(|x| x != s);
                    list.insert(0, s.to_string());
                }
                _ => f.error(&format!("oidc_options.claim_map.{k}"), "must_be_string"),
            }
        }
    }
    claim_map
}

fn parse_saml(
    f: &mut Fields<'_>,
    o: &Map<String, Value>,
    connection_type: SamlConnectionType,
    attribute_map: AttributeMap,
) -> NewSaml {
    let p = "saml_options";
    let idp_metadata_url = opt_str(f, o, p, "idp_metadata_url");
    let idp_metadata_xml = opt_str(f, o, p, "idp_metadata_xml");
    let idp_entity_id = opt_str(f, o, p, "idp_entity_id");
    let idp_sso_url = opt_str(f, o, p, "idp_sso_url");
    let idp_slo_url = opt_str(f, o, p, "idp_slo_url");
    let sp_entity_id = opt_str(f, o, p, "sp_entity_id");
    let acs_url = opt_str(f, o, p, "acs_url");
    for k in ["sp_signing_key_pair", "sp_encryption_key_pairs"] {
        if o.get(k).is_some_and(|v| !v.is_null()) {
            f.error(
                &format!("saml_options.{k}"),
                "not_supported_keys_are_generated",
            );
        }
    }
    let allow_idp_initiated = opt_bool(f, o, p, "allow_idp_initiated");
    let sign_requests = opt_bool(f, o, p, "sign_requests");
    let max_skew = idbridge_saml::settings::MAX_CLOCK_SKEW.as_secs();
    let clock_skew_secs = match o.get("clock_skew_secs") {
        None | Some(Value::Null) => idbridge_saml::settings::DEFAULT_CLOCK_SKEW.as_secs(),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max_skew => n,
            _ => {
                f.error("saml_options.clock_skew_secs", "must_be_between_0_and_600");
                0
            }
        },
    };
    let mut idp_signing_certs = Vec::new();
    match o.get("idp_signing_certs") {
        Some(Value::Array(a)) => {
            for (i, c) in a.iter().enumerate() {
                match c.as_str().and_then(cert_to_pem) {
                    Some(pem) => idp_signing_certs.push(pem),
                    None => f.error(
                        &format!("saml_options.idp_signing_certs[{i}]"),
                        "invalid_certificate",
                    ),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => f.error("saml_options.idp_signing_certs", "must_be_array"),
    }
    for (k, v) in [
        ("idp_sso_url", &idp_sso_url),
        ("idp_slo_url", &idp_slo_url),
        ("idp_metadata_url", &idp_metadata_url),
    ] {
        if v.as_deref().is_some_and(|u| !valid_http_url(u)) {
            f.error(&format!("saml_options.{k}"), "invalid_url");
        }
    }
    NewSaml {
        connection_type,
        attribute_map,
        idp_metadata_xml,
        idp_metadata_url,
        idp_entity_id,
        idp_sso_url,
        idp_slo_url,
        idp_signing_certs,
        sp_entity_id,
        acs_url,
        sign_requests,
        allow_idp_initiated,
        clock_skew_secs,
    }
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let input = parse_new(&body, &state.sso.oidc_callback_url())?;
    let c = state.sso.create_connection(input).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Connection>> {
    Ok(Json(state.sso.connection(&id)?))
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.sso.delete_connection(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Json<List<Connection>>> {
    let page = page_request(&q, IdPrefix::Connection)?;
    let filter = ConnectionFilter {
        connection_type: q.get("connection_type").map(str::to_string),
        organization_id: q.get("organization_id").map(str::to_string),
        domain: q.get("domain").map(|d| d.to_ascii_lowercase()),
        search: q.get("search").map(str::to_owned),
    };
    Ok(Json(
        state.sso.list_connections(&filter, &page)?.into_list(),
    ))
}

/// SP metadata XML at a stable URL (public: IdP admins paste or poll it).
pub async fn sp_metadata(State(state): State<AppState>, Path(conn_id): Path<String>) -> Response {
    match state.sso.sp_metadata(&conn_id) {
        Ok(xml) => {
            let mut resp = xml.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            );
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn admin_view(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.sso.connection_admin_view(&id)?))
}

/// `PUT /admin/connections/{id}`: the `POST /connections` body replaces the connection's
/// declaration (`organization_id` may be left out; it and `external_id` cannot change). The
/// answer is the admin view, as `GET`.
async fn reconfigure(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(mut body): JsonObject,
) -> ApiResult<Json<Value>> {
    let record = state.sso.connections().load(&id)?;
    if !body.contains_key("organization_id") {
        if let Some(org) = record.organization_id() {
            body.insert("organization_id".into(), org.into());
        }
    }
    let input = parse_new(&body, &state.sso.oidc_callback_url())?;
    state.sso.reconfigure_connection(&id, input).await?;
    Ok(Json(state.sso.connection_admin_view(&id)?))
}

/// Generates new SP signing and encryption keys; the previous ones stay published.
async fn rotate_sp_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.sso.rotate_sp_keys(&id).await?))
}
