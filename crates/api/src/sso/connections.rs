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
use idbridge_sso::connections::patch::{AttributeMapsPatch, StandardAttribute};
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

/// `attribute_maps` (py10 shape) as a patch of the type's defaults: `null` values mean "the
/// default" (`patch`) or are left out (create). `name` is derived from first and last name and
/// ignored; every unknown key is a field error.
pub(super) fn read_attribute_maps(f: &mut Fields<'_>, patch: bool) -> Option<AttributeMapsPatch> {
    let obj = f.opt_object("attribute_maps")?;
    refuse_unknown(
        f,
        obj,
        "attribute_maps",
        &["standard_attributes", "custom_attributes"],
    );
    let prefix = "attribute_maps.standard_attributes";
    let mut out = AttributeMapsPatch::default();
    match obj.get("standard_attributes") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let field = match k.as_str() {
                    "name" => continue,
                    other => match standard_attribute(other, false) {
                        Some(a) => a,
                        None => {
                            f.error(&format!("{prefix}.{k}"), "unknown_attribute");
                            continue;
                        }
                    },
                };
                match v {
                    Value::String(s) if !s.trim().is_empty() => {
                        out.standard.push((field, Some(s.to_string())))
                    }
                    Value::Null if patch => out.standard.push((field, None)),
                    Value::Null => {}
                    _ => f.error(&format!("{prefix}.{k}"), "must_be_string"),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => f.error(prefix, "must_be_object"),
    }
    out.custom = parse_custom(f, obj, "attribute_maps.custom_attributes", patch);
    Some(out)
}

/// A standard profile field by its WorkOS name (`name` only where the protocol has a source).
fn standard_attribute(key: &str, with_name: bool) -> Option<StandardAttribute> {
    Some(match key {
        "idp_id" => StandardAttribute::IdpId,
        "email" => StandardAttribute::Email,
        "first_name" => StandardAttribute::FirstName,
        "last_name" => StandardAttribute::LastName,
        "groups" => StandardAttribute::Groups,
        "name" if with_name => StandardAttribute::Name,
        _ => return None,
    })
}

/// The attribute map: the type's preset, with `attribute_maps` (py10 shape) taking precedence.
fn parse_attribute_map(f: &mut Fields<'_>, kind: SamlConnectionType) -> AttributeMap {
    let mut map = AttributeMap::preset(kind);
    if let Some(maps) = read_attribute_maps(f, false) {
        maps.apply_to_saml(&mut map, kind);
    }
    map
}

/// `attribute_maps` on an OIDC connection: claim names taking precedence over the type's and
/// `oidc_options.claim_map`'s, custom attributes added to the claim map's.
fn apply_attribute_maps_to_claims(f: &mut Fields<'_>, claims: &mut ClaimMap) {
    let Some(maps) = read_attribute_maps(f, false) else {
        return;
    };
    for (field, src) in maps.standard {
        let Some(src) = src else { continue };
        let list = match field {
            StandardAttribute::IdpId => &mut claims.idp_id,
            StandardAttribute::Email => &mut claims.email,
            StandardAttribute::FirstName => &mut claims.first_name,
            StandardAttribute::LastName => &mut claims.last_name,
            StandardAttribute::Name => &mut claims.name,
            StandardAttribute::Groups => &mut claims.groups,
        };
        list.retain(|s| s != &src);
        list.insert(0, src);
    }
    claims
        .custom
        .extend(maps.custom.into_iter().filter_map(|(k, v)| Some((k, v?))));
}

/// Every key of `obj` not in `known` is a field error naming it (`{prefix}.{key}`).
pub(super) fn refuse_unknown(
    f: &mut Fields<'_>,
    obj: &Map<String, Value>,
    prefix: &str,
    known: &[&str],
) {
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
pub(super) const SAML_OPTION_FIELDS: [&str; 13] = [
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
pub(super) const OIDC_OPTION_FIELDS: [&str; 9] = [
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

/// Custom attribute → source name; `null` values (a patch's "remove this mapping") only when
/// `allow_null`.
fn parse_custom(
    f: &mut Fields<'_>,
    obj: &Map<String, Value>,
    prefix: &str,
    allow_null: bool,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    match obj.get("custom_attributes") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if !s.trim().is_empty() && !k.is_empty() => {
                        out.push((k.clone(), Some(s.to_string())));
                    }
                    Value::Null if allow_null && !k.is_empty() => out.push((k.clone(), None)),
                    _ => f.error(&format!("{prefix}.{k}"), "must_be_string"),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => f.error(prefix, "must_be_object"),
    }
    out
}

pub(super) fn opt_str(
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
        refuse_unsupported_oidc_options(&mut f, o);
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
    if issuer.is_none() && discovery_url.is_none() {
        f.error("oidc_options.discovery_endpoint", "required");
    }
    check_urls(
        f,
        p,
        &[
            ("issuer", issuer.as_deref()),
            ("discovery_endpoint", discovery_url.as_deref()),
        ],
    );
    if client_id.is_none() {
        f.error("oidc_options.client_id", "required");
    }
    let client_secret = match read_client_secret(f, o) {
        Some(None) => {
            f.error("oidc_options.client_secret", "required");
            None
        }
        Some(secret) => secret,
        None => None,
    };
    let scopes = o
        .get("scopes")
        .and_then(|v| parse_scopes(f, v))
        .unwrap_or_else(|| t.default_scopes());
    let mut claim_map = t.claim_map();
    if let Some(c) = read_claim_map(f, o, false) {
        c.apply_to_claims(&mut claim_map, &t.claim_map());
    }
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

/// `oidc_options.claim_map` as a patch of the type's claim map (`null` values only when `patch`).
pub(super) fn read_claim_map(
    f: &mut Fields<'_>,
    o: &Map<String, Value>,
    patch: bool,
) -> Option<AttributeMapsPatch> {
    let m = match o.get("claim_map") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => return None,
        Some(_) => {
            f.error("oidc_options.claim_map", "must_be_object");
            return None;
        }
    };
    let mut out = AttributeMapsPatch::default();
    for (k, v) in m {
        if k == "custom_attributes" {
            out.custom = parse_custom(f, m, "oidc_options.claim_map.custom_attributes", patch);
            continue;
        }
        let Some(field) = standard_attribute(k, true) else {
            f.error(&format!("oidc_options.claim_map.{k}"), "unknown_attribute");
            continue;
        };
        match v {
            Value::String(s) if !s.trim().is_empty() => out.standard.push((field, Some(s.clone()))),
            Value::Null if patch => out.standard.push((field, None)),
            _ => f.error(&format!("oidc_options.claim_map.{k}"), "must_be_string"),
        }
    }
    Some(out)
}

/// `oidc_options.scopes`: an array of strings or one space-separated string.
pub(super) fn parse_scopes(f: &mut Fields<'_>, v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => {
            let parsed: Vec<String> = a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if parsed.len() != a.len() {
                f.error("oidc_options.scopes", "must_be_array_of_strings");
                return None;
            }
            Some(parsed)
        }
        Value::String(s) => Some(s.split_whitespace().map(str::to_string).collect()),
        Value::Null => None,
        _ => {
            f.error("oidc_options.scopes", "must_be_array");
            None
        }
    }
}

/// py10 OIDC options idbridge does not implement: refused by name, never dropped; with every
/// other unknown key.
pub(super) fn refuse_unsupported_oidc_options(f: &mut Fields<'_>, o: &Map<String, Value>) {
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
    refuse_unknown(f, o, "oidc_options", &known);
}

/// `oidc_options.client_secret` or `.client_secret_env`: `Some(None)` when neither is given,
/// `None` (reported) when both are.
pub(super) fn read_client_secret(
    f: &mut Fields<'_>,
    o: &Map<String, Value>,
) -> Option<Option<OidcSecretInput>> {
    let p = "oidc_options";
    match (
        opt_str(f, o, p, "client_secret"),
        opt_str(f, o, p, "client_secret_env"),
    ) {
        (Some(_), Some(_)) => {
            f.error(
                "oidc_options.client_secret_env",
                "exclusive_with_client_secret",
            );
            None
        }
        (Some(s), None) => Some(Some(OidcSecretInput::Value(s))),
        (None, Some(var)) => Some(Some(OidcSecretInput::Env(var))),
        (None, None) => Some(None),
    }
}

/// SP key pairs are generated here, never uploaded.
pub(super) fn refuse_sp_key_pairs(f: &mut Fields<'_>, o: &Map<String, Value>) {
    for k in ["sp_signing_key_pair", "sp_encryption_key_pairs"] {
        if o.get(k).is_some_and(|v| !v.is_null()) {
            f.error(
                &format!("saml_options.{k}"),
                "not_supported_keys_are_generated",
            );
        }
    }
}

/// `saml_options.clock_skew_secs` as sent (`null`: the default).
pub(super) fn parse_clock_skew(f: &mut Fields<'_>, v: &Value) -> u64 {
    let max_skew = idbridge_saml::settings::MAX_CLOCK_SKEW.as_secs();
    match v {
        Value::Null => idbridge_saml::settings::DEFAULT_CLOCK_SKEW.as_secs(),
        v => match v.as_u64() {
            Some(n) if n <= max_skew => n,
            _ => {
                f.error("saml_options.clock_skew_secs", "must_be_between_0_and_600");
                0
            }
        },
    }
}

/// `saml_options.idp_signing_certs` as PEM (each PEM or base64 DER); `None` for `null`.
pub(super) fn parse_idp_certs(f: &mut Fields<'_>, v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => {
            let mut certs = Vec::new();
            for (i, c) in a.iter().enumerate() {
                match c.as_str().and_then(cert_to_pem) {
                    Some(pem) => certs.push(pem),
                    None => f.error(
                        &format!("saml_options.idp_signing_certs[{i}]"),
                        "invalid_certificate",
                    ),
                }
            }
            Some(certs)
        }
        Value::Null => None,
        _ => {
            f.error("saml_options.idp_signing_certs", "must_be_array");
            None
        }
    }
}

/// Each given URL must be http(s) with a host.
pub(super) fn check_urls(f: &mut Fields<'_>, prefix: &str, urls: &[(&str, Option<&str>)]) {
    for (k, v) in urls {
        if v.is_some_and(|u| !valid_http_url(u)) {
            f.error(&format!("{prefix}.{k}"), "invalid_url");
        }
    }
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
    refuse_sp_key_pairs(f, o);
    let allow_idp_initiated = opt_bool(f, o, p, "allow_idp_initiated");
    let sign_requests = opt_bool(f, o, p, "sign_requests");
    let clock_skew_secs = parse_clock_skew(f, o.get("clock_skew_secs").unwrap_or(&Value::Null));
    let idp_signing_certs = o
        .get("idp_signing_certs")
        .and_then(|v| parse_idp_certs(f, v))
        .unwrap_or_default();
    check_urls(
        f,
        p,
        &[
            ("idp_sso_url", idp_sso_url.as_deref()),
            ("idp_slo_url", idp_slo_url.as_deref()),
            ("idp_metadata_url", idp_metadata_url.as_deref()),
        ],
    );
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
